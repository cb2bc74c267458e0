import { describe, expect, it } from 'vitest';
import { add, addScaled, argmax, geglu, gelu, logSumExp, mul, relu2, scale, sigmoid, silu, softcap, softmax, softplus, swiglu } from '../src/kernels/act';
import { geluRef, logSumExpRef, relu2Ref, sigmoidRef, siluRef, softcapRef, softmaxRef, softplusRef } from '../src/kernels/act.ref';
import { BUILDS, kernels, maxRelErr, poison, randn, rng } from './helpers';

// Tolerances: f32 kernels against float64 references, max |err| / max |ref| ≤ 1e-5 (a few f32
// roundings plus the ~2-ulp vector exp). The exact GELU is checked elementwise against mpmath.

// x and 0.5·x·erfc(−x/√2) at 30 digits (mpmath), x exactly representable in f32.
const GELU = {
  gelu_x: [-14.0, -13.75, -13.5, -13.25, -13.0, -12.75, -12.5, -12.25, -12.0, -11.75, -11.5, -11.25, -11.0, -10.75, -10.5, -10.25, -10.0, -9.75, -9.5, -9.25, -9.0, -8.75, -8.5, -8.485300064086914, -8.25, -8.0, -7.75, -7.5, -7.25, -7.0, -6.75, -6.5, -6.25, -6.0, -5.75, -5.5, -5.25, -5.0, -4.75, -4.5, -4.25, -4.0, -3.75, -3.5, -3.25, -3.200000047683716, -3.0, -2.75, -2.5999999046325684, -2.5, -2.4000000953674316, -2.25, -2.0, -1.75, -1.7000000476837158, -1.5, -1.25, -1.0, -0.75, -0.707099974155426, -0.5099999904632568, -0.5, -0.25, -0.20000000298023224, -0.0010000000474974513, 0.0, 9.999999747378752e-05, 0.25, 0.30000001192092896, 0.5, 0.7071999907493591, 0.75, 0.8999999761581421, 1.0, 1.25, 1.5, 1.600000023841858, 1.75, 2.0, 2.25, 2.299999952316284, 2.5, 2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0, 5.25, 5.5, 5.75, 6.0, 6.25, 6.5, 6.75, 7.0, 7.25, 7.5, 7.75, 8.0, 8.25, 8.485199928283691, 8.5, 8.75, 9.0, 9.25, 9.5, 9.75, 10.0, 10.25, 10.5, 10.75, 11.0, 11.25, 11.5, 11.75, 12.0, 12.25, 12.5, 12.75, 13.0, 13.25, 13.5, 13.75, 14.0],
  gelu: [-1.091095154686992e-43, -3.501404934464191e-42, -1.0555389862638154e-40, -2.98922165008367e-39, -7.952313719414843e-38, -1.987376018323529e-36, -4.665705373597142e-35, -1.0289750177950936e-33, -2.1317785344932147e-32, -4.1488573151660424e-31, -7.585137163030726e-30, -1.3027053583897219e-28, -2.1017255319485433e-27, -3.1853119439514353e-26, -4.534956633699692e-25, -6.065106330049758e-24, -7.619853024160526e-23, -8.992828186815932e-22, -9.969789321594476e-21, -1.0382786071978384e-19, -1.0157295653584566e-18, -9.3341827035405e-18, -8.05760459887282e-17, -9.128603769515015e-17, -6.533774209580044e-16, -4.976768459417427e-15, -3.5608362627284115e-14, -2.393168754683172e-13, -1.5107971650372503e-12, -8.958687807200846e-12, -4.98977400016203e-11, -2.6104003795084267e-10, -1.2826646407618368e-09, -5.9195258702261885e-09, -2.5657491609934268e-08, -1.0444259356238245e-07, -3.992604271156575e-07, -1.4332578593959695e-06, -4.83114540220134e-06, -1.5289529061285272e-05, -4.542623454347129e-05, -0.0001266849673324797, -0.0003315648195030145, -0.0008142017766243376, -0.0018753313877699928, -0.002198841070313038, -0.0040496940948902835, -0.008194348896400031, -0.012119091785113029, -0.015524163314440337, -0.019674081875107833, -0.027505063473850584, -0.04550026389635842, -0.07010352451167991, -0.07576128119073401, -0.1002108019032871, -0.13206221708356908, -0.15865525393145705, -0.16997051428265114, -0.16952875746725288, -0.1555631215525111, -0.15426876936299344, -0.10032341857926907, -0.08414805913300356, -0.0004996010814969171, 0.0, 5.000398815948956e-05, 0.14967658142073093, 0.18537343538671314, 0.34573123063700656, 0.5376692295212916, 0.5800294857173488, 0.734345862024824, 0.8413447460685429, 1.117937782916431, 1.399789198096713, 1.5123211600473423, 1.67989647548832, 1.9544997361036416, 2.2224949365261493, 2.2753344966710967, 2.4844758366855597, 2.7418056511035998, 2.99595030590511, 3.24812466861223, 3.4991857982233756, 3.749668435180497, 3.9998733150326675, 4.249954573765456, 4.4999847104709385, 4.749995168854598, 4.999998566742141, 5.249999600739573, 5.499999895557407, 5.749999974342509, 5.999999994080474, 6.249999998717335, 6.49999999973896, 6.749999999950102, 6.999999999991041, 7.249999999998489, 7.499999999999761, 7.7499999999999645, 7.999999999999995, 8.25, 8.485199928283691, 8.5, 8.75, 9.0, 9.25, 9.5, 9.75, 10.0, 10.25, 10.5, 10.75, 11.0, 11.25, 11.5, 11.75, 12.0, 12.25, 12.5, 12.75, 13.0, 13.25, 13.5, 13.75, 14.0],
};

const SIZES = [1, 7, 33, 257];

/** Random data with a few extreme values mixed in (they exercise the exp clamps and thresholds). */
function data(n: number, seed: number, s = 6): Float32Array {
  const r = rng(seed);
  const a = randn(n, r, s);
  const extremes = [-120, -90, -30, -20.5, 19.5, 20.5, 30, 95, 0, -0];
  for (let i = 3; i < n; i += 11) a[i] = extremes[((i - 3) / 11) % extremes.length];
  return a;
}

describe.each(BUILDS)('elementwise activations (%s build)', (build) => {
  const unaryCases: [string, (k: any, y: number, x: number, n: number) => void, (x: Float32Array) => ArrayLike<number>][] = [
    ['silu', silu, siluRef],
    ['sigmoid', sigmoid, sigmoidRef],
    ['relu2', relu2, relu2Ref],
    ['softplus', softplus, softplusRef],
    ['gelu tanh', (k, y, x, n) => gelu(k, y, x, n, 'tanh'), (x) => geluRef(x, 'tanh')],
    ['gelu erf', (k, y, x, n) => gelu(k, y, x, n, 'none'), (x) => geluRef(x, 'none')],
    ['softcap 30', (k, y, x, n) => softcap(k, y, x, 30, n), (x) => softcapRef(x, 30)],
    ['softcap 2.5', (k, y, x, n) => softcap(k, y, x, 2.5, n), (x) => softcapRef(x, 2.5)],
  ];
  for (const [name, fn, ref] of unaryCases) {
    it.each(SIZES)(`${name} n=%i, out of place and in place`, async (n) => {
      const k = await kernels(build);
      const x = data(n, 17 + n + name.length);
      const X = k.arena.putF32(x), Y = k.arena.f32buf(n);
      poison(Y.v);
      fn(k, Y.ptr, X.ptr, n);
      const want = ref(x);
      expect(maxRelErr(Y.v, want)).toBeLessThan(1e-5);
      fn(k, X.ptr, X.ptr, n);
      expect(Array.from(X.v)).toEqual(Array.from(Y.v));
    });
  }

  it('softcap keeps small inputs accurate relative to themselves', async () => {
    const k = await kernels(build);
    const x = Float32Array.from([1e-6, -3e-4, 0.01, 0.399, -0.401, 0.4, 1e-20]);
    const X = k.arena.putF32(x), Y = k.arena.f32buf(x.length);
    softcap(k, Y.ptr, X.ptr, 1, x.length);
    const want = softcapRef(x, 1);
    for (let i = 0; i < x.length; i++) expect(Math.abs(Y.v[i] - want[i]) / Math.abs(want[i])).toBeLessThan(3e-7);
  });

  it('erf GELU matches mpmath elementwise to 1e-6 relative, including the far negative tail', async () => {
    const k = await kernels(build);
    const X = k.arena.putF32(Float32Array.from(GELU.gelu_x)), Y = k.arena.f32buf(GELU.gelu_x.length);
    poison(Y.v);
    gelu(k, Y.ptr, X.ptr, GELU.gelu_x.length, 'none');
    GELU.gelu.forEach((want, i) => {
      // Below 1.2e-38 the f32 result is subnormal: allow its spacing (1.4e-45) on top of 1e-6 relative.
      expect(Math.abs(Y.v[i] - want), `x=${GELU.gelu_x[i]}`).toBeLessThanOrEqual(1e-6 * Math.abs(want) + 1.5e-45);
    });
  });

  it.each(SIZES)('swiglu, geglu, mul, add, addScaled, scale n=%i', async (n) => {
    const k = await kernels(build);
    const r = rng(300 + n);
    const a = randn(n, r, 5), b = randn(n, r, 3);
    const A = k.arena.putF32(a), B = k.arena.putF32(b), Y = k.arena.f32buf(n);
    const check = (run: () => void, want: ArrayLike<number>): void => {
      poison(Y.v);
      run();
      expect(maxRelErr(Y.v, want)).toBeLessThan(1e-5);
    };
    const sa = siluRef(a);
    check(() => swiglu(k, Y.ptr, A.ptr, B.ptr, n), Array.from(sa, (v, i) => v * b[i]));
    const gt = geluRef(a, 'tanh'), ge = geluRef(a, 'none');
    check(() => geglu(k, Y.ptr, A.ptr, B.ptr, n, 'tanh'), Array.from(gt, (v, i) => v * b[i]));
    check(() => geglu(k, Y.ptr, A.ptr, B.ptr, n, 'none'), Array.from(ge, (v, i) => v * b[i]));
    check(() => mul(k, Y.ptr, A.ptr, B.ptr, n), Array.from(a, (v, i) => v * b[i]));
    check(() => add(k, Y.ptr, A.ptr, B.ptr, n), Array.from(a, (v, i) => v + b[i]));
    check(() => scale(k, Y.ptr, A.ptr, -0.375, n), Array.from(a, (v) => v * -0.375));
    Y.v.set(b);
    addScaled(k, Y.ptr, A.ptr, 1.5, n);
    expect(maxRelErr(Y.v, Array.from(a, (v, i) => b[i] + 1.5 * v))).toBeLessThan(1e-6);
    // In place: y aliases the gate.
    const G = k.arena.putF32(a);
    swiglu(k, G.ptr, G.ptr, B.ptr, n);
    expect(maxRelErr(G.v, Array.from(sa, (v, i) => v * b[i]))).toBeLessThan(1e-5);
  });

  it.each([[1, 1], [3, 7], [5, 33], [2, 257], [4, 1000]])('softmax rows=%i n=%i with cap, temperature and sinks', async (rows, n) => {
    const k = await kernels(build);
    const x = randn(rows * n, rng(rows * 1000 + n), 12);
    const X = k.arena.f32buf(rows * n);
    const run = (opts: Parameters<typeof softmax>[4], want: ArrayLike<number>): void => {
      X.v.set(x);
      softmax(k, X.ptr, rows, n, opts);
      expect(maxRelErr(X.v, want)).toBeLessThan(1e-5);
    };
    run({}, softmaxRef(x, rows, n));
    run({ cap: 5 }, softmaxRef(x, rows, n, { cap: 5 }));
    run({ temperature: 0.7 }, softmaxRef(x, rows, n, { temperature: 0.7 }));
    run({ cap: 30, temperature: 2 }, softmaxRef(x, rows, n, { cap: 30, temperature: 2 }));
    run({ sink: 3.5 }, softmaxRef(x, rows, n, { sink: () => 3.5 }));
    // A sink far above every logit takes almost all the mass: the rows must sum to well below 1.
    X.v.set(x);
    softmax(k, X.ptr, rows, n, { sink: 40 });
    for (let r = 0; r < rows; r++) expect(X.v.subarray(r * n, (r + 1) * n).reduce((a, b) => a + b, 0)).toBeLessThan(1e-3);
    const sinks = randn(Math.ceil(rows / 2), rng(5), 4);
    const S = k.arena.putF32(sinks);
    run({ sinks: S.ptr, sinkGroup: 2 }, softmaxRef(x, rows, n, { sink: (r) => sinks[Math.floor(r / 2)] }));
  });

  it('softmax leaves exp underflow at zero and rows sum to one', async () => {
    const k = await kernels(build);
    const x = Float32Array.from([0, -200, -87, -88, -1e30, 5, -Infinity]);
    const X = k.arena.putF32(x);
    softmax(k, X.ptr, 1, x.length);
    expect(maxRelErr(X.v, softmaxRef(x, 1, x.length))).toBeLessThan(1e-6);
    expect(X.v[6]).toBe(0);
    expect(X.v.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
  });

  it.each([1, 5, 33, 4099])('argmax and logSumExp n=%i', async (n) => {
    const k = await kernels(build);
    const x = randn(n, rng(n + 9), 20);
    const X = k.arena.putF32(x);
    let best = 0;
    for (let i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    expect(argmax(k, X.ptr, n)).toBe(best);
    expect(Math.abs(logSumExp(k, X.ptr, n) - logSumExpRef(x))).toBeLessThan(1e-5 * Math.max(1, Math.abs(logSumExpRef(x))));
    // Ties: the first index wins, also when the tie sits in the scalar tail.
    X.v.fill(-1);
    X.v[n - 1] = 7;
    if (n > 2) X.v[Math.floor(n / 2)] = 7;
    expect(argmax(k, X.ptr, n)).toBe(n > 2 ? Math.floor(n / 2) : n - 1);
    // NaN is skipped.
    if (n > 1) {
      X.v[0] = NaN;
      expect(argmax(k, X.ptr, n)).toBe(n > 2 ? Math.floor(n / 2) : n - 1);
    }
  });

  it('rejects bad arguments with the parameter named', async () => {
    const k = await kernels(build);
    const X = k.arena.f32buf(8);
    expect(() => silu(k, X.ptr, 3, 8)).toThrow(/x: bad pointer/);
    expect(() => silu(k, X.ptr, X.ptr, -1)).toThrow(/n must be/);
    expect(() => softcap(k, X.ptr, X.ptr, 0, 8)).toThrow(/cap/);
    expect(() => softmax(k, X.ptr, 1, 8, { temperature: 0 })).toThrow(/temperature/);
    expect(() => add(k, X.ptr, X.ptr, k.memory.buffer.byteLength - 8, 8)).toThrow(/b: .*past the end/);
  });
});
