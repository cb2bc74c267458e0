// WebGPU feed-forward checks: the activation kernel (SwiGLU, GeGLU tanh / erf, relu² gating, clamped
// SwiGLU, stacked biases picked by expert id) against the float64 references, the MoE router (every
// routing mode, groups, selection bias, scaling, ties) against the WASM router, and whole FFN layers
// (gated MLPs, Moe) recorded alone on the GPU against the same layer run by the WASM executor on the
// same weights: the instances of the parity fixtures, plus variants of them (other activations,
// biases, routing modes, expert biases, shared expert with / without gate). Outputs are poisoned with
// NaN first. Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { TOKENS_BASE, type GpuBufs } from '../../src/webgpu/ops';
import { activation, actOp, route as gpuRoute, type GatedAct } from '../../src/webgpu/dispatch/ffn';
import { ACT_OP } from '../../src/webgpu/kernels/act.wgsl';
import { instantiate } from '../../src/kernels/runtime';
import { route as wasmRoute, type RouteOptions } from '../../src/kernels/moe';
import { gelu as wasmGelu } from '../../src/kernels/act';
import { geluRef, siluRef, relu2Ref } from '../../src/kernels/act.ref';
import { routeRef } from '../../src/kernels/moe.ref';
import { openCheckpoint } from '../../src/formats/checkpoint';
import { buildModel, type Model } from '../../src/models/index';
import { type DecoderNet, PreNormBlock } from '../../src/models/decoder';
import { GatedMlp, type GatedWeights } from '../../src/layers/mlp';
import { Moe, type MoeConfig } from '../../src/layers/moe';
import type { Ffn } from '../../src/layers/context';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';
import { gpuLayer, wasmLayer } from './layers';

const { randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk: bufs, put, run } = gpuBench(gpu);
  const k = await instantiate({});

  const ACT = 1 << 18;
  /** Activations of `actFloats` (NaN), no state, token ids all 0xffffffff. */
  const mk = (cData?: Float32Array, actFloats = ACT): GpuBufs => {
    const b = bufs(actFloats, 16, cData);
    put(b.ids, 0, new Uint32Array(TOKENS_BASE).fill(0xffffffff));
    return b;
  };
  const readIds = async (b: GpuBufs, n: number) => new Uint32Array((await run([], b.ids, 0, n)).buffer);

  // --- activations, odd sizes, gate values over [−14, 14] -----------------------------------------
  {
    const n = 1037;
    const G = randn(n, 14), U = randn(n, 2);
    G[0] = 0; G[1] = -0.5 * Math.SQRT2; G[2] = 0.5 * Math.SQRT2; G[3] = 6 * Math.SQRT2; G[4] = -6 * Math.SQRT2; G[5] = 1e-20;
    const refs: [GatedAct, Float64Array][] = [
      ['silu', siluRef(G)], ['gelu_tanh', geluRef(G, 'tanh')], ['gelu', geluRef(G, 'none')], ['relu2', relu2Ref(G)],
    ];
    for (const [act, r] of refs) {
      const b = mk();
      put(b.a, 0, G);
      put(b.a, 2048, U);
      const got = await run([activation(K, b, actOp(act), 4096, 0, 2048, n)], b.a, 4096, n);
      const want = r.map((v, i) => v * U[i]);
      check(`act ${act}(g)·u n=${n}`, rel(got, want), 2e-6);
      if (act === 'gelu') {
        // The erf GELU alone (u = 1) against the WASM kernel (f64 erfc), x on a fine grid over [−14, 14]:
        // 1 + erf to a few f32 ulps absolute (|Δgelu| / (|x|/2); both outputs are rounded to f32), and
        // the output relative per element where the tail is still far above f32 underflow.
        const xs = Float32Array.from({ length: 1619 }, (_, i) => -14 + i * 0.0173);
        const m = xs.length;
        const b1 = mk();
        put(b1.a, 0, xs);
        put(b1.a, 2048, new Float32Array(m).fill(1));
        const g1 = await run([activation(K, b1, actOp(act), 4096, 0, 2048, m)], b1.a, 4096, m);
        const xp = k.arena.putF32(xs).ptr, yp = k.arena.f32buf(m).ptr;
        wasmGelu(k, yp, xp, m, 'none');
        const w1 = k.arena.f32(yp, m).slice();
        let erfErr = 0, relNear = 0, relTail = 0;
        for (let i = 0; i < m; i++) {
          const d = Math.abs(g1[i] - w1[i]);
          if (!Number.isFinite(d)) erfErr = Infinity;
          if (xs[i] !== 0) erfErr = Math.max(erfErr, d / (0.5 * Math.abs(xs[i])));
          const r = d / Math.max(Math.abs(w1[i]), 1e-38);
          if (Math.abs(xs[i]) <= 3) relNear = Math.max(relNear, r);
          else if (Math.abs(xs[i]) <= 8) relTail = Math.max(relTail, r);
        }
        check('gelu erf: erf absolute error over |x| ≤ 14', erfErr, 3e-7);
        check('gelu erf: relative per element, |x| ≤ 3', relNear, 5e-7);
        check('gelu erf: relative per element, 3 < |x| ≤ 8', relTail, 3e-6);
      }
    }
    // clamped SwiGLU (gpt-oss), alpha 1.702, limit 7
    {
      const b = mk();
      const U2 = randn(n, 10);
      put(b.a, 0, G);
      put(b.a, 2048, U2);
      const got = await run([activation(K, b, ACT_OP.clampedSwiglu, 4096, 0, 2048, n, { alpha: 1.702, limit: 7 })], b.a, 4096, n);
      const want = Array.from(G, (g, i) => {
        const gt = Math.min(g, 7), up = Math.min(Math.max(U2[i], -7), 7);
        return (up + 1) * gt / (1 + Math.exp(-1.702 * gt));
      });
      check('act clamped SwiGLU α=1.702 limit=7', rel(got, want), 2e-6);
    }
    // stacked biases by expert id: 3 slots of len 19 from 5 experts, gate + up bias, then bias-only op
    {
      const E = 5, len = 19, slots = 3, sel = [4, 0, 2];
      const gb = randn(E * len), ub = randn(E * len), db = randn(E * len);
      const cData = new Float32Array(3 * E * len + 8);
      cData.set(gb, 0); cData.set(ub, E * len); cData.set(db, 2 * E * len);
      const g = randn(slots * len, 3), u = randn(slots * len);
      const b = mk(cData);
      put(b.a, 0, g);
      put(b.a, 512, u);
      put(b.ids, 8, new Uint32Array(sel));
      const got = await run([
        activation(K, b, ACT_OP.swiglu, 1024, 0, 512, slots * len, { gBias: 0, uBias: E * len, len, idsOff: 8 }),
        activation(K, b, ACT_OP.bias, 1024, 1024, 1024, slots * len, { gBias: 2 * E * len, len, idsOff: 8 }),
      ], b.a, 1024, slots * len);
      const want = Array.from({ length: slots * len }, (_, i) => {
        const e = sel[Math.floor(i / len)], r = i % len;
        const gg = g[i] + gb[e * len + r];
        return (gg / (1 + Math.exp(-gg))) * (u[i] + ub[e * len + r]) + db[e * len + r];
      });
      check('act SwiGLU + per-expert biases by id', rel(got, want), 2e-6);
    }
  }

  // --- router: every mode against the WASM router (ids exact, weights relative) -------------------
  {
    const cases: { name: string; E: number; Kk: number; o: RouteOptions; bias?: boolean; tie?: boolean }[] = [
      { name: 'softmax_topk', E: 37, Kk: 5, o: { mode: 'softmax_topk' } },
      { name: 'softmax_topk renorm', E: 70, Kk: 8, o: { mode: 'softmax_topk', renormalize: true } },
      { name: 'softmax_topk ties', E: 13, Kk: 4, o: { mode: 'softmax_topk', renormalize: true }, tie: true },
      { name: 'topk_softmax', E: 33, Kk: 4, o: { mode: 'topk_softmax' } },
      { name: 'topk_softmax scaled', E: 9, Kk: 9, o: { mode: 'topk_softmax', routedScaling: 1.5 } },
      { name: 'sigmoid', E: 24, Kk: 6, o: { mode: 'sigmoid' } },
      { name: 'sigmoid renorm bias', E: 130, Kk: 8, o: { mode: 'sigmoid', renormalize: true }, bias: true },
      { name: 'sigmoid groups 8/3 bias scaling', E: 64, Kk: 6, o: { mode: 'sigmoid', renormalize: true, nGroup: 8, topkGroup: 3, routedScaling: 2.5 }, bias: true },
      { name: 'sigmoid groups 4/2 fill −∞', E: 12, Kk: 5, o: { mode: 'sigmoid', nGroup: 4, topkGroup: 2, maskFill: -Infinity }, bias: true },
      { name: 'sigmoid groups ties', E: 16, Kk: 3, o: { mode: 'sigmoid', renormalize: true, nGroup: 4, topkGroup: 2 }, tie: true },
    ];
    for (const cs of cases) {
      const T = 3, { E, Kk } = cs;
      const L = randn(T * E, 3);
      if (cs.tie) for (let i = 0; i < T * E; i++) L[i] = Math.round(L[i]);
      const bias = cs.bias ? randn(E, 0.5) : undefined;
      const lp = k.arena.putF32(L).ptr, idp = k.arena.alloc(T * Kk * 4, 4), wp = k.arena.f32buf(T * Kk).ptr;
      const o = { ...cs.o, bias: bias ? k.arena.putF32(bias).ptr : undefined };
      wasmRoute(k, idp, wp, lp, T, E, Kk, o);
      const wantIds = Array.from(k.arena.i32(idp, T * Kk));
      const wantW = k.arena.f32(wp, T * Kk).slice();
      const b = mk(bias ?? new Float32Array(4));
      put(b.a, 0, L);
      const gotW = await run([gpuRoute(K, b, 16, 2048, 0, T, E, Kk, { ...cs.o, bias: bias ? 0 : undefined })], b.a, 2048, T * Kk);
      const gotIds = Array.from(await readIds(b, 16 + T * Kk)).slice(16);
      const mism = gotIds.filter((v, i) => v !== wantIds[i]).length;
      check(`route ${cs.name} E=${E} k=${Kk}: ids`, mism, 0);
      check(`route ${cs.name} E=${E} k=${Kk}: weights`, rel(gotW, wantW), 1e-6);
      if (!cs.tie) {
        const r = routeRef(L, T, E, Kk, { ...cs.o, bias });
        check(`route ${cs.name}: ids = reference`, r.ids.flat().filter((v, i) => v !== wantIds[i]).length, 0);
      }
    }
  }

  // --- whole FFN layers from the fixtures and variants ---------------------------------------------
  const models = new Map<string, Model>();
  const load = async (name: string) => {
    let m = models.get(name);
    if (!m) models.set(name, (m = await buildModel(await openCheckpoint(`test/fixtures/parity/${name}`), { exact: true, maxContext: 16 })));
    return m;
  };
  const ffnsOf = (m: Model): Ffn[] => {
    const net = m.net as DecoderNet;
    return net.d.blocks.map((blk) => (blk instanceof PreNormBlock ? blk.s.ffn : undefined)).filter((f): f is Ffn => !!f);
  };
  /** GPU FFN alone vs the same FFN on the WASM executor, on the same x (one token). */
  const layerCheck = async (name: string, m: Model, f: Ffn, tol = 1e-5) => {
    const D = m.net.hidden;
    const X = randn(D, 2);
    const s = m.newSession();
    const want = wasmLayer(m, D, (g, x, y) => f.forward(g, x, y), 1)(s, X, 0);
    s.dispose();
    const { B, g, x, y } = gpuLayer(m, K, D, (g, xx, yy) => f.forward(g, xx, yy), name);
    const b = mk(B.packConsts(), g.act.high);
    put(b.a, x, X);
    const got = await run(g.emits.flatMap((e) => e(b)), b.a, y, D);
    check(`layer ${name}`, rel(got, want), tol);
  };
  const vec = (m: Model, n: number, s = 0.3) => m.k.arena.putF32(randn(n, s)).ptr;
  const withBiases = (m: Model, w: GatedWeights): GatedWeights => ({
    ...w, gateBias: vec(m, w.gate.rows), upBias: vec(m, w.up.rows), downBias: vec(m, w.down.rows),
  });
  const mlpVariant = (f: GatedMlp, o: Partial<GatedMlp>): GatedMlp => Object.assign(Object.create(GatedMlp.prototype), f, o);
  const moeVariant = (f: Moe, cfg: Partial<MoeConfig>): Moe => new Moe(f.ctx, { ...f.cfg, ...cfg });

  // Fixture instances, as the parity models have them.
  for (const name of ['qwen2moe-shared', 'olmoe-clipqkv', 'gptoss-sinks', 'gemma2-softcap-swa', 'gemma3-text', 'deepseekv3-mla', 'jamba-hybrid', 'granitemoehybrid', 'lfm2-shortconv', 'llama-llama3rope-bias']) {
    const m = await load(name);
    const fs = ffnsOf(m);
    const seen = new Set<string>();
    for (const f of fs) {
      const kind = f.constructor.name;
      if (seen.has(kind)) continue;
      seen.add(kind);
      await layerCheck(`${name} ${kind}`, m, f);
    }
  }

  // GatedMlp: every activation, with and without biases.
  {
    const m = await load('llama-llama3rope-bias');
    const f = ffnsOf(m).find((x) => x instanceof GatedMlp) as GatedMlp;
    for (const act of ['silu', 'gelu_tanh', 'gelu', 'relu2'] as const) {
      await layerCheck(`GatedMlp ${act}`, m, mlpVariant(f, { act }));
      await layerCheck(`GatedMlp ${act} + biases`, m, mlpVariant(f, { act, w: withBiases(m, f.w) }));
    }
  }

  // Moe: routing modes, router bias, expert biases, activations, shared expert with / without gate.
  {
    const m = await load('qwen2moe-shared');
    const f = ffnsOf(m).find((x) => x instanceof Moe) as Moe;
    const E = f.cfg.nExperts;
    const biased = Array.from({ length: E }, (_, e) => withBiases(m, f.cfg.expert(e)));
    const variants: [string, Partial<MoeConfig>][] = [
      ['softmax_topk renorm', { routing: { mode: 'softmax_topk', renormalize: true } }],
      ['topk_softmax + router bias', { routing: { mode: 'topk_softmax' }, routerBias: vec(m, E, 1) }],
      ['sigmoid renorm + selection bias + scaling', { routing: { mode: 'sigmoid', renormalize: true, bias: vec(m, E, 0.5), routedScaling: 2.5 } }],
      ['sigmoid groups 3/2', { routing: { mode: 'sigmoid', renormalize: true, nGroup: 3, topkGroup: 2, bias: vec(m, E, 0.5) } }],
      ['expert biases', { expert: (e) => biased[e] }],
      ['gelu experts', { act: 'gelu' }],
      ['gelu_tanh experts + biases', { act: 'gelu_tanh', expert: (e) => biased[e] }],
      ['relu2 experts', { act: 'relu2' }],
      ['shared expert without gate', { shared: { ...f.cfg.shared!, gate: undefined } }],
      ['shared expert with biases', { shared: { ...f.cfg.shared!, w: withBiases(m, f.cfg.shared!.w) } }],
      ['no shared expert', { shared: undefined }],
    ];
    for (const [name, cfg] of variants) await layerCheck(`Moe ${name}`, m, moeVariant(f, cfg));
  }
  {
    const m = await load('deepseekv3-mla');
    const f = ffnsOf(m).find((x) => x instanceof Moe) as Moe;
    await layerCheck('Moe deepseek groups, topkGroup 1', m, moeVariant(f, { routing: { ...f.cfg.routing, topkGroup: 1 } }));
    await layerCheck('Moe deepseek groups, fill −∞', m, moeVariant(f, { routing: { ...f.cfg.routing, maskFill: -Infinity } }));
  }

  checks.print(gpu.adapterName);
});
