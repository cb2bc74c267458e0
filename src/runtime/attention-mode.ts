// The load option `attention`: dense softmax attention (default), or training-free sparse top-k
// attention at decode (Quest-style pages, arXiv 2406.10774). With mode 'topk', a decode step (a
// forward call of one token) in a full-attention layer attends to the first `sinks` positions, the
// last `window` positions (the token itself included) and the `pages` KV pages of `pageSize`
// positions between them whose key bounds score highest for the query; prompts (forward calls of
// several tokens) stay dense on every row, whatever their chunking. A context of at most
// sinks + window + pages·pageSize positions is attended densely (the same kernel as mode 'dense',
// so the same logits). Sliding-window layers keep their window; layers with their own
// attention ops (MLA, DSA) are not affected, and a model without any full-attention layer refuses
// the mode. This module parses and checks the option (load options, `--attention` flags, `ATTENTION`).

import { ConfigError } from '../formats/errors';

export type AttentionModeName = 'dense' | 'topk';
export const ATTENTION_MODES: readonly AttentionModeName[] = ['dense', 'topk'];

/** The load option as given: a mode and, for 'topk', any of its settings (the rest default). */
export interface AttentionModeOptions {
  mode: AttentionModeName;
  /** Positions per KV page (default 64). */
  pageSize?: number;
  /** KV pages attended per decode step, besides sinks and window (default 16). */
  pages?: number;
  /** First positions always attended (default 4). */
  sinks?: number;
  /** Last positions always attended, the new token's own included (default 256; ≥ 1). */
  window?: number;
}

/** Sparse top-k attention with every setting resolved. */
export interface TopkAttention {
  mode: 'topk';
  pageSize: number;
  pages: number;
  sinks: number;
  window: number;
}

export type ResolvedAttention = { mode: 'dense' } | TopkAttention;

export const TOPK_DEFAULTS = { pageSize: 64, pages: 16, sinks: 4, window: 256 } as const;

const FIELD = 'options.attention';

function intField(o: AttentionModeOptions, key: 'pageSize' | 'pages' | 'sinks' | 'window', min: number): number {
  const v = o[key] ?? TOPK_DEFAULTS[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new ConfigError(`${FIELD}.${key}`, `must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Checks the option and fills in the defaults (undefined: dense). */
export function resolveAttention(o: AttentionModeOptions | undefined): ResolvedAttention {
  if (o === undefined) return { mode: 'dense' };
  if (typeof o !== 'object' || o === null) throw new ConfigError(FIELD, `must be an object such as { mode: 'topk' }, got ${JSON.stringify(o)}`);
  if (!ATTENTION_MODES.includes(o.mode)) throw new ConfigError(`${FIELD}.mode`, `must be one of ${ATTENTION_MODES.join(', ')}, got ${JSON.stringify(o.mode)}`);
  const known = new Set(['mode', 'pageSize', 'pages', 'sinks', 'window']);
  for (const key of Object.keys(o)) if (!known.has(key)) throw new ConfigError(`${FIELD}.${key}`, `is not an attention setting (settings: ${[...known].join(', ')})`);
  if (o.mode === 'dense') {
    const extra = Object.keys(o).filter((k) => k !== 'mode' && o[k as keyof AttentionModeOptions] !== undefined);
    if (extra.length) throw new ConfigError(`${FIELD}.${extra[0]}`, `applies to mode 'topk' only (mode is 'dense')`);
    return { mode: 'dense' };
  }
  return { mode: 'topk', pageSize: intField(o, 'pageSize', 1), pages: intField(o, 'pages', 1), sinks: intField(o, 'sinks', 0), window: intField(o, 'window', 1) };
}

/**
 * Fits the setting to a context of maxContext positions: `pages` given (explicitly) beyond the pages
 * the context holds is refused; the default 16 is lowered to what the context holds.
 */
export function fitAttention(a: ResolvedAttention, given: AttentionModeOptions | undefined, maxContext: number): ResolvedAttention {
  if (a.mode !== 'topk') return a;
  const pagesInContext = Math.ceil(maxContext / a.pageSize);
  if (a.pages <= pagesInContext) return a;
  if (given?.pages === undefined) return { ...a, pages: pagesInContext };
  throw new ConfigError(`${FIELD}.pages`, `${a.pages} pages of ${a.pageSize} positions is more than a context of ${maxContext} positions holds (${pagesInContext} pages); use at most ${pagesInContext} pages or a larger maxContext`);
}

/** Positions a top-k decode step attends at most: below that context length attention is dense. */
export function attentionBudget(a: TopkAttention): number {
  return a.sinks + a.window + a.pages * a.pageSize;
}

const FLAG_KEYS: Record<string, 'pageSize' | 'pages' | 'sinks' | 'window'> = { page: 'pageSize', pagesize: 'pageSize', 'page-size': 'pageSize', pages: 'pages', sinks: 'sinks', window: 'window' };

/**
 * The option from its command-line / environment form: `dense`, `topk`, or
 * `topk:pages=16,page=64,sinks=4,window=256` (any subset of the settings; `page` is the page size).
 * `what` names the flag or variable in errors.
 */
export function parseAttentionFlag(s: string, what = FIELD): AttentionModeOptions {
  const text = s.trim();
  const colon = text.indexOf(':');
  const mode = (colon < 0 ? text : text.slice(0, colon)).trim();
  if (mode !== 'dense' && mode !== 'topk') throw new ConfigError(what, `mode must be dense or topk (as in topk:pages=16,page=64,sinks=4,window=256), got ${JSON.stringify(mode)}`);
  const out: AttentionModeOptions = { mode };
  if (colon < 0) return out;
  for (const part of text.slice(colon + 1).split(',')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    const key = eq < 0 ? p : p.slice(0, eq).trim();
    const field = FLAG_KEYS[key.toLowerCase()];
    if (!field) throw new ConfigError(what, `unknown setting ${JSON.stringify(key)} (settings: pages, page, sinks, window)`);
    const raw = eq < 0 ? '' : p.slice(eq + 1).trim();
    const v = /^-?\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(v)) throw new ConfigError(what, `${key} must be an integer, got ${JSON.stringify(raw)}`);
    out[field] = v;
  }
  if (mode === 'dense' && Object.keys(out).length > 1) throw new ConfigError(what, 'settings apply to topk only');
  return out;
}

/** The flag form of a resolved setting (for reports). */
export function formatAttention(a: ResolvedAttention): string {
  return a.mode === 'dense' ? 'dense' : `topk:pages=${a.pages},page=${a.pageSize},sinks=${a.sinks},window=${a.window}`;
}
