import { beforeAll, describe, expect, it } from 'vitest';
import { KernelError, type WasmInstance } from '../src/kernels/runtime';
import { packTernary, quantizeActTernary, ternaryActRowBytes, ternaryMatmul, ternaryScratchBytes, unpackTernary, type TernaryWeight } from '../src/kernels/ternary';
import { quantizeActTernaryRef, roundHalfEven, ternarizeRef, ternaryMatmulRef } from '../src/kernels/ternary.ref';
import { BUILDS, kernels, poison, randn, rng } from './helpers';

// The ternary product has no rounding freedom: integer sums, then one f32 multiply by an f32 factor
// computed the same way, so kernel and reference agree bit for bit (and the two builds with them).

const ROWS = [1, 3, 7, 33, 130], COLS = [1, 17, 64, 65, 200], BATCHES = [1, 2, 5, 8, 13];

function randomTernary(n: number, r: () => number): Int8Array {
  const t = new Int8Array(n);
  for (let i = 0; i < n; i++) t[i] = Math.floor(r() * 3) - 1;
  return t;
}

/** Activations with outliers, exact ties at ±0.5 after scaling, and zero rows. */
function randomActs(batch: number, cols: number, r: () => number): Float32Array {
  const x = randn(batch * cols, r, 2);
  for (let b = 0; b < batch; b++) {
    if (r() < 0.1) x.fill(0, b * cols, (b + 1) * cols);
    else if (r() < 0.3) {
      // max |x| = 127 gives s = 1, so x = k + 0.5 lands on a tie.
      x[b * cols] = 127;
      for (let c = 1; c < cols; c++) if (r() < 0.3) x[b * cols + c] = Math.floor(r() * 40 - 20) + 0.5;
    }
  }
  return x;
}

describe('ternary references', () => {
  it('round half to even', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, -2, 2, -3]);
  });
  it('pack / unpack round-trips at odd sizes and refuses non-ternary values', () => {
    const r = rng(7);
    for (const [rows, cols] of [[1, 1], [3, 65], [5, 130]]) {
      const t = randomTernary(rows * cols, r);
      expect(Array.from(unpackTernary(packTernary(t, rows, cols), rows, cols))).toEqual(Array.from(t));
    }
    expect(() => packTernary([0, 2], 1, 2)).toThrow(/not ternary/);
  });
  it('online ternarization keeps the sign and uses mean |w| as the scale', () => {
    const { t, scale } = ternarizeRef([0.5, -0.5, 0.1, -2, 0.4]);
    expect(Array.from(t)).toEqual([1, -1, 0, -1, 1]);
    expect(scale).toBe(Math.fround(1 / Math.fround(1 / Math.fround(3.5 / 5))));
  });
});

describe.each(BUILDS)('ternary matmul (%s build)', (build) => {
  let k: WasmInstance;
  beforeAll(async () => {
    k = await kernels(build);
  });

  it('activation quantization matches the reference byte for byte', () => {
    for (const cols of COLS) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(cols * 131 + batch);
      const x = randomActs(batch, cols, r);
      const xp = k.arena.putF32(x).ptr;
      const sb = ternaryScratchBytes(batch, cols), sp = k.arena.alloc(sb, 64);
      k.arena.u8(sp, sb).fill(0xa5);
      quantizeActTernary(k, sp, xp, batch, cols);
      const ref = quantizeActTernaryRef(x, batch, cols);
      const rb = ternaryActRowBytes(cols);
      const q = new Int8Array(k.memory.buffer, sp, batch * rb);
      const sums = k.arena.i32(sp + batch * rb, batch), inv = k.arena.f32(sp + batch * rb + batch * 4, batch);
      for (let b = 0; b < batch; b++) {
        let want = 0;
        for (let c = 0; c < rb; c++) {
          const v = c < cols ? ref.q[b * cols + c] : 0;
          want += v;
          if (q[b * rb + c] !== v) throw new Error(`cols ${cols} batch ${batch}: q[${b}, ${c}] = ${q[b * rb + c]}, want ${v}`);
        }
        expect(sums[b]).toBe(want);
        expect(inv[b]).toBe(Math.fround(1 / ref.s[b]));
      }
      k.arena.release(m);
    }
  });

  it('products at rows 1/3/7/33/130 × cols 1/17/64/65/200 × batch 1/2/5/8/13 equal the reference bit for bit', () => {
    for (const rows of ROWS) for (const cols of COLS) for (const batch of BATCHES) {
      const m = k.arena.mark();
      const r = rng(rows * 1009 + cols * 31 + batch);
      const t = randomTernary(rows * cols, r), x = randomActs(batch, cols, r);
      const scale = Math.fround(0.01 + r());
      const w: TernaryWeight = { ptr: k.arena.put(packTernary(t, rows, cols), 64), rows, cols, scale };
      const X = k.arena.putF32(x), Y = k.arena.f32buf(batch * rows);
      poison(Y.v);
      const sp = k.arena.alloc(ternaryScratchBytes(batch, cols), 64);
      ternaryMatmul(k, Y.ptr, X.ptr, w, batch, sp);
      const want = ternaryMatmulRef(x, t, scale, batch, rows, cols);
      const got = Y.v;
      for (let i = 0; i < want.length; i++) {
        if (!Object.is(got[i], want[i])) throw new Error(`rows ${rows} cols ${cols} batch ${batch}: y[${i}] = ${got[i]}, want ${want[i]}`);
      }
      k.arena.release(m);
    }
  });

  it('a row gives the same bits alone and in any batch', () => {
    const r = rng(99);
    const rows = 37, cols = 300, batch = 11;
    const t = randomTernary(rows * cols, r), x = randomActs(batch, cols, r);
    const w: TernaryWeight = { ptr: k.arena.put(packTernary(t, rows, cols), 64), rows, cols, scale: 0.37 };
    const X = k.arena.putF32(x), Y = k.arena.f32buf(batch * rows), Y1 = k.arena.f32buf(rows);
    const sp = k.arena.alloc(ternaryScratchBytes(batch, cols), 64);
    ternaryMatmul(k, Y.ptr, X.ptr, w, batch, sp);
    for (let b = 0; b < batch; b++) {
      poison(Y1.v);
      ternaryMatmul(k, Y1.ptr, X.ptr + b * cols * 4, w, 1, sp);
      expect(Array.from(Y1.v)).toEqual(Array.from(Y.v.subarray(b * rows, (b + 1) * rows)));
    }
  });

  it('refuses bad arguments', () => {
    const X = k.arena.f32buf(64), Y = k.arena.f32buf(64), sp = k.arena.alloc(4096, 64);
    const w: TernaryWeight = { ptr: k.arena.alloc(64, 64), rows: 4, cols: 64, scale: 1 };
    expect(() => ternaryMatmul(k, Y.ptr, X.ptr, { ...w, scale: NaN }, 1, sp)).toThrow(KernelError);
    expect(() => ternaryMatmul(k, X.ptr, X.ptr, w, 1, sp)).toThrow(/overlaps/);
    expect(() => ternaryMatmul(k, Y.ptr, X.ptr, w, 1, X.ptr)).toThrow(/scratch/);
  });
});
