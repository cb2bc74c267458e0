// Checkpoint formats: half-precision conversions against bit patterns and an independent
// nearest-value reference, ggml Q8_0/Q4_0 against hand-computed blocks and a reference quantizer,
// safetensors and GGUF round trips (memory, temp files, URLs with and without Range), sharded HF
// directories, and malformed files: every truncation, crafted bad fields, and seeded random mutations,
// where only FormatError may come out.

import { ggufFor } from '../src/convert';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../src/generate/sampler';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { concatBytes } from '../src/formats/source';
import {
  BudgetError, ConfigError, FormatError, SparrowError,
  bufferSource, fileSource, urlSource, openSource,
  f32ToF16, f16ToF32, f32ToBF16, bf16ToF32, f16BytesToF32, bf16BytesToF32, f32ToF16Bytes, f32ToBF16Bytes, toF32,
  quantizeQ8_0, dequantizeQ8_0, quantizeQ4_0, dequantizeQ4_0, quantPolicy, storagePolicy, numElements, tensorByteSize,
  parseSafetensors, writeSafetensors, parseGGUF, GGUFWriter, setSparrowMetadata, SPARROW_GGUF_VERSION,
  openCheckpoint,
  type ByteSource, type DType, type GGUFValue,
} from '../src/formats/index';

// ---------------------------------------------------------------------------------------------
// helpers

function randF32(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
const f32Bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];
const fromBits = (b: number) => new Float32Array(new Uint32Array([b]).buffer)[0];

/** Runs fn and returns the FormatError it throws; fails on success or on any other error. */
async function formatError(fn: () => Promise<unknown> | unknown): Promise<FormatError> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof FormatError) return e;
    throw new Error(`expected FormatError, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
  }
  throw new Error('expected FormatError, nothing was thrown');
}

/** Parses with the format's parser and reads every tensor as f32 (the whole read path). */
async function parseAndRead(kind: 'st' | 'gguf', bytes: Uint8Array): Promise<void> {
  const src = bufferSource(bytes, 'fuzz');
  const f = kind === 'st' ? await parseSafetensors(src) : await parseGGUF(src);
  for (const t of f.tensors) {
    const b = await t.source.read(t.byteOffset, t.byteLength);
    toF32(t.dtype, b, numElements(t.shape));
  }
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'sparrow-formats-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe('errors', () => {
  it('are typed, carry a code and name the field', () => {
    const f = new FormatError('safetensors.header.tensors["x"].data_offsets', 'end 1234 beyond file size 1000');
    expect(f).toBeInstanceOf(SparrowError);
    expect(f).toBeInstanceOf(Error);
    expect(f.code).toBe('FORMAT');
    expect(f.field).toBe('safetensors.header.tensors["x"].data_offsets');
    expect(f.message).toBe('safetensors.header.tensors["x"].data_offsets: end 1234 beyond file size 1000');
    expect(new FormatError('a', 'b', 'file.gguf').message).toBe('file.gguf: a: b');
    const c = new ConfigError('config.json', 'not found');
    expect(c).toBeInstanceOf(SparrowError);
    expect([c.code, c.field, c.name]).toEqual(['CONFIG', 'config.json', 'ConfigError']);
    const b = new BudgetError(200 << 20, 128 << 20);
    expect([b.code, b.need, b.budget]).toEqual(['BUDGET', 200 << 20, 128 << 20]);
    expect(b.message).toContain('200.0 MiB');
  });
});

// ---------------------------------------------------------------------------------------------

/** Every non-negative finite f16 value, by bit pattern 0..0x7bff (monotonic). */
const F16_VALUES = (() => {
  const v = new Float64Array(0x7c00);
  for (let h = 0; h < 0x7c00; h++) {
    const e = h >> 10, m = h & 0x3ff;
    v[h] = e === 0 ? m * 2 ** -24 : 2 ** (e - 15) * (1 + m / 1024);
  }
  return v;
})();

/** f16 bits of the nearest f16 to `x` (ties to the even pattern), found by search over all values. */
function refF16(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  let lo = 0, hi = 0x7bff;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (F16_VALUES[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  if (lo === 0x7bff) return sign | lo;
  const dl = a - F16_VALUES[lo], dh = F16_VALUES[lo + 1] - a;
  return sign | (dl < dh ? lo : dh < dl ? lo + 1 : lo % 2 === 0 ? lo : lo + 1);
}

describe('f16 and bf16', () => {
  it('f32 → f16 matches known bit patterns', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.1, 0x2e66], [1 / 3, 0x3555],
      [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00],
      [Infinity, 0x7c00], [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], [2 ** -24, 0x0001], [1023 * 2 ** -24, 0x03ff],
      [2 ** -25, 0x0000], // exactly half the smallest subnormal: tie to even (0)
      [fromBits(f32Bits(2 ** -25) + 1), 0x0001], // just above the tie
      [3 * 2 ** -25, 0x0002], // 1.5 × smallest subnormal: tie between 1 and 2 → 2
      [5 * 2 ** -25, 0x0002], // 2.5 × smallest subnormal: tie between 2 and 3 → 2
      [2 ** -26, 0x0000], [-(2 ** -24), 0x8001],
      [1 + 2 ** -11, 0x3c00], // tie → even mantissa 0
      [1 + 3 * 2 ** -11, 0x3c02], // tie → even mantissa 2
      [1 + 2 ** -11 + 2 ** -20, 0x3c01],
      [2047 * 2 ** -25, 0x0400], // rounds up out of the subnormals into the smallest normal
    ];
    for (const [x, h] of cases) expect([x, f32ToF16(x).toString(16)]).toEqual([x, h.toString(16)]);
    const nan = f32ToF16(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
    // A NaN whose payload sits only in the low bits stays NaN.
    expect(f32ToF16(fromBits(0x7f800001)) & 0x3ff).not.toBe(0);
  });

  it('f16 → f32 is exact for every pattern and round-trips', () => {
    expect(f16ToF32(0x0001)).toBe(2 ** -24);
    expect(f16ToF32(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16ToF32(0x0400)).toBe(2 ** -14);
    expect(f16ToF32(0x7bff)).toBe(65504);
    expect(f16ToF32(0x7c00)).toBe(Infinity);
    expect(f16ToF32(0xfc00)).toBe(-Infinity);
    expect(Object.is(f16ToF32(0x8000), -0)).toBe(true);
    expect(f16ToF32(0x7e00)).toBeNaN();
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      const e = (h >> 10) & 0x1f;
      if (e === 31 && (h & 0x3ff)) {
        expect(v).toBeNaN();
        continue;
      }
      const ref = e === 31 ? Infinity : F16_VALUES[h & 0x7fff];
      if (v !== ((h & 0x8000) ? -ref : ref) || f32ToF16(v) !== h) throw new Error(`f16 ${h.toString(16)}: ${v}`);
    }
  });

  it('f32 → f16 equals the nearest-value reference on random and edge inputs', () => {
    const r = mulberry32(7);
    for (let i = 0; i < 40000; i++) {
      // Random bit patterns over the f16-relevant exponent range, plus exact midpoints.
      const exp = 127 - 27 + Math.floor(r() * 45);
      const bits = ((r() < 0.5 ? 0x80000000 : 0) | (exp << 23) | Math.floor(r() * 0x800000)) >>> 0;
      const x = fromBits(bits);
      if (f32ToF16(x) !== refF16(x)) throw new Error(`${x}: ${f32ToF16(x).toString(16)} vs ${refF16(x).toString(16)}`);
      const h = Math.floor(r() * 0x7bff);
      const mid = (F16_VALUES[h] + F16_VALUES[h + 1]) / 2; // exact in f32 (12 significant bits)
      if (f32ToF16(mid) !== refF16(mid)) throw new Error(`midpoint ${mid}`);
    }
  });

  it('bf16 conversions round to nearest even and keep inf/nan/subnormals', () => {
    expect(f32ToBF16(1)).toBe(0x3f80);
    expect(f32ToBF16(-2)).toBe(0xc000);
    expect(f32ToBF16(Math.PI)).toBe(0x4049);
    expect(f32ToBF16(fromBits(0x3f808000))).toBe(0x3f80); // tie, even stays
    expect(f32ToBF16(fromBits(0x3f818000))).toBe(0x3f82); // tie, odd rounds up
    expect(f32ToBF16(fromBits(0x3f808001))).toBe(0x3f81);
    expect(f32ToBF16(fromBits(0x7f7fffff))).toBe(0x7f80); // max f32 rounds to inf
    expect(f32ToBF16(Infinity)).toBe(0x7f80);
    expect(f32ToBF16(-Infinity)).toBe(0xff80);
    expect(f32ToBF16(fromBits(0x00000001))).toBe(0x0000);
    expect(f32ToBF16(fromBits(0x00018000))).toBe(0x0002); // subnormal tie, odd rounds up
    expect(f32ToBF16(fromBits(0x00008000))).toBe(0x0000); // subnormal tie, even stays
    expect(f32ToBF16(fromBits(0x80010000))).toBe(0x8001);
    expect(f32ToBF16(NaN) & 0x7fc0).toBe(0x7fc0);
    expect(bf16ToF32(f32ToBF16(fromBits(0x7f800001)))).toBeNaN(); // signalling NaN stays NaN
    expect(bf16ToF32(0x3f80)).toBe(1);
    expect(bf16ToF32(0x0001)).toBe(fromBits(0x00010000));
    expect(bf16ToF32(0xff80)).toBe(-Infinity);
    for (let h = 0; h < 65536; h++) {
      const v = bf16ToF32(h);
      if (!Number.isNaN(v) && f32ToBF16(v) !== h) throw new Error(`bf16 ${h.toString(16)}`);
    }
  });

  it('array conversions agree with the scalar ones, also at odd byte offsets', () => {
    const r = mulberry32(3);
    const x = randF32(257, r, 1000);
    x[0] = 2 ** -20; x[1] = -Infinity; x[2] = 70000;
    const h = f32ToF16Bytes(x);
    const b = f32ToBF16Bytes(x);
    const odd = new Uint8Array(h.length + 1);
    odd.set(h, 1);
    const oddB = new Uint8Array(b.length + 1);
    oddB.set(b, 1);
    const fh = f16BytesToF32(odd.subarray(1));
    const fb = bf16BytesToF32(oddB.subarray(1));
    for (let i = 0; i < x.length; i++) {
      expect(h[2 * i] | (h[2 * i + 1] << 8)).toBe(f32ToF16(x[i]));
      expect(b[2 * i] | (b[2 * i + 1] << 8)).toBe(f32ToBF16(x[i]));
      expect(fh[i]).toBe(f16ToF32(f32ToF16(x[i])));
      expect(fb[i]).toBe(bf16ToF32(f32ToBF16(x[i])));
    }
  });
});

// ---------------------------------------------------------------------------------------------

/** ggml's quantize_row_q8_0_ref, written out element by element in f32. */
function refQ8(x: Float32Array): Uint8Array {
  const f = Math.fround;
  const out = new Uint8Array((x.length / 32) * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const d = f(amax / 127);
    const id = d !== 0 ? f(1 / d) : 0;
    dv.setUint16(b * 34, refF16(d), true);
    for (let j = 0; j < 32; j++) {
      const v = f(x[b * 32 + j] * id);
      const q = v >= 0 ? Math.round(v) : -Math.round(-v);
      dv.setInt8(b * 34 + 2 + j, q);
    }
  }
  return out;
}

/** ggml's quantize_row_q4_0_ref, written out element by element in f32. */
function refQ4(x: Float32Array): Uint8Array {
  const f = Math.fround;
  const out = new Uint8Array((x.length / 32) * 18);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[b * 32 + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = f(max / -8);
    const id = d !== 0 ? f(1 / d) : 0;
    dv.setUint16(b * 18, refF16(d), true);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(f(f(x[b * 32 + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(f(f(x[b * 32 + 16 + j] * id) + 8.5)));
      out[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

describe('Q8_0', () => {
  it('quantizes hand-computed blocks to the exact bytes', () => {
    // Block 0: max |x| = 127 → d = 1 (f16 0x3c00), q = roundf(x), halves away from zero.
    // Block 1: max |x| = 254 → d = 2 (f16 0x4000), q = roundf(x / 2).
    // Block 2: all zeros → d = 0, q = 0.
    const x = new Float32Array(96);
    x.set([127, -127, 0.5, -0.5, 1.5, -1.5, 2.4999, 2.5, -2.5, 3, -100.2], 0);
    x.set([-254, 3, 5, -3, 1, 0.9999], 32);
    const q = quantizeQ8_0(x, 1, 96);
    const want = new Uint8Array(102);
    want.set([0x00, 0x3c, 0x7f, 0x81, 0x01, 0xff, 0x02, 0xfe, 0x02, 0x03, 0xfd, 0x03, 0x9c], 0);
    want.set([0x00, 0x40, 0x81, 0x02, 0x03, 0xfe, 0x01, 0x00], 34);
    expect([...q]).toEqual([...want]);
    const back = dequantizeQ8_0(q, 96);
    expect([...back.subarray(0, 11)]).toEqual([127, -127, 1, -1, 2, -2, 2, 3, -3, 3, -100]);
    expect([...back.subarray(32, 38)]).toEqual([-254, 4, 6, -4, 2, 0]);
    expect([...back.subarray(64)].every((v) => v === 0)).toBe(true);
  });

  it('matches the reference quantizer on random rows of many scales', () => {
    const r = mulberry32(11);
    for (const scale of [1e-3, 0.02, 1, 37.5, 3000]) {
      const x = randF32(8 * 96, r, scale);
      for (let i = 0; i < x.length; i += 17) x[i] = Math.fround(x[i] * 3);
      const q = quantizeQ8_0(x, 8, 96);
      expect(q.length).toBe(8 * 3 * 34);
      expect([...q]).toEqual([...refQ8(x)]);
      const y = dequantizeQ8_0(q, x.length);
      for (let b = 0; b < x.length / 32; b++) {
        const d = f16ToF32(q[b * 34] | (q[b * 34 + 1] << 8));
        for (let j = 0; j < 32; j++) {
          const i = b * 32 + j;
          expect(y[i]).toBe(((q[b * 34 + 2 + j] << 24) >> 24) * d);
          // Half a step, plus the f16 rounding of d (2^-11 relative, 2^-25 absolute among the
          // f16 subnormals) over up to 127 steps.
          const dd = Math.max(d * 2 ** -11, 2 ** -25);
          expect(Math.abs(y[i] - x[i])).toBeLessThanOrEqual(d * 0.5 + 128 * dd);
        }
      }
    }
  });

  it('is idempotent: quantizing dequantized values gives the same bytes', () => {
    const r = mulberry32(5);
    for (const scale of [1e-2, 1, 250]) {
      const x = randF32(16 * 128, r, scale);
      const q1 = quantizeQ8_0(x, 16, 128);
      const q2 = quantizeQ8_0(dequantizeQ8_0(q1, x.length), 16, 128);
      expect(q2).toEqual(q1);
    }
  });

  it('rejects rows whose length is not a multiple of 32, naming the tensor', async () => {
    const e = await formatError(() => quantizeQ8_0(new Float32Array(40), 1, 40, 'model.layers.0.mlp.up_proj.weight'));
    expect(e.field).toBe('tensors["model.layers.0.mlp.up_proj.weight"].shape');
    expect(e.message).toContain('40');
    await formatError(() => quantizeQ8_0(new Float32Array(64), 3, 32));
    await formatError(() => dequantizeQ8_0(new Uint8Array(33), 32));
    await formatError(() => dequantizeQ8_0(new Uint8Array(34), 31));
  });
});

describe('Q4_0', () => {
  it('quantizes hand-computed blocks to the exact bytes (low nibble j, high nibble j + 16)', () => {
    // Block 0: max = −8 → d = −8 / −8 = 1 (f16 0x3c00), q = min(15, trunc(x + 8.5)).
    const x = new Float32Array(64);
    x.set([-8, 7, 7.5, -0.5, 0.49, 0.5, -7.6, 6.5], 0);
    x.set([3, -3, 0, 2], 16);
    // Block 1: 8 and −8 tie on |x|; the first wins, so max = 8, d = −1 (f16 0xbc00), q = trunc(−x + 8.5).
    x.set([8, -8, 1, -1], 32);
    const q = quantizeQ4_0(x, 2, 32);
    // q0 = [0, 15, 15 (16 clamped), 8, 8, 9, 0, 15, 8…], q16 = [11, 5, 8, 10, 8…]
    const want = new Uint8Array(36);
    want.set([0x00, 0x3c, 0xb0, 0x5f, 0x8f, 0xa8, 0x88, 0x89, 0x80, 0x8f, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88], 0);
    // q = [0, 15 (16 clamped), 7, 9, 8…]; high nibbles all 8.
    want.set([0x00, 0xbc, 0x80, 0x8f, 0x87, 0x89, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88], 18);
    expect([...q]).toEqual([...want]);
    const back = dequantizeQ4_0(q, 64);
    expect([...back.subarray(0, 8)]).toEqual([-8, 7, 7, 0, 0, 1, -8, 7]);
    expect([...back.subarray(16, 20)]).toEqual([3, -3, 0, 2]);
    expect([...back.subarray(32, 36)]).toEqual([8, -7, 1, -1]);
  });

  it('matches the reference quantizer on random rows, and is idempotent', () => {
    const r = mulberry32(13);
    for (const scale of [1e-3, 1, 900]) {
      const x = randF32(6 * 64, r, scale);
      const q = quantizeQ4_0(x, 6, 64);
      expect([...q]).toEqual([...refQ4(x)]);
      const y = dequantizeQ4_0(q, x.length);
      for (let b = 0; b < x.length / 32; b++) {
        const d = f16ToF32(q[b * 18] | (q[b * 18 + 1] << 8));
        for (let j = 0; j < 16; j++) {
          expect(y[b * 32 + j]).toBe(((q[b * 18 + 2 + j] & 15) - 8) * d);
          expect(y[b * 32 + 16 + j]).toBe(((q[b * 18 + 2 + j] >> 4) - 8) * d);
        }
      }
      expect(quantizeQ4_0(y, 6, 64)).toEqual(q);
    }
  });

  it('rejects rows whose length is not a multiple of 32', async () => {
    const e = await formatError(() => quantizeQ4_0(new Float32Array(48), 1, 48, 'lm_head.weight'));
    expect(e.field).toBe('tensors["lm_head.weight"].shape');
  });
});

describe('quantPolicy', () => {
  it('quantizes matrices and keeps routers, gates, conv kernels and vectors in f32', () => {
    const cases: [string, number[], 'q8_0' | 'q4_0', string][] = [
      ['model.layers.0.self_attn.q_proj.weight', [64, 64], 'q8_0', 'q8_0'],
      ['model.layers.0.self_attn.q_proj.weight', [64, 64], 'q4_0', 'q4_0'],
      ['model.layers.0.mlp.experts.gate_up_proj', [4, 128, 64], 'q4_0', 'q4_0'],
      ['model.layers.0.self_attn.q_proj.weight', [64, 48], 'q8_0', 'f32'],
      ['model.layers.0.input_layernorm.weight', [64], 'q8_0', 'f32'],
      ['model.layers.0.self_attn.q_proj.bias', [64], 'q4_0', 'f32'],
      ['model.layers.0.mixer.A_log', [16], 'q8_0', 'f32'],
      ['model.layers.0.mlp.gate.weight', [8, 64], 'q8_0', 'f32'],
      ['model.layers.0.mlp.gate_proj.weight', [128, 64], 'q8_0', 'q8_0'],
      ['model.layers.0.mlp.router.weight', [8, 64], 'q4_0', 'f32'],
      ['model.layers.0.block_sparse_moe.gate.weight', [8, 64], 'q8_0', 'f32'],
      ['model.layers.0.mlp.shared_expert_gate.weight', [1, 64], 'q8_0', 'f32'],
      ['model.layers.0.mixer.conv1d.weight', [64, 1, 32], 'q8_0', 'f32'],
      ['model.layers.0.conv.conv.weight', [64, 1, 32], 'q8_0', 'f32'],
      ['model.layers.0.conv.in_proj.weight', [192, 64], 'q8_0', 'q8_0'],
      ['model.embed_tokens.weight', [1000, 64], 'q8_0', 'q8_0'],
      ['model.embed_tokens.weight', [1000, 64], 'q4_0', 'q8_0'],
      ['lm_head.weight', [1000, 64], 'q4_0', 'q8_0'],
    ];
    for (const [name, shape, target, want] of cases) expect([name, quantPolicy(name, shape, target)]).toEqual([name, want]);
    expect(storagePolicy('lm_head.weight', [1000, 48], 'f16')).toBe('f16');
    expect(storagePolicy('model.norm.weight', [48], 'bf16')).toBe('f32');
    expect(storagePolicy('model.layers.0.mlp.gate.weight', [8, 64], 'f16')).toBe('f32');
  });
});

// ---------------------------------------------------------------------------------------------

interface T { name: string; dtype: DType; shape: number[]; data: Uint8Array }

function sampleTensors(seed = 1): T[] {
  const r = mulberry32(seed);
  const w = randF32(4 * 64, r);
  const emb = randF32(10 * 32, r);
  const i64 = new BigInt64Array([1n, -2n, 3n, 1n << 40n]);
  return [
    { name: 'model.embed_tokens.weight', dtype: 'f32', shape: [10, 32], data: bytesOf(emb) },
    { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'bf16', shape: [4, 64], data: f32ToBF16Bytes(w) },
    { name: 'model.layers.0.self_attn.o_proj.weight', dtype: 'f16', shape: [2, 3, 32], data: f32ToF16Bytes(randF32(192, r)) },
    { name: 'model.norm.weight', dtype: 'f32', shape: [32], data: bytesOf(randF32(32, r)) },
    { name: 'position_ids', dtype: 'i64', shape: [4], data: bytesOf(i64) },
    { name: 'mask', dtype: 'bool', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
    { name: 'scale', dtype: 'f32', shape: [], data: bytesOf(new Float32Array([0.5])) },
    { name: 'empty', dtype: 'f32', shape: [0, 32], data: new Uint8Array(0) },
  ];
}

const CONFIG = { model_type: 'llama', hidden_size: 32, num_hidden_layers: 1, vocab_size: 10 };

describe('safetensors', () => {
  it('writes and reads back every dtype, shape and the metadata', async () => {
    const ts = sampleTensors();
    const file = writeSafetensors(ts, { format: 'pt', note: 'ünïcode' });
    const hlen = Number(new DataView(file.buffer).getBigUint64(0, true));
    expect((8 + hlen) % 8).toBe(0);
    const st = await parseSafetensors(bufferSource(file, 'x.safetensors'));
    expect(st.metadata).toEqual({ format: 'pt', note: 'ünïcode' });
    expect(st.dataOffset).toBe(8 + hlen);
    expect(st.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(ts.map((t) => [t.name, t.dtype, t.shape]));
    for (const [i, t] of st.tensors.entries()) {
      expect(await t.source.read(t.byteOffset, t.byteLength)).toEqual(ts[i].data);
    }
    const ck = await openCheckpoint(file, { config: CONFIG });
    expect(ck.format).toBe('safetensors');
    expect(await ck.readF32('model.embed_tokens.weight')).toEqual(new Float32Array(ts[0].data.slice().buffer));
    const up = await ck.readF32('model.layers.0.mlp.up_proj.weight');
    expect(up[5]).toBe(bf16ToF32(ts[1].data[10] | (ts[1].data[11] << 8)));
    expect([...(await ck.readF32('position_ids'))]).toEqual([1, -2, 3, 2 ** 40]);
    expect([...(await ck.readF32('mask'))]).toEqual([1, 0, 0, 1]);
    expect([...(await ck.readF32('scale'))]).toEqual([0.5]);
    expect((await ck.readF32('empty')).length).toBe(0);
    const dst = new Uint8Array(ts[3].data.length);
    await ck.readInto('model.norm.weight', dst);
    expect(dst).toEqual(ts[3].data);
    await formatError(() => ck.read('nope'));
    const sum = ts.reduce((a, t) => a + t.data.length, 0);
    expect(ck.totalBytes()).toBe(sum);
    // q8_0: embed [10,32] and up_proj [4,64] quantized, the o_proj [2,3,32] too; the rest as f32 or as stored.
    expect(ck.totalBytes('q8_0')).toBe(10 * 34 + 4 * 2 * 34 + 6 * 34 + 32 * 4 + 32 + 4 + 4 + 0);
    await ck.close();
  });

  it('writer rejects wrong data lengths and unsupported dtypes', async () => {
    await formatError(() => writeSafetensors([{ name: 'a', dtype: 'f32', shape: [3], data: new Uint8Array(8) }]));
    await formatError(() => writeSafetensors([{ name: 'a', dtype: 'q8_0', shape: [32], data: new Uint8Array(34) }]));
  });
});

// ---------------------------------------------------------------------------------------------

const META: [string, GGUFValue, string][] = [
  ['general.architecture', 'llama', 'string'],
  ['t.u8', 200, 'u8'], ['t.i8', -100, 'i8'], ['t.u16', 60000, 'u16'], ['t.i16', -30000, 'i16'],
  ['t.u32', 4000000000, 'u32'], ['t.i32', -2000000000, 'i32'], ['t.f32', 1.5, 'f32'], ['t.bool', true, 'bool'],
  ['t.string', 'héllo ✓', 'string'], ['t.u64', 2n ** 60n, 'u64'], ['t.u64small', 12345, 'u64'], ['t.i64', -(2n ** 62n), 'i64'],
  ['t.f64', Math.PI, 'f64'],
  ['t.arr_str', ['a', 'bb', ''], 'array<string>'], ['t.arr_i32', [1, -2, 3], 'array<i32>'], ['t.arr_f32', [0.25, -1], 'array<f32>'],
  ['t.arr_nested', [[1, 2], [3]], 'array<array<u8>>'], ['t.arr_empty', [], 'array<u8>'], ['t.arr_bool', [true, false], 'array<bool>'],
];

function sampleGGUF(alignment = 32): { w: GGUFWriter; ts: T[]; f: Float32Array } {
  const r = mulberry32(2);
  const f = randF32(4 * 64, r);
  const ts: T[] = [
    { name: 'model.layers.0.self_attn.q_proj.weight', dtype: 'f32', shape: [4, 64], data: bytesOf(f) },
    { name: 'model.layers.0.mlp.up_proj.weight', dtype: 'f16', shape: [3, 32], data: f32ToF16Bytes(randF32(96, r)) },
    { name: 'model.layers.0.mlp.down_proj.weight', dtype: 'bf16', shape: [5], data: f32ToBF16Bytes(randF32(5, r)) },
    { name: 'model.layers.0.q8', dtype: 'q8_0', shape: [4, 64], data: quantizeQ8_0(f, 4, 64) },
    { name: 'model.layers.0.q4', dtype: 'q4_0', shape: [2, 2, 64], data: quantizeQ4_0(f, 4, 64) },
    { name: 'ids', dtype: 'i32', shape: [3], data: bytesOf(new Int32Array([7, -8, 9])) },
  ];
  const w = new GGUFWriter({ alignment });
  for (const [k, v, t] of META) w.set(k, v, t);
  for (const t of ts) w.addTensor(t.name, t.dtype, t.shape, t.data);
  return { w, ts, f };
}

describe('GGUF', () => {
  it('writes and reads back every metadata type and tensor type', async () => {
    for (const alignment of [32, 64]) {
      const { w, ts, f } = sampleGGUF(alignment);
      const file = w.toUint8Array();
      expect(file.length).toBe(w.byteLength);
      const g = await parseGGUF(bufferSource(file, 'x.gguf'));
      expect(g.version).toBe(3);
      expect(g.alignment).toBe(alignment);
      expect(g.dataOffset % alignment).toBe(0);
      for (const [k, v, t] of META) {
        expect([k, g.types[k]]).toEqual([k, t]);
        expect([k, g.metadata[k]]).toEqual([k, v]);
      }
      expect(g.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(ts.map((t) => [t.name, t.dtype, t.shape]));
      for (const [i, t] of g.tensors.entries()) {
        expect((t.byteOffset - g.dataOffset) % alignment).toBe(0);
        expect(await t.source.read(t.byteOffset, t.byteLength)).toEqual(ts[i].data);
      }
      const q8 = g.tensors[3];
      const got = toF32(q8.dtype, await q8.source.read(q8.byteOffset, q8.byteLength), 256);
      expect(got).toEqual(dequantizeQ8_0(quantizeQ8_0(f, 4, 64), 256));
    }
  });

  it('stores dims innermost-first (HF [out, in] → GGUF [in, out])', async () => {
    const w = new GGUFWriter();
    w.addTensor('w', 'f32', [3, 32], new Uint8Array(3 * 32 * 4));
    const file = w.toUint8Array();
    // magic 4 · version 4 · tensor_count 8 · kv_count 8 · name (8 + 1) · n_dims 4 · dims
    const dv = new DataView(file.buffer);
    let o = 24 + 9;
    expect(dv.getUint32(o, true)).toBe(2);
    expect(Number(dv.getBigUint64(o + 4, true))).toBe(32);
    expect(Number(dv.getBigUint64(o + 12, true))).toBe(3);
    o += 20;
    expect(dv.getUint32(o, true)).toBe(0); // F32
    expect((await parseGGUF(bufferSource(file))).tensors[0].shape).toEqual([3, 32]);
  });

  it('infers metadata types and rejects values that do not fit', async () => {
    const w = new GGUFWriter();
    w.set('a', 5).set('b', -5).set('c', 0.5).set('d', 'x').set('e', false).set('f', ['x']).set('g', [1, 2]).set('h', [0.5]).set('i', 2 ** 40);
    const g = await parseGGUF(bufferSource(w.toUint8Array()));
    expect(g.types).toEqual({ a: 'u32', b: 'i32', c: 'f32', d: 'string', e: 'bool', f: 'array<string>', g: 'array<i32>', h: 'array<f32>', i: 'i64' });
    await formatError(() => new GGUFWriter().set('x', 300, 'u8'));
    await formatError(() => new GGUFWriter().set('x', 'no', 'u32'));
    await formatError(() => new GGUFWriter().set('x', [1, 'a'] as GGUFValue));
    await formatError(() => new GGUFWriter().addTensor('x', 'q8_0', [2, 16], new Uint8Array(34)));
    await formatError(() => new GGUFWriter().addTensor('x', 'f32', [2], new Uint8Array(4)));
  });

  it('streams identical bytes through chunks(), toStream() and writeTo()', async () => {
    const { w } = sampleGGUF();
    const whole = w.toUint8Array();
    const parts: Uint8Array[] = [];
    for await (const c of w.chunks()) parts.push(c);
    expect(concatBytes(parts)).toEqual(whole);
    const streamed = new Uint8Array(await new Response(w.toStream()).arrayBuffer());
    expect(streamed).toEqual(whole);
    const path = join(tmp, 'written.gguf');
    await w.writeTo(path);
    const src = await fileSource(path);
    expect(src.size).toBe(whole.length);
    expect(await src.read(0, src.size)).toEqual(whole);
    await src.close?.();
  });
});


// ---------------------------------------------------------------------------------------------

/** A fetch over an in-memory map of URLs; `ranges` says whether it honours Range. */
function fakeFetch(files: Record<string, Uint8Array | string>, ranges: boolean, log: string[] = []): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    const v = files[url];
    const range = new Headers(init?.headers).get('range');
    log.push(`${url} ${range ?? ''}`.trim());
    if (v === undefined) return new Response('not found', { status: 404 });
    const body = typeof v === 'string' ? new TextEncoder().encode(v) : v;
    if (ranges && range) {
      const m = /^bytes=(\d+)-(\d+)$/.exec(range)!;
      const a = Number(m[1]);
      if (a >= body.length) return new Response(null, { status: 416, headers: { 'content-range': `bytes */${body.length}` } });
      const b = Math.min(Number(m[2]), body.length - 1);
      return new Response(body.slice(a, b + 1) as BodyInit, { status: 206, headers: { 'content-range': `bytes ${a}-${b}/${body.length}` } });
    }
    return new Response(body as BodyInit, { status: 200, headers: { 'content-length': String(body.length) } });
  }) as typeof fetch;
}

describe('byte sources', () => {
  it('check every read against the size', async () => {
    const s = bufferSource(new Uint8Array(10), 'b');
    expect((await s.read(2, 8)).length).toBe(8);
    await formatError(() => s.read(3, 8));
    await formatError(() => s.read(-1, 2));
    await formatError(() => s.read(0.5, 2));
    const path = join(tmp, 'ten.bin');
    await writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    const f = await fileSource(path);
    expect([...(await f.read(7, 3))]).toEqual([7, 8, 9]);
    const dst = new Uint8Array(4);
    await f.readInto!(1, dst);
    expect([...dst]).toEqual([1, 2, 3, 4]);
    await formatError(() => f.read(7, 4));
    await f.close?.();
    await formatError(() => fileSource(join(tmp, 'missing.bin')));
    expect((await openSource(new Uint8Array(3).buffer)).size).toBe(3);
  });

  it('a closed buffer source lets go of its bytes and refuses reads', async () => {
    const s = bufferSource(new Uint8Array(10), 'b');
    await s.close?.();
    await formatError(() => s.read(0, 1));
    await formatError(() => s.readInto!(0, new Uint8Array(1)));
  });

  it('URL: ranged reads when Range is honoured, one streamed body otherwise', async () => {
    const big = new Uint8Array(200_000).map((_, i) => (i * 7) & 255);
    for (const ranges of [true, false]) {
      const log: string[] = [];
      const progress: [number, number][] = [];
      const s = await urlSource('https://h/x.bin', { fetch: fakeFetch({ 'https://h/x.bin': big }, ranges, log), onProgress: (a, b) => progress.push([a, b]) });
      expect(s.size).toBe(big.length);
      expect(await s.read(150_000, 1000)).toEqual(big.subarray(150_000, 151_000));
      expect(await s.read(10, 5)).toEqual(big.subarray(10, 15));
      await formatError(() => s.read(199_999, 2));
      expect(progress.at(-1)![1]).toBe(big.length);
      if (ranges) expect(log).toEqual(['https://h/x.bin bytes=0-65535', 'https://h/x.bin bytes=150000-150999']);
      else expect(progress.at(-1)).toEqual([big.length, big.length]);
    }
    await formatError(() => urlSource('https://h/missing', { fetch: fakeFetch({}, true) }));
    expect((await urlSource('https://h/e', { fetch: fakeFetch({ 'https://h/e': new Uint8Array(0) }, true) })).size).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------

describe('checkpoints', () => {
  const tok = JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab: { a: 0 } } });
  const tokCfg = { bos_token: '<s>', chat_template: '{{ messages }}' };
  const gen = { eos_token_id: 2, do_sample: false };

  async function writeDir(name: string, files: Record<string, Uint8Array | string>): Promise<string> {
    const d = join(tmp, name);
    await mkdir(d, { recursive: true });
    for (const [f, v] of Object.entries(files)) await writeFile(join(d, f), v);
    return d;
  }

  it('opens an HF directory with config, tokenizer files and model.safetensors', async () => {
    const ts = sampleTensors();
    const d = await writeDir('hf', {
      'config.json': JSON.stringify(CONFIG), 'generation_config.json': JSON.stringify(gen),
      'tokenizer.json': tok, 'tokenizer_config.json': JSON.stringify(tokCfg), 'model.safetensors': writeSafetensors(ts),
    });
    const ck = await openCheckpoint(d);
    expect(ck.config).toEqual(CONFIG);
    expect(ck.generationConfig).toEqual(gen);
    expect(ck.tokenizerJson).toBe(tok);
    expect(ck.tokenizerConfig).toEqual(tokCfg);
    expect(ck.chatTemplate).toBe('{{ messages }}');
    expect([...ck.tensors.keys()]).toEqual(ts.map((t) => t.name));
    for (const t of ts) expect((await ck.read(t.name)).bytes).toEqual(t.data);
    await ck.close();
    // The same file opened by path takes its side files from its directory.
    const ck2 = await openCheckpoint(join(d, 'model.safetensors'));
    expect(ck2.config).toEqual(CONFIG);
    await ck2.close();
    // chat_template.jinja wins over tokenizer_config.json's template.
    await writeFile(join(d, 'chat_template.jinja'), 'JINJA');
    const ck3 = await openCheckpoint(d);
    expect(ck3.chatTemplate).toBe('JINJA');
    await ck3.close();
  });

  function shardFiles(): { files: Record<string, Uint8Array | string>; ts: T[] } {
    const ts = sampleTensors(9);
    const a = ts.slice(0, 4), b = ts.slice(4);
    const weight_map: Record<string, string> = {};
    for (const t of a) weight_map[t.name] = 'model-00001-of-00002.safetensors';
    for (const t of b) weight_map[t.name] = 'model-00002-of-00002.safetensors';
    return {
      ts,
      files: {
        'config.json': JSON.stringify(CONFIG),
        'model.safetensors.index.json': JSON.stringify({ metadata: { total_size: 1 }, weight_map }),
        'model-00001-of-00002.safetensors': writeSafetensors(a),
        'model-00002-of-00002.safetensors': writeSafetensors(b),
      },
    };
  }

  it('opens a sharded directory on disk and in memory, and rejects broken indexes', async () => {
    const { files, ts } = shardFiles();
    const d = await writeDir('sharded', files);
    for (const ck of [await openCheckpoint(d), await openCheckpoint({ files })]) {
      expect(ck.tensors.size).toBe(ts.length);
      for (const t of ts) expect((await ck.read(t.name)).bytes).toEqual(t.data);
      await ck.close();
    }
    const index = JSON.parse(files['model.safetensors.index.json'] as string);
    const variant = (patch: (idx: any, f: Record<string, Uint8Array | string>) => void) => {
      const f = { ...files };
      const idx = structuredClone(index);
      patch(idx, f);
      f['model.safetensors.index.json'] = JSON.stringify(idx);
      return { files: f };
    };
    // A shard named in the weight map is missing.
    let e = await formatError(() => openCheckpoint(variant((_, f) => delete f['model-00002-of-00002.safetensors'])));
    expect(e.message).toContain('model-00002-of-00002.safetensors');
    // The same tensor in two shards.
    e = await formatError(() => openCheckpoint(variant((_idx, f) => {
      f['model-00002-of-00002.safetensors'] = writeSafetensors([...ts.slice(4), ts[0]]);
    })));
    expect(e.field).toBe(`tensors[${JSON.stringify(ts[0].name)}]`);
    // The weight map names a tensor its shard does not hold.
    e = await formatError(() => openCheckpoint(variant((idx) => { idx.weight_map.ghost = 'model-00001-of-00002.safetensors'; })));
    expect(e.field).toBe('weight_map["ghost"]');
    // Shard names may not leave the directory.
    e = await formatError(() => openCheckpoint(variant((idx) => { idx.weight_map.ghost = '../../etc/passwd'; })));
    expect(e.field).toBe('weight_map["ghost"]');
    await formatError(() => openCheckpoint({ files: { ...files, 'model.safetensors.index.json': '{"weight_map": ' } }));
    await formatError(() => openCheckpoint({ files: { ...files, 'model.safetensors.index.json': '{"weight_map": [1]}' } }));
    // Dangling index on disk.
    await rm(join(d, 'model-00001-of-00002.safetensors'));
    await formatError(() => openCheckpoint(d));
  });

  it('config.json missing or not JSON is a ConfigError naming the file', async () => {
    const st = writeSafetensors(sampleTensors());
    const dirs: Record<string, Uint8Array | string>[] = [
      { 'model.safetensors': st }, { 'config.json': '{"model_type": ', 'model.safetensors': st }, { 'config.json': '[1]', 'model.safetensors': st },
    ];
    for (const files of dirs) {
      const err = await openCheckpoint({ files }).then(() => null, (x) => x);
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.field).toBe('config.json');
    }
    const err = await openCheckpoint({ files: { 'config.json': '{}', 'generation_config.json': 'nope', 'model.safetensors': st } }).then(() => null, (x) => x);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.field).toBe('generation_config.json');
    expect(await openCheckpoint(st).then(() => null, (x) => x)).toBeInstanceOf(ConfigError);
    await formatError(() => openCheckpoint({ files: { 'config.json': '{}' } }));
    await formatError(() => openCheckpoint(join(tmp, 'no-such-dir')));
  });

  it('GGUF: convert, then open as a file, from bytes, in a directory and over HTTP', async () => {
    const ts = sampleTensors(4);
    const src = await openCheckpoint({
      files: {
        'config.json': JSON.stringify(CONFIG), 'generation_config.json': JSON.stringify(gen), 'tokenizer.json': tok,
        'tokenizer_config.json': JSON.stringify(tokCfg), 'model.safetensors': writeSafetensors(ts),
      },
    });
    const { writer: w } = ggufFor(src, { dtype: 'q8_0', name: 'tiny' });
    const path = join(tmp, 'tiny.gguf');
    await w.writeTo(path);
    const check = async (ck: Awaited<ReturnType<typeof openCheckpoint>>) => {
      expect(ck.format).toBe('gguf');
      expect(ck.config).toEqual(CONFIG);
      expect(ck.generationConfig).toEqual(gen);
      expect(ck.tokenizerJson).toBe(tok);
      expect(ck.tokenizerConfig).toEqual(tokCfg);
      expect(ck.chatTemplate).toBe('{{ messages }}');
      expect(ck.metadata['general.architecture']).toBe('llama');
      expect(ck.metadata['general.name']).toBe('tiny');
      expect(ck.metadata['general.file_type']).toBe(7);
      expect(ck.metadata['sparrow.version']).toBe(SPARROW_GGUF_VERSION);
      const emb = ck.tensors.get('model.embed_tokens.weight')!;
      expect([emb.dtype, emb.shape]).toEqual(['q8_0', [10, 32]]);
      const f = await src.readF32('model.embed_tokens.weight');
      expect(await ck.readF32('model.embed_tokens.weight')).toEqual(dequantizeQ8_0(quantizeQ8_0(f, 10, 32), 320));
      expect(ck.tensors.get('model.norm.weight')!.dtype).toBe('f32');
      expect(await ck.readF32('model.norm.weight')).toEqual(await src.readF32('model.norm.weight'));
      expect(ck.tensors.get('mask')!.dtype).toBe('i8');
      expect(ck.tensors.get('scale')!.shape).toEqual([]);
      expect(await ck.readF32('scale')).toEqual(new Float32Array([0.5]));
      await ck.close();
    };
    await check(await openCheckpoint(path));
    const fsrc = await fileSource(path);
    const bytes = await fsrc.read(0, fsrc.size);
    await fsrc.close?.();
    expect(bytes.length).toBe(w.byteLength);
    await check(await openCheckpoint(bytes.slice().buffer));
    await check(await openCheckpoint({ files: { 'm.gguf': bytes } }));
    // Directory files win over the GGUF metadata.
    const d = await writeDir('ggufdir', { 'm.gguf': bytes, 'config.json': JSON.stringify({ ...CONFIG, hidden_size: 99 }) });
    const ckd = await openCheckpoint(d);
    expect(ckd.config.hidden_size).toBe(99);
    expect(ckd.tokenizerJson).toBe(tok);
    await ckd.close();
    for (const ranges of [true, false]) await check(await openCheckpoint('https://h/m/tiny.gguf', { fetch: fakeFetch({ 'https://h/m/tiny.gguf': bytes }, ranges) }));
    // A GGUF without sparrow.hf_config and no config.json beside it.
    const bare = new GGUFWriter().set('general.architecture', 'llama').toUint8Array();
    expect(await openCheckpoint(bare).then(() => null, (x) => x)).toBeInstanceOf(ConfigError);
    const badCfg = new GGUFWriter().set('sparrow.hf_config', '{').toUint8Array();
    const err = await openCheckpoint(badCfg).then(() => null, (x) => x);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.field).toBe('gguf.metadata["sparrow.hf_config"]');
  });

  it('HF-style base URL: config, then the index or model.safetensors', async () => {
    const { files, ts } = shardFiles();
    const base = 'https://hf.example/org/model/resolve/main/';
    const remote: Record<string, Uint8Array | string> = {};
    for (const [k, v] of Object.entries(files)) remote[base + k] = v;
    for (const ranges of [true, false]) {
      const ck = await openCheckpoint(base.slice(0, -1), { fetch: fakeFetch(remote, ranges) });
      expect(ck.config).toEqual(CONFIG);
      for (const t of ts) expect((await ck.read(t.name)).bytes).toEqual(t.data);
    }
    const single = { [base + 'config.json']: JSON.stringify(CONFIG), [base + 'model.safetensors']: writeSafetensors(ts), [base + 'tokenizer.json']: tok };
    const ck = await openCheckpoint(base, { fetch: fakeFetch(single, true) });
    expect(ck.tokenizerJson).toBe(tok);
    expect(ck.tensors.size).toBe(ts.length);
    const ck2 = await openCheckpoint(base + 'model.safetensors', { fetch: fakeFetch(single, true) });
    expect(ck2.config).toEqual(CONFIG);
    const err = await openCheckpoint(base, { fetch: fakeFetch({ [base + 'model.safetensors']: writeSafetensors(ts) }, true) }).then(() => null, (x) => x);
    expect(err).toBeInstanceOf(ConfigError);
    await formatError(() => openCheckpoint(base, { fetch: fakeFetch({ [base + 'config.json']: '{}' }, true) }));
  });
});

// ---------------------------------------------------------------------------------------------
// Malformed files

/** A raw safetensors file from a header (object or literal JSON text) and a data section size. */
function rawST(header: unknown, dataLen: number, lenOverride?: bigint): Uint8Array {
  const hb = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + hb.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(hb.length), true);
  out.set(hb, 8);
  return out;
}

/** Little-endian byte writer for hand-made GGUF files. */
class Raw {
  private b: number[] = [];
  u8(v: number) { this.b.push(v & 255); return this; }
  u32(v: number) { for (let i = 0; i < 4; i++) this.b.push((v >>> (8 * i)) & 255); return this; }
  u64(v: number | bigint) { let x = BigInt(v); for (let i = 0; i < 8; i++) { this.b.push(Number(x & 255n)); x >>= 8n; } return this; }
  bytes(a: ArrayLike<number>) { for (let i = 0; i < a.length; i++) this.b.push(a[i]); return this; }
  str(s: string) { const e = new TextEncoder().encode(s); return this.u64(e.length).bytes(e); }
  pad(n: number) { while (this.b.length % n) this.b.push(0); return this; }
  get length() { return this.b.length; }
  build() { return new Uint8Array(this.b); }
}

interface RawTensor { name: string; dims: (number | bigint)[]; type: number; offset: number | bigint }

/** A GGUF file with full control of each field; defaults give a valid file with one f32 [2, 32] tensor. */
function rawGGUF(o: {
  magic?: string; version?: number; tensorCount?: number | bigint; kvCount?: number | bigint;
  kv?: ((r: Raw) => void)[]; tensors?: RawTensor[]; data?: number; alignment?: number;
} = {}): Uint8Array {
  const r = new Raw();
  r.bytes(new TextEncoder().encode(o.magic ?? 'GGUF')).u32(o.version ?? 3);
  const tensors = o.tensors ?? [{ name: 'w', dims: [32, 2], type: 0, offset: 0 }];
  const kv = o.kv ?? [];
  r.u64(o.tensorCount ?? tensors.length).u64(o.kvCount ?? kv.length);
  for (const k of kv) k(r);
  for (const t of tensors) {
    r.str(t.name).u32(t.dims.length);
    for (const d of t.dims) r.u64(d);
    r.u32(t.type).u64(t.offset);
  }
  r.pad(o.alignment ?? 32);
  r.bytes(new Uint8Array(o.data ?? 256));
  return r.build();
}

const kvU32 = (key: string, v: number) => (r: Raw) => r.str(key).u32(4).u32(v);

describe('malformed safetensors', () => {
  const good = () => writeSafetensors(sampleTensors().filter((t) => t.name !== 'empty'));

  it('every truncation of a valid file is a FormatError', async () => {
    const file = good();
    await parseAndRead('st', file);
    for (let n = 0; n < file.length; n++) await formatError(() => parseAndRead('st', file.subarray(0, n)));
    for (let n = 0; n < file.length; n += 7) {
      const err = await openCheckpoint(file.slice(0, n), { config: CONFIG }).then(() => null, (x) => x);
      expect(err).toBeInstanceOf(FormatError);
    }
  });

  it('names the field at fault', async () => {
    const t = (extra: object = {}) => ({ a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16], ...extra } });
    const cases: [Uint8Array, string, RegExp?][] = [
      [rawST(t(), 16, 1000n), 'safetensors.header_length', /beyond file size/],
      [rawST(t(), 16, 2n ** 40n), 'safetensors.header_length', /exceeds/],
      [rawST(t(), 16, 2n ** 64n - 1n), 'safetensors.header_length'],
      [rawST(t({ data_offsets: [0, 32] }), 16), 'safetensors.header.tensors["a"].data_offsets', /beyond/],
      [rawST(t({ data_offsets: [8, 24] }), 16), 'safetensors.header.tensors["a"].data_offsets'],
      [rawST(t({ data_offsets: [0, 8] }), 16), 'safetensors.header.tensors["a"].data_offsets', /needs 16/],
      [rawST(t({ data_offsets: [16, 0] }), 16), 'safetensors.header.tensors["a"].data_offsets'],
      [rawST(t({ data_offsets: [0, 16, 3] }), 16), 'safetensors.header.tensors["a"].data_offsets'],
      [rawST(t({ data_offsets: ['0', 16] }), 16), 'safetensors.header.tensors["a"].data_offsets'],
      [rawST({ ...t(), b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, 16), 'safetensors.header.tensors["b"].data_offsets', /overlaps/],
      [rawST(t({ shape: [2 ** 53, 1] }), 16), 'safetensors.header.tensors["a"].shape'],
      [rawST(t({ shape: [2 ** 30, 2 ** 30, 2 ** 30] }), 16), 'safetensors.header.tensors["a"].shape', /2\^53/],
      [rawST(t({ shape: [-4] }), 16), 'safetensors.header.tensors["a"].shape'],
      [rawST(t({ shape: [1.5] }), 16), 'safetensors.header.tensors["a"].shape'],
      [rawST(t({ shape: 'x' }), 16), 'safetensors.header.tensors["a"].shape'],
      [rawST(t({ dtype: 'F8_E4M3' }), 16), 'safetensors.header.tensors["a"].dtype', /F8_E4M3/],
      [rawST(t({ dtype: 7 }), 16), 'safetensors.header.tensors["a"].dtype'],
      [rawST(t({ dtype: 'F16' }), 16), 'safetensors.header.tensors["a"].data_offsets'],
      [rawST({ a: { dtype: 'F32', shape: [4] } }, 16), 'safetensors.header.tensors["a"]'],
      [rawST({ a: 3 }, 16), 'safetensors.header.tensors["a"]'],
      [rawST('{"a": {"dtype": "F32", ', 16), 'safetensors.header', /JSON/],
      [rawST('[1, 2]', 16), 'safetensors.header'],
      [rawST('null', 16), 'safetensors.header'],
      [rawST({ __metadata__: { k: 1 }, ...t() }, 16), 'safetensors.header.__metadata__["k"]'],
      [rawST({ __metadata__: [], ...t() }, 16), 'safetensors.header.__metadata__'],
      [new Uint8Array([3, 0, 0, 0, 0, 0, 0, 0, 0x22, 0xff, 0x22]), 'safetensors.header', /UTF-8/],
    ];
    for (const [bytes, field, msg] of cases) {
      const e = await formatError(() => parseSafetensors(bufferSource(bytes, 'bad.safetensors')));
      expect([field, e.field]).toEqual([field, field]);
      if (msg) expect(e.message).toMatch(msg);
      expect(e.file).toBe('bad.safetensors');
    }
  });
});

describe('malformed GGUF', () => {
  it('the hand-made baseline is valid', async () => {
    const g = await parseGGUF(bufferSource(rawGGUF({ kv: [kvU32('a', 1)] })));
    expect(g.tensors[0].shape).toEqual([2, 32]);
    expect(g.metadata.a).toBe(1);
  });

  it('every truncation of a valid file is a FormatError', async () => {
    const w = new GGUFWriter();
    for (const [k, v, t] of META) w.set(k, v, t);
    const r = mulberry32(1);
    w.addTensor('a', 'f32', [2, 32], bytesOf(randF32(64, r)));
    w.addTensor('b', 'q8_0', [1, 32], quantizeQ8_0(randF32(32, r), 1, 32));
    w.addTensor('c', 'f16', [16], f32ToF16Bytes(randF32(16, r)));
    const file = w.toUint8Array();
    await parseAndRead('gguf', file);
    for (let n = 0; n < file.length; n++) await formatError(() => parseAndRead('gguf', file.subarray(0, n)));
  });

  it('names the field at fault', async () => {
    const t0 = (p: Partial<RawTensor>): RawTensor[] => [{ name: 'w', dims: [32, 2], type: 0, offset: 0, ...p }];
    const cases: [Uint8Array, string, RegExp?][] = [
      [rawGGUF({ magic: 'GGUX' }), 'gguf.magic'],
      [rawGGUF({ version: 1 }), 'gguf.version'],
      [rawGGUF({ version: 0x03000000 }), 'gguf.version', /big-endian/],
      [rawGGUF({ tensorCount: 2 ** 32 }), 'gguf.tensor_count', /limit/],
      [rawGGUF({ tensorCount: 2n ** 63n }), 'gguf.tensor_count'],
      [rawGGUF({ tensorCount: 5000 }), 'gguf.tensor_count', /cannot fit/],
      [rawGGUF({ kvCount: 2n ** 40n }), 'gguf.kv_count'],
      [rawGGUF({ kv: [(r) => r.u64(2n ** 60n).bytes([0x61, 0x62])] }), 'gguf.metadata[0].key.length'],
      [rawGGUF({ kv: [(r) => r.str('s').u32(8).u64(2n ** 60n).bytes([0x61])] }), 'gguf.metadata["s"].length'],
      [rawGGUF({ kv: [(r) => r.str('s').u32(8).u64(5000).bytes([0x61])] }), 'gguf.metadata["s"].length', /remain/],
      [rawGGUF({ kv: [(r) => r.str('x').u32(13).u8(0)] }), 'gguf.metadata["x"].type'],
      [rawGGUF({ kv: [(r) => r.str('x').u32(7).u8(2)] }), 'gguf.metadata["x"]', /bool/],
      [rawGGUF({ kv: [(r) => r.str('x').u32(9).u32(4).u64(2n ** 40n)] }), 'gguf.metadata["x"].count'],
      [rawGGUF({ kv: [(r) => r.str('x').u32(9).u32(4).u64(1 << 20)] }), 'gguf.metadata["x"].count', /remain/],
      [rawGGUF({ kv: [(r) => r.str('x').u32(9).u32(99).u64(0)] }), 'gguf.metadata["x"].element_type'],
      [rawGGUF({ kv: [(r) => r.str('x').u32(9).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1).u32(0).u64(0)] }), 'gguf.metadata["x"][0][0][0]', /nested/],
      [rawGGUF({ kv: [kvU32('a', 1), kvU32('a', 2)] }), 'gguf.metadata["a"]', /twice/],
      [rawGGUF({ kv: [(r) => r.u64(2).bytes([0xc3, 0x28]).u32(4).u32(1)] }), 'gguf.metadata[0].key', /UTF-8/],
      [rawGGUF({ kv: [kvU32('general.alignment', 3)] }), 'gguf.metadata["general.alignment"]'],
      [rawGGUF({ kv: [kvU32('general.alignment', 0)] }), 'gguf.metadata["general.alignment"]'],
      [rawGGUF({ tensors: t0({ dims: [1, 1, 1, 1, 1, 1, 1, 1, 1] }) }), 'gguf.tensors["w"].n_dims', /9/],
      [rawGGUF({ tensors: t0({ dims: [2n ** 53n] }) }), 'gguf.tensors["w"].dims[0]'],
      [rawGGUF({ tensors: t0({ dims: [2 ** 40, 2 ** 40] }) }), 'gguf.tensors["w"].dims', /2\^53/],
      [rawGGUF({ tensors: t0({ type: 99 }) }), 'gguf.tensors["w"].type', /unknown ggml type 99/],
      [rawGGUF({ tensors: t0({ type: 16 }) }), 'gguf.tensors["w"].type', /IQ2_XXS/],
      [rawGGUF({ tensors: t0({ type: 8, dims: [16, 2] }) }), 'gguf.tensors["w"].dims', /multiple of 32/],
      [rawGGUF({ tensors: t0({ offset: 4 }) }), 'gguf.tensors["w"].offset', /alignment/],
      [rawGGUF({ tensors: t0({ offset: 1024 }) }), 'gguf.tensors["w"].offset', /beyond/],
      [rawGGUF({ tensors: t0({ offset: 2n ** 62n }) }), 'gguf.tensors["w"].offset'],
      [rawGGUF({ tensors: t0({ dims: [32, 4] }), data: 256 - 32 }), 'gguf.tensors["w"].offset', /beyond/],
      [rawGGUF({ tensors: [...t0({}), { name: 'v', dims: [32], type: 0, offset: 128 }] }), 'gguf.tensors["v"].offset', /overlaps/],
      [rawGGUF({ tensors: [...t0({}), ...t0({ offset: 256 })], data: 512 }), 'gguf.tensors["w"]', /twice/],
      [rawGGUF({ tensors: t0({ name: '' }) }), 'gguf.tensors[0].name'],
      // Header complete (24 + 41 bytes) but the file ends before the aligned data section.
      [rawGGUF({ data: 0 }).subarray(0, 65), 'gguf.data', /beyond/],
    ];
    for (const [bytes, field, msg] of cases) {
      const e = await formatError(() => parseGGUF(bufferSource(bytes, 'bad.gguf')));
      expect([field, e.field, e.message]).toEqual([field, field, e.message]);
      if (msg) expect(e.message).toMatch(msg);
    }
  });
});

describe('fuzz', () => {
  async function fuzz(kind: 'st' | 'gguf', file: Uint8Array, seed: number, rounds: number) {
    const r = mulberry32(seed);
    const outcomes = { ok: 0, format: 0 };
    for (let i = 0; i < rounds; i++) {
      let m = file.slice();
      const op = Math.floor(r() * 5);
      const nMut = 1 + Math.floor(r() * 4);
      // Mutations mostly aimed at the header, where the structure lives.
      const headerEnd = Math.min(m.length, 600);
      for (let k = 0; k < nMut; k++) {
        const at = Math.floor(r() * (r() < 0.8 ? headerEnd : m.length));
        if (op === 0) m[at] = Math.floor(r() * 256);
        else if (op === 1) m[at] ^= 1 << Math.floor(r() * 8);
        else if (op === 2) m.fill(r() < 0.5 ? 0xff : 0, at, at + 1 + Math.floor(r() * 8));
        else if (op === 3) m = m.subarray(0, at);
        else {
          const ins = new Uint8Array(1 + Math.floor(r() * 16)).map(() => Math.floor(r() * 256));
          const n = new Uint8Array(m.length + ins.length);
          n.set(m.subarray(0, at));
          n.set(ins, at);
          n.set(m.subarray(at), at + ins.length);
          m = n;
        }
      }
      try {
        await parseAndRead(kind, m);
        outcomes.ok++;
      } catch (e) {
        if (!(e instanceof FormatError)) throw new Error(`mutation ${i} (op ${op}): ${(e as Error).name}: ${(e as Error).message}`);
        outcomes.format++;
      }
    }
    return outcomes;
  }

  it('random mutations of a safetensors file only ever give FormatError', async () => {
    const o = await fuzz('st', writeSafetensors(sampleTensors(), { a: 'b' }), 1234, 400);
    expect(o.format).toBeGreaterThan(100);
  });

  it('random mutations of a GGUF file only ever give FormatError', async () => {
    const o = await fuzz('gguf', sampleGGUF().w.toUint8Array(), 4321, 400);
    expect(o.format).toBeGreaterThan(100);
  });
});

// Keeps the ByteSource type exercised by a custom implementation (e.g. a Workers R2 object).
describe('custom sources', () => {
  it('openCheckpoint accepts any ByteSource', async () => {
    const file = sampleGGUF().w.toUint8Array();
    const inner = bufferSource(file, 'custom');
    let reads = 0;
    const src: ByteSource = { size: inner.size, name: 'custom.gguf', read: (o, n) => { reads++; return inner.read(o, n); } };
    const err = await openCheckpoint(src).then(() => null, (x) => x);
    expect(err).toBeInstanceOf(ConfigError); // sampleGGUF has no sparrow.hf_config
    const w = new GGUFWriter();
    setSparrowMetadata(w, { config: CONFIG });
    w.addTensor('x', 'f32', [1], bytesOf(new Float32Array([3])));
    const ck = await openCheckpoint(w.toUint8Array());
    expect(await ck.readF32('x')).toEqual(new Float32Array([3]));
    expect(reads).toBeGreaterThan(0);
    expect(tensorByteSize('q4_0', [3, 64])).toBe(3 * 2 * 18);
  });
});
