// ggml K-quant and related block formats (src/formats/kquants.ts): sizes through dtype.ts, hand-built
// blocks decoded element by element, exact round trips of values on a format's grid, reference
// quantizer edge cases, and quantize → dequantize error bounds per type.

import { describe, expect, it } from 'vitest';
import { blockBytes, blockSize, f32ToF16, isDType, isQuantized, storedDType, tensorByteSize, toF32 } from '../src/formats/dtype';
import {
  dequantizeKQuant, e8m0Half, KQUANT_DTYPES, KQUANT_GGML_TYPE, KVALUES_IQ4NL, KVALUES_MXFP4, nearestInt, quantizeKQuant, type KQuantDType,
} from '../src/formats/kquants';
import { FormatError } from '../src/formats/errors';
import { rng } from './helpers';

/** Gaussian-ish values (sum of three uniforms), the shape of real weight rows. */
function gauss(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() + r() + r() - 1.5) * scale;
  return a;
}

function put16(b: Uint8Array, o: number, h: number): void {
  b[o] = h & 255;
  b[o + 1] = h >> 8;
}

describe('layouts', () => {
  const want: Record<KQuantDType, [number, number, number]> = {
    q2_k: [256, 84, 10], q3_k: [256, 110, 11], q4_k: [256, 144, 12], q5_k: [256, 176, 13], q6_k: [256, 210, 14],
    q8_k: [256, 292, 15], iq4_nl: [32, 18, 20], iq4_xs: [256, 136, 23], mxfp4: [32, 17, 39],
    q4_1: [32, 20, 3], q5_0: [32, 22, 6], q5_1: [32, 24, 7],
  };
  it.each(KQUANT_DTYPES)('%s: block size, block bytes, ggml id, tensor sizes', (dt) => {
    const [block, bytes, id] = want[dt];
    expect(isDType(dt)).toBe(true);
    expect(isQuantized(dt)).toBe(true);
    expect(blockSize(dt)).toBe(block);
    expect(blockBytes(dt)).toBe(bytes);
    expect(KQUANT_GGML_TYPE[dt]).toBe(id);
    expect(tensorByteSize(dt, [3, 2 * block])).toBe(6 * bytes);
    expect(() => tensorByteSize(dt, [3, block + 16])).toThrow(FormatError);
    expect(quantizeKQuant(dt, new Float32Array(3 * block), 3, block).length).toBe(3 * bytes);
    expect(() => quantizeKQuant(dt, new Float32Array(block + 16), 1, block + 16)).toThrow(FormatError);
    expect(() => dequantizeKQuant(dt, new Uint8Array(bytes - 1), block)).toThrow(FormatError);
  });

  it('a tensor already in a K-quant keeps its format, or is dequantized when it must be f32', () => {
    expect(storedDType('model.layers.0.mlp.up_proj.weight', [64, 256], 'q4_k', 'auto')).toBe('q4_k');
    expect(storedDType('model.layers.0.mlp.up_proj.weight', [64, 256], 'q6_k', 'q8_0')).toBe('q6_k');
    expect(storedDType('model.layers.0.mlp.up_proj.weight', [64, 256], 'q4_k', 'f32')).toBe('f32');
    expect(storedDType('model.norm.weight', [256], 'q4_k', 'auto')).toBe('f32');
  });
});

describe('hand-built blocks', () => {
  it('q4_k: 6-bit scales/mins packed in 12 bytes, nibbles in 32-byte runs', () => {
    // sc = [1, 2, 3, 4, 33, 34, 35, 63], m = [0, 1, 2, 3, 40, 41, 42, 60]; d = 1, dmin = 0.5.
    const sc = [1, 2, 3, 4, 33, 34, 35, 63], m = [0, 1, 2, 3, 40, 41, 42, 60];
    const b = new Uint8Array(144);
    put16(b, 0, 0x3c00);
    put16(b, 2, 0x3800);
    b.set([129, 130, 131, 196, 128, 129, 130, 195, 129, 146, 163, 207], 4);
    for (let i = 0; i < 128; i++) b[16 + i] = (i * 7) & 255;
    const y = dequantizeKQuant('q4_k', b, 256);
    for (let e = 0; e < 256; e++) {
      const sb = e >> 5, byte = b[16 + 32 * (sb >> 1) + (e & 31)];
      const q = sb & 1 ? byte >> 4 : byte & 15;
      expect(y[e], `element ${e}`).toBe(sc[sb] * q - 0.5 * m[sb]);
    }
    // Element 255: sub-block 7, byte 16 + 96 + 31 = qs[127] = 889 & 255 = 121, high nibble 7: 63·7 − 30.
    expect(y[255]).toBe(411);
  });

  it('q5_k: the fifth bit comes from qh bit 2j (low nibbles) / 2j + 1 (high nibbles)', () => {
    const b = new Uint8Array(176);
    put16(b, 0, 0x4000); // d = 2
    put16(b, 2, 0x3c00); // dmin = 1
    b.set([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], 4); // every scale 1, every min 0
    b[16 + 5] = 0b10000001; // element 5 (sub-block 0) and element 7·32 + 5 (sub-block 7) get +16
    b[48 + 5] = 0x3a; // element 5: low nibble 10; element 32 + 5: high nibble 3
    b[48 + 96 + 5] = 0xf0; // element 6·32 + 5: 0; element 7·32 + 5: 15
    const y = dequantizeKQuant('q5_k', b, 256);
    expect([y[5], y[37], y[6 * 32 + 5], y[7 * 32 + 5], y[0]]).toEqual([2 * 26, 2 * 3, 0, 2 * 31, 0]);
  });

  it('q6_k: low nibbles in ql, 2-bit highs in qh, int8 scales per 16', () => {
    const scales = [1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -128];
    const b = new Uint8Array(210);
    for (let i = 0; i < 128; i++) b[i] = (i * 13) & 255;
    for (let i = 0; i < 64; i++) b[128 + i] = (i * 29) & 255;
    scales.forEach((s, i) => { b[192 + i] = s & 255; });
    put16(b, 208, 0x3800); // 0.5
    const y = dequantizeKQuant('q6_k', b, 256);
    expect(y[0]).toBe(0.5 * 1 * -32);
    // Element 200: half 1, quarter 2 (high nibble of ql[64 + 8] = 168 → 10; qh[32 + 8] = 136, bits 4–5 = 0), scale 12.
    expect(y[200]).toBe(0.5 * 13 * (10 - 32));
    // Element 255: half 1, quarter 3, l = 31: ql[64 + 63] = 1651 & 255 = 115 → 7; qh[63] = 1827 & 255 = 35, bits 6–7 = 0; scale 15.
    expect(y[255]).toBe(0.5 * -128 * (7 - 32));
  });

  it('q3_k: signed 6-bit scales, 2 low bits in qs, the high bit in hmask (clear means −4)', () => {
    const b = new Uint8Array(110);
    b.fill(0xff, 0, 32); // every high bit set: q = low bits
    // Scales: j < 8 low nibbles of bytes 0–7, j ≥ 8 high nibbles; 2 high bits per j in bytes 8–11.
    // Scale 0 = 0x21 − 32 = 1 (low 1, high 2 in byte 8 bits 0–1); scale 15 = 0x3f − 32 = 31.
    b[96] = 0x01;
    b[104] = 0x02;
    b[96 + 7] = 0xf0;
    b[96 + 11] = 0xc0;
    b[32] = 0b11100100; // element 0: 0; elements 32, 64, 96 take bits 2–3, 4–5, 6–7 of this byte
    put16(b, 108, 0x4000); // d = 2
    const y = dequantizeKQuant('q3_k', b, 256);
    expect(y[0]).toBe(0);
    expect(y[1]).toBe(0);
    // Element 255: group 15, half 1, shift 6 of qs[32 + 32 + 31] = 0 → 0; with its high bit cleared: −4.
    b[31] = 0x7f;
    expect(dequantizeKQuant('q3_k', b, 256)[255]).toBe(2 * 31 * -4);
    // Scales 1…14 decode to 0x00 − 32 = −32 apart from their nibbles: element 32 (group 2) has q = 1.
    expect(y[32]).toBe(2 * -32 * 1);
  });

  it('q4_1, q5_0, q5_1: nibbles j / j + 16, the fifth bit j of the little-endian u32 qh', () => {
    const b41 = new Uint8Array(20), b50 = new Uint8Array(22), b51 = new Uint8Array(24);
    put16(b41, 0, 0x4000); // d = 2
    put16(b41, 2, 0xbc00); // m = −1
    b41[4 + 3] = 0x5a; // element 3: 10, element 19: 5
    expect([dequantizeKQuant('q4_1', b41, 32)[3], dequantizeKQuant('q4_1', b41, 32)[19], dequantizeKQuant('q4_1', b41, 32)[0]]).toEqual([19, 9, -1]);
    put16(b50, 0, 0x3800); // d = 0.5
    b50[6 + 2] = 0x71; // element 2: 1, element 18: 7
    b50[2] = 0b100; // qh bit 2: element 2 gets +16
    b50[4] = 0b100; // qh bit 18: element 18 gets +16
    b50[5] = 0x80; // qh bit 31: element 31 gets +16
    const y50 = dequantizeKQuant('q5_0', b50, 32);
    expect([y50[2], y50[18], y50[31], y50[0]]).toEqual([0.5 * (17 - 16), 0.5 * (23 - 16), 0.5 * (16 - 16), 0.5 * -16]);
    put16(b51, 0, 0x3c00); // d = 1
    put16(b51, 2, 0x4000); // m = 2
    b51[8 + 15] = 0xf0; // element 15: 0, element 31: 15
    b51[4 + 1] = 0x80; // qh bit 15: element 15 gets +16
    b51[4 + 3] = 0x80; // qh bit 31: element 31 gets +16
    const y51 = dequantizeKQuant('q5_1', b51, 32);
    expect([y51[15], y51[31], y51[0]]).toEqual([18, 33, 2]);
  });

  it('q5_0 / q4_1 / q5_1 quantizers: ggml scales (max/−16, (max − min)/nmax with m = min)', () => {
    const x = Float32Array.from({ length: 32 }, (_, i) => Math.sin(i) * 3);
    x[9] = -5;
    const b50 = quantizeKQuant('q5_0', x, 1, 32);
    expect(b50[0] | (b50[1] << 8)).toBe(f32ToF16(Math.fround(-5 / -16)));
    // x / d + 16.5 = −16 + 16.5 for the extreme: level 0.
    expect(b50[6 + 9] & 15).toBe(0);
    expect((b50[2 + 1] >> 1) & 1).toBe(0);
    let mn = Infinity, mx = -Infinity;
    for (const v of x) { mn = Math.min(mn, v); mx = Math.max(mx, v); }
    for (const [dt, nmax] of [['q4_1', 15], ['q5_1', 31]] as const) {
      const b = quantizeKQuant(dt, x, 1, 32);
      expect(b[0] | (b[1] << 8), dt).toBe(f32ToF16(Math.fround(Math.fround(mx - mn) / nmax)));
      expect(b[2] | (b[3] << 8), dt).toBe(f32ToF16(mn));
    }
  });

  it('q2_k: scale in the low nibble, min in the high nibble, four 2-bit values per byte', () => {
    const b = new Uint8Array(84);
    b[0] = 0x52; // group 0: scale 2, min 5
    b[15] = 0xf1; // group 15: scale 1, min 15
    b[16] = 0b11100100; // element 0: 0, element 32: 1, element 64: 2, element 96: 3
    b[16 + 32 + 31] = 0b11000000; // element 128 + 96 + 31 = 255 (group 15): 3
    put16(b, 80, 0x3c00);
    put16(b, 82, 0x3800);
    const y = dequantizeKQuant('q2_k', b, 256);
    expect(y[0]).toBe(-2.5);
    expect(y[255]).toBe(3 - 7.5);
  });

  it('iq4_nl, iq4_xs and mxfp4 decode through their grids', () => {
    const nl = new Uint8Array(18);
    put16(nl, 0, 0x3800);
    nl[2] = 0xf0; // element 0: grid[0] = −127, element 16: grid[15] = 113
    const y = dequantizeKQuant('iq4_nl', nl, 32);
    expect([y[0], y[16], y[1]]).toEqual([-63.5, 56.5, -63.5]);

    const xs = new Uint8Array(136);
    put16(xs, 0, 0x3c00);
    put16(xs, 2, 0b10 << 14); // sub-block 7: high bits 2
    xs[4 + 3] = 0x50; // sub-block 7: low bits 5 → ls = 37, scale 5; sub-block 6: 0 → −32
    xs[8 + 16 * 7] = 0x8f; // element 224: grid[15] = 113; element 240: grid[8] = 1
    const z = dequantizeKQuant('iq4_xs', xs, 256);
    expect([z[224], z[240], z[192]]).toEqual([5 * 113, 5, -32 * -127]);

    const mx = new Uint8Array(17);
    mx[0] = 130; // 2^(130 − 128) = 4
    mx[1] = 0xd7; // element 0: code 7 = 12 → 48; element 16: code 13 = −6 → −24
    const w = dequantizeKQuant('mxfp4', mx, 32);
    expect([w[0], w[16], w[1]]).toEqual([48, -24, 0]);
    expect([e8m0Half(0), e8m0Half(1), e8m0Half(127), e8m0Half(254)]).toEqual([2 ** -128, 2 ** -127, 0.5, 2 ** 126]);
  });

  it('q8_k: f32 d, int8 values and int16 sums of 16', () => {
    const x = new Float32Array(256);
    for (let j = 0; j < 256; j++) x[j] = (j % 16) - 5;
    x[100] = -20; // max magnitude, negative: iscale = 127/20
    const b = quantizeKQuant('q8_k', x, 1, 256);
    const dv = new DataView(b.buffer);
    expect(dv.getFloat32(0, true)).toBe(Math.fround(1 / Math.fround(-127 / -20)));
    const q = new Int8Array(b.buffer, 4, 256);
    expect(q[100]).toBe(-127);
    expect(q[1]).toBe(nearestInt(Math.fround(Math.fround(127 / 20) * -4)));
    for (let g = 0; g < 16; g++) {
      let s = 0;
      for (let i = 0; i < 16; i++) s += q[16 * g + i];
      expect(dv.getInt16(260 + 2 * g, true)).toBe(s);
    }
    expect(toF32('q8_k', b, 256)[100]).toBe(Math.fround(-127 * dv.getFloat32(0, true)));
  });

  it('nearestInt rounds half to even like ggml', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 126.5].map(nearestInt)).toEqual([0, 2, 2, 0, -2, -2, 2, 126]);
  });
});

describe('reference quantizers', () => {
  it('q4_1, q5_0 and q5_1 reproduce values on their grids exactly (levels 0…15 / −16…15 / 0…31)', () => {
    const g41 = Float32Array.from({ length: 64 }, (_, i) => (i % 16) * 0.25 - 1);
    const g50 = Float32Array.from({ length: 64 }, (_, i) => ((i * 5) % 32 - 16) * 0.25);
    const g51 = Float32Array.from({ length: 64 }, (_, i) => 0.5 + ((i * 7) % 32) * 0.125);
    for (const [dt, x] of [['q4_1', g41], ['q5_0', g50], ['q5_1', g51]] as const) {
      expect(Array.from(dequantizeKQuant(dt, quantizeKQuant(dt, x, 2, 32), 64)), dt).toEqual(Array.from(x));
    }
  });

  it('iq4_nl and mxfp4 reproduce values on their grids exactly', () => {
    const r = rng(3);
    const nl = new Float32Array(64), mx = new Float32Array(64);
    for (let i = 0; i < 64; i++) {
      nl[i] = KVALUES_IQ4NL[Math.floor(r() * 16)] / 128;
      mx[i] = (KVALUES_MXFP4[Math.floor(r() * 16)] / 2) * 0.25;
    }
    nl[0] = -127 / 128;
    mx[0] = 6 * 0.25;
    expect(Array.from(dequantizeKQuant('iq4_nl', quantizeKQuant('iq4_nl', nl, 2, 32), 64))).toEqual(Array.from(nl));
    expect(Array.from(dequantizeKQuant('mxfp4', quantizeKQuant('mxfp4', mx, 2, 32), 64))).toEqual(Array.from(mx));
  });

  it.each(KQUANT_DTYPES)('%s: zeros stay zero, scaled copies stay within the bound', (dt) => {
    const block = blockSize(dt);
    const z = dequantizeKQuant(dt, quantizeKQuant(dt, new Float32Array(2 * block), 1, 2 * block), 2 * block);
    expect(z.every((v) => v === 0)).toBe(true);
    // One outlier per block: the rest of the block shares what the scale leaves.
    const r = rng(11);
    const x = gauss(4 * block, r);
    for (let i = 0; i < 4; i++) x[i * block + 7] = 8;
    const y = dequantizeKQuant(dt, quantizeKQuant(dt, x, 4, block), 4 * block);
    expect(y.every(Number.isFinite)).toBe(true);
    expect(Math.abs(y[7] - 8)).toBeLessThan(8 * 0.3);
  });

  it('iq4_xs: an all-zero super-block stores d = −0 (the scale is −max/32)', () => {
    const b = quantizeKQuant('iq4_xs', new Float32Array(256), 1, 256);
    expect(b[0] | (b[1] << 8)).toBe(f32ToF16(-0));
  });

  // [rms error / rms of the data, max error / max magnitude] on 16 rows × 1024 of Gaussian-ish data.
  // Measured: q2_k 0.284/0.291, q3_k 0.143/0.186, q4_k 0.068/0.069, q5_k 0.034/0.036, q6_k 0.017/0.016,
  // q8_k 0.0059/0.0039, iq4_nl 0.076/0.090, iq4_xs 0.073/0.097, mxfp4 0.115/0.175, q4_1 0.075/0.059,
  // q5_0 0.040/0.055, q5_1 0.036/0.029; bounds ≈ 1.3× those.
  const BOUND: Record<KQuantDType, [number, number]> = {
    q2_k: [0.37, 0.38], q3_k: [0.19, 0.25], q4_k: [0.09, 0.09], q5_k: [0.045, 0.047], q6_k: [0.022, 0.02],
    q8_k: [0.008, 0.0052], iq4_nl: [0.1, 0.12], iq4_xs: [0.095, 0.125], mxfp4: [0.15, 0.23],
    q4_1: [0.097, 0.077], q5_0: [0.052, 0.072], q5_1: [0.047, 0.038],
  };
  it.each(KQUANT_DTYPES)('%s round trip error', (dt) => {
    const rows = 16, cols = 1024;
    const x = gauss(rows * cols, rng(dt.length * 7 + 1));
    const y = dequantizeKQuant(dt, quantizeKQuant(dt, x, rows, cols), rows * cols);
    let se = 0, sx = 0, me = 0, mx = 0;
    for (let i = 0; i < x.length; i++) {
      const d = y[i] - x[i];
      se += d * d;
      sx += x[i] * x[i];
      me = Math.max(me, Math.abs(d));
      mx = Math.max(mx, Math.abs(x[i]));
    }
    const rms = Math.sqrt(se / sx), max = me / mx;
    expect(rms, `${dt} rms`).toBeLessThan(BOUND[dt][0]);
    expect(max, `${dt} max`).toBeLessThan(BOUND[dt][1]);
    expect(Array.from(toF32(dt, quantizeKQuant(dt, x, rows, cols), rows * cols))).toEqual(Array.from(y));
  });

  it('more bits give smaller errors: q2_k > q3_k > q4_k > q5_k > q6_k > q8_k', () => {
    const x = gauss(8 * 512, rng(5));
    const err = (dt: KQuantDType) => {
      const y = dequantizeKQuant(dt, quantizeKQuant(dt, x, 8, 512), x.length);
      let s = 0;
      for (let i = 0; i < x.length; i++) s += (y[i] - x[i]) ** 2;
      return s;
    };
    const e = (['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'q8_k'] as const).map(err);
    for (let i = 1; i < e.length; i++) expect(e[i]).toBeLessThan(e[i - 1]);
  });
});
