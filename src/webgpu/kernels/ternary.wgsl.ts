// Ternary (BitNet b1.58) products on WebGPU, the WASM kernels' computation (src/kernels/ternary.ts):
//
// ternaryQuantWgsl: one workgroup per input row: s = 127 / max(max|x|, 1e-5), q = round(x·s)
// (WGSL round is half to even) clamped to [−128, 127], written as f32 to a[qOff + row·qStride + i]
// for i < ceil(cols/64)·64 (0 past cols), and 1/s to a[fOff + row]. WGSL allows f32 division an
// error of 2.5 ulp, so on a device whose division is not correctly rounded s (and with it a q that
// sits on a rounding boundary) may differ from the WASM kernel's; llvmpipe divides exactly.
//
// ternaryMatmulWgsl: one workgroup per (output row, input row): each invocation takes words of the
// packed weight row (a word: 16 weights, byte b of word i of block k holding t[64k + 4i + b + 16j] + 1
// in bits 2j … 2j+1) and sums q·t in f32, exact for integers below 2^24 (|Σ| ≤ 128·cols); the
// workgroup adds the partials and writes f32(Σ) · (a[fOff + z] · scale).

import { kernelSource, reductions } from './common.wgsl';

export const TERNARY_WG = 64;

export const TERNARY_QUANT_PARAMS = ['rows', 'cols', 'colsP', 'xOff', 'xStride', 'qOff', 'qStride', 'fOff'];

export const ternaryQuantWgsl = kernelSource(TERNARY_QUANT_PARAMS, ['p', 'a'], reductions(TERNARY_WG) + `
@compute @workgroup_size(${TERNARY_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = wg.x;
  if (r >= p.rows) { return; }
  let xb = p.xOff + r * p.xStride;
  let qb = p.qOff + r * p.qStride;
  var m = 0.0;
  for (var i = li; i < p.cols; i += ${TERNARY_WG}u) { m = max(m, abs(a[xb + i])); }
  m = max(wmax(m, li), 1e-5);
  let s = 127.0 / m;
  for (var i = li; i < p.colsP; i += ${TERNARY_WG}u) {
    var q = 0.0;
    if (i < p.cols) { q = clamp(round(a[xb + i] * s), -128.0, 127.0); }
    a[qb + i] = q;
  }
  if (li == 0u) { a[p.fOff + r] = 1.0 / s; }
}
`);

export const TERNARY_MATMUL_PARAMS = ['rows', 'words', 'nx', 'wOff', 'qOff', 'qStride', 'fOff', 'yOff', 'yStride', 'scale:f'];

export const ternaryMatmulWgsl = kernelSource(TERNARY_MATMUL_PARAMS, ['p', 'a', 'w'], reductions(TERNARY_WG) + `
@compute @workgroup_size(${TERNARY_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let row = wg.x + wg.y * p.nx;
  let z = wg.z;
  if (row >= p.rows) { return; }
  let wb = p.wOff + row * p.words;
  let qb = p.qOff + z * p.qStride;
  var acc = 0.0;
  for (var u = li; u < p.words; u += ${TERNARY_WG}u) {
    let v = w[wb + u];
    let base = qb + (u >> 2u) * 64u + (u & 3u) * 4u;
    for (var b = 0u; b < 4u; b++) {
      for (var j = 0u; j < 4u; j++) {
        let t = f32((v >> (8u * b + 2u * j)) & 3u) - 1.0;
        acc += t * a[base + b + 16u * j];
      }
    }
  }
  let s = wsum(acc, li);
  if (li == 0u) { a[p.yOff + z * p.yStride + row] = s * (a[p.fOff + z] * p.scale); }
}
`);
