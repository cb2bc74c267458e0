// ggml K-quant and related block formats: byte layouts, dequantizers and reference quantizers.
//
// Super-block formats (256 elements along a row; blocks never span rows):
//   q2_k   84 B: scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), f16 d, f16 dmin
//                value = d·(sc & 15)·q − dmin·(sc >> 4)
//   q3_k  110 B: hmask[32] (high bit), qs[64] (low 2 bits), scales[12] (16 × 6-bit), f16 d
//                value = d·(sc − 32)·(q − 4), q = low2 | high << 2
//   q4_k  144 B: f16 d, f16 dmin, scales[12] (8 × 6-bit scale + 8 × 6-bit min), qs[128] (4-bit)
//                value = d·sc·q − dmin·m
//   q5_k  176 B: f16 d, f16 dmin, scales[12], qh[32] (fifth bit), qs[128] (low 4 bits)
//   q6_k  210 B: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d
//                value = d·sc·(q − 32)
//   q8_k  292 B: f32 d, int8 qs[256], int16 bsums[16] (Σq per 16); value = d·q
//   iq4_xs 136 B: f16 d, u16 scales_h (8 × 2 high bits), scales_l[4] (8 × 4 low bits), qs[128]
//                value = d·(ls − 32)·KVALUES_IQ4NL[q]
// 32-element formats:
//   iq4_nl  18 B: f16 d, qs[16]; byte j holds element j (low nibble) and j + 16 (high nibble)
//                value = d·KVALUES_IQ4NL[q]
//   mxfp4   17 B: e8m0 exponent e, qs[16] (same nibble order); value = 2^(e − 128)·KVALUES_MXFP4[q]
//                (the table holds twice the e2m1 values, the scale half of 2^(e − 127))
// ggml's legacy 32-element formats (byte j of qs holds element j in its low nibble, j + 16 in its high):
//   q4_1    20 B: f16 d, f16 m, qs[16]; value = d·q + m
//   q5_0    22 B: f16 d, qh[4] (u32, bit j the fifth bit of element j), qs[16]; value = d·(q − 16)
//   q5_1    24 B: f16 d, f16 m, qh[4], qs[16]; value = d·q + m
//
// Dequantizers give the same f32 values as ggml's dequantize_row_*: every product and difference
// is rounded to f32 in the same order. Quantizers follow ggml's reference quantizers (no importance
// matrix): every float operation is one f32 operation (no fused multiply-add), in ggml's order.

import { FormatError } from './errors';
import { f16ToF32, f32Bits, f32FromBits, f32ToF16, KQUANT_LAYOUT, type KQuantDType } from './dtype';

export { isKQuant, KQUANT_DTYPES, KQUANT_LAYOUT, type KQuantDType } from './dtype';

/** Elements per super-block (ggml QK_K). */
export const QK_K = 256;

/** ggml type ids of the formats. */
export const KQUANT_GGML_TYPE: Readonly<Record<KQuantDType, number>> = {
  q2_k: 10, q3_k: 11, q4_k: 12, q5_k: 13, q6_k: 14, q8_k: 15, iq4_nl: 20, iq4_xs: 23, mxfp4: 39, q4_1: 3, q5_0: 6, q5_1: 7,
};

/** The non-linear 4-bit grid of iq4_nl / iq4_xs. */
export const KVALUES_IQ4NL: readonly number[] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
/** e2m1 (fp4) values times two, indexed by the 4-bit code (bit 3 is the sign). */
export const KVALUES_MXFP4: readonly number[] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/** 2^(e − 128) as f32 (half the e8m0 scale; e = 0 and 1 give the subnormals 2^−128, 2^−127). */
export function e8m0Half(e: number): number {
  return f32FromBits(e < 2 ? 0x00200000 << e : (e - 1) << 23);
}

const fr = Math.fround;

/** ggml nearest_int: round half to even through the 1.5·2^23 trick (same bits for any input). */
export function nearestInt(v: number): number {
  return (f32Bits(fr(v + 12582912)) & 0x7fffff) - 0x400000;
}

const GROUP_MAX_EPS = fr(1e-15);

function checkCount(dtype: KQuantDType, bytes: Uint8Array, n: number): number {
  const { block, bytes: bb } = KQUANT_LAYOUT[dtype];
  if (!Number.isSafeInteger(n) || n < 0 || n % block !== 0) throw new FormatError(dtype, `element count ${n} is not a multiple of ${block}`);
  const nb = n / block;
  if (bytes.length < nb * bb) throw new FormatError(dtype, `needs ${nb * bb} bytes, got ${bytes.length}`);
  return nb;
}

function checkInput(dtype: KQuantDType, src: Float32Array, rows: number, cols: number, name: string): number {
  const { block, bytes } = KQUANT_LAYOUT[dtype];
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0) {
    throw new FormatError(`tensors["${name}"].shape`, `invalid rows ${rows} / cols ${cols} for ${dtype}`);
  }
  if (cols % block !== 0) throw new FormatError(`tensors["${name}"].shape`, `last dimension ${cols} is not a multiple of ${block}, cannot quantize to ${dtype}`);
  if (src.length !== rows * cols) throw new FormatError(`tensors["${name}"]`, `has ${src.length} values, expected ${rows} × ${cols}`);
  return (src.length / block) * bytes;
}

const h16 = (b: Uint8Array, o: number) => f16ToF32(b[o] | (b[o + 1] << 8));
function put16(b: Uint8Array, o: number, h: number): void {
  b[o] = h & 0xff;
  b[o + 1] = h >>> 8;
}

/** Scale and min j (0–7) of the 12 packed 6-bit scale bytes of q4_k / q5_k at o. */
export function scaleMinK4(b: Uint8Array, o: number, j: number): [number, number] {
  if (j < 4) return [b[o + j] & 63, b[o + j + 4] & 63];
  return [(b[o + j + 4] & 0xf) | ((b[o + j - 4] >> 6) << 4), (b[o + j + 4] >> 4) | ((b[o + j] >> 6) << 4)];
}

/** Scale j (0–15, unsigned 0–63 before the −32 offset) of the 12 packed q3_k scale bytes at o. */
export function scaleQ3K(b: Uint8Array, o: number, j: number): number {
  const lo = j < 8 ? b[o + j] & 0xf : b[o + j - 8] >> 4;
  return lo | (((b[o + 8 + (j % 4)] >> (2 * (j >> 2))) & 3) << 4);
}

/** The 5-bit level of element j (0–31) of a q5_0 / q5_1 block: qh (u32) at qh, nibbles at qs. */
export function level5(b: Uint8Array, qh: number, qs: number, j: number): number {
  const h = b[qh] | (b[qh + 1] << 8) | (b[qh + 2] << 16) | (b[qh + 3] << 24);
  const lo = j < 16 ? b[qs + j] & 0xf : b[qs + j - 16] >> 4;
  return lo | (((h >>> j) & 1) << 4);
}

/** The 6-bit iq4_xs scale of sub-block ib (0–7, unsigned before the −32 offset) of the block at o. */
export function scaleIQ4XS(b: Uint8Array, o: number, ib: number): number {
  return ((b[o + 4 + (ib >> 1)] >> (4 * (ib & 1))) & 0xf) | ((((b[o + 2] | (b[o + 3] << 8)) >> (2 * ib)) & 3) << 4);
}

// ---------------------------------------------------------------------------------------------
// Dequantization

/** Block bytes of `dtype` → `n` f32 values, as ggml's dequantize_row_<dtype>. */
export function dequantizeKQuant(dtype: KQuantDType, bytes: Uint8Array, n: number): Float32Array {
  const nb = checkCount(dtype, bytes, n);
  const y = new Float32Array(n);
  const bb = KQUANT_LAYOUT[dtype].bytes;
  const s8 = (o: number) => (bytes[o] << 24) >> 24;
  for (let i = 0; i < nb; i++) {
    const o = i * bb;
    switch (dtype) {
      case 'q2_k': {
        const d = h16(bytes, o + 80), dmin = h16(bytes, o + 82);
        let yi = i * 256, is = 0;
        for (let n2 = 0; n2 < 2; n2++) {
          const q = o + 16 + 32 * n2;
          for (let j = 0; j < 4; j++) {
            for (let h = 0; h < 2; h++) {
              const sc = bytes[o + is++];
              const dl = fr(d * (sc & 0xf)), ml = fr(dmin * (sc >> 4));
              for (let l = 0; l < 16; l++) y[yi++] = fr(dl * ((bytes[q + 16 * h + l] >> (2 * j)) & 3)) - ml;
            }
          }
        }
        break;
      }
      case 'q3_k': {
        const d = h16(bytes, o + 108);
        let yi = i * 256, is = 0;
        for (let n2 = 0; n2 < 2; n2++) {
          const q = o + 32 + 32 * n2;
          for (let j = 0; j < 4; j++) {
            const m = 1 << (4 * n2 + j);
            for (let h = 0; h < 2; h++) {
              const dl = fr(d * (scaleQ3K(bytes, o + 96, is++) - 32));
              for (let l = 0; l < 16; l++) {
                const k = 16 * h + l;
                y[yi++] = dl * (((bytes[q + k] >> (2 * j)) & 3) - (bytes[o + k] & m ? 0 : 4));
              }
            }
          }
        }
        break;
      }
      case 'q4_k':
      case 'q5_k': {
        const five = dtype === 'q5_k';
        const d = h16(bytes, o), dmin = h16(bytes, o + 2);
        const qs = o + (five ? 48 : 16);
        let yi = i * 256;
        for (let j = 0; j < 4; j++) {
          for (let h = 0; h < 2; h++) {
            const [sc, m] = scaleMinK4(bytes, o + 4, 2 * j + h);
            const d1 = fr(d * sc), m1 = fr(dmin * m);
            for (let l = 0; l < 32; l++) {
              let q = h ? bytes[qs + 32 * j + l] >> 4 : bytes[qs + 32 * j + l] & 0xf;
              if (five && bytes[o + 16 + l] & (1 << (2 * j + h))) q += 16;
              y[yi++] = fr(d1 * q) - m1;
            }
          }
        }
        break;
      }
      case 'q6_k': {
        const d = h16(bytes, o + 208);
        for (let n2 = 0; n2 < 2; n2++) {
          const ql = o + 64 * n2, qh = o + 128 + 32 * n2, sc = o + 192 + 8 * n2, yb = i * 256 + 128 * n2;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4, hb = bytes[qh + l];
            const q1 = ((bytes[ql + l] & 0xf) | ((hb & 3) << 4)) - 32;
            const q2 = ((bytes[ql + l + 32] & 0xf) | (((hb >> 2) & 3) << 4)) - 32;
            const q3 = ((bytes[ql + l] >> 4) | (((hb >> 4) & 3) << 4)) - 32;
            const q4 = ((bytes[ql + l + 32] >> 4) | (((hb >> 6) & 3) << 4)) - 32;
            y[yb + l] = fr(d * s8(sc + is)) * q1;
            y[yb + l + 32] = fr(d * s8(sc + is + 2)) * q2;
            y[yb + l + 64] = fr(d * s8(sc + is + 4)) * q3;
            y[yb + l + 96] = fr(d * s8(sc + is + 6)) * q4;
          }
        }
        break;
      }
      case 'q8_k': {
        const d = new DataView(bytes.buffer, bytes.byteOffset + o, 4).getFloat32(0, true);
        for (let j = 0; j < 256; j++) y[i * 256 + j] = d * s8(o + 4 + j);
        break;
      }
      case 'iq4_nl':
      case 'mxfp4': {
        const nl = dtype === 'iq4_nl';
        const d = nl ? h16(bytes, o) : e8m0Half(bytes[o]);
        const tab = nl ? KVALUES_IQ4NL : KVALUES_MXFP4, qs = o + (nl ? 2 : 1);
        for (let j = 0; j < 16; j++) {
          y[i * 32 + j] = d * tab[bytes[qs + j] & 0xf];
          y[i * 32 + j + 16] = d * tab[bytes[qs + j] >> 4];
        }
        break;
      }
      case 'iq4_xs': {
        const d = h16(bytes, o);
        for (let ib = 0; ib < 8; ib++) {
          const dl = fr(d * (scaleIQ4XS(bytes, o, ib) - 32));
          const qs = o + 8 + 16 * ib, yb = i * 256 + 32 * ib;
          for (let j = 0; j < 16; j++) {
            y[yb + j] = dl * KVALUES_IQ4NL[bytes[qs + j] & 0xf];
            y[yb + j + 16] = dl * KVALUES_IQ4NL[bytes[qs + j] >> 4];
          }
        }
        break;
      }
      case 'q4_1': {
        const d = h16(bytes, o), m = h16(bytes, o + 2);
        for (let j = 0; j < 16; j++) {
          y[i * 32 + j] = fr(d * (bytes[o + 4 + j] & 0xf)) + m;
          y[i * 32 + j + 16] = fr(d * (bytes[o + 4 + j] >> 4)) + m;
        }
        break;
      }
      case 'q5_0': {
        const d = h16(bytes, o);
        for (let j = 0; j < 32; j++) y[i * 32 + j] = d * (level5(bytes, o + 2, o + 6, j) - 16);
        break;
      }
      case 'q5_1': {
        const d = h16(bytes, o), m = h16(bytes, o + 2);
        for (let j = 0; j < 32; j++) y[i * 32 + j] = fr(d * level5(bytes, o + 4, o + 8, j)) + m;
        break;
      }
    }
  }
  return y;
}

// ---------------------------------------------------------------------------------------------
// Reference quantizers. Helpers follow ggml's make_*_quants; L receives the levels.

/** Weighted min/scale fit of n values to levels 0…nmax (ggml make_qkx2_quants); returns [scale, −min]. */
function fitScaleMin(n: number, nmax: number, x: Float32Array, xo: number, w: Float32Array, L: Uint8Array, lo: number, rmin: number, rdelta: number, nstep: number, mad: boolean): [number, number] {
  const Laux = new Uint8Array(n);
  let min = x[xo], max = x[xo];
  let sumW = w[0], sumX = fr(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = fr(sumW + w[i]);
    sumX = fr(sumX + fr(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    return [0, -min];
  }
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let best = 0;
  const err = (dd: number) => (mad ? Math.abs(dd) : fr(dd * dd));
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[xo + i] - min)))));
    L[lo + i] = l;
    best = fr(best + fr(w[i] * err(fr(fr(fr(scale * l) + min) - x[xo + i]))));
  }
  if (nstep < 1) return [scale, -min];
  for (let is = 0; is <= nstep; is++) {
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[xo + i] - min)))));
      Laux[i] = l;
      const wl = fr(w[i] * l);
      sumL = fr(sumL + wl);
      sumL2 = fr(sumL2 + fr(wl * l));
      sumXL = fr(sumXL + fr(wl * x[xo + i]));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let ts = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let tm = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (tm > 0) {
        tm = 0;
        ts = fr(sumXL / sumL2);
      }
      let cur = 0;
      for (let i = 0; i < n; i++) cur = fr(cur + fr(w[i] * err(fr(fr(fr(ts * Laux[i]) + tm) - x[xo + i]))));
      if (cur < best) {
        L.set(Laux, lo);
        best = cur;
        scale = ts;
        min = tm;
      }
    }
  }
  return [scale, -min];
}

/** Signed fit to levels −nmax…nmax−1 with weights x² (ggml make_qx_quants, rmse_type 1); L = level + nmax. */
function fitSymmetric(n: number, nmax: number, x: Float32Array, xo: number, L: Uint8Array, lo: number): number {
  const [amax, max] = absMaxSigned(x, xo, n);
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n);
    return 0;
  }
  const level = (iscale: number, v: number) => Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * v))));
  let iscale = fr(-nmax / max);
  let sumlx = 0, suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i], l = level(iscale, v);
    L[lo + i] = l + nmax;
    const w = fr(v * v);
    sumlx = fr(sumlx + fr(fr(w * v) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  let scale = suml2 ? fr(sumlx / suml2) : 0;
  let best = fr(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(fr(0.1) * is)) / max);
    sumlx = suml2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i], l = level(iscale, v), w = fr(v * v);
      sumlx = fr(sumlx + fr(fr(w * v) * l));
      suml2 = fr(suml2 + fr(fr(w * l) * l));
    }
    if (suml2 > 0 && fr(sumlx * sumlx) > fr(best * suml2)) {
      for (let i = 0; i < n; i++) L[lo + i] = nmax + level(iscale, x[xo + i]);
      scale = fr(sumlx / suml2);
      best = fr(scale * sumlx);
    }
  }
  return scale;
}

/** ggml make_q3_quants with do_rmse: signed levels −nmax…nmax−1 refined one at a time; L = level + nmax. */
function fitQ3(n: number, nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number): number {
  const [amax, max] = absMaxSigned(x, xo, n);
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n);
    return 0;
  }
  const iscale = fr(-nmax / max);
  let sumlx = 0, suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * v))));
    L[lo + i] = l;
    const w = fr(v * v);
    sumlx = fr(sumlx + fr(fr(w * v) * l));
    suml2 = fr(suml2 + fr(fr(w * l) * l));
  }
  for (let itry = 0; itry < 5; itry++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i], w = fr(v * v), li = L[lo + i];
      let slx = fr(sumlx - fr(fr(w * v) * li));
      if (slx > 0) {
        let sl2 = fr(suml2 - fr(fr(w * li) * li));
        const nl = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(fr(v * sl2) / slx))));
        if (nl !== li) {
          slx = fr(slx + fr(fr(w * v) * nl));
          sl2 = fr(sl2 + fr(fr(w * nl) * nl));
          if (sl2 > 0 && fr(fr(slx * slx) * suml2) > fr(fr(sumlx * sumlx) * sl2)) {
            L[lo + i] = nl;
            sumlx = slx;
            suml2 = sl2;
            changed++;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (let i = 0; i < n; i++) L[lo + i] += nmax;
  return suml2 > 0 ? fr(sumlx / suml2) : 0;
}

/** Packs 6-bit scales and mins (8 each) into the 12 q4_k / q5_k scale bytes at o. */
function packScaleMinK4(out: Uint8Array, o: number, ls: number[], lm: number[]): void {
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      out[o + j] = ls[j];
      out[o + j + 4] = lm[j];
    } else {
      out[o + j + 4] = (ls[j] & 0xf) | ((lm[j] & 0xf) << 4);
      out[o + j - 4] |= (ls[j] >> 4) << 6;
      out[o + j] |= (lm[j] >> 4) << 6;
    }
  }
}

/** Four 2-bit levels per byte: byte j/4 + l of each 128-run holds L[j+l], L[j+l+32], L[j+l+64], L[j+l+96]. */
function pack2(out: Uint8Array, o: number, L: ArrayLike<number>): void {
  for (let j = 0; j < 256; j += 128) {
    for (let l = 0; l < 32; l++) out[o + j / 4 + l] = L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6);
  }
}

function quantQ2K(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Uint8Array(256), w = new Float32Array(16);
  const scales = new Float32Array(16), mins = new Float32Array(16);
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 16; j++) {
    for (let l = 0; l < 16; l++) w[l] = Math.abs(x[xo + 16 * j + l]);
    const [s, m] = fitScaleMin(16, 3, x, xo + 16 * j, w, L, 16 * j, fr(-0.5), fr(0.1), 15, true);
    scales[j] = s;
    mins[j] = m;
    if (s > maxScale) maxScale = s;
    if (m > maxMin) maxMin = m;
  }
  if (maxScale > 0) {
    const iscale = fr(15 / maxScale);
    for (let j = 0; j < 16; j++) out[o + j] = nearestInt(fr(iscale * scales[j])) & 0xff;
    put16(out, o + 80, f32ToF16(fr(maxScale / 15)));
  } else {
    for (let j = 0; j < 16; j++) out[o + j] = 0;
    put16(out, o + 80, 0);
  }
  if (maxMin > 0) {
    const iscale = fr(15 / maxMin);
    for (let j = 0; j < 16; j++) out[o + j] |= nearestInt(fr(iscale * mins[j])) << 4;
    put16(out, o + 82, f32ToF16(fr(maxMin / 15)));
  } else {
    put16(out, o + 82, 0);
  }
  const D = h16(out, o + 80), DM = h16(out, o + 82);
  for (let j = 0; j < 16; j++) {
    const d = fr(D * (out[o + j] & 0xf));
    if (!d) continue;
    const dm = fr(DM * (out[o + j] >> 4));
    for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(0, Math.min(3, nearestInt(fr(fr(x[xo + 16 * j + ii] + dm) / d))));
  }
  pack2(out, o + 16, L);
}

function quantQ3K(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Int8Array(256), scales = new Float32Array(16);
  let maxScale = 0, amax = 0;
  for (let j = 0; j < 16; j++) {
    scales[j] = fitQ3(16, 4, x, xo + 16 * j, L, 16 * j);
    const a = Math.abs(scales[j]);
    if (a > amax) {
      amax = a;
      maxScale = scales[j];
    }
  }
  out.fill(0, o + 96, o + 108);
  if (maxScale) {
    const iscale = fr(-32 / maxScale);
    for (let j = 0; j < 16; j++) {
      let l = (nearestInt(fr(iscale * scales[j])) << 24) >> 24;
      l = Math.max(-32, Math.min(31, l)) + 32;
      if (j < 8) out[o + 96 + j] = l & 0xf;
      else out[o + 96 + j - 8] |= (l & 0xf) << 4;
      l >>= 4;
      out[o + 104 + (j % 4)] |= l << (2 * (j >> 2));
    }
    put16(out, o + 108, f32ToF16(fr(1 / iscale)));
  } else {
    put16(out, o + 108, 0);
  }
  const D = h16(out, o + 108);
  for (let j = 0; j < 16; j++) {
    const d = fr(D * (scaleQ3K(out, o + 96, j) - 32));
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-4, Math.min(3, nearestInt(fr(x[xo + 16 * j + ii] / d)))) + 4;
  }
  out.fill(0, o, o + 32);
  let m = 0, hm = 1;
  for (let j = 0; j < 256; j++) {
    if (L[j] > 3) {
      out[o + m] |= hm;
      L[j] -= 4;
    }
    if (++m === 32) {
      m = 0;
      hm <<= 1;
    }
  }
  pack2(out, o + 32, L);
}

function quantQ45K(five: boolean, x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const nmax = five ? 31 : 15;
  const L = new Uint8Array(256), w = new Float32Array(32);
  const scales = new Float32Array(8), mins = new Float32Array(8);
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    const b = xo + 32 * j;
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[b + l] * x[b + l]));
    const avX = fr(Math.sqrt(fr(sumX2 / 32)));
    for (let l = 0; l < 32; l++) w[l] = fr(avX + Math.abs(x[b + l]));
    const [s, m] = five
      ? fitScaleMin(32, 31, x, b, w, L, 32 * j, fr(-0.5), fr(0.1), 15, false)
      : fitScaleMin(32, 15, x, b, w, L, 32 * j, -1, fr(0.1), 20, false);
    scales[j] = s;
    mins[j] = m;
    if (s > maxScale) maxScale = s;
    if (m > maxMin) maxMin = m;
  }
  const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
  const ls: number[] = [], lm: number[] = [];
  for (let j = 0; j < 8; j++) {
    ls.push(Math.min(63, nearestInt(fr(invScale * scales[j])) & 0xff));
    lm.push(Math.min(63, nearestInt(fr(invMin * mins[j])) & 0xff));
  }
  out.fill(0, o + 4, o + 16);
  packScaleMinK4(out, o + 4, ls, lm);
  put16(out, o, f32ToF16(fr(maxScale / 63)));
  put16(out, o + 2, f32ToF16(fr(maxMin / 63)));
  const D = h16(out, o), DM = h16(out, o + 2);
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(out, o + 4, j);
    const d = fr(D * sc);
    if (!d) continue;
    const dm = fr(DM * m);
    for (let ii = 0; ii < 32; ii++) L[32 * j + ii] = Math.max(0, Math.min(nmax, nearestInt(fr(fr(x[xo + 32 * j + ii] + dm) / d))));
  }
  if (!five) {
    for (let j = 0; j < 4; j++) for (let l = 0; l < 32; l++) out[o + 16 + 32 * j + l] = L[64 * j + l] | (L[64 * j + l + 32] << 4);
    return;
  }
  out.fill(0, o + 16, o + 48);
  for (let n = 0; n < 4; n++) {
    for (let j = 0; j < 32; j++) {
      let l1 = L[64 * n + j], l2 = L[64 * n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        out[o + 16 + j] |= 1 << (2 * n);
      }
      if (l2 > 15) {
        l2 -= 16;
        out[o + 16 + j] |= 2 << (2 * n);
      }
      out[o + 48 + 32 * n + j] = l1 | (l2 << 4);
    }
  }
}

function quantQ6K(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Uint8Array(256), scales = new Float32Array(16);
  let maxScale = 0, maxAbs = 0;
  for (let ib = 0; ib < 16; ib++) {
    const s = fitSymmetric(16, 32, x, xo + 16 * ib, L, 16 * ib);
    scales[ib] = s;
    if (Math.abs(s) > maxAbs) {
      maxAbs = Math.abs(s);
      maxScale = s;
    }
  }
  out.fill(0, o, o + 210);
  if (maxAbs < GROUP_MAX_EPS) return;
  const iscale = fr(-128 / maxScale);
  put16(out, o + 208, f32ToF16(fr(1 / iscale)));
  for (let ib = 0; ib < 16; ib++) out[o + 192 + ib] = Math.min(127, nearestInt(fr(iscale * scales[ib]))) & 0xff;
  const D = h16(out, o + 208);
  for (let j = 0; j < 16; j++) {
    const d = fr(D * ((out[o + 192 + j] << 24) >> 24));
    if (!d) continue;
    for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-32, Math.min(31, nearestInt(fr(x[xo + 16 * j + ii] / d)))) + 32;
  }
  for (let n = 0; n < 2; n++) {
    const ql = o + 64 * n, qh = o + 128 + 32 * n, j = 128 * n;
    for (let l = 0; l < 32; l++) {
      out[ql + l] = (L[j + l] & 0xf) | ((L[j + l + 64] & 0xf) << 4);
      out[ql + l + 32] = (L[j + l + 32] & 0xf) | ((L[j + l + 96] & 0xf) << 4);
      out[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
    }
  }
}

/** Q8_K of 256 values (ggml quantize_row_q8_K_ref): d = 1/iscale, iscale = −127/max, q = min(127, nearest(iscale·x)). */
function quantQ8K(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const [amax, max] = absMaxSigned(x, xo, 256);
  const dv = new DataView(out.buffer, out.byteOffset + o, 292);
  if (!amax) {
    out.fill(0, o, o + 292);
    return;
  }
  const iscale = fr(-127 / max);
  for (let j = 0; j < 256; j++) out[o + 4 + j] = Math.min(127, nearestInt(fr(iscale * x[xo + j]))) & 0xff;
  for (let j = 0; j < 16; j++) {
    let s = 0;
    for (let i = 0; i < 16; i++) s += (out[o + 4 + 16 * j + i] << 24) >> 24;
    dv.setInt16(260 + 2 * j, s, true);
  }
  dv.setFloat32(0, fr(1 / iscale), true);
}

/** Index of the grid value nearest to v (ties to the upper one), grid sorted ascending (ggml best_index_int8). */
export function bestIndexIQ4(v: number): number {
  const v2 = fr(v + v);
  let idx = 0;
  for (let step = 8; step > 0; step >>= 1) {
    const j = idx + step;
    if (v2 >= KVALUES_IQ4NL[j - 1] + KVALUES_IQ4NL[j]) idx = j;
  }
  return idx;
}

/** Weighted (x²) least-squares scale for the levels chosen at inverse scale id; [Σwqx, Σwq²]. */
function iq4Sums(x: Float32Array, xo: number, id: number, L?: Uint8Array, lo = 0): [number, number] {
  let sumqx = 0, sumq2 = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j], l = bestIndexIQ4(fr(id * v));
    if (L) L[lo + j] = l;
    const q = KVALUES_IQ4NL[l], w = fr(v * v);
    sumqx = fr(sumqx + fr(fr(w * q) * v));
    sumq2 = fr(sumq2 + fr(fr(w * q) * q));
  }
  return [sumqx, sumq2];
}

/** The largest magnitude among x[xo … xo + n) and the value that has it (sign kept, the first on ties). */
function absMaxSigned(x: Float32Array, xo: number, n: number): [number, number] {
  let amax = 0, max = 0;
  for (let j = 0; j < n; j++) {
    const ax = Math.abs(x[xo + j]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + j];
    }
  }
  return [amax, max];
}

/** iq4_nl (ggml quantize_row_iq4_nl_ref: one pass at d = max/−127, then the least-squares d). */
function quantIQ4NL(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Uint8Array(32);
  const [amax, max] = absMaxSigned(x, xo, 32);
  let d = 0;
  if (amax >= GROUP_MAX_EPS) {
    const d0 = fr(max / KVALUES_IQ4NL[0]);
    const [sumqx, sumq2] = iq4Sums(x, xo, fr(1 / d0), L);
    d = sumq2 > 0 ? fr(sumqx / sumq2) : 0;
  }
  put16(out, o, f32ToF16(d));
  for (let j = 0; j < 16; j++) out[o + 2 + j] = L[j] | (L[j + 16] << 4);
}

/** iq4_xs (ggml quantize_row_iq4_xs_ref: per 32 a search over 15 scales, then 6-bit sub-block scales). */
function quantIQ4XS(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Uint8Array(256), scales = new Float32Array(8);
  let maxScale = 0, amaxScale = 0;
  for (let ib = 0; ib < 8; ib++) {
    const xb = xo + 32 * ib;
    const [amax, max] = absMaxSigned(x, xb, 32);
    if (amax < GROUP_MAX_EPS) {
      scales[ib] = 0;
      continue;
    }
    const d0 = fr(-max / KVALUES_IQ4NL[0]);
    let [sumqx, sumq2] = iq4Sums(x, xb, fr(1 / d0));
    let d = sumq2 > 0 ? fr(sumqx / sumq2) : 0;
    let best = fr(d * sumqx);
    for (let itry = -7; itry <= 7; itry++) {
      [sumqx, sumq2] = iq4Sums(x, xb, fr((itry + KVALUES_IQ4NL[0]) / max));
      if (sumq2 > 0 && fr(sumqx * sumqx) > fr(best * sumq2)) {
        d = fr(sumqx / sumq2);
        best = fr(d * sumqx);
      }
    }
    scales[ib] = d;
    if (Math.abs(d) > amaxScale) {
      amaxScale = Math.abs(d);
      maxScale = d;
    }
  }
  out.fill(0, o, o + 8);
  const d = fr(-maxScale / 32);
  put16(out, o, f32ToF16(d));
  const id = d ? fr(1 / d) : 0;
  let sh = 0;
  for (let ib = 0; ib < 8; ib++) {
    let l = Math.max(-32, Math.min(31, nearestInt(fr(id * scales[ib]))));
    const dl = fr(d * l), idl = dl ? fr(1 / dl) : 0;
    for (let j = 0; j < 32; j++) L[32 * ib + j] = bestIndexIQ4(fr(idl * x[xo + 32 * ib + j]));
    l += 32;
    out[o + 4 + (ib >> 1)] |= (l & 0xf) << (4 * (ib & 1));
    sh |= (l >> 4) << (2 * ib);
  }
  put16(out, o + 2, sh);
  for (let i = 0; i < 8; i++) for (let j = 0; j < 16; j++) out[o + 8 + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4);
}

/** mxfp4 (ggml quantize_row_mxfp4_ref): e from ⌊log2 amax⌋ − 2, each value to the nearest grid point (first on ties). */
function quantMXFP4(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) if (amax < Math.abs(x[xo + j])) amax = Math.abs(x[xo + j]);
  const e = amax > 0 ? Math.trunc(fr(fr(Math.floor(fr(Math.log2(amax))) - 2) + 127)) & 0xff : 0;
  const d = e8m0Half(e);
  out[o] = e;
  const best = (v: number) => {
    let bi = 0, be = Math.abs(fr(fr(KVALUES_MXFP4[0] * d) - v));
    for (let i = 1; i < 16; i++) {
      const err = Math.abs(fr(fr(KVALUES_MXFP4[i] * d) - v));
      if (err < be) {
        bi = i;
        be = err;
      }
    }
    return bi;
  };
  for (let j = 0; j < 16; j++) out[o + 1 + j] = best(x[xo + j]) | (best(x[xo + j + 16]) << 4);
}

const FLT_MAX = 3.4028234663852886e38;

/** q4_1 / q5_1 (ggml quantize_row_q4_1_ref / q5_1_ref): d = (max − min)/nmax, m = min, q = trunc((x − min)/d + 0.5). */
function quantMinMax(five: boolean, x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  let min = FLT_MAX, max = -FLT_MAX;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const d = fr(fr(max - min) / (five ? 31 : 15));
  const id = d ? fr(1 / d) : 0;
  put16(out, o, f32ToF16(d));
  put16(out, o + 2, f32ToF16(min));
  const level = (v: number) => {
    const l = Math.trunc(fr(fr(fr(v - min) * id) + 0.5)) & 0xff;
    return five ? l : Math.min(15, l);
  };
  const qs = o + (five ? 8 : 4);
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const l0 = level(x[xo + j]), l1 = level(x[xo + j + 16]);
    out[qs + j] = (l0 & 0xf) | ((l1 & 0xf) << 4);
    qh |= ((l0 & 0x10) >> 4) << j;
    qh |= ((l1 & 0x10) >> 4) << (j + 16);
  }
  if (five) for (let k = 0; k < 4; k++) out[o + 4 + k] = (qh >>> (8 * k)) & 0xff;
}

/** q5_0 (ggml quantize_row_q5_0_ref): d = max/−16 (max: first value of largest magnitude), q = min(31, trunc(x/d + 16.5)). */
function quantQ5_0(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const [, max] = absMaxSigned(x, xo, 32);
  const d = fr(max / -16);
  const id = d ? fr(1 / d) : 0;
  put16(out, o, f32ToF16(d));
  const level = (v: number) => Math.min(31, (Math.trunc(fr(fr(v * id) + 16.5)) << 24) >> 24) & 0xff;
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const l0 = level(x[xo + j]), l1 = level(x[xo + j + 16]);
    out[o + 6 + j] = (l0 & 0xf) | ((l1 & 0xf) << 4);
    qh |= ((l0 & 0x10) >> 4) << j;
    qh |= ((l1 & 0x10) >> 4) << (j + 16);
  }
  for (let k = 0; k < 4; k++) out[o + 2 + k] = (qh >>> (8 * k)) & 0xff;
}

const QUANT: Record<KQuantDType, (x: Float32Array, xo: number, out: Uint8Array, o: number) => void> = {
  q2_k: quantQ2K,
  q3_k: quantQ3K,
  q4_k: (x, xo, out, o) => quantQ45K(false, x, xo, out, o),
  q5_k: (x, xo, out, o) => quantQ45K(true, x, xo, out, o),
  q6_k: quantQ6K,
  q8_k: quantQ8K,
  iq4_nl: quantIQ4NL,
  iq4_xs: quantIQ4XS,
  mxfp4: quantMXFP4,
  q4_1: (x, xo, out, o) => quantMinMax(false, x, xo, out, o),
  q5_0: quantQ5_0,
  q5_1: (x, xo, out, o) => quantMinMax(true, x, xo, out, o),
};

/**
 * f32 [rows, cols] → blocks of `dtype`, as ggml's reference quantizer (quantize_row_<dtype>_ref,
 * no importance matrix). cols must be a multiple of the block size.
 */
export function quantizeKQuant(dtype: KQuantDType, src: Float32Array, rows: number, cols: number, name = 'tensor'): Uint8Array {
  const out = new Uint8Array(checkInput(dtype, src, rows, cols, name));
  const { block, bytes } = KQUANT_LAYOUT[dtype];
  const f = QUANT[dtype];
  for (let b = 0; b < src.length / block; b++) f(src, b * block, out, b * bytes);
  return out;
}
