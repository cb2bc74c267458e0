// WebGPU checks of the MoE paths LongCat-Flash and Gemma 4 use: the zero-expert MoE (ops-zeromoe.ts:
// real and identity experts, router bias, selection bias, scaling) and the core MoE with a separate
// routing input and per-expert scales, each recorded alone on the GPU against the same layer on the
// WASM executor, for one row and for a prompt chunk of rows (activations poisoned with NaN first).
// Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { openCheckpoint } from '../../src/formats/checkpoint';
import type { Graph, Tensor } from '../../src/graph/graph';
import { moe, scale } from '../../src/graph/ops';
import { zeroMoe, type ZeroMoeSpec } from '../../src/graph/ops-zeromoe';
import { Moe } from '../../src/layers/moe';
import { type DecoderNet, PreNormBlock } from '../../src/models/decoder';
import { buildModel } from '../../src/models/index';
import { Checks, gpuBench, rel, rng, withGpu } from './harness';
import { gpuLayer, wasmLayer, type LayerFn } from './layers';

const { randn } = rng(9191);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk, put, run } = gpuBench(gpu);
  const m = await buildModel(await openCheckpoint('test/fixtures/parity/mixtral-moe'), { exact: true, maxContext: 32, maxChunk: 8 });
  const D = m.net.hidden;
  const arena = m.k.arena;

  /** The layer on the GPU over T rows vs the WASM executor on the same rows. */
  const layerCheck = async (name: string, fn: LayerFn, T: number, tol = 1e-5) => {
    const X = randn(T * D, 1.5);
    const s = m.newSession();
    const want = wasmLayer(m, D, fn, T)(s, X, 0);
    s.dispose();
    const { B, g, x, y } = gpuLayer(m, K, D, fn, name, T);
    const b = mk(g.act.high, 16, B.packConsts());
    put(b.a, x, X);
    const got = await run(g.emits.flatMap((e) => e(b)), b.a, y, T * D);
    check(`${name} T=${T}`, rel(got, want), tol);
  };

  // Zero-expert MoE: 6 real experts of 24, 5 identity experts, top-4.
  {
    const E = 6, Z = 5, N = E + Z, I = 24;
    const gu = arena.putF32(randn(E * 2 * I * D, 0.2)).ptr, dn = arena.putF32(randn(E * D * I, 0.2)).ptr;
    const base: ZeroMoeSpec = {
      name: 'zero-moe', hidden: D, nExperts: E, nZero: Z, topk: 4, inter: I, act: 'silu',
      router: { ptr: arena.putF32(randn(N * D, 0.4)).ptr, dtype: 'f32', rows: N, cols: D },
      routerBias: 0, bias: 0, routedScaling: 1,
      expert: (e) => ({
        gate: { ptr: gu + e * 2 * I * D * 4, dtype: 'f32', rows: I, cols: D },
        up: { ptr: gu + (e * 2 * I + I) * D * 4, dtype: 'f32', rows: I, cols: D },
        down: { ptr: dn + e * D * I * 4, dtype: 'f32', rows: D, cols: I },
      }),
    };
    const variants: [string, Partial<ZeroMoeSpec>][] = [
      ['plain', {}],
      ['selection bias + scaling 2.5', { bias: arena.putF32(randn(N, 0.05)).ptr, routedScaling: 2.5 }],
      ['router bias, top-1', { routerBias: arena.putF32(randn(N, 1)).ptr, topk: 1 }],
      ['gelu_tanh experts', { act: 'gelu_tanh' }],
    ];
    for (const [name, v] of variants) {
      const spec = { ...base, ...v };
      for (const T of [1, 7]) await layerCheck(`zero-expert MoE ${name}`, (g: Graph, x: Tensor, y: Tensor) => zeroMoe(g, y, x, spec), T);
    }
  }

  // Core MoE with a separate routing input (0.7·x) and per-expert scales.
  {
    const net = m.net as DecoderNet;
    const f = net.d.blocks.map((blk) => (blk instanceof PreNormBlock ? blk.s.ffn : undefined)).find((x) => x instanceof Moe) as Moe;
    const E = f.cfg.nExperts;
    const scaled = new Moe(f.ctx, { ...f.cfg, expertScale: arena.putF32(randn(E, 0.5).map((v) => 1 + v)).ptr });
    for (const T of [1, 7]) {
      await layerCheck('Moe expert scales', (g, x, y) => scaled.forward(g, x, y), T);
      await layerCheck('Moe routing input + expert scales', (g, x, y) => {
        const r = g.tmp(D);
        scale(g, r, x, 0.7);
        moe(g, y, x, scaled.spec, r);
      }, T);
    }
  }

  checks.print(gpu.adapterName);
});
