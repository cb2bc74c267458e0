// Tensor name tables between HF checkpoints and llama.cpp's GGUF layout, and the transforms
// llama.cpp's converter applies on the way (see llamacpp.ts for the list of architectures).
//
// A rule ties HF tensor names to GGUF tensor names through a transform that works both ways:
//   - plain rename (bytes unchanged; an optional reshape such as the squeezed [d, 1, k] conv kernels,
//     Mamba-2's [H] → [H, 1] A/D and [d_inner] → [G, d_inner / G] group norm);
//   - Q/K row permutation (llama.cpp's rotary embedding of the llama-arch models is the interleaved
//     one, HF's the half-split one: rows of each head are reordered);
//   - `+1` on zero-centred RMSNorm weights (Gemma 2/3, Qwen3-Next), `-exp` on A_log (Mamba, Jamba,
//     Mamba-2, Qwen3-Next);
//   - expert stacking: E per-expert HF tensors ↔ one [E, …] GGUF tensor;
//   - splits: a fused [gate; up] HF tensor ↔ two GGUF tensors (Granite), gpt-oss's column-interleaved
//     and transposed expert matrices, DeepSeek's kv_b_proj ↔ attn_k_b (per head transposed) + attn_v_b.
// Templates hold `{i}` (layer) and `{e}` (expert) placeholders.

import type { DType } from './dtype';

export type Shape = number[];

/** How the GGUF side is derived from the HF side (and back). */
export type Xf =
  | { k: 'rename'; toGG?: (s: Shape) => Shape; toHF?: (s: Shape) => Shape }
  | { k: 'permute'; heads: number }
  | { k: 'plus1' }
  | { k: 'negexp'; toGG?: (s: Shape) => Shape; toHF?: (s: Shape) => Shape }
  | { k: 'experts' }
  | { k: 'splitRows' }
  | { k: 'ossGateUp' }
  | { k: 'ossBias' }
  | { k: 'ossDown' }
  | { k: 'kvb'; heads: number; nope: number; v: number };

export interface Template {
  hf: string;
  gg: string[];
  xf: Xf;
}

const RENAME: Xf = { k: 'rename' };

export function t(hf: string, gg: string | string[], xf: Xf = RENAME): Template {
  return { hf, gg: Array.isArray(gg) ? gg : [gg], xf };
}

/** `[d, 1, k]` depthwise conv kernels, stored squeezed to `[d, k]`. */
export const squeezeConv: Xf = { k: 'rename', toGG: (s) => (s.length === 3 && s[1] === 1 ? [s[0], s[2]] : s), toHF: (s) => (s.length === 2 ? [s[0], 1, s[1]] : s) };
/** `[n]` stored as `[n, 1]`. */
export const column: Xf = { k: 'rename', toGG: (s) => (s.length === 1 ? [s[0], 1] : s), toHF: (s) => (s.length === 2 && s[1] === 1 ? [s[0]] : s) };
export const negexpColumn: Xf = { k: 'negexp', toGG: column.toGG, toHF: column.toHF };
/** `[n]` stored as `[G, n / G]`. */
export function groups(G: number): Xf {
  return { k: 'rename', toGG: (s) => (s.length === 1 && G > 0 && s[0] % G === 0 ? [G, s[0] / G] : s), toHF: (s) => (s.length === 2 ? [s[0] * s[1]] : s) };
}
/** `[1, n]` may be stored as `[n]` (llama.cpp's ffn_gate_inp_shexp). */
export const rowVector: Xf = { k: 'rename', toHF: (s) => (s.length === 1 ? [1, s[0]] : s) };

/** Template → regex with a capture for each placeholder, in order. */
function compile(tpl: string): { re: RegExp; keys: string[] } {
  const keys: string[] = [];
  const src = tpl.replace(/[.*+?^${}()|[\]\\]/g, (c) => `\\${c}`).replace(/\\\{(i|e)\\\}/g, (_m, k: string) => {
    keys.push(k);
    return '(\\d+)';
  });
  return { re: new RegExp(`^${src}$`), keys };
}

const compiled = new Map<string, { re: RegExp; keys: string[] }>();

/** The placeholder values of `name` under `tpl`, or null when it does not match. */
export function match(tpl: string, name: string): Record<string, number> | null {
  let c = compiled.get(tpl);
  if (!c) {
    c = compile(tpl);
    compiled.set(tpl, c);
  }
  const m = c.re.exec(name);
  if (!m) return null;
  const out: Record<string, number> = {};
  c.keys.forEach((k, j) => {
    out[k] = Number(m[j + 1]);
  });
  return out;
}

export function fill(tpl: string, v: Record<string, number>): string {
  return tpl.replace(/\{(i|e)\}/g, (_m, k: string) => String(v[k]));
}

// ---------------------------------------------------------------------------------------------
// Row permutations

/** llama.cpp's permute of Q/K rows: within each head, row t·(hd/2)+k moves to 2k+t. `out[r] = in[src[r]]`. */
export function permuteRows(rows: number, heads: number): Int32Array {
  const hd = rows / heads;
  const half = hd / 2;
  const src = new Int32Array(rows);
  for (let h = 0; h < heads; h++) for (let k = 0; k < half; k++) for (let tt = 0; tt < 2; tt++) src[h * hd + 2 * k + tt] = h * hd + tt * half + k;
  return src;
}

/** The inverse of permuteRows (GGUF rows → HF rows). */
export function unpermuteRows(rows: number, heads: number): Int32Array {
  const p = permuteRows(rows, heads);
  const inv = new Int32Array(rows);
  for (let r = 0; r < rows; r++) inv[p[r]] = r;
  return inv;
}

/** Rows of a [rows, cols] f32 matrix gathered: out row r = in row src[r]. */
export function gatherRowsF32(x: Float32Array, cols: number, src: ArrayLike<number>): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < src.length; r++) out.set(x.subarray(src[r] * cols, (src[r] + 1) * cols), r * cols);
  return out;
}

/** Each of the E [a, b] matrices of x transposed to [b, a]. */
export function transposeEach(x: Float32Array, E: number, a: number, b: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let e = 0; e < E; e++) {
    const o = e * a * b;
    for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) out[o + j * a + i] = x[o + i * b + j];
  }
  return out;
}

/** Whether a dtype stores each element on its own (rows of any length can be cut anywhere). */
export function elementwise(d: DType): boolean {
  return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'f64';
}
