// Naive references for the K-quant matrix products: the same integer sums and the same f32
// operations in the same order as assembly/kquant.ts, written element by element from the block
// layouts, so the kernels must match them bit for bit.
import { f16ToF32, quantizeQ8_0 } from '../formats/dtype';
import {
  e8m0Half, KQUANT_LAYOUT, KVALUES_IQ4NL, KVALUES_MXFP4, level5, quantizeKQuant, scaleIQ4XS, scaleMinK4, scaleQ3K, type KQuantDType,
} from '../formats/kquants';

const fr = Math.fround;

/**
 * One weight block decoded to integers: value e = d·sc[e]·q[e] − dmin·m[e] (q4_1 / q5_1: dmin holds
 * their min with the opposite sign, m[e] = −1, so value = d·q + min).
 */
interface IntBlock {
  q: Int32Array;
  sc: Int32Array;
  m: Int32Array;
  d: number;
  dmin: number;
}

const h16 = (b: Uint8Array, o: number) => f16ToF32(b[o] | (b[o + 1] << 8));
const s8 = (v: number) => (v << 24) >> 24;

/** Integer levels, scales and mins of the block of `dtype` at byte o of w. */
export function decodeIntBlock(dtype: KQuantDType, w: Uint8Array, o: number): IntBlock {
  const n = KQUANT_LAYOUT[dtype].block;
  const q = new Int32Array(n), sc = new Int32Array(n), m = new Int32Array(n);
  let d = 0, dmin = 0;
  for (let e = 0; e < n; e++) {
    switch (dtype) {
      case 'q2_k': {
        const g = e >> 4, n2 = g >> 3, j = (g >> 1) & 3;
        q[e] = (w[o + 16 + 32 * n2 + 16 * (g & 1) + (e & 15)] >> (2 * j)) & 3;
        sc[e] = w[o + g] & 15;
        m[e] = w[o + g] >> 4;
        d = h16(w, o + 80);
        dmin = h16(w, o + 82);
        break;
      }
      case 'q3_k': {
        const g = e >> 4, n2 = g >> 3, j = (g >> 1) & 3, l = 16 * (g & 1) + (e & 15);
        q[e] = ((w[o + 32 + 32 * n2 + l] >> (2 * j)) & 3) + (w[o + l] & (1 << (4 * n2 + j)) ? 0 : -4);
        sc[e] = scaleQ3K(w, o + 96, g) - 32;
        d = h16(w, o + 108);
        break;
      }
      case 'q4_k':
      case 'q5_k': {
        const sb = e >> 5, l = e & 31, five = dtype === 'q5_k';
        const byte = w[o + (five ? 48 : 16) + 32 * (sb >> 1) + l];
        q[e] = (sb & 1 ? byte >> 4 : byte & 15) + (five && w[o + 16 + l] & (1 << sb) ? 16 : 0);
        [sc[e], m[e]] = scaleMinK4(w, o + 4, sb);
        d = h16(w, o);
        dmin = h16(w, o + 2);
        break;
      }
      case 'q6_k': {
        const n2 = e >> 7, r = e & 127, c = r >> 5, l = r & 31;
        const lq = w[o + 64 * n2 + l + 32 * (c & 1)];
        q[e] = ((c < 2 ? lq & 15 : lq >> 4) | (((w[o + 128 + 32 * n2 + l] >> (2 * c)) & 3) << 4)) - 32;
        sc[e] = s8(w[o + 192 + 8 * n2 + 2 * c + (l >> 4)]);
        d = h16(w, o + 208);
        break;
      }
      case 'iq4_xs': {
        const ib = e >> 5, j = e & 31, b = w[o + 8 + 16 * ib + (j & 15)];
        q[e] = KVALUES_IQ4NL[j < 16 ? b & 15 : b >> 4];
        sc[e] = scaleIQ4XS(w, o, ib) - 32;
        d = h16(w, o);
        break;
      }
      case 'iq4_nl':
      case 'mxfp4': {
        const nl = dtype === 'iq4_nl', b = w[o + (nl ? 2 : 1) + (e & 15)];
        q[e] = (nl ? KVALUES_IQ4NL : KVALUES_MXFP4)[e < 16 ? b & 15 : b >> 4];
        sc[e] = 1;
        d = nl ? h16(w, o) : e8m0Half(w[o]);
        break;
      }
      case 'q4_1': {
        const b = w[o + 4 + (e & 15)];
        q[e] = e < 16 ? b & 15 : b >> 4;
        sc[e] = 1;
        m[e] = -1;
        d = h16(w, o);
        dmin = h16(w, o + 2);
        break;
      }
      case 'q5_0':
        q[e] = level5(w, o + 2, o + 6, e) - 16;
        sc[e] = 1;
        d = h16(w, o);
        break;
      case 'q5_1':
        q[e] = level5(w, o + 4, o + 8, e);
        sc[e] = 1;
        m[e] = -1;
        d = h16(w, o);
        dmin = h16(w, o + 2);
        break;
      case 'q8_k':
        throw new Error('q8_k weights have no integer path');
    }
  }
  return { q, sc, m, d, dmin };
}

const isSmall = (dtype: KQuantDType) => dtype !== 'q8_k' && KQUANT_LAYOUT[dtype].block === 32;

/** The activations of dtype's integer path: Q8_K blocks, or Q8_0 blocks for the 32-element formats. */
export function quantizeActKRef(dtype: KQuantDType, x: Float32Array, batch: number, cols: number): Uint8Array {
  return isSmall(dtype) ? quantizeQ8_0(x, batch, cols) : quantizeKQuant('q8_k', x, batch, cols);
}

/**
 * Y [batch, rows] of the integer path from weight bytes w and activation blocks xq
 * (quantizeActKRef output), with the kernels' float operations.
 */
export function kmatmulRef(dtype: KQuantDType, w: Uint8Array, xq: Uint8Array, batch: number, rows: number, cols: number): Float32Array {
  const { block, bytes } = KQUANT_LAYOUT[dtype];
  const small = isSmall(dtype);
  const nb = cols / block, xbs = small ? 34 : 292;
  const xdv = new DataView(xq.buffer, xq.byteOffset, xq.byteLength);
  const y = new Float32Array(batch * rows);
  const blocks: IntBlock[][] = [];
  for (let r = 0; r < rows; r++) {
    const row: IntBlock[] = [];
    for (let k = 0; k < nb; k++) row.push(decodeIntBlock(dtype, w, (r * nb + k) * bytes));
    blocks.push(row);
  }
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < batch; b++) {
      let s = 0;
      for (let k = 0; k < nb; k++) {
        const blk = blocks[r][k], xo = (b * nb + k) * xbs;
        const dx = small ? h16(xq, xo) : xdv.getFloat32(xo, true);
        const qo = xo + (small ? 2 : 4);
        let sumi = 0, summ = 0;
        for (let e = 0; e < block; e++) {
          const xv = s8(xq[qo + e]);
          sumi += blk.sc[e] * blk.q[e] * xv;
          summ += blk.m[e] * xv;
        }
        let t: number;
        if (dtype === 'iq4_nl' || dtype === 'q5_0') t = fr(fr(blk.d * dx) * fr(sumi));
        else if (dtype === 'q4_1' || dtype === 'q5_1') t = fr(fr(fr(blk.d * dx) * fr(sumi)) + fr(blk.dmin * fr(dx * fr(-summ))));
        else if (dtype === 'mxfp4') t = fr(fr(dx * blk.d) * fr(sumi));
        else if (dtype === 'q2_k' || dtype === 'q4_k' || dtype === 'q5_k') t = fr(fr(fr(sumi) * fr(blk.d * dx)) - fr(fr(summ) * fr(blk.dmin * dx)));
        else t = fr(fr(sumi) * fr(blk.d * dx));
        s = fr(s + t);
      }
      y[b * rows + r] = s;
    }
  }
  return y;
}
