// A checkpoint's tokenizer (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers,
// with the special-token facts generation needs: BOS/EOS/PAD ids and the set of special ids.

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FormatError } from '../formats/errors';

export interface EncodeOptions {
  /** Adds what the tokenizer's post-processor adds (e.g. BOS). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leaves special tokens (BOS, EOS, chat markers) out of the text. Default false. */
  skipSpecialTokens?: boolean;
}

/** tokenizer_config.json writes a token either as its text or as an AddedToken object. */
export function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as any).content === 'string') return (v as any).content;
  return undefined;
}

export class Tokenizer {
  /** One more than the largest id the tokenizer can produce. */
  readonly vocabSize: number;
  readonly specialIds: ReadonlySet<number>;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly padToken?: string;
  readonly unkToken?: string;
  readonly bosId?: number;
  readonly eosId?: number;
  readonly padId?: number;
  private readonly cleanUpSpaces: boolean;

  private constructor(private readonly hf: HfTokenizer, readonly config: Record<string, any>) {
    const vocab = hf.get_vocab(true);
    let max = -1;
    for (const id of vocab.values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    const special = new Set<number>();
    for (const [id, t] of hf.get_added_tokens_decoder()) if (t.special) special.add(id);
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    this.padToken = tokenText(config.pad_token);
    this.unkToken = tokenText(config.unk_token);
    this.bosId = this.bosToken === undefined ? undefined : hf.token_to_id(this.bosToken);
    this.eosId = this.eosToken === undefined ? undefined : hf.token_to_id(this.eosToken);
    this.padId = this.padToken === undefined ? undefined : hf.token_to_id(this.padToken);
    for (const id of [this.bosId, this.eosId, this.padId]) if (id !== undefined) special.add(id);
    this.specialIds = special;
    // transformers v5 defaults this to false; the library's own default (true) would rewrite
    // " ." to "." and break round trips.
    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true;
  }

  /**
   * From the text (or parsed object) of tokenizer.json and the parsed tokenizer_config.json.
   * A file the library cannot build a tokenizer from is a FormatError naming tokenizer.json.
   */
  static fromJSON(tokenizerJson: string | object, tokenizerConfig?: Record<string, any> | null): Tokenizer {
    let json: any;
    try {
      json = typeof tokenizerJson === 'string' ? JSON.parse(tokenizerJson) : tokenizerJson;
    } catch (e) {
      throw new FormatError('tokenizer.json', `is not valid JSON: ${(e as Error).message}`);
    }
    if (!json || typeof json !== 'object' || !json.model) throw new FormatError('tokenizer.json', 'has no "model" section');
    const config = { ...(tokenizerConfig ?? {}) };
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer({ added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...json }, config);
    } catch (e) {
      throw new FormatError('tokenizer.json', `cannot be used: ${(e as Error).message}`);
    }
    return new Tokenizer(hf, config);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (text === '') return opts.addSpecialTokens === false ? [] : this.hf.encode('', { add_special_tokens: true }).ids;
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    if (!ids.length) return '';
    return this.hf.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}
