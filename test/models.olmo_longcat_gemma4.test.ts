// OLMo Hybrid, LongCat-Flash and Gemma 4: parity against the transformers fixtures (when present), the
// zero-expert MoE op against a float64 reference, and config.json fields read as transformers' config
// classes read them, unsupported values rejected naming the field.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { ConfigError } from '../src/formats/errors';
import type { Graph, Tensor } from '../src/graph/graph';
import { zeroMoe, type ZeroMoeSpec } from '../src/graph/ops-zeromoe';
import type { WasmGraph } from '../src/graph/wasm';
import { zeroMoeRoute } from '../src/graph/wasm-zeromoe';
import { buildModel } from '../src/models/index';
import { parseGemma4 } from '../src/models/gemma4';
import { parseLongcat } from '../src/models/longcat_flash';
import { parseOlmoHybrid } from '../src/models/olmo_hybrid';
import { runFixture } from '../tools/parity-lib';
import { maxRelErr, modelFromTensors, randn, rng } from './helpers';
import { wasmLayer } from './webgpu/layers';

const FIXTURES = [
  'olmohybrid-rope-gqa', 'olmohybrid-nope-tied', 'longcat-zero-experts', 'longcat-yarn-tied', 'gemma4-ple-kvshare', 'gemma4-moe',
].map((n) => `test/fixtures/parity/${n}`).filter((d) => existsSync(join(d, 'reference.json')));

describe.runIf(FIXTURES.length > 0)('HF parity fixtures', () => {
  for (const dir of FIXTURES) {
    it(dir.split('/').pop()!, async () => {
      const r = await runFixture(dir);
      expect(r.error).toBeUndefined();
      expect(r.prefillErr).toBeLessThanOrEqual(1e-4);
      expect(r.decodeErr).toBeLessThanOrEqual(1e-4);
      expect(r.greedyAgree).toBe(r.greedyTotal);
    }, 120_000);
  }
});

/** The f32 tensors of a fixture's model.safetensors. */
function readTensors(dir: string): { name: string; shape: number[]; data: Float32Array }[] {
  const buf = readFileSync(join(dir, 'model.safetensors'));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  return Object.entries(header).filter(([k]) => k !== '__metadata__').map(([name, h]) => {
    expect(h.dtype).toBe('F32');
    const bytes = buf.subarray(8 + n + h.data_offsets[0], 8 + n + h.data_offsets[1]);
    return { name, shape: h.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
  });
}

const GEMMA4 = 'test/fixtures/parity/gemma4-ple-kvshare';

describe.runIf(existsSync(join(GEMMA4, 'reference.json')))('gemma4 multimodal checkpoint layout', () => {
  it('loads the language model from a composite config (text_config, weights under model.language_model., towers and shared-layer k/v ignored)', async () => {
    const text = JSON.parse(readFileSync(join(GEMMA4, 'config.json'), 'utf8'));
    const ref = JSON.parse(readFileSync(join(GEMMA4, 'reference.json'), 'utf8'));
    const want = new Float32Array(readFileSync(join(GEMMA4, 'reference_logits.f32')).buffer.slice(0));
    const tensors = readTensors(GEMMA4).map((t) => ({ ...t, name: t.name.replace(/^model\./, 'model.language_model.') }));
    const H = text.hidden_size;
    // A vision tower tensor and the k/v projection some checkpoints keep for a KV-shared layer.
    tensors.push({ name: 'model.vision_tower.encoder.layers.0.mlp.up_proj.linear.weight', shape: [4, 4], data: new Float32Array(16) });
    tensors.push({ name: `model.language_model.layers.${text.num_hidden_layers - 1}.self_attn.k_proj.weight`, shape: [8, H], data: new Float32Array(8 * H) });
    const config = { model_type: 'gemma4', architectures: ['Gemma4ForConditionalGeneration'], text_config: text, tie_word_embeddings: text.tie_word_embeddings ?? true };
    const m = await modelFromTensors(config, tensors);
    const got = m.newSession().forward(ref.input_ids, true);
    expect(maxRelErr(got, want)).toBeLessThan(1e-4);
  });
});

function rejects(fn: () => unknown, field: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).message).toContain(field);
}

describe('zero-expert MoE (LongCat-Flash)', () => {
  it('routing: softmax over all experts, picks by probability + bias (ties: lowest id), weights = probability · scaling', () => {
    const l = Float32Array.from([1, 3, 3, 0, 3, 2]);
    const ids = new Int32Array(3), w = new Float32Array(3), p = new Float64Array(6);
    zeroMoeRoute(l, 0, 6, 3, null, 2, ids, w, 0, p);
    expect(Array.from(ids)).toEqual([1, 2, 4]);
    const e = l.map((v) => Math.exp(v - 3)), s = e.reduce((a, b) => a + b, 0);
    expect(maxRelErr(w, [1, 2, 4].map((i) => (2 * e[i]) / s))).toBeLessThan(1e-6);
    // The bias changes the choice, not the weights.
    zeroMoeRoute(l, 0, 6, 2, Float32Array.from([0, 0, 0, 2, 0, 0]), 1, ids, w, 0, p);
    expect(Array.from(ids.subarray(0, 2))).toEqual([3, 1]);
    expect(w[0]).toBeCloseTo(e[3] / s, 6);
  });

  it('the op at odd sizes equals a float64 reference (real experts, identity experts, router bias, selection bias)', async () => {
    const m = await buildModel(await openCheckpoint('test/fixtures/parity/mixtral-moe'), { exact: true, maxChunk: 32, maxContext: 64, dtype: 'f32' });
    const r = rng(77);
    const D = 37, E = 7, Z = 5, N = E + Z, K = 4, I = 19, T = 23, scaling = 1.7;
    const arena = m.k.arena;
    const router = randn(N * D, r, 0.5), routerBias = randn(N, r, 0.3), bias = randn(N, r, 0.05);
    const gu = randn(N * 2 * I * D, r, 0.3), dn = randn(E * D * I, r, 0.3);
    const guP = arena.putF32(gu).ptr, dnP = arena.putF32(dn).ptr;
    const spec: ZeroMoeSpec = {
      name: 'test', hidden: D, nExperts: E, nZero: Z, topk: K, inter: I, act: 'silu',
      router: { ptr: arena.putF32(router).ptr, dtype: 'f32', rows: N, cols: D },
      routerBias: arena.putF32(routerBias).ptr, bias: arena.putF32(bias).ptr, routedScaling: scaling,
      expert: (e) => ({
        gate: { ptr: guP + e * 2 * I * D * 4, dtype: 'f32', rows: I, cols: D },
        up: { ptr: guP + (e * 2 * I + I) * D * 4, dtype: 'f32', rows: I, cols: D },
        down: { ptr: dnP + e * D * I * 4, dtype: 'f32', rows: D, cols: I },
      }),
    };
    const run = wasmLayer(m, D, (g: Graph, x: Tensor, y: Tensor) => {
      if (!g.dry) (g as WasmGraph).f32(y).fill(NaN);
      zeroMoe(g, y, x, spec);
    }, T);
    const X = randn(T * D, r, 1);
    const got = run(m.newSession(), X, 0);

    const want = new Float64Array(T * D);
    let zeroPicks = 0;
    for (let t = 0; t < T; t++) {
      const x = X.subarray(t * D, (t + 1) * D);
      const l = Array.from({ length: N }, (_, e) => routerBias[e] + x.reduce((a, v, d) => a + v * router[e * D + d], 0));
      const mx = Math.max(...l), ex = l.map((v) => Math.exp(v - mx)), s = ex.reduce((a, b) => a + b, 0);
      const p = ex.map((v) => v / s);
      const pick = p.map((v, e) => [v + bias[e], e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, K).map((q) => q[1]);
      for (const e of pick) {
        const wt = p[e] * scaling;
        if (e >= E) {
          zeroPicks++;
          for (let d = 0; d < D; d++) want[t * D + d] += wt * x[d];
          continue;
        }
        const h = new Float64Array(I);
        for (let i = 0; i < I; i++) {
          let g = 0, u = 0;
          for (let d = 0; d < D; d++) {
            g += gu[(e * 2 * I + i) * D + d] * x[d];
            u += gu[(e * 2 * I + I + i) * D + d] * x[d];
          }
          h[i] = (g / (1 + Math.exp(-g))) * u;
        }
        for (let d = 0; d < D; d++) {
          let o = 0;
          for (let i = 0; i < I; i++) o += dn[(e * D + d) * I + i] * h[i];
          want[t * D + d] += wt * o;
        }
      }
    }
    expect(zeroPicks).toBeGreaterThan(5);
    expect(maxRelErr(got, want)).toBeLessThan(1e-5);
  });
});

describe('olmo_hybrid config.json', () => {
  const base = { model_type: 'olmo_hybrid', hidden_size: 64, num_hidden_layers: 4, vocab_size: 100, intermediate_size: 96, num_attention_heads: 4 };

  it('reads the defaults of OlmoHybridConfig', () => {
    const c = parseOlmoHybrid(base);
    expect(c.layerTypes).toEqual(['linear_attention', 'linear_attention', 'linear_attention', 'full_attention']);
    expect(c.attn).toEqual({ nHeads: 4, nKv: 4, headDim: 16 });
    // Key head dim 0.75 · hidden / heads, value head dim twice that; β doubled by default.
    expect([c.delta.Hk, c.delta.Hv, c.delta.dk, c.delta.dv, c.delta.negEigval]).toEqual([4, 4, 12, 24, true]);
    expect(c.rope).toBeNull();
    expect(c.tieEmbeddings).toBe(false);
    expect(parseOlmoHybrid({ ...base, num_hidden_layers: 2 }).layerTypes).toEqual(['linear_attention', 'full_attention']);
    expect(parseOlmoHybrid({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } }).rope?.theta).toBe(5e5);
  });

  it.each([
    [{ hidden_act: 'gelu' }, 'config.hidden_act'],
    [{ linear_conv_kernel_dim: 5 }, 'config.linear_conv_kernel_dim'],
    [{ linear_num_key_heads: 3, linear_num_value_heads: 4 }, 'config.linear_num_value_heads'],
    [{ layer_types: ['linear_attention', 'mamba', 'full_attention', 'linear_attention'] }, 'config.layer_types[1]'],
    [{ num_key_value_heads: 3 }, 'config.num_key_value_heads'],
  ])('rejects %j naming %s', (patch, field) => rejects(() => parseOlmoHybrid({ ...base, ...patch }), field));
});

describe('longcat_flash config.json', () => {
  const base = {
    model_type: 'longcat_flash', hidden_size: 64, num_layers: 2, vocab_size: 100, num_attention_heads: 4, q_lora_rank: 16, kv_lora_rank: 16,
    qk_nope_head_dim: 16, qk_rope_head_dim: 8, head_dim: 8, v_head_dim: 16, ffn_hidden_size: 96, expert_ffn_hidden_size: 32,
    n_routed_experts: 6, zero_expert_num: 3, moe_topk: 3,
  };

  it('folds the LoRA scales and the yarn mscale into the softmax scale and the latent scale', () => {
    const c = parseLongcat(base);
    expect(c.scale).toBeCloseTo(Math.sqrt(64 / 16) / Math.sqrt(24), 12);
    expect(c.kvScale).toBeCloseTo(2, 12);
    expect([c.nExperts, c.nZero, c.topk, c.routedScaling]).toEqual([6, 3, 3, 6]);
    const y = parseLongcat({ ...base, rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4, original_max_position_embeddings: 64, mscale_all_dim: 1 } });
    const ms = 0.1 * Math.log(4) + 1;
    expect(y.scale).toBeCloseTo((ms * ms * 2) / Math.sqrt(24), 12);
  });

  it.each([
    [{ q_lora_rank: null }, 'config.q_lora_rank'],
    [{ head_dim: 16 }, 'config.head_dim'],
    [{ num_key_value_heads: 2 }, 'config.num_key_value_heads'],
    [{ qk_head_dim: 20 }, 'config.qk_head_dim'],
    [{ moe_topk: 10 }, 'config.moe_topk'],
    [{ qk_rope_head_dim: 7, head_dim: 7 }, 'config.qk_rope_head_dim'],
  ])('rejects %j naming %s', (patch, field) => rejects(() => parseLongcat({ ...base, ...patch }), field));
});

describe('gemma4 config.json', () => {
  const text = {
    model_type: 'gemma4_text', hidden_size: 64, num_hidden_layers: 5, vocab_size: 100, intermediate_size: 64, num_attention_heads: 4,
    num_key_value_heads: 2, head_dim: 16, sliding_window: 12, attention_k_eq_v: true, hidden_size_per_layer_input: 8, vocab_size_per_layer_input: 100,
    layer_types: ['sliding_attention', 'sliding_attention', 'full_attention', 'sliding_attention', 'sliding_attention'],
  };

  it('per-layer heads from per_layer_config, the last layer forced full, KV sharing sources, double-wide MLPs', () => {
    const c = parseGemma4({ ...text, per_layer_config: { 2: { head_dim: 32, num_key_value_heads: 1 }, 4: { head_dim: 32, num_key_value_heads: 1 } }, num_kv_shared_layers: 2, use_double_wide_mlp: true });
    expect(c.layers.map((l) => l.type)).toEqual(['sliding_attention', 'sliding_attention', 'full_attention', 'sliding_attention', 'full_attention']);
    expect(c.layers.map((l) => [l.headDim, l.nKv, l.kvSource, l.kEqV, l.inter])).toEqual([
      [16, 2, 0, false, 64], [16, 2, 1, false, 64], [32, 1, 2, true, 64], [16, 2, 1, false, 128], [32, 1, 2, true, 128],
    ]);
    expect(c.prefix).toBe('model.');
    expect(c.ple).toEqual({ dim: 8, vocab: 100 });
    expect(c.finalSoftcap).toBeNull();
  });

  it('configs without per_layer_config: global_head_dim (default 512) and, with attention_k_eq_v, num_global_key_value_heads on full layers', () => {
    const c = parseGemma4({ ...text, global_head_dim: 48, num_global_key_value_heads: 1 });
    expect(c.layers.map((l) => [l.headDim, l.nKv])).toEqual([[16, 2], [16, 2], [48, 1], [16, 2], [48, 1]]);
    const d = parseGemma4({ ...text, attention_k_eq_v: false, num_global_key_value_heads: 1 });
    expect(d.layers[4]).toMatchObject({ headDim: 512, nKv: 2, kEqV: false });
  });

  it('the language model of a multimodal config: fields under text_config, weights under model.language_model.', () => {
    const c = parseGemma4({ model_type: 'gemma4', text_config: text, tie_word_embeddings: true });
    expect(c.prefix).toBe('model.language_model.');
    expect(c.tieEmbeddings).toBe(true);
    rejects(() => parseGemma4({ model_type: 'gemma4', text_config: { ...text, use_bidirectional_attention: 'all' } }), 'config.text_config.use_bidirectional_attention');
  });

  it.each([
    [{ use_bidirectional_attention: 'all' }, 'config.use_bidirectional_attention'],
    [{ num_kv_shared_layers: 5 }, 'config.num_kv_shared_layers'],
    [{ per_layer_config: { 2: { head_dim: 32, intermediate_size: 128 } } }, 'config.per_layer_config.2.intermediate_size'],
    [{ per_layer_config: { 9: { head_dim: 32 } } }, 'config.per_layer_config.9'],
    [{ per_layer_config: { 2: { num_key_value_heads: 3 } } }, 'config.per_layer_config.2.num_key_value_heads'],
    [{ layer_types: ['sliding_attention', 'local', 'full_attention', 'sliding_attention', 'full_attention'] }, 'config.layer_types[1]'],
    [{ enable_moe_block: true, num_experts: 4, top_k_experts: 5, moe_intermediate_size: 8 }, 'config.top_k_experts'],
    [{ rope_parameters: { full_attention: { rope_type: 'linear', rope_theta: 1e6, factor: 2, partial_rotary_factor: 0.5 } } }, 'config.rope_parameters.full_attention.partial_rotary_factor'],
    [{ hidden_activation: 'tanh' }, 'hidden_activation'],
  ])('rejects %j naming %s', (patch, field) => rejects(() => parseGemma4({ ...text, ...patch }), field));
});
