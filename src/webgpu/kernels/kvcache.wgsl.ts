// Quantized KV caches in `st` (rows of src/kernels/kvcache.ts: per head, ceil(D/32) Q8_0 or Q4_0
// blocks, a row padded to whole words; the same bytes as on WASM, so snapshots move between the
// backends). Kernels bind `st` as u32 words (`stu`) to read and write them as bytes:
// - kvReader(kv): kvAt(h, i), value i of the head whose blocks start at byte h, as q·d (the value
//   the WASM kernels widen it to), and kvHeadBytes(D);
// - kvQuantizeWgsl(kv): the cache append. Row r of the pass (position step.pos + r) is written as
//   one invocation per word of the cache row; each works out its bytes from the block's values
//   (scale d = max|x|/127 for Q8_0, first largest-magnitude value / −8 for Q4_0, as ggml's
//   reference quantizers; round-to-nearest-even f16 scales; Q8_0 rounds x/d half away from zero,
//   Q4_0 takes min(15, trunc(x/d + 8.5))).

import type { KvCacheType } from '../../kernels/kvcache';
import { kernelSource } from './common.wgsl';

export type KvQuantType = Exclude<KvCacheType, 'f32'>;

const BLOCK_BYTES: Record<KvQuantType, number> = { q8_0: 34, q4_0: 18 };

/** Readers of quantized cache rows in `stu` (see the file header). */
export function kvReader(kv: KvQuantType): string {
  const bs = BLOCK_BYTES[kv];
  const value = kv === 'q8_0'
    ? `let q = kvByte(blk + 2u + j);
  return kvScale(blk) * f32(bitcast<i32>(q << 24u) >> 24u);`
    : `let b = kvByte(blk + 2u + (j & 15u));
  return kvScale(blk) * (f32(select(b & 15u, b >> 4u, j >= 16u)) - 8.0);`;
  return `
fn kvByte(b: u32) -> u32 { return (stu[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu; }
fn kvScale(b: u32) -> f32 { return unpack2x16float((stu[b >> 2u] >> ((b & 2u) * 8u)) & 0xffffu).x; }
fn kvHeadBytes(D: u32) -> u32 { return ((D + 31u) / 32u) * ${bs}u; }
fn kvAt(h: u32, i: u32) -> f32 {
  let blk = h + (i >> 5u) * ${bs}u;
  let j = i & 31u;
  ${value}
}
`;
}

export const KV_QUANT_PARAMS = ['heads', 'dim', 'xOff', 'xRow', 'cOff', 'rowWords', 'rows', 'nx'];
const QWG = 64;

/** Round-to-nearest-even f32 → f16 bits (formats/dtype.ts f32ToF16, bit for bit). */
const F32_TO_F16 = `
fn f16Bits(f: f32) -> u32 {
  let x = bitcast<u32>(f);
  let sign = (x >> 16u) & 0x8000u;
  let ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) { return sign | 0x7e00u; }
  if (ax >= 0x47800000u) { return sign | 0x7c00u; }
  if (ax < 0x38800000u) {
    if (ax < 0x33000000u) { return sign; }
    let e = ax >> 23u;
    let mant = (ax & 0x7fffffu) | 0x800000u;
    let shift = 126u - e;
    var q = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u) != 0u)) { q += 1u; }
    return sign | q;
  }
  var h = (ax - 0x38000000u) >> 13u;
  let rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) { h += 1u; }
  return sign | h;
}
`;

/** The cache append into quantized rows: see the file header. Grid [nx, ny, rows] over the row's words. */
export function kvQuantizeWgsl(kv: KvQuantType): string {
  const bs = BLOCK_BYTES[kv];
  const q8 = kv === 'q8_0';
  const byteOf = q8
    ? `let j = ob - 2u;
      if (j >= t) { return 0u; }
      let v = a[x0 + j] * id;
      let m = floor(abs(v)) + select(0.0, 1.0, abs(v) - floor(abs(v)) >= 0.5);
      return u32(i32(select(m, -m, v < 0.0))) & 0xffu;`
    : `let j = ob - 2u;
      var lo = 8u;
      var hi = 8u;
      if (j < t) { lo = min(15u, u32(a[x0 + j] * id + 8.5)); }
      if (j + 16u < t) { hi = min(15u, u32(a[x0 + j + 16u] * id + 8.5)); }
      return lo | (hi << 4u);`;
  const scale = q8
    ? `var amax = 0.0;
  for (var j = 0u; j < t; j++) { amax = max(amax, abs(a[x0 + j])); }
  return amax / 127.0;`
    : `var amax = 0.0;
  var mx = 0.0;
  for (var j = 0u; j < t; j++) {
    let v = a[x0 + j];
    if (amax < abs(v)) { amax = abs(v); mx = v; }
  }
  return mx / -8.0;`;
  return kernelSource(KV_QUANT_PARAMS, ['p', 'a', 'stu', 'step'], F32_TO_F16 + `
// Scale of the block of t values starting at float x0 of a.
fn blockScale(x0: u32, t: u32) -> f32 {
  ${scale}
}

// Byte B of the cache row of pass row r.
fn rowByte(r: u32, B: u32) -> u32 {
  let hb = ((p.dim + 31u) / 32u) * ${bs}u;
  if (B >= p.heads * hb) { return 0u; }
  let h = B / hb;
  let blk = (B % hb) / ${bs}u;
  let ob = (B % hb) % ${bs}u;
  let x0 = p.xOff + r * p.xRow + h * p.dim + blk * 32u;
  let t = min(32u, p.dim - blk * 32u);
  let d = blockScale(x0, t);
  if (ob < 2u) { return (f16Bits(d) >> (ob * 8u)) & 0xffu; }
  var id = 0.0;
  if (d != 0.0) { id = 1.0 / d; }
  ${byteOf}
}

@compute @workgroup_size(${QWG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let w = gid.x + gid.y * p.nx * ${QWG}u;
  let r = gid.z;
  if (w >= p.rowWords || r >= p.rows) { return; }
  let B = w * 4u;
  let word = rowByte(r, B) | (rowByte(r, B + 1u) << 8u) | (rowByte(r, B + 2u) << 16u) | (rowByte(r, B + 3u) << 24u);
  stu[p.cOff + (step.pos + r) * p.rowWords + w] = word;
}
`);
}

export { QWG as KV_QUANT_WG };
