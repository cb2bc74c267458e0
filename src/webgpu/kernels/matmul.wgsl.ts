// Matrix–vector products y[z, rows] = W · x[z / xDiv, cols] for f32, Q8_0, Q4_0 and K-quant weights
// (q2_k … q6_k, iq4_nl, iq4_xs, mxfp4, q4_1, q5_0, q5_1: units and block reads in kquant.wgsl.ts), one
// workgroup per output row (z: the token, or the routed-expert slot; xDiv: slots per token, so the
// K expert slots of a token read its row). f32 rows of any length: the columns past the last whole
// 4-wide unit are summed by the first invocation. Quantized blocks are dequantized in registers and
// multiplied with the f32 activations; the sum is f32, as in the WASM `exact` path. With useIds the
// weight is expert ids[idsOff + z] of a stack of experts eStride apart (bytes for quantized, words
// for f32), so routing needs no host round trip.
//
// matmulRowsWgsl: the same products with one invocation per output (z = 64·wg.z + invocation, so a
// workgroup's invocations share the weight row), for passes of many tokens. Each invocation keeps
// the 64 partial sums the one-row kernel's invocations would (unit u in partial u mod 64, in
// order) and adds them up in the same tree, so every output is identical to the one-row kernel's;
// there are no workgroup barriers or shared-memory reductions.

import { BYTES, kernelSource, reductions } from './common.wgsl';
import { GPU_KQUANT_DTYPES, isGpuKQuant, KQ_TILE_UNIT, KQ_UNIT_DOT, kquantBlock, kquantElem, kquantPrelude, kquantRowBytes, kquantRowStride, type GpuKQuantDType } from './kquant.wgsl';

export type GpuWeightDType = 'f32' | 'q8_0' | 'q4_0' | GpuKQuantDType;

/** Elements per block of a quantized dtype (1 for f32). */
export function weightBlock(dt: GpuWeightDType): number {
  return dt === 'f32' ? 1 : isGpuKQuant(dt) ? kquantBlock(dt) : 32;
}

/** Distance between rows: words for f32, bytes for quantized blocks. */
export function weightRowStride(dt: GpuWeightDType, cols: number): number {
  if (dt === 'f32') return cols;
  if (dt === 'q8_0') return (cols / 32) * 34;
  if (dt === 'q4_0') return (cols / 32) * 18;
  return kquantRowBytes(dt, cols);
}

/** The helpers every kernel of dtype dt reads its weights with. */
const prelude = (dt: GpuWeightDType) => BYTES + (isGpuKQuant(dt) ? kquantPrelude(dt) : '');
const perK = <T>(f: (dt: GpuKQuantDType) => T) => Object.fromEntries(GPU_KQUANT_DTYPES.map((dt) => [dt, f(dt)])) as Record<GpuKQuantDType, T>;

export const MATMUL_PARAMS = ['rows', 'cols', 'nx', 'wOff', 'xOff', 'xStride', 'yOff', 'yStride', 'useIds', 'idsOff', 'eStride', 'xDiv', 'batch'];
export const MATMUL_WG = 64;

const UNIT: Record<GpuWeightDType, string> = {
  ...perK(() => KQ_UNIT_DOT),
  // 4 f32 elements per unit.
  f32: `
fn unitDot(rowBase: u32, u: u32, xb: u32) -> f32 {
  let o = rowBase + u * 4u;
  let xo = xb + u * 4u;
  return bitcast<f32>(w[o]) * a[xo] + bitcast<f32>(w[o + 1u]) * a[xo + 1u]
       + bitcast<f32>(w[o + 2u]) * a[xo + 2u] + bitcast<f32>(w[o + 3u]) * a[xo + 3u];
}
const UNIT_ELEMS = 4u;
fn tailDot(rowBase: u32, xb: u32) -> f32 {
  var s = 0.0;
  for (var i = (p.cols / 4u) * 4u; i < p.cols; i++) { s += bitcast<f32>(w[rowBase + i]) * a[xb + i]; }
  return s;
}`,
  // 8 quants per unit, 4 units per 34-byte block (f16 scale, 32 int8).
  q8_0: `
fn unitDot(rowBase: u32, u: u32, xb: u32) -> f32 {
  let off = rowBase + (u >> 2u) * 34u;
  let part = u & 3u;
  let qb = off + 2u + part * 8u;
  let xo = xb + u * 8u;
  var s = 0.0;
  for (var j = 0u; j < 8u; j += 2u) {
    let h = w16(qb + j);
    s += i8lo(h) * a[xo + j] + i8hi(h) * a[xo + j + 1u];
  }
  return s * wf16(off);
}
const UNIT_ELEMS = 8u;
fn tailDot(rowBase: u32, xb: u32) -> f32 { return 0.0; }`,
  // 16 values per unit, 2 units per 18-byte block: byte j holds element j (low nibble) and j+16.
  q4_0: `
fn unitDot(rowBase: u32, u: u32, xb: u32) -> f32 {
  let off = rowBase + (u >> 1u) * 18u;
  let part = u & 1u;
  let qb = off + 2u + part * 8u;
  let xo = xb + (u >> 1u) * 32u + part * 8u;
  var s = 0.0;
  for (var j = 0u; j < 8u; j += 2u) {
    let h = w16(qb + j);
    let q0 = f32(h & 15u) - 8.0;
    let q1 = f32((h >> 8u) & 15u) - 8.0;
    let q2 = f32((h >> 4u) & 15u) - 8.0;
    let q3 = f32((h >> 12u) & 15u) - 8.0;
    s += q0 * a[xo + j] + q1 * a[xo + j + 1u] + q2 * a[xo + j + 16u] + q3 * a[xo + j + 17u];
  }
  return s * wf16(off);
}
const UNIT_ELEMS = 16u;
fn tailDot(rowBase: u32, xb: u32) -> f32 { return 0.0; }`,
};

const ROW_STRIDE: Record<GpuWeightDType, string> = {
  ...perK(kquantRowStride),
  f32: 'p.cols',
  q8_0: '(p.cols / 32u) * 34u',
  q4_0: '(p.cols / 32u) * 18u',
};

/** The row stride of dtype dt as a WGSL expression over p.cols (words for f32, bytes for blocks). */
export const rowStrideWgsl = (dt: GpuWeightDType): string => ROW_STRIDE[dt];

export function matmulWgsl(dt: GpuWeightDType): string {
  return kernelSource(MATMUL_PARAMS, ['p', 'a', 'w', 'ids'], prelude(dt) + reductions(MATMUL_WG) + UNIT[dt] + `
@compute @workgroup_size(${MATMUL_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wg.x + wg.y * p.nx;
  let z = wg.z;
  if (row >= p.rows) { return; }
  var base = p.wOff;
  if (p.useIds != 0u) { base += ids[p.idsOff + z] * p.eStride; }
  let rowBase = base + row * ${ROW_STRIDE[dt]};
  let xb = p.xOff + (z / p.xDiv) * p.xStride;
  let units = p.cols / UNIT_ELEMS;
  var acc = 0.0;
  for (var u = li; u < units; u += ${MATMUL_WG}u) { acc += unitDot(rowBase, u, xb); }
  if (li == 0u) { acc += tailDot(rowBase, xb); }
  let s = wsum(acc, li);
  if (li == 0u) { a[p.yOff + z * p.yStride + row] = s; }
}
`);
}

export function matmulRowsWgsl(dt: GpuWeightDType): string {
  const WG = MATMUL_WG;
  return kernelSource(MATMUL_PARAMS, ['p', 'a', 'w', 'ids'], prelude(dt) + UNIT[dt] + `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wg.x + wg.y * p.nx;
  let z = wg.z * ${WG}u + li;
  if (row >= p.rows || z >= p.batch) { return; }
  var base = p.wOff;
  if (p.useIds != 0u) { base += ids[p.idsOff + z] * p.eStride; }
  let rowBase = base + row * ${ROW_STRIDE[dt]};
  let xb = p.xOff + (z / p.xDiv) * p.xStride;
  let units = p.cols / UNIT_ELEMS;
  var part: array<f32, ${WG}>;
  for (var l = 0u; l < ${WG}u; l++) { part[l] = 0.0; }
  for (var u = 0u; u < units; u++) { part[u % ${WG}u] += unitDot(rowBase, u, xb); }
  part[0] += tailDot(rowBase, xb);
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    for (var l = 0u; l < s; l++) { part[l] += part[l + s]; }
  }
  a[p.yOff + z * p.yStride + row] = part[0];
}
`);
}

/** Rows × tokens of one workgroup of the tiled T-row product. */
export interface MatmulTile {
  rows: number;
  tokens: number;
}
export const DEFAULT_TILE: MatmulTile = { rows: 4, tokens: 8 };

/**
 * Loads unit `u` of weight row `r` into registers (f32 values `w{r}_{j}`; for quantized blocks the
 * half-words of quants `h{r}` and the scale `d{r}`; for K-quants the 16 weights `w{r}` of
 * kquant.wgsl.ts wunit), and adds the unit's sum for token t to the output's partial as unitDot
 * computes it: same products in the same order, the quantized sums in the same loop form (an
 * unrolled form was contracted differently by llvmpipe).
 */
const TILE_UNIT: Record<GpuWeightDType, { elems: number; load(r: number): string; x(t: number): string; dot(r: number, t: number): string }> = {
  ...perK(() => KQ_TILE_UNIT),
  f32: {
    elems: 4,
    load: (r) => `let o${r} = rb${r} + u * 4u;\n` + [0, 1, 2, 3].map((j) => `let w${r}_${j} = bitcast<f32>(w[o${r} + ${j}u]);`).join(' '),
    x: (t) => `let x${t} = array<f32, 4>(a[xb${t} + u * 4u], a[xb${t} + u * 4u + 1u], a[xb${t} + u * 4u + 2u], a[xb${t} + u * 4u + 3u]);`,
    dot: (r, t) => `acc${r}_${t} += w${r}_0 * x${t}[0] + w${r}_1 * x${t}[1] + w${r}_2 * x${t}[2] + w${r}_3 * x${t}[3];`,
  },
  q8_0: {
    elems: 8,
    load: (r) => `let off${r} = rb${r} + (u >> 2u) * 34u; let qb${r} = off${r} + 2u + (u & 3u) * 8u; let d${r} = wf16(off${r});
let h${r}_0 = w16(qb${r}); let h${r}_1 = w16(qb${r} + 2u); let h${r}_2 = w16(qb${r} + 4u); let h${r}_3 = w16(qb${r} + 6u);
let w${r} = array<f32, 8>(i8lo(h${r}_0), i8hi(h${r}_0), i8lo(h${r}_1), i8hi(h${r}_1), i8lo(h${r}_2), i8hi(h${r}_2), i8lo(h${r}_3), i8hi(h${r}_3));`,
    x: (t) => `let xo${t} = xb${t} + u * 8u; let x${t} = array<f32, 8>(${[...Array(8).keys()].map((j) => `a[xo${t} + ${j}u]`).join(', ')});`,
    dot: (r, t) => `{ var s = 0.0; for (var j = 0u; j < 8u; j += 2u) { s += w${r}[j] * x${t}[j] + w${r}[j + 1u] * x${t}[j + 1u]; } acc${r}_${t} += s * d${r}; }`,
  },
  // Element order in the arrays: for each step j of 0, 2, 4, 6 the unit's elements j, j+1, j+16, j+17.
  q4_0: {
    elems: 16,
    load: (r) => {
      const v = [0, 1, 2, 3].flatMap((k) => [0, 8, 4, 12].map((sh) => `f32((h${r}_${k} >> ${sh}u) & 15u) - 8.0`));
      return `let off${r} = rb${r} + (u >> 1u) * 18u; let qb${r} = off${r} + 2u + (u & 1u) * 8u; let d${r} = wf16(off${r});
let h${r}_0 = w16(qb${r}); let h${r}_1 = w16(qb${r} + 2u); let h${r}_2 = w16(qb${r} + 4u); let h${r}_3 = w16(qb${r} + 6u);
let w${r} = array<f32, 16>(${v.join(', ')});`;
    },
    x: (t) => `let xo${t} = xb${t} + (u >> 1u) * 32u + (u & 1u) * 8u; let x${t} = array<f32, 16>(${[0, 2, 4, 6].flatMap((j) => [j, j + 1, j + 16, j + 17]).map((e) => `a[xo${t} + ${e}u]`).join(', ')});`,
    dot: (r, t) => `{ var s = 0.0; for (var k = 0u; k < 16u; k += 4u) { s += w${r}[k] * x${t}[k] + w${r}[k + 1u] * x${t}[k + 1u] + w${r}[k + 2u] * x${t}[k + 2u] + w${r}[k + 3u] * x${t}[k + 3u]; } acc${r}_${t} += s * d${r}; }`,
  },
};

/**
 * The T-row product tiled: a workgroup of 64 invocations computes `tile.rows` weight rows for
 * `tile.tokens` tokens (a wg.x/wg.y grid of row tiles, wg.z of token tiles), so each weight unit
 * is read and dequantized once for the tile's tokens and each activation unit once for its rows.
 * Invocation l sums units l, l + 64, … of every output of the tile, as invocation l of the one-row
 * kernel does for its one output, and the 64 partial sums of each output are added in the one-row
 * kernel's tree: every output is identical to matmulWgsl's. Rows and tokens past the end are read
 * clamped and not written. No routed-expert ids (each slot's weight would differ).
 */
export function matmulTileWgsl(dt: GpuWeightDType, tile: MatmulTile = DEFAULT_TILE): string {
  const { rows: R, tokens: TT } = tile, RT = R * TT, WG = MATMUL_WG, U = TILE_UNIT[dt];
  const rIdx = [...Array(R).keys()], tIdx = [...Array(TT).keys()];
  const each = (f: (r: number, t: number) => string) => rIdx.flatMap((r) => tIdx.map((t) => f(r, t))).join('\n');
  return kernelSource(MATMUL_PARAMS, ['p', 'a', 'w'], prelude(dt) + `
var<workgroup> red: array<f32, ${WG * RT}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r0 = (wg.x + wg.y * p.nx) * ${R}u;
  let z0 = wg.z * ${TT}u;
  if (r0 >= p.rows) { return; }
  let rowStride = ${ROW_STRIDE[dt]};
${rIdx.map((r) => `  let rb${r} = p.wOff + min(r0 + ${r}u, p.rows - 1u) * rowStride;`).join('\n')}
${tIdx.map((t) => `  let xb${t} = p.xOff + (min(z0 + ${t}u, p.batch - 1u) / p.xDiv) * p.xStride;`).join('\n')}
${each((r, t) => `  var acc${r}_${t} = 0.0;`)}
  let units = p.cols / ${U.elems}u;
  for (var u = li; u < units; u += ${WG}u) {
${rIdx.map((r) => U.load(r)).join('\n')}
${tIdx.map((t) => `${U.x(t)}\n${rIdx.map((r) => U.dot(r, t)).join('\n')}`).join('\n')}
  }
${dt === 'f32' ? `  if (li == 0u) {
${each((r, t) => `    var tail${r}_${t} = 0.0;`)}
    for (var i = units * 4u; i < p.cols; i++) {
${each((r, t) => `      tail${r}_${t} += bitcast<f32>(w[rb${r} + i]) * a[xb${t} + i];`)}
    }
${each((r, t) => `    acc${r}_${t} += tail${r}_${t};`)}
  }` : ''}
${each((r, t) => `  red[${(r * TT + t) * WG}u + li] = acc${r}_${t};`)}
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    for (var i = li; i < ${RT}u * s; i += ${WG}u) {
      let o = i / s;
      let l = i - o * s;
      red[o * ${WG}u + l] += red[o * ${WG}u + l + s];
    }
    workgroupBarrier();
  }
  if (li < ${RT}u) {
    let row = r0 + li / ${TT}u;
    let z = z0 + li % ${TT}u;
    if (row < p.rows && z < p.batch) { a[p.yOff + z * p.yStride + row] = red[li * ${WG}u]; }
  }
}
`);
}

/**
 * out[t·cols + i] = dequant(row ids[tokOff + step.pos + t] (or p.row when p.useStep is 0), i) · scale
 * for i < cols, t < the grid's y size (the tokens of the pass).
 */
export const EMBED_PARAMS = ['cols', 'outOff', 'useStep', 'row', 'tokOff', 'scale:f'];
const ELEM: Record<GpuWeightDType, string> = {
  ...perK(kquantElem),
  f32: 'fn elem(r: u32, i: u32) -> f32 { return bitcast<f32>(w[r * p.cols + i]); }',
  q8_0: `fn elem(r: u32, i: u32) -> f32 {
  let off = (r * (p.cols / 32u) + i / 32u) * 34u;
  let b = off + 2u + (i & 31u);
  let h = w16(b & ~1u);
  var q = i8lo(h);
  if ((b & 1u) != 0u) { q = i8hi(h); }
  return q * wf16(off);
}`,
  q4_0: `fn elem(r: u32, i: u32) -> f32 {
  let off = (r * (p.cols / 32u) + i / 32u) * 18u;
  let j = i & 31u;
  let b = off + 2u + (j & 15u);
  let byte = (w16(b & ~1u) >> ((b & 1u) * 8u)) & 255u;
  var q = byte & 15u;
  if (j >= 16u) { q = byte >> 4u; }
  return (f32(q) - 8.0) * wf16(off);
}`,
};
export function embedWgsl(dt: GpuWeightDType): string {
  return kernelSource(EMBED_PARAMS, ['p', 'a', 'w', 'step', 'ids'], prelude(dt) + ELEM[dt] + `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  let t = gid.y;
  if (i >= p.cols) { return; }
  var r = p.row;
  if (p.useStep != 0u) { r = ids[p.tokOff + step.pos + t]; }
  a[p.outOff + t * p.cols + i] = elem(r, i) * p.scale;
}
`);
}
