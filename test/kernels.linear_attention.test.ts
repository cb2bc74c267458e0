import { describe, expect, it } from 'vitest';
import { lightningAttention, linearAttention, linearAttentionScratchBytes, type LinearDecay } from '../src/kernels/linear_attention';
import { lightningRef, lightningSlopes, linearAttentionRef } from '../src/kernels/linear_attention.ref';
import type { K } from '../src/kernels/types';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances. Against the float64 recurrence: 1e-5 relative (max |err| / max |ref|) for every form:
// each output is a sum of O(T·dk) f32 products whose rounding stays ~1e-6 of the largest term at these
// sizes. The chunked form reorders those sums (products of chunk-local exponentials, a triangular
// solve for the delta rule), which adds rounding of the same order, not an approximation, so it is
// held to the same 1e-5. A single decode step against the same step from the recurrent form: 1e-6.

interface Case {
  T: number; H: number; dk: number; dv: number; decay: LinearDecay; delta: boolean; norm: boolean;
}

interface Data {
  q: Float32Array; k: Float32Array; v: Float32Array; S: Float32Array; z: Float32Array;
  g: Float32Array | null; beta: Float32Array | null;
}

function l2rows(a: Float32Array, d: number): void {
  for (let r = 0; r < a.length / d; r++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += a[r * d + i] ** 2;
    const inv = 1 / Math.sqrt(s + 1e-6);
    for (let i = 0; i < d; i++) a[r * d + i] *= inv;
  }
}

/**
 * Random inputs in the ranges models produce: delta-rule keys (and queries) l2-normalised (the caller's
 * job, HF use_qk_l2norm_in_kernel), β ∈ (0, 1), log-gates mostly in [−1, 0) with some strong decays
 * (down to −8) so that cumulative sums over a chunk reach far below −87 (exp underflow), and a nonzero
 * incoming state. With the normalizer, q and k go through a positive feature map.
 */
function makeData(c: Case, seed: number): Data {
  const r = rng(seed);
  const { T, H, dk, dv } = c;
  const q = randn(T * H * dk, r), k = randn(T * H * dk, r), v = randn(T * H * dv, r);
  if (c.norm) {
    // A normalised linear attention uses a positive feature map φ (fla: elu+1, relu, …), so q·z > 0.
    for (const a of [q, k]) for (let i = 0; i < a.length; i++) a[i] = a[i] > 0 ? a[i] + 1 : Math.exp(a[i]);
  }
  if (c.delta) { l2rows(q, dk); l2rows(k, dk); }
  const S = randn(H * dk * dv, r, 0.5);
  const z = Float32Array.from(randn(H * dk, r), (x) => Math.abs(x) + 0.5);
  let g: Float32Array | null = null;
  if (c.decay !== 'none') {
    g = new Float32Array(c.decay === 'scalar' ? T * H : T * H * dk);
    for (let i = 0; i < g.length; i++) g[i] = r() < 0.1 ? -8 * r() : -r();
  }
  const beta = c.delta ? Float32Array.from({ length: T * H }, () => r()) : null;
  return { q, k, v, S, z, g, beta };
}

function reference(c: Case, d: Data) {
  return linearAttentionRef(d.q, d.k, d.v, d.S, {
    T: c.T, H: c.H, dk: c.dk, dv: c.dv, decay: c.decay, g: d.g ?? undefined, beta: d.beta ?? undefined,
    scale: 1 / Math.sqrt(c.dk), z: c.norm ? d.z : undefined,
  });
}

interface Bufs { o: number; S: number; q: number; k: number; v: number; g: number; beta: number; z: number }

function upload(K: K, c: Case, d: Data): Bufs {
  const a = K.arena;
  const o = a.f32buf(c.T * c.H * c.dv);
  poison(o.v);
  return {
    o: o.ptr, S: a.putF32(d.S).ptr, q: a.putF32(d.q).ptr, k: a.putF32(d.k).ptr, v: a.putF32(d.v).ptr,
    g: d.g ? a.putF32(d.g).ptr : 0, beta: d.beta ? a.putF32(d.beta).ptr : 0, z: a.putF32(d.z).ptr,
  };
}

function call(K: K, c: Case, b: Bufs, T: number, t0: number, mode: 'recurrent' | 'chunked' | 'auto', chunk: 16 | 32 | 64 = 64, scratch?: number): void {
  const { H, dk, dv } = c;
  const gStride = c.decay === 'vector' ? H * dk : H;
  linearAttention(K, b.o + t0 * H * dv * 4, b.S, b.q + t0 * H * dk * 4, b.k + t0 * H * dk * 4, b.v + t0 * H * dv * 4, {
    T, H, dk, dv, decay: c.decay, g: b.g ? b.g + t0 * gStride * 4 : undefined, beta: b.beta ? b.beta + t0 * H * 4 : undefined,
    scale: 1 / Math.sqrt(dk), normalizer: c.norm ? b.z : undefined, mode, chunk, scratch,
  });
}

const view = (K: K, p: number, n: number) => K.arena.f32(p, n);

const VARIANTS: Array<[LinearDecay, boolean, boolean]> = [];
for (const decay of ['none', 'scalar', 'vector'] as const) for (const delta of [false, true]) for (const norm of [false, true]) VARIANTS.push([decay, delta, norm]);

describe.each(BUILDS)('linearAttention (%s build)', (build) => {
  describe.each(VARIANTS)('decay %s, delta %s, normalizer %s', (decay, delta, norm) => {
    it.each([
      [1, 1, 1, 1], [7, 2, 7, 33], [33, 3, 17, 19], [5, 2, 64, 64], [3, 1, 33, 1],
    ])('recurrent T=%i H=%i dk=%i dv=%i matches the float64 recurrence', async (T, H, dk, dv) => {
      const K = await kernels(build);
      const c: Case = { T, H, dk, dv, decay, delta, norm };
      const d = makeData(c, T * 131 + H * 17 + dk * 7 + dv);
      const b = upload(K, c, d);
      call(K, c, b, T, 0, 'recurrent');
      const ref = reference(c, d);
      expect(maxRelErr(view(K, b.o, T * H * dv), ref.o)).toBeLessThan(1e-5);
      expect(maxRelErr(view(K, b.S, H * dk * dv), ref.S)).toBeLessThan(1e-5);
      if (norm) expect(maxRelErr(view(K, b.z, H * dk), ref.z!)).toBeLessThan(1e-5);
    });

    for (const chunk of [16, 32, 64] as const) {
      it.each([1, 7, 63, 64, 65, 130, 257])(`chunked (chunk ${chunk}) T=%i equals the recurrence, outputs and final state`, async (T) => {
        const K = await kernels(build);
        const c: Case = { T, H: 2, dk: 19, dv: 13, decay, delta, norm };
        const d = makeData(c, T * 7 + chunk);
        const b = upload(K, c, d);
        call(K, c, b, T, 0, 'chunked', chunk);
        const ref = reference(c, d);
        expect(maxRelErr(view(K, b.o, T * c.H * c.dv), ref.o)).toBeLessThan(1e-5);
        expect(maxRelErr(view(K, b.S, c.H * c.dk * c.dv), ref.S)).toBeLessThan(1e-5);
        if (norm) expect(maxRelErr(view(K, b.z, c.H * c.dk), ref.z!)).toBeLessThan(1e-5);
      });
    }

    it('chunked at head size 64 (vector main path) equals the recurrence', async () => {
      const K = await kernels(build);
      const c: Case = { T: 150, H: 2, dk: 64, dv: 48, decay, delta, norm };
      const d = makeData(c, 99);
      const b = upload(K, c, d);
      call(K, c, b, c.T, 0, 'chunked', 64);
      const ref = reference(c, d);
      expect(maxRelErr(view(K, b.o, c.T * c.H * c.dv), ref.o)).toBeLessThan(1e-5);
      expect(maxRelErr(view(K, b.S, c.H * c.dk * c.dv), ref.S)).toBeLessThan(1e-5);
    });

    it('prefill in two chunked pieces then token-by-token decode equals one recurrent pass', async () => {
      const K = await kernels(build);
      const c: Case = { T: 100, H: 3, dk: 24, dv: 20, decay, delta, norm };
      const d = makeData(c, 5);
      const one = upload(K, c, d);
      call(K, c, one, c.T, 0, 'recurrent');
      const pieces = upload(K, c, d);
      call(K, c, pieces, 70, 0, 'chunked', 32);
      call(K, c, pieces, 20, 70, 'auto', 64); // T < chunk: the recurrent form
      for (let t = 90; t < c.T; t++) call(K, c, pieces, 1, t, 'auto');
      const n = c.T * c.H * c.dv;
      expect(maxRelErr(view(K, pieces.o, n), view(K, one.o, n))).toBeLessThan(1e-5);
      expect(maxRelErr(view(K, pieces.S, c.H * c.dk * c.dv), view(K, one.S, c.H * c.dk * c.dv))).toBeLessThan(1e-5);
      const ref = reference(c, d);
      expect(maxRelErr(view(K, pieces.o, n), ref.o)).toBeLessThan(1e-5);
    });
  });

  it.each(['scalar', 'vector'] as const)('qkHeads (decay %s): q, k shared by groups of value heads = HF repeat_interleave', async (decay) => {
    const K = await kernels(build);
    const T = 70, H = 6, Hk = 2, dk = 16, dv = 12, rep = H / Hk;
    const small = makeData({ T, H: Hk, dk, dv, decay, delta: true, norm: false }, 31);
    const full = makeData({ T, H, dk, dv, decay, delta: true, norm: false }, 32);
    // Expanded copies: head h of q/k is head floor(h / rep) of the Hk-head buffers.
    for (const [src, dst] of [[small.q, full.q], [small.k, full.k]]) {
      for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) for (let i = 0; i < dk; i++) dst[(t * H + h) * dk + i] = src[(t * Hk + Math.floor(h / rep)) * dk + i];
    }
    const c: Case = { T, H, dk, dv, decay, delta: true, norm: false };
    const ref = reference(c, full);
    const a = K.arena;
    const Q = a.putF32(small.q), Kk = a.putF32(small.k), V = a.putF32(full.v), G = a.putF32(full.g!), B = a.putF32(full.beta!);
    for (const mode of ['recurrent', 'chunked'] as const) {
      const S = a.putF32(full.S), O = a.f32buf(T * H * dv);
      poison(O.v);
      linearAttention(K, O.ptr, S.ptr, Q.ptr, Kk.ptr, V.ptr, { T, H, qkHeads: Hk, dk, dv, decay, g: G.ptr, beta: B.ptr, scale: 1 / Math.sqrt(dk), mode, chunk: 32 });
      expect(maxRelErr(O.v, ref.o)).toBeLessThan(1e-5);
      expect(maxRelErr(S.v, ref.S)).toBeLessThan(1e-5);
    }
  });

  it('a decode step (T = 1) is the same in every mode', async () => {
    const K = await kernels(build);
    const c: Case = { T: 1, H: 4, dk: 32, dv: 40, decay: 'scalar', delta: true, norm: false };
    const d = makeData(c, 11);
    const a = upload(K, c, d), b2 = upload(K, c, d);
    call(K, c, a, 1, 0, 'recurrent');
    call(K, c, b2, 1, 0, 'chunked');
    expect(maxRelErr(view(K, b2.o, 160), view(K, a.o, 160))).toBeLessThan(1e-6);
  });

  it('uses exactly linearAttentionScratchBytes of an explicit scratch', async () => {
    const K = await kernels(build);
    for (const [decay, delta] of [['none', false], ['scalar', true], ['vector', true], ['vector', false]] as const) {
      const c: Case = { T: 70, H: 2, dk: 21, dv: 11, decay, delta, norm: true };
      const d = makeData(c, 3);
      const b = upload(K, c, d);
      const bytes = linearAttentionScratchBytes(K, { dk: c.dk, dv: c.dv, decay, delta, chunk: 32 });
      const scr = K.arena.f32buf(bytes / 4 + 64);
      scr.v.fill(12345);
      call(K, c, b, c.T, 0, 'chunked', 32, scr.ptr);
      expect(Array.from(scr.v.subarray(bytes / 4))).toEqual(new Array(64).fill(12345));
      expect(maxRelErr(view(K, b.o, c.T * c.H * c.dv), reference(c, d).o)).toBeLessThan(1e-5);
    }
  });

  it('without scratch or free memory: auto runs the recurrent form on the static area, chunked refuses', async () => {
    const K = await kernels(build);
    for (const decay of ['vector', 'scalar'] as const) {
      const c: Case = { T: 80, H: 2, dk: 40, dv: 24, decay, delta: true, norm: true };
      const d = makeData(c, 21);
      const b = upload(K, c, d);
      K.arena.alloc(K.memory.buffer.byteLength - K.arena.top - 8, 4); // nothing left above the top
      expect(() => call(K, c, b, c.T, 0, 'chunked', 32)).toThrow(/scratch: the chunked form needs/);
      call(K, c, b, c.T, 0, 'auto', 32);
      const ref = reference(c, d);
      expect(maxRelErr(view(K, b.o, c.T * c.H * c.dv), ref.o)).toBeLessThan(1e-5);
      expect(maxRelErr(view(K, b.S, c.H * c.dk * c.dv), ref.S)).toBeLessThan(1e-5);
    }
  });

  it('validates its arguments', async () => {
    const K = await kernels(build);
    const B = K.arena.f32buf(4096);
    const base = { T: 4, H: 2, dk: 8, dv: 8, scale: 1 };
    expect(() => linearAttention(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, { ...base, decay: 'scalar' })).toThrow(/g: decay 'scalar' needs/);
    expect(() => linearAttention(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, { ...base, decay: 'none', chunk: 48 as 64 })).toThrow(/chunk must be/);
    expect(() => linearAttention(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, { ...base, decay: 'none', dk: 0 })).toThrow(/dk must be/);
    expect(() => linearAttention(K, B.ptr, B.ptr, B.ptr, B.ptr, B.ptr, { ...base, decay: 'none', H: 3, qkHeads: 2 })).toThrow(/qkHeads 2 does not divide H 3/);
    expect(() => linearAttention(K, B.ptr, K.memory.buffer.byteLength - 64, B.ptr, B.ptr, B.ptr, { ...base, decay: 'none' })).toThrow(/S: .* run past the end/);
  });
});

describe.each(BUILDS)('lightningAttention (%s build)', (build) => {
  it.each([[1, 2, 16], [37, 3, 19], [300, 2, 32]])('T=%i H=%i d=%i: block prefill = step form = float64 reference; decode continues', async (T, H, d) => {
    const K = await kernels(build);
    const r = rng(T + H * 10 + d);
    const silu = (x: number) => x / (1 + Math.exp(-x));
    const q = randn(T * H * d, r).map(silu), kk = randn(T * H * d, r).map(silu), v = randn(T * H * d, r).map(silu);
    const slopes = Float32Array.from(lightningSlopes(H, 1, 4));
    const S0 = randn(H * d * d, r, 0.1);
    const ref = lightningRef(q, kk, v, S0, slopes, T, H, d);
    const Q = K.arena.putF32(q), Kb = K.arena.putF32(kk), V = K.arena.putF32(v), Sl = K.arena.putF32(slopes);
    for (const mode of ['chunked', 'recurrent'] as const) {
      const S = K.arena.putF32(S0), O = K.arena.f32buf(T * H * d);
      poison(O.v);
      lightningAttention(K, O.ptr, S.ptr, Q.ptr, Kb.ptr, V.ptr, Sl.ptr, { T, H, d, blockSize: 256, mode });
      expect(maxRelErr(O.v, ref.o)).toBeLessThan(1e-5);
      expect(maxRelErr(S.v, ref.S)).toBeLessThan(1e-5);
    }
  });
});
