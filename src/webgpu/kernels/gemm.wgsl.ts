// The matrix product of passes of many tokens as a tiled GEMM: y[z, rows] = W · x[z / xDiv, cols]
// for z < batch. A workgroup computes a block of `bm` weight rows × `bn` tokens; it walks the
// columns 32 at a time, dequantizing the weight block and copying the activation block into
// workgroup memory once, and each invocation accumulates a `tm` × `tn` register tile of outputs from
// them (rows tm_i = i·(bm/tm) + r, tokens j·(bn/tn) + c, so neighbouring invocations touch
// neighbouring rows in memory). Each output is one f32 sum over the columns in order, of products
// of the dequantized weight (scale · level) and the activation: the same values as the one-row
// kernel of matmul.wgsl.ts up to f32 rounding (that kernel sums 64 strided partial sums and
// multiplies each quantized block's integer dot by its scale), not bit for bit. No routed-expert
// ids (each slot's weight would differ).

import { BYTES, kernelSource } from './common.wgsl';
import { isGpuKQuant, kquantPrelude } from './kquant.wgsl';
import { MATMUL_PARAMS, rowStrideWgsl, type GpuWeightDType } from './matmul.wgsl';

/** A GEMM workgroup: `bm` rows × `bn` tokens, register tiles of `tm` × `tn` per invocation. */
export interface GemmShape {
  bm: number;
  bn: number;
  tm: number;
  tn: number;
}
export const DEFAULT_GEMM: GemmShape = { bm: 64, bn: 32, tm: 4, tn: 4 };
/** The shapes tried in order for a product (see GpuKernels.gemm): large blocks, then smaller ones. */
export const DEFAULT_GEMMS: readonly GemmShape[] = [DEFAULT_GEMM, { bm: 32, bn: 32, tm: 2, tn: 2 }, { bm: 16, bn: 16, tm: 2, tn: 2 }];
/** Fewest workgroups a shape's grid should have before a smaller shape is tried. */
export const GEMM_MIN_WORKGROUPS = 128;
/** Fewest token rows a product runs as a GEMM. */
export const GEMM_MIN_BATCH = 8;
/** Columns per step (one 32-block of the 32-element formats, two units of the 16-element ones). */
export const GEMM_BK = 32;

/** Invocations of a workgroup of this shape. */
export const gemmInvocations = (s: GemmShape) => (s.bm / s.tm) * (s.bn / s.tn);

/** Throws unless the shape tiles evenly and fits a workgroup (32 to 256 invocations, ≤ 64 outputs each, 16 KiB). */
export function checkGemmShape(s: GemmShape): void {
  const ok = [s.bm, s.bn, s.tm, s.tn].every((v) => Number.isInteger(v) && v >= 1) && s.bm % s.tm === 0 && s.bn % s.tn === 0
    && s.tm * s.tn <= 64 && gemmInvocations(s) >= 32 && gemmInvocations(s) <= 256 && GEMM_BK * (s.bm + s.bn + 2) * 4 <= 16384;
  if (!ok) throw new RangeError(`gemm shape ${s.bm}×${s.bn} by ${s.tm}×${s.tn}: bm/tm and bn/tn must be whole, tm·tn ≤ 64, 32 to 256 invocations and bm + bn ≤ 126 (16 KiB of workgroup memory)`);
}

/**
 * Weight loads: `GE` consecutive elements of a row per load (`wload(rowBase, u)`: elements GE·u …
 * GE·u + GE − 1 of the row at rowBase, dequantized). f32 loads one element, zero past the row end.
 */
const LOAD: Record<'f32' | 'q8_0' | 'q4_0' | 'kquant', { ge: number; fn: string }> = {
  f32: {
    ge: 1,
    fn: `fn wload(rowBase: u32, u: u32) -> array<f32, 1> {
  return array<f32, 1>(select(0.0, bitcast<f32>(w[rowBase + u]), u < p.cols));
}`,
  },
  // Block u/4 (34 bytes: f16 scale, 32 int8), quants 8·(u%4) … 8·(u%4) + 7.
  q8_0: {
    ge: 8,
    fn: `fn wload(rowBase: u32, u: u32) -> array<f32, 8> {
  let off = rowBase + (u >> 2u) * 34u;
  let qb = off + 2u + (u & 3u) * 8u;
  let d = wf16(off);
  let h0 = w16(qb); let h1 = w16(qb + 2u); let h2 = w16(qb + 4u); let h3 = w16(qb + 6u);
  return array<f32, 8>(i8lo(h0) * d, i8hi(h0) * d, i8lo(h1) * d, i8hi(h1) * d, i8lo(h2) * d, i8hi(h2) * d, i8lo(h3) * d, i8hi(h3) * d);
}`,
  },
  // Block u/2 (18 bytes: f16 scale, 16 bytes): elements 0…15 are the low nibbles of bytes 0…15,
  // 16…31 the high ones; level − 8.
  q4_0: {
    ge: 16,
    fn: `fn wload(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 1u) * 18u;
  let d = wf16(off);
  let sh = (u & 1u) * 4u;
  var v: array<f32, 16>;
  for (var j = 0u; j < 16u; j += 2u) {
    let h = w16(off + 2u + j);
    v[j] = (f32((h >> sh) & 15u) - 8.0) * d;
    v[j + 1u] = (f32((h >> (8u + sh)) & 15u) - 8.0) * d;
  }
  return v;
}`,
  },
  kquant: { ge: 16, fn: 'fn wload(rowBase: u32, u: u32) -> array<f32, 16> { return wunit(rowBase, u); }' },
};

export function gemmWgsl(dt: GpuWeightDType, s: GemmShape): string {
  checkGemmShape(s);
  const kq = isGpuKQuant(dt);
  const L = kq ? LOAD.kquant : LOAD[dt as 'f32' | 'q8_0' | 'q4_0'];
  const { bm, bn, tm, tn } = s, BK = GEMM_BK, GE = L.ge, WG = gemmInvocations(s), MR = bm / tm, NC = bn / tn;
  // Workgroup rows padded by one word so that the stores of a column step fall in distinct banks.
  const PM = bm + 1, PN = bn + 1;
  const I = [...Array(tm).keys()], J = [...Array(tn).keys()];
  const each = (f: (i: number, j: number) => string) => I.flatMap((i) => J.map((j) => f(i, j))).join('\n');
  const prelude = BYTES + (kq ? kquantPrelude(dt) : '');
  return kernelSource(MATMUL_PARAMS, ['p', 'a', 'w'], prelude + L.fn + `
var<workgroup> ws: array<f32, ${BK * PM}>;
var<workgroup> xs: array<f32, ${BK * PN}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let m0 = (wg.x + wg.y * p.nx) * ${bm}u;
  let z0 = wg.z * ${bn}u;
  if (m0 >= p.rows) { return; }
  let rowStride = ${rowStrideWgsl(dt)};
  let r = li % ${MR}u;
  let c = li / ${MR}u;
${each((i, j) => `  var acc${i}_${j} = 0.0;`)}
  for (var k0 = 0u; k0 < p.cols; k0 += ${BK}u) {
    // Weights: ${bm} rows × ${BK / GE} loads of ${GE}; activations: ${bn} tokens × ${BK} (zero past the ends).
    for (var e = li; e < ${bm * (BK / GE)}u; e += ${WG}u) {
      let m = e / ${BK / GE}u;
      let ku = e % ${BK / GE}u;
      let v = wload(p.wOff + min(m0 + m, p.rows - 1u) * rowStride, k0 / ${GE}u + ku);
      for (var j = 0u; j < ${GE}u; j++) { ws[(ku * ${GE}u + j) * ${PM}u + m] = v[j]; }
    }
    for (var e = li; e < ${bn * BK}u; e += ${WG}u) {
      let n = e / ${BK}u;
      let k = e % ${BK}u;
      let z = z0 + n;
      var v = 0.0;
      if (z < p.batch && k0 + k < p.cols) { v = a[p.xOff + (z / p.xDiv) * p.xStride + k0 + k]; }
      xs[k * ${PN}u + n] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${BK}u; k++) {
${I.map((i) => `      let w${i} = ws[k * ${PM}u + ${i * MR}u + r];`).join('\n')}
${J.map((j) => `      let x${j} = xs[k * ${PN}u + ${j * NC}u + c];`).join('\n')}
${each((i, j) => `      acc${i}_${j} += w${i} * x${j};`)}
    }
    workgroupBarrier();
  }
${each((i, j) => `  { let row = m0 + ${i * MR}u + r; let z = z0 + ${j * NC}u + c; if (row < p.rows && z < p.batch) { a[p.yOff + z * p.yStride + row] = acc${i}_${j}; } }`)}
}
`);
}
