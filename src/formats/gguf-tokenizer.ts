// Tokenizers in GGUF metadata as llama.cpp stores them (`tokenizer.ggml.*`), both ways:
//   tokenizerToGGUF: tokenizer.json (+ tokenizer_config.json) → tokenizer.ggml.* keys;
//   tokenizerFromGGUF: tokenizer.ggml.* keys → tokenizer.json + tokenizer_config fields, as
//   src/generate/tokenizer.ts takes them.
//
// Models:
//   gpt2    byte-level BPE: tokens, merges ("a b"), token_type, pre (the pre-tokenizer regex by name:
//           gpt-2 / default, llama-bpe, qwen2, …)
//   llama   SentencePiece BPE with byte fallback: tokens, scores, token_type (2 unknown, 3 control,
//           4 user-defined, 6 byte). The merges are implied by the scores: a piece made by the merge
//           of rank r scores -r; reading back, every split of a piece into two pieces of the
//           vocabulary is a merge ranked by the piece's score.
//   t5      SentencePiece unigram: tokens and their log-probability scores (Metaspace pre-tokenizer).
// Special-token ids (bos/eos/unk/pad), add_bos_token / add_eos_token and add_space_prefix are keys of
// their own; `tokenizer.chat_template` is handled with the rest of the metadata.

import { FormatError } from './errors';
import type { GGUFValue } from './gguf';

type Entry = [key: string, value: GGUFValue, type: string];

/** Token types of llama.cpp's vocabularies. */
export const TokenType = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** llama.cpp `tokenizer.ggml.pre` names and the split regex each stands for. */
const PRE: Record<string, string> = { 'gpt-2': GPT2_REGEX, default: GPT2_REGEX, 'llama-bpe': LLAMA3_REGEX, 'llama3': LLAMA3_REGEX, qwen2: QWEN2_REGEX };

function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

function json(x: unknown): string {
  return JSON.stringify(x ?? null);
}

/** The split regex of a byte-level pre-tokenizer, if it has one. */
function splitRegex(pre: any): string | undefined {
  if (pre?.type === 'Split') return pre.pattern?.Regex;
  if (pre?.type === 'Sequence') for (const p of pre.pretokenizers ?? []) {
    const r = splitRegex(p);
    if (r) return r;
  }
  if (pre?.type === 'ByteLevel' && pre.use_regex !== false) return GPT2_REGEX;
  return undefined;
}

/** Token texts of a post-processor's single-sequence template before and after the sequence. */
function templateSpecials(pp: any): { before: string[]; after: string[] } {
  const out = { before: [] as string[], after: [] as string[] };
  const single = pp?.type === 'TemplateProcessing' ? pp.single : pp?.type === 'Sequence' ? pp.processors?.find((p: any) => p.type === 'TemplateProcessing')?.single : undefined;
  if (!Array.isArray(single)) return out;
  let seen = false;
  for (const piece of single) {
    if (piece.Sequence) seen = true;
    else if (piece.SpecialToken) (seen ? out.after : out.before).push(piece.SpecialToken.id);
  }
  return out;
}

/**
 * tokenizer.ggml.* entries for a tokenizer.json, as llama.cpp's converter writes them. `ids` gives
 * fallback special-token ids (config.json / generation_config.json bos_token_id, eos_token_id, …).
 */
export function tokenizerToGGUF(tokenizerJson: string, tokenizerConfig?: any, ids?: any): Entry[] {
  let tj: any;
  try {
    tj = JSON.parse(tokenizerJson);
  } catch (e) {
    throw new FormatError('tokenizer.json', `is not valid JSON: ${(e as Error).message}`);
  }
  const model = tj?.model;
  if (!model || typeof model !== 'object') throw new FormatError('tokenizer.json', 'has no "model" section');
  const cfg = tokenizerConfig ?? {};
  const byId: string[] = [];
  const added = new Map<number, { content: string; special: boolean }>();
  if (model.type === 'Unigram') {
    (model.vocab as [string, number][]).forEach(([p], i) => {
      byId[i] = p;
    });
  } else {
    for (const [tok, id] of Object.entries(model.vocab ?? {})) byId[id as number] = tok;
  }
  for (const a of tj.added_tokens ?? []) {
    byId[a.id] = a.content;
    added.set(a.id, { content: a.content, special: a.special !== false });
  }
  const n = byId.length;
  const tokens: string[] = Array.from({ length: n }, (_, i) => byId[i] ?? `[PAD${i}]`);
  const idOf = new Map<string, number>();
  tokens.forEach((tk, i) => {
    if (!idOf.has(tk)) idOf.set(tk, i);
  });
  const unkText = model.type === 'Unigram' ? tokens[model.unk_id ?? 0] : model.unk_token ?? tokenText(cfg.unk_token);
  const types = tokens.map((tk, i): number => {
    const a = added.get(i);
    if (tk === unkText && unkText !== undefined) return TokenType.unknown;
    if (a) return a.special ? TokenType.control : TokenType.userDefined;
    if (byId[i] === undefined) return TokenType.unused;
    if (model.byte_fallback && /^<0x[0-9A-F]{2}>$/.test(tk)) return TokenType.byte;
    return TokenType.normal;
  });
  const out: Entry[] = [];
  const byteLevel = json(tj.pre_tokenizer).includes('"ByteLevel"') || json(tj.decoder).includes('"ByteLevel"');
  const merges: string[] = (model.merges ?? []).map((m: string | string[]) => (Array.isArray(m) ? m.join(' ') : m));
  const spaceNorm = json(tj.normalizer).includes('"Prepend"') || /"prepend_scheme":"(always|first)"/.test(json(tj.pre_tokenizer)) || json(tj.pre_tokenizer).includes('"add_prefix_space":true');
  if (model.type === 'BPE' && byteLevel) {
    out.push(['tokenizer.ggml.model', 'gpt2', 'string']);
    const rx = splitRegex(tj.pre_tokenizer);
    const pre = Object.entries(PRE).find(([, r]) => r === rx)?.[0] ?? 'default';
    out.push(['tokenizer.ggml.pre', pre === 'llama3' ? 'llama-bpe' : pre, 'string']);
    out.push(['tokenizer.ggml.tokens', tokens, 'array<string>']);
    out.push(['tokenizer.ggml.token_type', types, 'array<i32>']);
    out.push(['tokenizer.ggml.merges', merges, 'array<string>']);
  } else if (model.type === 'BPE') {
    out.push(['tokenizer.ggml.model', 'llama', 'string']);
    out.push(['tokenizer.ggml.pre', 'default', 'string']);
    const rank = new Map<string, number>();
    merges.forEach((m, r) => {
      const sp = m.indexOf(' ');
      const piece = m.slice(0, sp) + m.slice(sp + 1);
      if (!rank.has(piece)) rank.set(piece, r);
    });
    const scores = tokens.map((tk, i) => (types[i] === TokenType.normal && rank.has(tk) ? -rank.get(tk)! : types[i] === TokenType.normal ? -(merges.length + i) : 0));
    out.push(['tokenizer.ggml.tokens', tokens, 'array<string>']);
    out.push(['tokenizer.ggml.scores', scores, 'array<f32>']);
    out.push(['tokenizer.ggml.token_type', types, 'array<i32>']);
    out.push(['tokenizer.ggml.add_space_prefix', spaceNorm, 'bool']);
  } else if (model.type === 'Unigram') {
    out.push(['tokenizer.ggml.model', 't5', 'string']);
    out.push(['tokenizer.ggml.pre', 'default', 'string']);
    out.push(['tokenizer.ggml.tokens', tokens, 'array<string>']);
    out.push(['tokenizer.ggml.scores', tokens.map((_, i) => (model.vocab[i]?.[1] as number) ?? 0), 'array<f32>']);
    out.push(['tokenizer.ggml.token_type', types, 'array<i32>']);
    out.push(['tokenizer.ggml.add_space_prefix', spaceNorm, 'bool']);
  } else {
    throw new FormatError('tokenizer.json', `model type ${JSON.stringify(model.type)} has no llama.cpp tokenizer (BPE, Unigram)`);
  }
  const special = (field: string, idField: string, key: string) => {
    const text = tokenText(cfg[field]);
    let id = text !== undefined ? idOf.get(text) : undefined;
    if (id === undefined && cfg[field] === undefined) {
      const v = ids?.[idField];
      id = typeof v === 'number' ? v : Array.isArray(v) && typeof v[0] === 'number' ? v[0] : undefined;
    }
    if (id !== undefined) out.push([key, id, 'u32']);
  };
  special('bos_token', 'bos_token_id', 'tokenizer.ggml.bos_token_id');
  special('eos_token', 'eos_token_id', 'tokenizer.ggml.eos_token_id');
  special('pad_token', 'pad_token_id', 'tokenizer.ggml.padding_token_id');
  if (unkText !== undefined && idOf.has(unkText)) out.push(['tokenizer.ggml.unknown_token_id', idOf.get(unkText)!, 'u32']);
  const tmpl = templateSpecials(tj.post_processor);
  out.push(['tokenizer.ggml.add_bos_token', typeof cfg.add_bos_token === 'boolean' ? cfg.add_bos_token : tmpl.before.length > 0, 'bool']);
  out.push(['tokenizer.ggml.add_eos_token', typeof cfg.add_eos_token === 'boolean' ? cfg.add_eos_token : tmpl.after.length > 0, 'bool']);
  return out;
}

/** Marks a placeholder vocabulary (placeholderVocabGGUF); the reader gives no tokenizer for it. */
export const PLACEHOLDER_KEY = 'sparrow.placeholder_vocab';

/** GPT-2's byte-level alphabet: the character that stands for each byte. */
function byteLevelChars(): string[] {
  const direct = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(direct(b) ? b : 256 + extra++));
}

/**
 * tokenizer.ggml.* entries of a placeholder vocabulary of `n` tokens for a checkpoint that has no
 * tokenizer (models driven by token ids alone). llama.cpp needs a vocabulary it can tokenize any
 * text with: its "none" type has placeholder tokens but no tokenizer (tokenizing aborts), and a
 * SentencePiece one without all 256 <0xNN> tokens aborts on a byte it lacks. This is a byte-level
 * BPE one with no merges (llama.cpp's BPE tokenizer drops bytes it has no token for):
 * `<|endoftext|>` (bos, eos), as many byte characters as fit, then made-up pieces `tN`.
 * `PLACEHOLDER_KEY` (ignored by llama.cpp) tells the reader it is no real tokenizer.
 */
export function placeholderVocabGGUF(n: number): Entry[] {
  if (!Number.isInteger(n) || n < 2) throw new FormatError('config.vocab_size', `${String(n)} is too small for a llama.cpp vocabulary (at least 2 tokens)`);
  const tokens: string[] = ['<|endoftext|>', ...byteLevelChars().slice(0, n - 1)];
  const types: number[] = tokens.map((_, i) => (i === 0 ? TokenType.control : TokenType.normal));
  while (tokens.length < n) {
    tokens.push(`t${tokens.length}`);
    types.push(TokenType.normal);
  }
  return [
    ['tokenizer.ggml.model', 'gpt2', 'string'],
    ['tokenizer.ggml.pre', 'default', 'string'],
    ['tokenizer.ggml.tokens', tokens, 'array<string>'],
    ['tokenizer.ggml.token_type', types, 'array<i32>'],
    ['tokenizer.ggml.merges', [], 'array<string>'],
    ['tokenizer.ggml.bos_token_id', 0, 'u32'],
    ['tokenizer.ggml.eos_token_id', 0, 'u32'],
    ['tokenizer.ggml.add_bos_token', false, 'bool'],
    ['tokenizer.ggml.add_eos_token', false, 'bool'],
    [PLACEHOLDER_KEY, true, 'bool'],
  ];
}

// ---------------------------------------------------------------------------------------------
// Reading

function arr<T>(meta: Record<string, GGUFValue>, key: string, n?: number): T[] | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || (n !== undefined && v.length !== n)) throw new FormatError(`gguf.metadata[${JSON.stringify(key)}]`, n === undefined ? 'is not an array' : `must hold ${n} entries (one per token)`);
  return v as T[];
}

function idKey(meta: Record<string, GGUFValue>, key: string, n: number): number | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= n) throw new FormatError(`gguf.metadata[${JSON.stringify(key)}]`, `${String(v)} is not a token id below ${n}`);
  return v;
}

/** BPE merges implied by SentencePiece scores: every split of a piece into two pieces, best piece first. */
function mergesFromScores(tokens: string[], scores: number[], types: number[]): [string, string][] {
  const normal = new Map<string, number>();
  tokens.forEach((tk, i) => {
    if (types[i] === TokenType.normal || types[i] === TokenType.userDefined) normal.set(tk, i);
  });
  const cands: { l: string; r: string; score: number; id: number; ll: number }[] = [];
  tokens.forEach((tk, i) => {
    if (types[i] !== TokenType.normal) return;
    const cps = [...tk];
    if (cps.length < 2) return;
    for (let k = 1; k < cps.length; k++) {
      const l = cps.slice(0, k).join('');
      const r = cps.slice(k).join('');
      if (normal.has(l) && normal.has(r)) cands.push({ l, r, score: scores[i], id: i, ll: normal.get(l)! });
    }
  });
  cands.sort((a, b) => b.score - a.score || a.id - b.id || a.ll - b.ll);
  return cands.map((c) => [c.l, c.r]);
}

/**
 * tokenizer.json (text) and tokenizer_config fields from `tokenizer.ggml.*` metadata, or undefined
 * when the file has no tokenizer. A malformed entry is a FormatError naming its key.
 */
export function tokenizerFromGGUF(meta: Record<string, GGUFValue>): { tokenizerJson: string; tokenizerConfig: Record<string, unknown> } | undefined {
  const kind = meta['tokenizer.ggml.model'];
  if (kind === undefined) return undefined;
  if (typeof kind !== 'string') throw new FormatError('gguf.metadata["tokenizer.ggml.model"]', 'is not a string');
  // llama.cpp's "no vocabulary" models, and the placeholder vocabulary of placeholderVocabGGUF: token ids only.
  if ((kind === 'none' || kind === 'no_vocab') && meta['tokenizer.ggml.tokens'] === undefined) return undefined;
  if (meta[PLACEHOLDER_KEY] === true) return undefined;
  const tokens = arr<string>(meta, 'tokenizer.ggml.tokens');
  if (!tokens) throw new FormatError('gguf.metadata["tokenizer.ggml.tokens"]', `is required for tokenizer model ${JSON.stringify(kind)}`);
  if (!tokens.every((x) => typeof x === 'string')) throw new FormatError('gguf.metadata["tokenizer.ggml.tokens"]', 'must be an array of strings');
  const n = tokens.length;
  const types = arr<number>(meta, 'tokenizer.ggml.token_type', n) ?? new Array<number>(n).fill(TokenType.normal);
  const scores = arr<number>(meta, 'tokenizer.ggml.scores', n);
  const bos = idKey(meta, 'tokenizer.ggml.bos_token_id', n);
  const eos = idKey(meta, 'tokenizer.ggml.eos_token_id', n);
  const pad = idKey(meta, 'tokenizer.ggml.padding_token_id', n);
  let unk = idKey(meta, 'tokenizer.ggml.unknown_token_id', n);
  if (unk === undefined) {
    const u = types.indexOf(TokenType.unknown);
    if (u >= 0) unk = u;
  }
  const addBosDefault = kind === 'llama';
  const addBos = typeof meta['tokenizer.ggml.add_bos_token'] === 'boolean' ? meta['tokenizer.ggml.add_bos_token'] as boolean : addBosDefault;
  const addEos = meta['tokenizer.ggml.add_eos_token'] === true;
  const spacePrefix = typeof meta['tokenizer.ggml.add_space_prefix'] === 'boolean' ? meta['tokenizer.ggml.add_space_prefix'] as boolean : kind !== 'gpt2';
  const vocab: Record<string, number> = {};
  tokens.forEach((tk, i) => {
    if (!(tk in vocab)) vocab[tk] = i;
  });
  const addedTokens = tokens.flatMap((tk, i) => {
    const ty = types[i];
    if (ty !== TokenType.control && ty !== TokenType.userDefined && ty !== TokenType.unknown) return [];
    return [{ id: i, content: tk, single_word: false, lstrip: false, rstrip: false, normalized: false, special: ty !== TokenType.userDefined }];
  });
  const post = (addBos && bos !== undefined) || (addEos && eos !== undefined)
    ? (() => {
      const b = addBos && bos !== undefined ? [{ SpecialToken: { id: tokens[bos], type_id: 0 } }] : [];
      const e = addEos && eos !== undefined ? [{ SpecialToken: { id: tokens[eos], type_id: 0 } }] : [];
      const sp: Record<string, unknown> = {};
      for (const id of [addBos ? bos : undefined, addEos ? eos : undefined]) if (id !== undefined) sp[tokens[id]] = { id: tokens[id], ids: [id], tokens: [tokens[id]] };
      return {
        type: 'TemplateProcessing',
        single: [...b, { Sequence: { id: 'A', type_id: 0 } }, ...e],
        pair: [...b, { Sequence: { id: 'A', type_id: 0 } }, ...e, ...b.map((x) => ({ SpecialToken: { ...x.SpecialToken, type_id: 1 } })), { Sequence: { id: 'B', type_id: 1 } }, ...e.map((x) => ({ SpecialToken: { ...x.SpecialToken, type_id: 1 } }))],
        special_tokens: sp,
      };
    })()
    : null;
  let tj: Record<string, unknown>;
  if (kind === 'gpt2') {
    const merges = arr<string>(meta, 'tokenizer.ggml.merges');
    if (!merges) throw new FormatError('gguf.metadata["tokenizer.ggml.merges"]', 'is required for tokenizer model "gpt2"');
    const pre = typeof meta['tokenizer.ggml.pre'] === 'string' ? meta['tokenizer.ggml.pre'] as string : 'default';
    const rx = PRE[pre] ?? GPT2_REGEX;
    tj = {
      model: {
        type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: pre === 'llama-bpe',
        vocab, merges: merges.map((m) => {
          const sp = m.indexOf(' ');
          if (sp <= 0) throw new FormatError('gguf.metadata["tokenizer.ggml.merges"]', `entry ${JSON.stringify(m)} is not "left right"`);
          return [m.slice(0, sp), m.slice(sp + 1)];
        }),
      },
      normalizer: null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: rx }, behavior: 'Isolated', invert: false }, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      post_processor: post,
    };
  } else if (kind === 'llama') {
    if (!scores) throw new FormatError('gguf.metadata["tokenizer.ggml.scores"]', 'is required for tokenizer model "llama"');
    const byteFallback = types.includes(TokenType.byte);
    tj = {
      model: {
        type: 'BPE', dropout: null, unk_token: unk !== undefined ? tokens[unk] : null, continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: true, byte_fallback: byteFallback, ignore_merges: false, vocab, merges: mergesFromScores(tokens, scores, types),
      },
      normalizer: { type: 'Sequence', normalizers: [...(spacePrefix ? [{ type: 'Prepend', prepend: '▁' }] : []), { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: null,
      decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, ...(spacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : [])] },
      post_processor: post,
    };
  } else if (kind === 't5') {
    if (!scores) throw new FormatError('gguf.metadata["tokenizer.ggml.scores"]', 'is required for tokenizer model "t5"');
    const scheme = spacePrefix ? 'always' : 'never';
    tj = {
      model: { type: 'Unigram', unk_id: unk ?? 0, vocab: tokens.map((tk, i) => [tk, scores[i]]), byte_fallback: types.includes(TokenType.byte) },
      normalizer: null,
      pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split: true },
      decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: scheme, split: true },
      post_processor: post,
    };
  } else {
    throw new FormatError('gguf.metadata["tokenizer.ggml.model"]', `tokenizer model ${JSON.stringify(kind)} is not supported (gpt2, llama, t5)`);
  }
  tj = { version: '1.0', truncation: null, padding: null, added_tokens: addedTokens, ...tj };
  const config: Record<string, unknown> = { clean_up_tokenization_spaces: false, add_bos_token: addBos, add_eos_token: addEos };
  if (bos !== undefined) config.bos_token = tokens[bos];
  if (eos !== undefined) config.eos_token = tokens[eos];
  if (pad !== undefined) config.pad_token = tokens[pad];
  if (unk !== undefined) config.unk_token = tokens[unk];
  return { tokenizerJson: JSON.stringify(tj), tokenizerConfig: config };
}
