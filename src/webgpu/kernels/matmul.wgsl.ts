// Matrix–vector products y[z, rows] = W · x[z / xDiv, cols] for f32, Q8_0 and Q4_0 weights, one
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

export type GpuWeightDType = 'f32' | 'q8_0' | 'q4_0';

export const MATMUL_PARAMS = ['rows', 'cols', 'nx', 'wOff', 'xOff', 'xStride', 'yOff', 'yStride', 'useIds', 'idsOff', 'eStride', 'xDiv', 'batch'];
export const MATMUL_WG = 64;

const UNIT: Record<GpuWeightDType, string> = {
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
  f32: 'p.cols',
  q8_0: '(p.cols / 32u) * 34u',
  q4_0: '(p.cols / 32u) * 18u',
};

export function matmulWgsl(dt: GpuWeightDType): string {
  return kernelSource(MATMUL_PARAMS, ['p', 'a', 'w', 'ids'], BYTES + reductions(MATMUL_WG) + UNIT[dt] + `
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
  return kernelSource(MATMUL_PARAMS, ['p', 'a', 'w', 'ids'], BYTES + UNIT[dt] + `
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

/**
 * out[t·cols + i] = dequant(row ids[tokOff + step.pos + t] (or p.row when p.useStep is 0), i) · scale
 * for i < cols, t < the grid's y size (the tokens of the pass).
 */
export const EMBED_PARAMS = ['cols', 'outOff', 'useStep', 'row', 'tokOff', 'scale:f'];
const ELEM: Record<GpuWeightDType, string> = {
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
  return kernelSource(EMBED_PARAMS, ['p', 'a', 'w', 'step', 'ids'], BYTES + ELEM[dt] + `
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
