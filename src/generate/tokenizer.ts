// A checkpoint's tokenizer (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers,
// with the special-token facts generation needs: BOS/EOS/PAD ids and the set of special ids.

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FormatError } from '../formats/errors';
import { yieldToHost } from './host';

/** A text that encodes to more tokens than allowed; `atLeast` is a lower bound of its token count. */
export class TokenLimitError extends Error {
  constructor(readonly atLeast: number, readonly limit: number) {
    super(`has at least ${atLeast} tokens; at most ${limit} fit`);
    this.name = 'TokenLimitError';
  }
}

/**
 * Pre-tokenizer regexes (GPT-2's, Llama 3's, Qwen2's) under which a space between two letters always
 * starts a new pre-token: no alternative matches a letter followed by a space (only a leading space
 * or punctuation is optional, before letters), and matching from that space on does not depend on
 * what precedes it. Text cut there pre-tokenizes to the same pieces as the whole.
 */
const SPLIT_AT_WORDS: (string | undefined)[] = [
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];

const SLICE_CHARS = 8192;

/** `text` cut into pieces of about `n` characters, each cut at a space between two letters. */
export function preTokenSlices(text: string, n: number): string[] {
  const out: string[] = [];
  const cut = /(?<=\p{L}) (?=\p{L})/gu;
  let from = 0;
  while (text.length - from > n) {
    cut.lastIndex = from + n;
    const m = cut.exec(text);
    if (!m) break;
    out.push(text.slice(from, m.index));
    from = m.index;
  }
  out.push(text.slice(from));
  return out;
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}


export interface EncodeOptions {
  /** Adds what the tokenizer's post-processor adds (e.g. BOS). Default true. */
  addSpecialTokens?: boolean;
}

export interface AsyncEncodeOptions extends EncodeOptions {
  /** Most tokens wanted: more is a TokenLimitError, raised as soon as it is certain. */
  limit?: number;
  /** Checked between steps; an abort ends the encoding with the signal's reason. */
  signal?: AbortSignal;
  /** Roughly how much work (pre-tokens) runs between two yields. Default 2048. */
  yieldEvery?: number;
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
  /** The text of every special added token (control tokens such as <|im_end|>). */
  readonly specialTokens: readonly string[];
  private plain: HfTokenizer | null = null;
  private longest = 0;

  private constructor(private readonly hf: HfTokenizer, readonly config: Record<string, any>, private readonly json: any) {
    const vocab = hf.get_vocab(true);
    let max = -1;
    for (const id of vocab.values()) if (id > max) max = id;
    this.vocabSize = max + 1;
    const special = new Set<number>();
    const specialText: string[] = [];
    for (const [id, t] of hf.get_added_tokens_decoder()) {
      if (!t.special) continue;
      special.add(id);
      if (t.content) specialText.push(t.content);
    }
    this.specialTokens = specialText;
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
    return new Tokenizer(hf, config, json);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (text === '') return opts.addSpecialTokens === false ? [] : this.hf.encode('', { add_special_tokens: true }).ids;
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /**
   * Encodes `text` with special-token strings taken as plain text: "<|im_end|>" inside it gives the
   * tokens of those characters, never the control token. Nothing is added (no BOS).
   */
  encodePlain(text: string): number[] {
    if (!text) return [];
    if (!this.specialTokens.length) return this.encode(text, { addSpecialTokens: false });
    return this.noControl(this.plainTokenizer().encode(text, { add_special_tokens: false }).ids);
  }

  /**
   * Ids with any special one the model itself still matched (a vocabulary that holds "<s>" as a
   * piece) spelled out character by character instead; the unknown token stays.
   */
  private noControl(ids: number[]): number[] {
    const unk = this.unkToken === undefined ? undefined : this.hf.token_to_id(this.unkToken);
    if (!ids.some((id) => id !== unk && this.specialIds.has(id))) return ids;
    // Byte-level tokenizers encode each character whole (its bytes); others run the model alone on
    // each character, so no normalizer or pre-tokenizer adds anything (a "▁") between them.
    const byteLevel = JSON.stringify(this.json.pre_tokenizer ?? null).includes('"ByteLevel"');
    const plain = this.plainTokenizer();
    const model = (this.hf as any).model;
    return ids.flatMap((id) => {
      if (id === unk || !this.specialIds.has(id)) return [id];
      return [...(this.hf.id_to_token(id) ?? '')].flatMap((ch): number[] => {
        if (byteLevel) return plain.encode(ch, { add_special_tokens: false }).ids;
        return model([ch]).map((t: string) => model.tokens_to_ids.get(t) ?? model.unk_token_id);
      });
    });
  }

  /**
   * The most UTF-8 bytes of text one token stands for (the longest vocabulary or added-token string),
   * so a text of n bytes encodes to at least ceil(n / maxTokenBytes) tokens when the normalizer
   * does not shorten text.
   */
  get maxTokenBytes(): number {
    if (!this.longest) {
      const enc = new TextEncoder();
      let best = 1;
      for (const t of this.hf.get_vocab(true).keys()) if (t.length * 3 > best) best = Math.max(best, enc.encode(t).length);
      this.longest = best;
    }
    return this.longest;
  }

  /** Whether the normalizer may make text shorter (stripping, replacing, compatibility forms), which voids the bound above. */
  get normalizerMayShorten(): boolean {
    const kinds: string[] = [];
    const walk = (n: any) => {
      if (!n || typeof n !== 'object') return;
      if (typeof n.type === 'string') kinds.push(n.type);
      if (Array.isArray(n.normalizers)) n.normalizers.forEach(walk);
    };
    walk(this.json.normalizer);
    return kinds.some((k) => !['NFC', 'NFD', 'Lowercase', 'Prepend', 'BertNormalizer', 'Sequence'].includes(k));
  }

  /**
   * encode() as a sequence of short steps with a yield to the host between them, so a long text
   * does not hold the event loop. Gives the same ids as encode(). With `limit`, stops as soon as
   * more than `limit` tokens are certain and throws TokenLimitError (the text is never tokenized past
   * that point, and a text too long by its byte count alone is refused before any work).
   */
  async encodeAsync(text: string, opts: AsyncEncodeOptions = {}): Promise<number[]> {
    return this.encodeSteps(this.hf, text, opts.addSpecialTokens ?? true, opts);
  }

  /** encodePlain() in steps, as encodeAsync(). */
  async encodePlainAsync(text: string, opts: AsyncEncodeOptions = {}): Promise<number[]> {
    if (!text) return [];
    if (!this.specialTokens.length) return this.encodeSteps(this.hf, text, false, opts);
    return this.noControl(await this.encodeSteps(this.plainTokenizer(), text, false, opts));
  }

  /**
   * Splits `text` at the special-token strings it holds: each becomes its id, the text between them
   * stays text (trimmed where the token strips its neighbours, as encode() does).
   */
  splitSpecial(text: string): (string | number)[] {
    if (!this.specialTokens.length) return [text];
    this.specialPattern ??= new RegExp(`(${[...this.specialTokens].sort((a, b) => b.length - a.length).map(escapeRegExp).join('|')})`, 'u');
    const parts: (string | number)[] = text.split(this.specialPattern);
    const decoder = this.hf.get_added_tokens_decoder();
    for (let i = 1; i < parts.length; i += 2) {
      const id = this.hf.token_to_id(parts[i] as string)!;
      const t = decoder.get(id);
      if (t?.lstrip) parts[i - 1] = (parts[i - 1] as string).trimEnd();
      if (t?.rstrip && i + 1 < parts.length) parts[i + 1] = (parts[i + 1] as string).trimStart();
      parts[i] = id;
    }
    return parts.filter((p) => p !== '');
  }

  private specialPattern?: RegExp;

  /** Whether the pre-tokenizer always splits at a space between two letters (see preTokenSlices). */
  private get sliceable(): boolean {
    const p = this.json.pre_tokenizer;
    const plainByteLevel = (b: any, regex: boolean) => b?.type === 'ByteLevel' && b.add_prefix_space === false && (b.use_regex !== false) === regex;
    if (plainByteLevel(p, true)) return true;
    if (p?.type !== 'Sequence' || !Array.isArray(p.pretokenizers) || p.pretokenizers.length !== 2) return false;
    const [split, bl] = p.pretokenizers;
    return split?.type === 'Split' && split.behavior === 'Isolated' && split.invert === false && SPLIT_AT_WORDS.includes(split.pattern?.Regex) && plainByteLevel(bl, false);
  }

  private plainTokenizer(): HfTokenizer {
    if (!this.plain) {
      const added = Array.isArray(this.json.added_tokens) ? this.json.added_tokens.filter((t: any) => !t?.special) : [];
      this.plain = new HfTokenizer({ normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...this.json, added_tokens: added }, this.config);
    }
    return this.plain;
  }

  private async encodeSteps(hfTok: HfTokenizer, text: string, add: boolean, opts: AsyncEncodeOptions): Promise<number[]> {
    const limit = opts.limit ?? Infinity;
    if (limit < Infinity && !this.normalizerMayShorten) {
      const atLeast = Math.ceil(utf8Length(text) / this.maxTokenBytes);
      if (atLeast > limit) throw new TokenLimitError(atLeast, limit);
    }
    const hf = hfTok as any;
    // The library's own pipeline, step by step: split on added tokens, normalize, split on added
    // tokens again, pre-tokenize, then the model on slices of the pre-tokens.
    const steps = hf.splitter_unnormalized && hf.splitter_normalized && hf.added_tokens_map && typeof hf.model === 'function' && !hf.model.fuse_unk
      && !hf.remove_space && !hf.do_lowercase_and_remove_accent;
    if (!steps || text === '') {
      const ids: number[] = text === '' && add ? hf.encode('', { add_special_tokens: true }).ids : text === '' ? [] : hf.encode(text, { add_special_tokens: add }).ids;
      if (ids.length > limit) throw new TokenLimitError(ids.length, limit);
      return ids;
    }
    const every = opts.yieldEvery ?? 2048;
    const tokens: string[] = [];
    let work = 0;
    const pause = async (n: number) => {
      work += n;
      if (work < every) return;
      work = 0;
      await yieldToHost();
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
    };
    // The post-processor only adds tokens, so more than `limit` here is more than `limit` in the end.
    const over = () => tokens.length > limit;
    const stripAround = (parts: string[]) => {
      parts.forEach((p, i) => {
        const a = hf.added_tokens_map.get(p);
        if (!a) return;
        if (a.lstrip && i > 0) parts[i - 1] = parts[i - 1].trimEnd();
        if (a.rstrip && i < parts.length - 1) parts[i + 1] = parts[i + 1].trimStart();
      });
    };
    const sections: string[] = hf.splitter_unnormalized.split(text);
    stripAround(sections);
    for (let si = 0; si < sections.length && !over(); si++) {
      let sec = sections[si];
      if (!sec) continue;
      if (hf.added_tokens_map.has(sec)) {
        tokens.push(sec);
        continue;
      }
      if (hf.normalizer) sec = hf.normalizer(sec);
      if (!sec) continue;
      await pause(sec.length >> 6);
      const subs: string[] = hf.splitter_normalized.split(sec);
      stripAround(subs);
      for (const sub of subs) {
        if (!sub || over()) continue;
        if (hf.added_tokens_map.has(sub)) {
          tokens.push(sub);
          continue;
        }
        const pre: string[] = [];
        if (!hf.pre_tokenizer) pre.push(sub);
        else {
          // Long texts are pre-tokenized in slices cut where the pre-tokenizer splits anyway.
          for (const slice of this.sliceable ? preTokenSlices(sub, SLICE_CHARS) : [sub]) {
            for (const t of hf.pre_tokenizer(slice, { section_index: si })) pre.push(t);
            await pause(slice.length >> 4);
          }
        }
        for (let i = 0; i < pre.length && !over(); i += 256) {
          for (const t of hf.model(pre.slice(i, i + 256))) tokens.push(t);
          await pause(256);
        }
      }
    }
    if (over()) throw new TokenLimitError(tokens.length, limit);
    const out: string[] = hf.post_processor ? hf.post_processor(tokens, null, add).tokens : tokens;
    const ids = out.map((t) => hf.added_tokens_map.get(t)?.id ?? hf.model.tokens_to_ids.get(t) ?? hf.model.unk_token_id);
    if (ids.length > limit) throw new TokenLimitError(ids.length, limit);
    return ids;
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

  /**
   * The bytes of text each token id stands for, as the decoder writes them: byte-level BPE tokens
   * mapped back through the GPT-2 byte alphabet, SentencePiece pieces with their "▁" (the decoder's
   * Metaspace or Replace rules) as spaces and <0xAB> byte-fallback pieces as that byte, any other
   * token as the UTF-8 of its text. Special tokens and ids without a token are null. A decoder's
   * stripping of the leading space of a whole text (Strip, Metaspace prepend) is not applied.
   */
  tokenBytes(): (Uint8Array | null)[] {
    const enc = new TextEncoder();
    const decoder = this.json.decoder ?? null;
    const spec = JSON.stringify(decoder);
    const byteLevel = decoder ? spec.includes('"ByteLevel"') : JSON.stringify(this.json.pre_tokenizer ?? null).includes('"ByteLevel"');
    const byteFallback = spec.includes('"ByteFallback"') || this.json.model?.byte_fallback === true;
    const replacements: [string, string][] = [];
    const collect = (d: any) => {
      if (d?.type === 'Sequence' && Array.isArray(d.decoders)) d.decoders.forEach(collect);
      else if (d?.type === 'Metaspace') replacements.push([typeof d.replacement === 'string' ? d.replacement : '▁', ' ']);
      else if (d?.type === 'Replace' && typeof d.pattern?.String === 'string' && typeof d.content === 'string') replacements.push([d.pattern.String, d.content]);
    };
    collect(decoder);
    const added = this.hf.get_added_tokens_decoder();
    const alphabet = byteLevel ? byteLevelAlphabet() : null;
    const out: (Uint8Array | null)[] = [];
    for (let id = 0; id < this.vocabSize; id++) {
      const t = this.hf.id_to_token(id);
      if (t === undefined || this.specialIds.has(id)) {
        out.push(null);
        continue;
      }
      if (alphabet && !added.has(id)) {
        const chars = [...t];
        // A token with a character outside the alphabet stands for its own UTF-8 (as in tokenizers).
        out.push(chars.every((ch) => alphabet.has(ch)) ? Uint8Array.from(chars, (ch) => alphabet.get(ch)!) : enc.encode(t));
        continue;
      }
      if (byteFallback && !added.has(id) && /^<0x[0-9A-Fa-f]{2}>$/.test(t)) {
        out.push(Uint8Array.of(Number.parseInt(t.slice(3, 5), 16)));
        continue;
      }
      let text = t;
      if (!alphabet) for (const [from, to] of replacements) text = text.replaceAll(from, to);
      out.push(enc.encode(text));
    }
    return out;
  }
}

/** The GPT-2 byte-level alphabet read backwards: each of its 256 characters → the byte it stands for. */
function byteLevelAlphabet(): Map<string, number> {
  const map = new Map<string, number>();
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    map.set(String.fromCharCode(printable ? b : next++), b);
  }
  return map;
}
