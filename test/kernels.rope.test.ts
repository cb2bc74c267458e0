import { describe, expect, it } from 'vitest';
import { rope, ropeTables } from '../src/kernels/rope';
import { ropeRef } from '../src/kernels/rope.ref';
import { BUILDS, kernels, maxRelErr, randn, rng } from './helpers';

// Inverse-frequency tables from transformers' rope-init functions replayed with numpy float32 in
// place of torch float32 tensors (configs in the test names). Torch's powf may round a rare entry
// differently by 1 ulp, so tables are compared to 2 ulp (relative 2.4e-7).
const FX = 
{
  default: [1.0, 0.7498942017555237, 0.5623413324356079, 0.4216965138912201, 0.3162277638912201, 0.23713739216327667, 0.17782793939113617, 0.1333521455526352, 0.10000000149011612, 0.07498941570520401, 0.05623412877321243, 0.04216964915394783, 0.03162277862429619, 0.0237137358635664, 0.017782794311642647, 0.01333521492779255, 0.009999999776482582, 0.007498942315578461, 0.005623413249850273, 0.0042169648222625256, 0.003162277862429619, 0.0023713738191872835, 0.0017782794311642647, 0.0013335214462131262, 0.0010000000474974513, 0.0007498941849917173, 0.000562341301701963, 0.00042169654625467956, 0.0003162277862429619, 0.0002371373848291114, 0.00017782794020604342, 0.0001333521504420787],
  default_1e6_d24: [1.0, 0.3162277638912201, 0.10000000149011612, 0.03162277862429619, 0.009999998845160007, 0.0031622780952602625, 0.0010000000474974513, 0.0003162278444506228, 9.999998292187229e-05, 3.162277425872162e-05, 1.0000002475862857e-05, 3.162276925650076e-06],
  linear: [0.25, 0.14058533310890198, 0.07905694097280502, 0.04445698484778404, 0.02500000037252903, 0.014058532193303108, 0.007905694656074047, 0.004445698577910662, 0.0024999999441206455, 0.0014058533124625683, 0.0007905694656074047, 0.00044456985779106617, 0.0002500000118743628, 0.00014058532542549074, 7.905694656074047e-05, 4.4456985051510856e-05],
  dynamic: [1.0, 0.5382295846939087, 0.2896910607814789, 0.15592028200626373, 0.08392089605331421, 0.04516870900988579, 0.024311134591698647, 0.013084971345961094, 0.007042717654258013, 0.0037905985955148935, 0.0020402122754603624, 0.0010981025407090783, 0.000591031217481941, 0.0003181104548275471, 0.00017121645214501768, 9.21537503018044e-05],
  yarn: [1.0, 0.7498942017555237, 0.5623413324356079, 0.4216965138912201, 0.3162277638912201, 0.23713739216327667, 0.17782793939113617, 0.1333521455526352, 0.10000000149011612, 0.07498941570520401, 0.05623412877321243, 0.039006926119327545, 0.026879360899329185, 0.01837814413011074, 0.012447956018149853, 0.0083345090970397, 0.005500000435858965, 0.0035619973205029964, 0.002249365206807852, 0.0013705134624615312, 0.0007905694073997438, 0.0004149904125370085, 0.00017782794020604342, 3.333803397254087e-05, 2.499999936844688e-05, 1.8747354260995053e-05, 1.4058532542549074e-05, 1.054241420206381e-05, 7.905694474175107e-06, 5.928434347879374e-06, 4.445698323252145e-06, 3.3338035336782923e-06],
  yarn_notrunc: [1.0, 0.6890442967414856, 0.4747820496559143, 0.32714584469795227, 0.22541800141334534, 0.15532298386096954, 0.1070244237780571, 0.07374456524848938, 0.050813280045986176, 0.031705696135759354, 0.019335001707077026, 0.011592049151659012, 0.006794959306716919, 0.0038603590801358223, 0.002093792660161853, 0.00105260219424963, 0.0004564839182421565, 0.00012931869423482567, 3.830881178146228e-05, 2.63964720943477e-05, 1.818833698052913e-05, 1.253256959898863e-05, 8.635495760245249e-06, 5.95023948335438e-06, 4.099978468730114e-06, 2.8250667583051836e-06, 1.9465962850517826e-06, 1.3412910675469902e-06, 9.242089618055616e-07, 6.368209142237902e-07, 4.38797854940276e-07, 3.023511396804679e-07],
  llama3: [1.0, 0.6636012196540833, 0.44036662578582764, 0.2922278046607971, 0.193922758102417, 0.12868738174438477, 0.08539710193872452, 0.05666961893439293, 0.03760603070259094, 0.02495540864765644, 0.016560440883040428, 0.010989529080688953, 0.00729266507551074, 0.00483942124992609, 0.0032114461064338684, 0.0013718936825171113, 0.0005248460220173001, 0.0001785077911335975, 7.784655463183299e-05, 5.1659073506016284e-05, 3.428102354519069e-05, 2.274892722198274e-05, 1.5096217794052791e-05, 1.0017867680289783e-05, 6.647870577580761e-06, 4.411534519022098e-06, 2.927499735960737e-06, 1.9426925064180978e-06, 1.289173155782919e-06, 8.554969213037111e-07, 5.677088097399974e-07, 3.767322880321444e-07],
  longrope_short: [1.0, 0.5355631709098816, 0.2874797582626343, 0.15463300049304962, 0.0833333358168602, 0.044987305998802185, 0.024325214326381683, 0.01317243929952383, 0.0071428571827709675, 0.003878215793520212, 0.0021081853192299604, 0.0011472770711407065, 0.0006249999860301614, 0.00034081292687915266, 0.0001860163320088759, 0.00010161597310798243],
  longrope_long: [0.6666666865348816, 0.3124118447303772, 0.1505846530199051, 0.0740949735045433, 0.03703703731298447, 0.018744710832834244, 0.009582660160958767, 0.004939664620906115, 0.0025641026441007853, 0.0013389079831540585, 0.0007027284009382129, 0.00037047488149255514, 0.0001960784284165129, 0.00010413728159619495, 5.547855471377261e-05, 2.9637993065989576e-05],
  sf: [1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.45, 1.5, 1.55, 1.6, 1.65, 1.7000000000000002, 1.75],
  lf: [1.5, 1.8, 2.1, 2.4, 2.7, 3.0, 3.3, 3.6, 3.9, 4.199999999999999, 4.5, 4.8, 5.1, 5.4, 5.7, 6.0],
};

function expectUlps(got: Float32Array, want: number[], ulps = 2): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]), `entry ${i}`).toBeLessThanOrEqual(ulps * 1.1920929e-7 * Math.abs(want[i]));
}

describe('ropeTables', () => {
  it('default, theta 1e4 dim 64 and theta 1e6 dim 24 (partial rotary of head 32)', () => {
    expectUlps(ropeTables({ headDim: 64, rotaryDim: 64, theta: 10000 }).invFreq, FX.default);
    const t = ropeTables({ headDim: 32, rotaryDim: 24, theta: 1e6, scaling: null });
    expectUlps(t.invFreq, FX.default_1e6_d24);
    expect(t.attentionFactor).toBe(1);
  });
  it('linear factor 4', () => {
    expectUlps(ropeTables({ headDim: 32, rotaryDim: 32, theta: 10000, scaling: { type: 'linear', factor: 4 } }).invFreq, FX.linear);
  });
  it('dynamic factor 2, max 2048, at seq_len 3000 (and unchanged below max)', () => {
    const s = { rope_type: 'dynamic', factor: 2 };
    expectUlps(ropeTables({ headDim: 32, rotaryDim: 32, theta: 10000, scaling: s, maxPositions: 2048, seqLen: 3000 }).invFreq, FX.dynamic);
    const base = ropeTables({ headDim: 32, rotaryDim: 32, theta: 10000 }).invFreq;
    expect(Array.from(ropeTables({ headDim: 32, rotaryDim: 32, theta: 10000, scaling: s, maxPositions: 2048 }).invFreq)).toEqual(Array.from(base));
  });
  it('yarn factor 40 orig 4096 (DeepSeek-style mscale 1 / mscale_all_dim 1) and truncate=false', () => {
    const t = ropeTables({ headDim: 64, rotaryDim: 64, theta: 10000, maxPositions: 163840, scaling: { rope_type: 'yarn', factor: 40, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1 } });
    expectUlps(t.invFreq, FX.yarn);
    expect(t.attentionFactor).toBe(1); // get_mscale(40, 1) / get_mscale(40, 1)
    const u = ropeTables({ headDim: 64, rotaryDim: 64, theta: 150000, maxPositions: 131072, scaling: { rope_type: 'yarn', factor: 32, original_max_position_embeddings: 4096, truncate: false } });
    expectUlps(u.invFreq, FX.yarn_notrunc);
    expect(u.attentionFactor).toBeCloseTo(0.1 * Math.log(32) + 1, 12);
    const v = ropeTables({ headDim: 64, rotaryDim: 64, theta: 10000, maxPositions: 163840, scaling: { rope_type: 'yarn', factor: 40, original_max_position_embeddings: 4096, mscale: 1, mscale_all_dim: 0.707 } });
    expect(v.attentionFactor).toBeCloseTo((0.1 * Math.log(40) + 1) / (0.1 * 0.707 * Math.log(40) + 1), 12);
  });
  it('llama3 factor 8, low 1, high 4, orig 8192, theta 5e5', () => {
    const t = ropeTables({ headDim: 64, rotaryDim: 64, theta: 500000, scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } });
    expectUlps(t.invFreq, FX.llama3);
  });
  it('longrope short and long factors, attention factor from max / original', () => {
    const scaling = { rope_type: 'longrope', short_factor: FX.sf, long_factor: FX.lf, original_max_position_embeddings: 4096 };
    const a = ropeTables({ headDim: 32, rotaryDim: 32, theta: 10000, maxPositions: 131072, scaling });
    expectUlps(a.invFreq, FX.longrope_short);
    expect(a.attentionFactor).toBeCloseTo(Math.sqrt(1 + Math.log(32) / Math.log(4096)), 12);
    expectUlps(ropeTables({ headDim: 32, rotaryDim: 32, theta: 10000, maxPositions: 131072, scaling, seqLen: 5000 }).invFreq, FX.longrope_long);
  });
  it('rejects unknown types and odd rotary dims', () => {
    expect(() => ropeTables({ headDim: 64, rotaryDim: 63, theta: 10000 })).toThrow(/rotaryDim/);
    expect(() => ropeTables({ headDim: 64, rotaryDim: 64, theta: 10000, scaling: { rope_type: 'mystery' } })).toThrow(/not supported/);
    expect(() => ropeTables({ headDim: 64, rotaryDim: 64, theta: 10000, scaling: { rope_type: 'yarn', factor: 4 } })).toThrow(/maxPositions/);
  });
});

describe.each(BUILDS)('rope kernel (%s build)', (build) => {
  // Tolerance: a handful of f32 products on cos/sin rounded to f32: ≤ 1e-5 relative.
  it.each([
    [1, 1, 8, 8, 'neox'], [5, 3, 18, 18, 'neox'], [33, 2, 64, 64, 'interleaved'], [7, 4, 64, 16, 'neox'], [3, 5, 64, 32, 'interleaved'], [2, 2, 256, 64, 'neox'],
  ] as const)('T=%i heads=%i headDim=%i rotaryDim=%i %s', async (T, H, D, rd, style) => {
    const k = await kernels(build);
    const r = rng(T * 13 + H * 7 + D + rd);
    const x = randn(T * H * D, r, 2);
    const pos = Int32Array.from({ length: T }, (_, t) => (t * 977 + 3) % 70000 + (t === 0 ? 0 : 100000));
    const { invFreq, attentionFactor } = ropeTables({ headDim: D, rotaryDim: rd, theta: 10000, maxPositions: 4096, scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 1024 } });
    const X = k.arena.putF32(x), F = k.arena.putF32(invFreq);
    const P = k.arena.alloc(T * 4);
    k.arena.i32(P, T).set(pos);
    rope(k, X.ptr, T, H, D, P, F.ptr, rd, style, attentionFactor);
    const want = ropeRef(x, T, H, D, pos, invFreq, rd, style, attentionFactor);
    expect(maxRelErr(X.v, want)).toBeLessThan(1e-5);
    // Dims past rotaryDim are untouched.
    for (let i = 0; i < T * H; i++) expect(Array.from(X.v.subarray(i * D + rd, (i + 1) * D))).toEqual(Array.from(x.subarray(i * D + rd, (i + 1) * D)));
  });

  it('head and row strides: rotates q inside [T, H, 2·D] (query|gate) and nothing else', async () => {
    const k = await kernels(build);
    const T = 4, H = 3, D = 16;
    const x = randn(T * H * 2 * D, rng(1), 1);
    const pos = Int32Array.from([0, 1, 2, 3]);
    const { invFreq } = ropeTables({ headDim: D, rotaryDim: D, theta: 10000 });
    const X = k.arena.putF32(x), F = k.arena.putF32(invFreq), P = k.arena.alloc(16);
    k.arena.i32(P, T).set(pos);
    rope(k, X.ptr, T, H, D, P, F.ptr, D, 'neox', 1, 2 * D);
    const want = ropeRef(x, T, H, D, pos, invFreq, D, 'neox', 1, 2 * D);
    expect(maxRelErr(X.v, want)).toBeLessThan(1e-5);
    // Position 0 is the identity.
    expect(Array.from(X.v.subarray(0, D))).toEqual(Array.from(x.subarray(0, D)));
  });

  it('decode steps one token at a time equal one call over the chunk', async () => {
    const k = await kernels(build);
    const T = 9, H = 2, D = 32;
    const x = randn(T * H * D, rng(4), 1);
    const { invFreq } = ropeTables({ headDim: D, rotaryDim: D, theta: 500000 });
    const A = k.arena.putF32(x), B = k.arena.putF32(x), F = k.arena.putF32(invFreq), P = k.arena.alloc(T * 4);
    k.arena.i32(P, T).set(Int32Array.from({ length: T }, (_, t) => 40 + t));
    rope(k, A.ptr, T, H, D, P, F.ptr, D, 'neox');
    for (let t = 0; t < T; t++) rope(k, B.ptr + t * H * D * 4, 1, H, D, P + t * 4, F.ptr, D, 'neox');
    expect(Array.from(B.v)).toEqual(Array.from(A.v));
  });
});
