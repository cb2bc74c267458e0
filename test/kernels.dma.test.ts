import { describe, expect, it } from 'vitest';
import { dmaAttention, dmaSelect, type DmaOptions } from '../src/kernels/dma';
import { dmaAttentionRef } from '../src/kernels/dma.ref';
import { kernels, maxRelErr, poison, randn, rng } from './helpers';

// Dynamic mask attention (Doge) against the naive float64 reference: f32 dot products, f64 softmax
// and accumulation: ≤ 1e-5 relative. Biases come from dt of a wide range (softplus both below and
// above its threshold 20) and A of either sign, so the top-k selection sees distinct and equal biases.

interface Case { T: number; qPos0: number; Hq: number; Hkv: number; D: number; Dv: number; window: number; keep: number }

const CASES: Case[] = [
  { T: 1, qPos0: 0, Hq: 1, Hkv: 1, D: 8, Dv: 8, window: 0, keep: 0 },
  { T: 7, qPos0: 0, Hq: 4, Hkv: 2, D: 17, Dv: 17, window: 0, keep: 5 },
  { T: 13, qPos0: 9, Hq: 6, Hkv: 3, D: 9, Dv: 11, window: 0, keep: 7 },
  { T: 1, qPos0: 40, Hq: 4, Hkv: 1, D: 16, Dv: 16, window: 0, keep: 13 },
  { T: 11, qPos0: 5, Hq: 3, Hkv: 3, D: 5, Dv: 7, window: 6, keep: 0 },
  { T: 19, qPos0: 3, Hq: 8, Hkv: 2, D: 33, Dv: 33, window: 9, keep: 4 },
  { T: 5, qPos0: 30, Hq: 2, Hkv: 1, D: 8, Dv: 8, window: 0, keep: 64 },
];

function setup(k: Awaited<ReturnType<typeof kernels>>, c: Case, seed: number) {
  const r = rng(seed);
  const L = c.qPos0 + c.T;
  const q = randn(c.T * c.Hq * c.D, r, 1.5), K = randn(L * c.Hkv * c.D, r, 1.5), V = randn(L * c.Hkv * c.Dv, r);
  const dt = randn(L * c.Hkv, r, 25), A = randn(c.Hkv, r, 0.8);
  // Equal biases: a few positions repeat an earlier dt.
  for (let j = 3; j < L; j += 5) dt[j * c.Hkv] = dt[(j - 3) * c.Hkv];
  const Q = k.arena.putF32(q), Kc = k.arena.putF32(K), Vc = k.arena.putF32(V), Dc = k.arena.putF32(dt), Ac = k.arena.putF32(A);
  return { q, K, V, dt, A, Q, Kc, Vc, Dc, Ac };
}

describe('dma attention (kernels/dma.ts)', () => {
  it.each(CASES)('T=$T qPos0=$qPos0 Hq=$Hq Hkv=$Hkv D=$D Dv=$Dv window=$window keep=$keep', async (c) => {
    const k = await kernels('simd');
    const s = setup(k, c, c.T * 131 + c.qPos0 * 7 + c.D);
    const O = k.arena.f32buf(c.T * c.Hq * c.Dv);
    const o: DmaOptions = { T: c.T, qPos0: c.qPos0, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale: 1 / Math.sqrt(c.D), window: c.window, keep: c.keep };
    poison(O.v);
    dmaAttention(k, O.ptr, s.Q.ptr, s.Kc.ptr, s.Vc.ptr, s.Dc.ptr, s.Ac.ptr, o);
    const want = dmaAttentionRef(s.q, s.K, s.V, s.dt, s.A, o);
    expect(maxRelErr(O.v, want)).toBeLessThan(1e-5);
  });

  it.each(CASES)('a pass of T rows equals T single-row passes (T=$T keep=$keep window=$window)', async (c) => {
    const k = await kernels('simd');
    const s = setup(k, c, c.T * 17 + c.Hq);
    const o: DmaOptions = { T: c.T, qPos0: c.qPos0, nHeads: c.Hq, nKv: c.Hkv, headDim: c.D, vDim: c.Dv, scale: 0.3, window: c.window, keep: c.keep };
    const all = k.arena.f32buf(c.T * c.Hq * c.Dv), one = k.arena.f32buf(c.Hq * c.Dv);
    poison(all.v);
    dmaAttention(k, all.ptr, s.Q.ptr, s.Kc.ptr, s.Vc.ptr, s.Dc.ptr, s.Ac.ptr, o);
    for (let t = 0; t < c.T; t++) {
      poison(one.v);
      dmaAttention(k, one.ptr, s.Q.ptr + t * c.Hq * c.D * 4, s.Kc.ptr, s.Vc.ptr, s.Dc.ptr, s.Ac.ptr, { ...o, T: 1, qPos0: c.qPos0 + t });
      expect(Array.from(one.v)).toEqual(Array.from(all.v.subarray(t * c.Hq * c.Dv, (t + 1) * c.Hq * c.Dv)));
    }
  });

  it('selection keeps the largest biases, ties to the lower position', () => {
    const b = Float64Array.from([0.5, 2, 1, 2, 3, 1, 2]);
    const sel = new Uint8Array(7), sorted = new Float64Array(7);
    expect(dmaSelect(b, 0, 6, 3, sel, sorted)).toBe(3);
    expect(Array.from(sel)).toEqual([0, 1, 0, 1, 1, 0, 0]);
    expect(dmaSelect(b, 2, 6, 0, sel, sorted)).toBe(5);
    expect(Array.from(sel.subarray(2))).toEqual([1, 1, 1, 1, 1]);
  });
});
