// The matrix product of passes of many tokens as a tiled GEMM: y[z, rows] = W · x[z / xDiv, cols]
// for z < batch. A workgroup computes a block of `bm` weight rows × `bn` tokens; it walks the
// columns 32 at a time, dequantizing the weight block and copying the activation block into
// workgroup memory once, and each invocation accumulates a `tm` × `tn` register tile of outputs from
// them (rows i·(bm/tm) + r and tokens j·(bn/tn) + c, so neighbouring invocations touch neighbouring
// rows in memory; or, for a vector shape, tm neighbouring rows and tn neighbouring tokens read as
// 4-wide vectors). Each output is one f32 sum over the columns in order, of products
// of the dequantized weight (scale · level) and the activation: the same values as the one-row
// kernel of matmul.wgsl.ts up to f32 rounding (that kernel sums 64 strided partial sums and
// multiplies each quantized block's integer dot by its scale), not bit for bit. No routed-expert
// ids (each slot's weight would differ).
//
// Split over the columns: a product with few row × token blocks (a 1024-row projection of a
// 128-token prompt has 64 of 64 × 32) leaves most of a large GPU idle, so its columns may be cut
// into `splits` ranges of `kLen` (a multiple of 32) that run as workgroups of their own, each
// writing a partial sum to scratch; gemmReduceWgsl then adds the partial sums of an output in range
// order. The columns of one range are still summed in order.

import { BYTES, kernelSource } from './common.wgsl';
import { isGpuKQuant, kquantPrelude } from './kquant.wgsl';
import { MATMUL_PARAMS, rowStrideWgsl, type GpuWeightDType } from './matmul.wgsl';

/**
 * A GEMM workgroup: `bm` rows × `bn` tokens, register tiles of `tm` × `tn` per invocation. `vec`:
 * each invocation takes tm neighbouring rows and tn neighbouring tokens, read from workgroup memory
 * as 4-wide vectors (tm and tn multiples of 4); otherwise rows and tokens bm/tm and bn/tn apart.
 */
export interface GemmShape {
  bm: number;
  bn: number;
  tm: number;
  tn: number;
  vec?: boolean;
}

/** `BMxBNxTMxTN`, with a leading `v` for a vector shape (as gemmName writes it). */
export function parseGemmShape(text: string): GemmShape {
  const vec = text.startsWith('v');
  const [bm, bn, tm, tn] = (vec ? text.slice(1) : text).split('x').map(Number);
  const s: GemmShape = vec ? { bm, bn, tm, tn, vec } : { bm, bn, tm, tn };
  checkGemmShape(s);
  return s;
}

export const gemmShapeName = (s: GemmShape) => `${s.vec ? 'v' : ''}${s.bm}x${s.bn}x${s.tm}x${s.tn}`;
export const DEFAULT_GEMM: GemmShape = { bm: 64, bn: 32, tm: 4, tn: 4, vec: true };
/**
 * The shapes tried in order for a product (see GpuKernels.gemm): large blocks, then smaller ones.
 * On an H100 (309M Llama-style Q8_0 model, 128-token prompt) these vector shapes with columns split
 * towards 512 workgroups ran the prompt 1.43× as fast as scalar shapes without the split.
 */
export const DEFAULT_GEMMS: readonly GemmShape[] = [DEFAULT_GEMM, { bm: 32, bn: 32, tm: 4, tn: 4, vec: true }];
/** Fewest workgroups a shape's grid should have before a smaller shape is tried. */
export const GEMM_MIN_WORKGROUPS = 128;
/** Fewest token rows a product runs as a GEMM. */
export const GEMM_MIN_BATCH = 8;
/** Columns per step (one 32-block of the 32-element formats, two units of the 16-element ones). */
export const GEMM_BK = 32;

/** Fewest workgroups a product should have before its columns are split (see GpuKernels.gemmPlan). */
export const GEMM_SPLIT_TARGET = 512;
/** Fewest column blocks of 32 in one range of a split product. */
export const GEMM_SPLIT_MIN_STEPS = 2;
/** Parameters of the GEMM: the matmul's, then the column range length, the scratch of partial sums, row-block groups and range count. */
export const GEMM_PARAMS = [...MATMUL_PARAMS, 'kLen', 'sOff', 'nzb', 'splits'];
export const GEMM_REDUCE_PARAMS = ['rows', 'batch', 'splits', 'sOff', 'yOff', 'yStride'];
export const GEMM_REDUCE_WG = 64;

/** Invocations of a workgroup of this shape. */
export const gemmInvocations = (s: GemmShape) => (s.bm / s.tm) * (s.bn / s.tn);

/** Throws unless the shape tiles evenly and fits a workgroup (32 to 256 invocations, ≤ 64 outputs each, 16 KiB). */
export function checkGemmShape(s: GemmShape): void {
  const pad = s.vec ? 0 : 2;
  const ok = [s.bm, s.bn, s.tm, s.tn].every((v) => Number.isInteger(v) && v >= 1) && s.bm % s.tm === 0 && s.bn % s.tn === 0
    && s.tm * s.tn <= 64 && gemmInvocations(s) >= 32 && gemmInvocations(s) <= 256 && GEMM_BK * (s.bm + s.bn + pad) * 4 <= 16384
    && (!s.vec || (s.tm % 4 === 0 && s.tn % 4 === 0));
  if (!ok) throw new RangeError(`gemm shape ${gemmShapeName(s)}: bm/tm and bn/tn must be whole, tm·tn ≤ 64, 32 to 256 invocations and bm + bn ≤ ${128 - pad} (16 KiB of workgroup memory)${s.vec ? ', tm and tn multiples of 4' : ''}`);
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
  const { bm, bn, tm, tn } = s, BK = GEMM_BK, GE = L.ge, WG = gemmInvocations(s), MR = bm / tm;
  const I = [...Array(tm).keys()], J = [...Array(tn).keys()];
  const prelude = BYTES + (kq ? kquantPrelude(dt) : '');
  const out = (row: string, z: string, v: string) =>
    `  { let row = m0 + ${row}; let z = z0 + ${z}; if (row < p.rows && z < p.batch) { a[yb + z * ys + row] = ${v}; } }`;
  let decl: string, storeW: string, storeX: string, inner: string, acc: string, writes: string;
  if (s.vec) {
    // Rows r·tm … r·tm + tm − 1 and tokens c·tn … c·tn + tn − 1: tm/4 and tn/4 vector reads per column.
    const VM = bm / 4, VN = bn / 4, Q = [...Array(tm / 4).keys()], Q2 = [...Array(tn / 4).keys()];
    decl = `var<workgroup> ws: array<vec4<f32>, ${BK * VM}>;\nvar<workgroup> xs: array<vec4<f32>, ${BK * VN}>;`;
    storeW = `for (var j = 0u; j < ${GE}u; j++) { ws[(ku * ${GE}u + j) * ${VM}u + (m >> 2u)][m & 3u] = v[j]; }`;
    storeX = `xs[k * ${VN}u + (n >> 2u)][n & 3u] = v;`;
    acc = I.flatMap((i) => Q2.map((q) => `  var acc${i}_${q} = vec4<f32>();`)).join('\n');
    inner = [
      ...Q.map((q) => `      let w${q} = ws[k * ${VM}u + r * ${tm / 4}u + ${q}u];`),
      ...Q2.map((q) => `      let x${q} = xs[k * ${VN}u + c * ${tn / 4}u + ${q}u];`),
      ...I.flatMap((i) => Q2.map((q) => `      acc${i}_${q} += w${i >> 2}[${i & 3}] * x${q};`)),
    ].join('\n');
    writes = I.flatMap((i) => J.map((j) => out(`r * ${tm}u + ${i}u`, `c * ${tn}u + ${j}u`, `acc${i}_${j >> 2}[${j & 3}]`))).join('\n');
  } else {
    // Rows i·(bm/tm) + r and tokens j·(bn/tn) + c; workgroup rows padded by one word so that the
    // stores of a column step fall in distinct banks.
    const PM = bm + 1, PN = bn + 1, NC = bn / tn;
    decl = `var<workgroup> ws: array<f32, ${BK * PM}>;\nvar<workgroup> xs: array<f32, ${BK * PN}>;`;
    storeW = `for (var j = 0u; j < ${GE}u; j++) { ws[(ku * ${GE}u + j) * ${PM}u + m] = v[j]; }`;
    storeX = `xs[k * ${PN}u + n] = v;`;
    acc = I.flatMap((i) => J.map((j) => `  var acc${i}_${j} = 0.0;`)).join('\n');
    inner = [
      ...I.map((i) => `      let w${i} = ws[k * ${PM}u + ${i * MR}u + r];`),
      ...J.map((j) => `      let x${j} = xs[k * ${PN}u + ${j * NC}u + c];`),
      ...I.flatMap((i) => J.map((j) => `      acc${i}_${j} += w${i} * x${j};`)),
    ].join('\n');
    writes = I.flatMap((i) => J.map((j) => out(`${i * MR}u + r`, `${j * NC}u + c`, `acc${i}_${j}`))).join('\n');
  }
  return kernelSource(GEMM_PARAMS, ['p', 'a', 'w'], prelude + L.fn + `
${decl}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let m0 = (wg.x + wg.y * p.nx) * ${bm}u;
  let z0 = (wg.z % p.nzb) * ${bn}u;
  let sp = wg.z / p.nzb;
  if (m0 >= p.rows) { return; }
  let kBeg = sp * p.kLen;
  let kEnd = min(p.cols, kBeg + p.kLen);
  let rowStride = ${rowStrideWgsl(dt)};
  let r = li % ${MR}u;
  let c = li / ${MR}u;
${acc}
  for (var k0 = kBeg; k0 < kEnd; k0 += ${BK}u) {
    // Weights: ${bm} rows × ${BK / GE} loads of ${GE}; activations: ${bn} tokens × ${BK} (zero past the ends).
    for (var e = li; e < ${bm * (BK / GE)}u; e += ${WG}u) {
      let m = e / ${BK / GE}u;
      let ku = e % ${BK / GE}u;
      let v = wload(p.wOff + min(m0 + m, p.rows - 1u) * rowStride, k0 / ${GE}u + ku);
      ${storeW}
    }
    for (var e = li; e < ${bn * BK}u; e += ${WG}u) {
      let n = e / ${BK}u;
      let k = e % ${BK}u;
      let z = z0 + n;
      var v = 0.0;
      if (z < p.batch && k0 + k < kEnd) { v = a[p.xOff + (z / p.xDiv) * p.xStride + k0 + k]; }
      ${storeX}
    }
    workgroupBarrier();
    for (var k = 0u; k < ${BK}u; k++) {
${inner}
    }
    workgroupBarrier();
  }
  // One range writes y; several write their partial sums to scratch (rows × batch per range).
  let split = p.splits > 1u;
  let yb = select(p.yOff, p.sOff + sp * p.batch * p.rows, split);
  let ys = select(p.yStride, p.rows, split);
${writes}
}
`);
}

/** y[z, row] = Σ over ranges s in order of the partial sums a[sOff + (s · batch + z) · rows + row]. */
export const gemmReduceWgsl = kernelSource(GEMM_REDUCE_PARAMS, ['p', 'a'], `
@compute @workgroup_size(${GEMM_REDUCE_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row = gid.x;
  let z = gid.y;
  if (row >= p.rows || z >= p.batch) { return; }
  var acc = 0.0;
  for (var s = 0u; s < p.splits; s++) { acc += a[p.sOff + (s * p.batch + z) * p.rows + row]; }
  a[p.yOff + z * p.yStride + row] = acc;
}
`);
