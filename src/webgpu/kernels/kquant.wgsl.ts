// ggml K-quant and related weights (q2_k … q6_k, iq4_nl, iq4_xs, mxfp4, q4_1, q5_0, q5_1; layouts in
// src/formats/kquants.ts) for the kernels of matmul.wgsl.ts, read as raw blocks from the u32 weight
// words. A unit is 16 consecutive elements of a row (a 16-group of the 256-element super-block, or
// half of a 32-block); `wunit(rowBase, u)` returns unit u of the row at byte rowBase as 16 f32
// weights dequantized as ggml's dequantize_row_* does (scale · level, minus the min where the format
// has one), and the kernels multiply them with the f32 activations.
//
// Blocks are 1-byte (mxfp4), 2-byte (q3_k, q6_k, iq4_nl, q5_0) or 4-byte aligned (the others: their block
// size is a multiple of 4, and so are row and expert strides); w32 reads 4 bytes at any offset.

import { KQUANT_LAYOUT, KVALUES_IQ4NL, KVALUES_MXFP4 } from '../../formats/kquants';

export type GpuKQuantDType = 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'iq4_nl' | 'iq4_xs' | 'mxfp4' | 'q4_1' | 'q5_0' | 'q5_1';

/** The K-quant dtypes with WGSL kernels (q8_k, an activation format, has none). */
export const GPU_KQUANT_DTYPES: readonly GpuKQuantDType[] = ['q4_k', 'q6_k', 'q5_k', 'iq4_nl', 'iq4_xs', 'mxfp4', 'q3_k', 'q2_k', 'q4_1', 'q5_0', 'q5_1'];

export function isGpuKQuant(d: unknown): d is GpuKQuantDType {
  return typeof d === 'string' && (GPU_KQUANT_DTYPES as readonly string[]).includes(d);
}

/** Elements per unit. */
export const KQ_UNIT = 16;

/** Byte reads at any offset, and the 4-bit grids of iq4_nl / iq4_xs and mxfp4. */
const KQ_BYTES = `
fn wb(byteOff: u32) -> u32 { return (w[byteOff >> 2u] >> ((byteOff & 3u) * 8u)) & 255u; }
fn w32(byteOff: u32) -> u32 {
  let i = byteOff >> 2u;
  let s = (byteOff & 3u) * 8u;
  return select((w[i] >> s) | (w[i + 1u] << (32u - s)), w[i], s == 0u);
}
`;
const table = (name: string, v: readonly number[]) => `var<private> ${name}: array<f32, 16> = array<f32, 16>(${v.map((x) => x.toFixed(1)).join(', ')});\n`;

/** 16 values `f(byteExpr, i)` of the 4 words q0 … q3 (bytes 4k … 4k + 3 in word k), as an array. */
function arr(f: (byte: string, i: number) => string): string {
  const v = [...Array(16).keys()].map((i) => f(`(q${i >> 2} >> ${(i & 3) * 8}u)`, i));
  return `array<f32, 16>(\n    ${v.join(',\n    ')})`;
}

/** The four words at byte b (aligned: blocks of a size that is a multiple of 4), shifted right by sh. */
function words(name: string, b: string, sh: string, aligned: boolean): string {
  const rd = (k: number) => (aligned ? `w[(${b} >> 2u) + ${k}u]` : `w32(${b} + ${4 * k}u)`);
  return [0, 1, 2, 3].map((k) => `let ${name}${k} = ${rd(k)} >> ${sh};`).join(' ');
}

const WUNIT: Record<GpuKQuantDType, string> = {
  // Sub-block sbi = v/2 (32 elements, 6-bit scale and min), half v%2; nibbles of qs[32·(sbi/2) + l].
  q4_k: `
fn scaleMinK4(sb: u32, j: u32) -> vec2u {
  if (j < 4u) { return vec2u(wb(sb + j) & 63u, wb(sb + j + 4u) & 63u); }
  let c = wb(sb + j + 4u);
  return vec2u((c & 15u) | ((wb(sb + j - 4u) >> 6u) << 4u), (c >> 4u) | ((wb(sb + j) >> 6u) << 4u));
}
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 4u) * 144u;
  let v = u & 15u;
  let sbi = v >> 1u;
  let sm = scaleMinK4(off + 4u, sbi);
  let d1 = wf16(off) * f32(sm.x);
  let m1 = wf16(off + 2u) * f32(sm.y);
  let qb = off + 16u + (sbi >> 1u) * 32u + (v & 1u) * 16u;
  ${words('q', 'qb', '((sbi & 1u) * 4u)', true)}
  return ${arr((b) => `d1 * f32(${b} & 15u) - m1`)};
}`,
  // As q4_k, plus the fifth bit: bit sbi of qh[l].
  q5_k: `
fn scaleMinK4(sb: u32, j: u32) -> vec2u {
  if (j < 4u) { return vec2u(wb(sb + j) & 63u, wb(sb + j + 4u) & 63u); }
  let c = wb(sb + j + 4u);
  return vec2u((c & 15u) | ((wb(sb + j - 4u) >> 6u) << 4u), (c >> 4u) | ((wb(sb + j) >> 6u) << 4u));
}
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 4u) * 176u;
  let v = u & 15u;
  let sbi = v >> 1u;
  let sm = scaleMinK4(off + 4u, sbi);
  let d1 = wf16(off) * f32(sm.x);
  let m1 = wf16(off + 2u) * f32(sm.y);
  let qb = off + 48u + (sbi >> 1u) * 32u + (v & 1u) * 16u;
  let hb = off + 16u + (v & 1u) * 16u;
  ${words('q', 'qb', '((sbi & 1u) * 4u)', true)}
  ${words('h', 'hb', 'sbi', true)}
  return ${arr((b) => `d1 * f32((${b} & 15u) | (((${b.replace(/q(\d)/, 'h$1')}) & 1u) << 4u)) - m1`)};
}`,
  // Group v (16 elements, int8 scale v): 128-half n = v/8, quarter g = (v/2)%4, l from 16·(v%2);
  // low 4 bits from ql[64n + 32·(g%2) + l] (high nibble for g ≥ 2), high 2 from qh[32n + l] >> 2g.
  q6_k: `
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 4u) * 210u;
  let v = u & 15u;
  let n = v >> 3u;
  let g = (v >> 1u) & 3u;
  let lh = (v & 1u) * 16u;
  let dl = wf16(off + 208u) * f32(bitcast<i32>(wb(off + 192u + v) << 24u) >> 24u);
  let lb = off + n * 64u + (g & 1u) * 32u + lh;
  let hb = off + 128u + n * 32u + lh;
  ${words('q', 'lb', '((g >> 1u) * 4u)', false)}
  ${words('h', 'hb', '(g * 2u)', false)}
  return ${arr((b) => `dl * f32(i32((${b} & 15u) | (((${b.replace(/q(\d)/, 'h$1')}) & 3u) << 4u)) - 32)`)};
}`,
  // Group v (scale v, 16 × 6-bit): n = v/8, shift j = (v/2)%4, l from 16·(v%2); low 2 bits from
  // qs[32n + l] >> 2j, the third bit 4n + j of hmask[l] (set: level as is, clear: level − 4).
  q3_k: `
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 4u) * 110u;
  let v = u & 15u;
  let n = v >> 3u;
  let j = (v >> 1u) & 3u;
  let lh = (v & 1u) * 16u;
  let lo = (wb(off + 96u + (v & 7u)) >> ((v >> 3u) * 4u)) & 15u;
  let hi = (wb(off + 104u + (v & 3u)) >> ((v >> 2u) * 2u)) & 3u;
  let dl = wf16(off + 108u) * f32(i32(lo | (hi << 4u)) - 32);
  let qb = off + 32u + n * 32u + lh;
  let hb = off + lh;
  ${words('q', 'qb', '(j * 2u)', false)}
  ${words('h', 'hb', '(n * 4u + j)', false)}
  return ${arr((b) => `dl * f32(i32((${b} & 3u) | (((${b.replace(/q(\d)/, 'h$1')}) & 1u) << 2u)) - 4)`)};
}`,
  // Group v (scale byte v: low nibble scale, high nibble min): n = v/8, shift j = (v/2)%4, l from
  // 16·(v%2); 2-bit levels from qs[32n + l] >> 2j.
  q2_k: `
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 4u) * 84u;
  let v = u & 15u;
  let sc = wb(off + v);
  let dl = wf16(off + 80u) * f32(sc & 15u);
  let ml = wf16(off + 82u) * f32(sc >> 4u);
  let qb = off + 16u + (v >> 3u) * 32u + (v & 1u) * 16u;
  ${words('q', 'qb', '(((v >> 1u) & 3u) * 2u)', true)}
  return ${arr((b) => `dl * f32(${b} & 3u) - ml`)};
}`,
  // Sub-block ib = v/2 (6-bit scale: 4 low bits in scales_l, 2 high in scales_h), nibbles of its 16
  // bytes (low for v even, high for v odd) through the iq4_nl grid.
  iq4_xs: `
${table('KV_IQ4NL', KVALUES_IQ4NL)}
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 4u) * 136u;
  let v = u & 15u;
  let ib = v >> 1u;
  let ls = ((wb(off + 4u + (ib >> 1u)) >> ((ib & 1u) * 4u)) & 15u) | (((w16(off + 2u) >> (ib * 2u)) & 3u) << 4u);
  let dl = wf16(off) * f32(i32(ls) - 32);
  let qb = off + 8u + ib * 16u;
  ${words('q', 'qb', '((v & 1u) * 4u)', true)}
  return ${arr((b) => `dl * KV_IQ4NL[${b} & 15u]`)};
}`,
  // Half u%2 of block u/2: low (first 16 elements) or high nibbles of its 16 bytes.
  iq4_nl: `
${table('KV_IQ4NL', KVALUES_IQ4NL)}
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 1u) * 18u;
  let d = wf16(off);
  let qb = off + 2u;
  ${words('q', 'qb', '((u & 1u) * 4u)', false)}
  return ${arr((b) => `d * KV_IQ4NL[${b} & 15u]`)};
}`,
  // As iq4_nl with the e8m0 exponent byte e: scale 2^(e − 128) (e < 2: the subnormals 2^−128, 2^−127).
  mxfp4: `
${table('KV_MXFP4', KVALUES_MXFP4)}
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 1u) * 17u;
  let e = wb(off);
  let d = select(bitcast<f32>((e - 1u) << 23u), bitcast<f32>(0x00200000u << e), e < 2u);
  let qb = off + 1u;
  ${words('q', 'qb', '((u & 1u) * 4u)', false)}
  return ${arr((b) => `d * KV_MXFP4[${b} & 15u]`)};
}`,
  // Half u%2 of block u/2: nibbles as iq4_nl, value d·q + m.
  q4_1: `
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 1u) * 20u;
  let d = wf16(off);
  let m = wf16(off + 2u);
  let qb = off + 4u;
  ${words('q', 'qb', '((u & 1u) * 4u)', true)}
  return ${arr((b) => `d * f32(${b} & 15u) + m`)};
}`,
  // As q4_1 with the fifth bit i of the unit's 16 bits of qh (bits 16·(u%2) …), value d·(q − 16).
  q5_0: `
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 1u) * 22u;
  let d = wf16(off);
  let qh = w32(off + 2u) >> ((u & 1u) * 16u);
  let qb = off + 6u;
  ${words('q', 'qb', '((u & 1u) * 4u)', false)}
  return ${arr((b, i) => `d * f32(i32((${b} & 15u) | (((qh >> ${i}u) & 1u) << 4u)) - 16)`)};
}`,
  // As q5_0 with the min: value d·q + m.
  q5_1: `
fn wunit(rowBase: u32, u: u32) -> array<f32, 16> {
  let off = rowBase + (u >> 1u) * 24u;
  let d = wf16(off);
  let m = wf16(off + 2u);
  let qh = w[(off + 4u) >> 2u] >> ((u & 1u) * 16u);
  let qb = off + 8u;
  ${words('q', 'qb', '((u & 1u) * 4u)', true)}
  return ${arr((b, i) => `d * f32((${b} & 15u) | (((qh >> ${i}u) & 1u) << 4u)) + m`)};
}`,
};

/** The WGSL helpers and `wunit` of a K-quant dtype (after BYTES). */
export function kquantPrelude(dt: GpuKQuantDType): string {
  return KQ_BYTES + WUNIT[dt] + '\n';
}

/** Byte stride of a row of blocks (WGSL expression over p.cols). */
export function kquantRowStride(dt: GpuKQuantDType): string {
  const { block, bytes } = KQUANT_LAYOUT[dt];
  return `(p.cols / ${block}u) * ${bytes}u`;
}

/** Elements per block. */
export function kquantBlock(dt: GpuKQuantDType): number {
  return KQUANT_LAYOUT[dt].block;
}

/** Bytes of a row of `cols` elements. */
export function kquantRowBytes(dt: GpuKQuantDType, cols: number): number {
  const { block, bytes } = KQUANT_LAYOUT[dt];
  return (cols / block) * bytes;
}

const SUM = (w: (k: string) => string, x: (k: string) => string) =>
  `for (var k = 0u; k < 16u; k += 4u) { s += ${[0, 1, 2, 3].map((j) => `${w(`k + ${j}u`)} * ${x(`k + ${j}u`)}`).join(' + ')}; }`;

/** unitDot / UNIT_ELEMS / tailDot of the one-row and per-output kernels. */
export const KQ_UNIT_DOT = `
fn unitDot(rowBase: u32, u: u32, xb: u32) -> f32 {
  let wv = wunit(rowBase, u);
  let xo = xb + u * 16u;
  var s = 0.0;
  ${SUM((k) => `wv[${k}]`, (k) => `a[xo + ${k}]`)}
  return s;
}
const UNIT_ELEMS = 16u;
fn tailDot(rowBase: u32, xb: u32) -> f32 { return 0.0; }`;

/** The tiled kernel's unit: the same products and sums in the same loop form as unitDot. */
export const KQ_TILE_UNIT = {
  elems: KQ_UNIT,
  load: (r: number) => `let w${r} = wunit(rb${r}, u);`,
  x: (t: number) => `let xo${t} = xb${t} + u * 16u; let x${t} = array<f32, 16>(${[...Array(16).keys()].map((j) => `a[xo${t} + ${j}u]`).join(', ')});`,
  dot: (r: number, t: number) => `{ var s = 0.0; ${SUM((k) => `w${r}[${k}]`, (k) => `x${t}[${k}]`)} acc${r}_${t} += s; }`,
};

/** Element i of row r for the embedding kernel. */
export function kquantElem(dt: GpuKQuantDType): string {
  return `fn elem(r: u32, i: u32) -> f32 {
  let wv = wunit(r * ${kquantRowStride(dt)}, i >> 4u);
  return wv[i & 15u];
}`;
}
