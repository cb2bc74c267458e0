// Recurrent and hybrid families (qwen3_next, lfm2, minimax, recurrent_gemma, rwkv): HF parity on the
// fixtures when present, and on tiny random checkpoints built here: chunked prefill = token-by-token
// recurrent decode (logits and every state region), snapshot → restore into a fresh model gives
// identical next-token logits, and config fields that change the math are honoured or rejected.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/formats/errors';
import type { Model } from '../src/models/index';
import { lightningSlopes } from '../src/models/minimax';
import { bf16Round } from '../src/models/recurrent_gemma';
import { readSnapshotHeader } from '../src/runtime/state';
import { runFixture, TOLERANCE } from '../tools/parity-lib';
import { maxRelErr, modelFromTensors, rng } from './helpers';

// ---- tiny random checkpoints ---------------------------------------------------------------------

/** w: a matrix (fan-in scaled); zc: a (1 + w) norm weight near 0; norm: a plain norm weight near 1. */
type Init = 'w' | 'embed' | 'norm' | 'big' | 'zc' | 'bias' | 'conv' | 'alog' | 'dtb' | 'mix' | 'decay' | 'lambda';
type Spec = [name: string, shape: number[], init: Init];

function fill(shape: number[], init: Init, r: () => number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const a = new Float32Array(n);
  const u = () => r() * 2 - 1;
  const fanIn = shape[shape.length - 1];
  for (let i = 0; i < n; i++) {
    switch (init) {
      case 'w': a[i] = (u() * 1.7) / Math.sqrt(fanIn); break;
      case 'embed': a[i] = u(); break;
      case 'norm': a[i] = 1 + 0.3 * u(); break;
      case 'big': a[i] = 100 * (1 + 0.3 * u()); break;
      case 'zc': a[i] = 0.3 * u(); break;
      case 'bias': a[i] = 0.2 * u(); break;
      case 'conv': a[i] = 0.6 * u(); break;
      // A_log: decay rates exp(A_log) in about [0.5, 8]; dt_bias around 0.
      case 'alog': a[i] = Math.log(0.5 + 7.5 * r()); break;
      case 'dtb': a[i] = 0.5 * u(); break;
      case 'mix': a[i] = r(); break;
      case 'decay': a[i] = u(); break;
      // RG-LRU Λ: softplus(Λ) spread over slow and fast channels.
      case 'lambda': a[i] = -2 + 1.5 * u(); break;
    }
  }
  return a;
}

function tinyModel(config: any, specs: Spec[], seed: number, maxChunk = 64): Promise<Model> {
  const r = rng(seed);
  return modelFromTensors(config, specs.map(([name, shape, init]) => ({ name, shape, data: fill(shape, init, r) })), maxChunk);
}

const D = 32, V = 64;

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

// Qwen3-Next: GDN Hk 2 → Hv 4 heads (dk 8, dv 6), gated attention 4 / 2 heads of 8 (2 rotary dims),
// MoE of 4 experts (top 2) with a shared expert, layer 1 dense (mlp_only_layers).
const QN = { Hk: 2, Hv: 4, dk: 8, dv: 6, K: 4, H: 4, kv: 2, hd: 8, E: 4, I: 16, S: 24, dense: 40 };
const qwen3NextConfig = {
  model_type: 'qwen3_next', vocab_size: V, hidden_size: D, intermediate_size: QN.dense, num_hidden_layers: 3,
  num_attention_heads: QN.H, num_key_value_heads: QN.kv, head_dim: QN.hd, rms_norm_eps: 1e-6, hidden_act: 'silu',
  linear_conv_kernel_dim: QN.K, linear_key_head_dim: QN.dk, linear_value_head_dim: QN.dv,
  linear_num_key_heads: QN.Hk, linear_num_value_heads: QN.Hv, num_experts: QN.E, num_experts_per_tok: 2,
  moe_intermediate_size: QN.I, shared_expert_intermediate_size: QN.S, norm_topk_prob: true, decoder_sparse_step: 1,
  mlp_only_layers: [1], layer_types: ['linear_attention', 'full_attention', 'linear_attention'],
  max_position_embeddings: 256, tie_word_embeddings: false,
  rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.25 },
};
function qwen3NextSpecs(): Spec[] {
  const { Hk, Hv, dk, dv, K, H, kv, hd, E, I, S, dense } = QN;
  const s: Spec[] = [['model.embed_tokens.weight', [V, D], 'embed']];
  for (const i of range(3)) {
    const p = `model.layers.${i}`;
    s.push([`${p}.input_layernorm.weight`, [D], 'zc'], [`${p}.post_attention_layernorm.weight`, [D], 'zc']);
    if (i === 1) {
      s.push(
        [`${p}.self_attn.q_proj.weight`, [2 * H * hd, D], 'w'], [`${p}.self_attn.k_proj.weight`, [kv * hd, D], 'w'],
        [`${p}.self_attn.v_proj.weight`, [kv * hd, D], 'w'], [`${p}.self_attn.o_proj.weight`, [D, H * hd], 'w'],
        [`${p}.self_attn.q_norm.weight`, [hd], 'zc'], [`${p}.self_attn.k_norm.weight`, [hd], 'zc'],
        [`${p}.mlp.gate_proj.weight`, [dense, D], 'w'], [`${p}.mlp.up_proj.weight`, [dense, D], 'w'], [`${p}.mlp.down_proj.weight`, [D, dense], 'w'],
      );
    } else {
      const la = `${p}.linear_attn`;
      s.push(
        [`${la}.in_proj_qkvz.weight`, [2 * Hk * dk + 2 * Hv * dv, D], 'w'], [`${la}.in_proj_ba.weight`, [2 * Hv, D], 'w'],
        [`${la}.conv1d.weight`, [2 * Hk * dk + Hv * dv, 1, K], 'conv'], [`${la}.A_log`, [Hv], 'alog'], [`${la}.dt_bias`, [Hv], 'dtb'],
        [`${la}.norm.weight`, [dv], 'norm'], [`${la}.out_proj.weight`, [D, Hv * dv], 'w'],
        [`${p}.mlp.gate.weight`, [E, D], 'w'], [`${p}.mlp.experts.gate_up_proj`, [E, 2 * I, D], 'w'], [`${p}.mlp.experts.down_proj`, [E, D, I], 'w'],
        [`${p}.mlp.shared_expert.gate_proj.weight`, [S, D], 'w'], [`${p}.mlp.shared_expert.up_proj.weight`, [S, D], 'w'],
        [`${p}.mlp.shared_expert.down_proj.weight`, [D, S], 'w'], [`${p}.mlp.shared_expert_gate.weight`, [1, D], 'w'],
      );
    }
  }
  s.push(['model.norm.weight', [D], 'zc'], ['lm_head.weight', [V, D], 'embed']);
  return s;
}

// LFM2: conv / attention / conv; feed-forward 48 → ⌊2·48/3⌋ = 32 (a multiple of 16).
const lfm2Config = {
  model_type: 'lfm2', vocab_size: V, hidden_size: D, intermediate_size: 48, num_hidden_layers: 3,
  num_attention_heads: 4, num_key_value_heads: 2, norm_eps: 1e-5, conv_bias: false, conv_L_cache: 3,
  block_multiple_of: 16, block_ffn_dim_multiplier: 1.0, block_auto_adjust_ff_dim: true,
  layer_types: ['conv', 'full_attention', 'conv'], max_position_embeddings: 256,
  rope_parameters: { rope_type: 'default', rope_theta: 1000000 }, tie_word_embeddings: true,
};
function lfm2Specs(bias = false): Spec[] {
  const s: Spec[] = [['model.embed_tokens.weight', [V, D], 'embed']];
  for (const i of range(3)) {
    const p = `model.layers.${i}`;
    s.push([`${p}.operator_norm.weight`, [D], 'norm'], [`${p}.ffn_norm.weight`, [D], 'norm'],
      [`${p}.feed_forward.w1.weight`, [32, D], 'w'], [`${p}.feed_forward.w3.weight`, [32, D], 'w'], [`${p}.feed_forward.w2.weight`, [D, 32], 'w']);
    if (i === 1) {
      const a = `${p}.self_attn`;
      s.push([`${a}.q_proj.weight`, [D, D], 'w'], [`${a}.k_proj.weight`, [16, D], 'w'], [`${a}.v_proj.weight`, [16, D], 'w'],
        [`${a}.out_proj.weight`, [D, D], 'w'], [`${a}.q_layernorm.weight`, [8], 'norm'], [`${a}.k_layernorm.weight`, [8], 'norm']);
    } else {
      const c = `${p}.conv`;
      s.push([`${c}.in_proj.weight`, [3 * D, D], 'w'], [`${c}.conv.weight`, [D, 1, 3], 'conv'], [`${c}.out_proj.weight`, [D, D], 'w']);
      if (bias) s.push([`${c}.in_proj.bias`, [3 * D], 'bias'], [`${c}.conv.bias`, [D], 'bias'], [`${c}.out_proj.bias`, [D], 'bias']);
    }
  }
  s.push(['model.embedding_norm.weight', [D], 'norm']);
  return s;
}

// MiniMax: lightning / softmax / lightning, 4 heads of 8, MoE of 4 experts (top 2), odd α/β factors.
const miniMaxConfig = {
  model_type: 'minimax', vocab_size: V, hidden_size: D, intermediate_size: 24, num_hidden_layers: 3,
  num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, rms_norm_eps: 1e-5, num_local_experts: 4,
  num_experts_per_tok: 2, block_size: 16, layer_types: ['linear_attention', 'full_attention', 'linear_attention'],
  full_attn_alpha_factor: 0.9, full_attn_beta_factor: 1.1, linear_attn_alpha_factor: 1.3, linear_attn_beta_factor: 0.7,
  mlp_alpha_factor: 1.2, mlp_beta_factor: 0.8, max_position_embeddings: 256,
  rope_parameters: { rope_type: 'default', rope_theta: 10000 }, tie_word_embeddings: false,
};
function miniMaxSpecs(): Spec[] {
  const s: Spec[] = [['model.embed_tokens.weight', [V, D], 'embed']];
  for (const i of range(3)) {
    const p = `model.layers.${i}`, a = `${p}.self_attn`;
    s.push([`${p}.input_layernorm.weight`, [D], 'norm'], [`${p}.post_attention_layernorm.weight`, [D], 'norm'],
      [`${p}.mlp.gate.weight`, [4, D], 'w'], [`${p}.mlp.experts.gate_up_proj`, [4, 48, D], 'w'], [`${p}.mlp.experts.down_proj`, [4, D, 24], 'w']);
    if (i === 1) {
      s.push([`${a}.q_proj.weight`, [D, D], 'w'], [`${a}.k_proj.weight`, [16, D], 'w'], [`${a}.v_proj.weight`, [16, D], 'w'], [`${a}.o_proj.weight`, [D, D], 'w']);
    } else {
      s.push([`${a}.qkv_proj.weight`, [3 * D, D], 'w'], [`${a}.output_gate.weight`, [D, D], 'w'], [`${a}.out_proj.weight`, [D, D], 'w'], [`${a}.norm.weight`, [D], 'norm']);
    }
  }
  s.push(['model.norm.weight', [D], 'norm'], ['lm_head.weight', [V, D], 'embed']);
  return s;
}

// RecurrentGemma: recurrent, recurrent, attention (window 8), 4 heads (1 kv) of 8, lru 32 in 4 blocks.
const recurrentGemmaConfig = {
  model_type: 'recurrent_gemma', vocab_size: V, hidden_size: D, intermediate_size: 96, num_hidden_layers: 3,
  num_attention_heads: 4, num_key_value_heads: 1, lru_width: D, attention_window_size: 8, conv1d_width: 4,
  logits_soft_cap: 30, rms_norm_eps: 1e-6, block_types: ['recurrent', 'recurrent', 'attention'],
  hidden_activation: 'gelu_pytorch_tanh', max_position_embeddings: 256,
  rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5 },
};
function recurrentGemmaSpecs(): Spec[] {
  const s: Spec[] = [['model.embed_tokens.weight', [V, D], 'embed']];
  for (const i of range(3)) {
    const p = `model.layers.${i}`, b = `${p}.temporal_block`;
    s.push([`${p}.temporal_pre_norm.weight`, [D], 'zc'], [`${p}.channel_pre_norm.weight`, [D], 'zc'],
      [`${p}.mlp_block.gate_proj.weight`, [48, D], 'w'], [`${p}.mlp_block.gate_proj.bias`, [48], 'bias'],
      [`${p}.mlp_block.up_proj.weight`, [48, D], 'w'], [`${p}.mlp_block.up_proj.bias`, [48], 'bias'],
      [`${p}.mlp_block.down_proj.weight`, [D, 48], 'w'], [`${p}.mlp_block.down_proj.bias`, [D], 'bias']);
    if (i === 2) {
      s.push([`${b}.q_proj.weight`, [D, D], 'w'], [`${b}.k_proj.weight`, [8, D], 'w'], [`${b}.v_proj.weight`, [8, D], 'w'],
        [`${b}.o_proj.weight`, [D, D], 'w'], [`${b}.o_proj.bias`, [D], 'bias']);
    } else {
      s.push([`${b}.linear_y.weight`, [D, D], 'w'], [`${b}.linear_y.bias`, [D], 'bias'], [`${b}.linear_x.weight`, [D, D], 'w'],
        [`${b}.linear_x.bias`, [D], 'bias'], [`${b}.linear_out.weight`, [D, D], 'w'], [`${b}.linear_out.bias`, [D], 'bias'],
        [`${b}.conv_1d.weight`, [D, 1, 4], 'conv'], [`${b}.conv_1d.bias`, [D], 'bias'],
        [`${b}.rg_lru.recurrent_param`, [D], 'lambda'], [`${b}.rg_lru.input_gate_weight`, [4, 8, 8], 'w'],
        [`${b}.rg_lru.input_gate_bias`, [4, 8], 'bias'], [`${b}.rg_lru.recurrent_gate_weight`, [4, 8, 8], 'w'],
        [`${b}.rg_lru.recurrent_gate_bias`, [4, 8], 'bias']);
    }
  }
  s.push(['model.final_norm.weight', [D], 'zc']);
  return s;
}

// RWKV-4: 4 blocks, rescaled every 2 in eval mode.
const rwkvConfig = {
  model_type: 'rwkv', vocab_size: V, hidden_size: D, num_hidden_layers: 4, attention_hidden_size: D,
  intermediate_size: 64, layer_norm_epsilon: 1e-5, rescale_every: 2, context_length: 256, tie_word_embeddings: false,
};
function rwkvSpecs(): Spec[] {
  const s: Spec[] = [['rwkv.embeddings.weight', [V, D], 'embed']];
  for (const i of range(4)) {
    const p = `rwkv.blocks.${i}`, a = `${p}.attention`, f = `${p}.feed_forward`;
    const lns = i === 0 ? ['pre_ln', 'ln1', 'ln2'] : ['ln1', 'ln2'];
    for (const ln of lns) s.push([`${p}.${ln}.weight`, [D], 'norm'], [`${p}.${ln}.bias`, [D], 'bias']);
    s.push([`${a}.time_decay`, [D], 'decay'], [`${a}.time_first`, [D], 'decay'],
      [`${a}.time_mix_key`, [1, 1, D], 'mix'], [`${a}.time_mix_value`, [1, 1, D], 'mix'], [`${a}.time_mix_receptance`, [1, 1, D], 'mix'],
      [`${a}.key.weight`, [D, D], 'w'], [`${a}.value.weight`, [D, D], 'w'], [`${a}.receptance.weight`, [D, D], 'w'], [`${a}.output.weight`, [D, D], 'w'],
      [`${f}.time_mix_key`, [1, 1, D], 'mix'], [`${f}.time_mix_receptance`, [1, 1, D], 'mix'],
      [`${f}.key.weight`, [64, D], 'w'], [`${f}.receptance.weight`, [D, D], 'w'], [`${f}.value.weight`, [D, 64], 'w']);
  }
  s.push(['rwkv.ln_out.weight', [D], 'norm'], ['rwkv.ln_out.bias', [D], 'bias'], ['head.weight', [V, D], 'embed']);
  return s;
}

interface Case {
  name: string;
  config: any;
  specs: () => Spec[];
}

const CASES: Case[] = [
  { name: 'qwen3_next', config: qwen3NextConfig, specs: qwen3NextSpecs },
  { name: 'lfm2', config: lfm2Config, specs: () => lfm2Specs() },
  { name: 'lfm2 (conv_bias)', config: { ...lfm2Config, conv_bias: true }, specs: () => lfm2Specs(true) },
  { name: 'minimax', config: miniMaxConfig, specs: miniMaxSpecs },
  { name: 'recurrent_gemma', config: recurrentGemmaConfig, specs: recurrentGemmaSpecs },
  { name: 'rwkv', config: rwkvConfig, specs: rwkvSpecs },
];

function tokens(n: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.floor(r() * V));
}

/** The f32 payload of a snapshot (every region, layout order). */
function payload(snap: Uint8Array): Float32Array {
  const { payloadOffset } = readSnapshotHeader(snap);
  const bytes = snap.slice(payloadOffset, snap.length - 4);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/**
 * The payload of the regions that do not depend on the chunk size: everything but sliding-window
 * rings, whose capacity is window + maxChunk − 1 and whose slots therefore differ.
 */
function chunkIndependentState(m: Model, snap: Uint8Array): Float32Array {
  const { header } = readSnapshotHeader(snap);
  const all = payload(snap);
  const parts: Float32Array[] = [];
  let o = 0;
  for (const r of header.regions) {
    const n = r.floats!;
    if (m.layout.byName.get(r.name)!.kind !== 'ring') parts.push(all.subarray(o, o + n));
    o += n;
  }
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let w = 0;
  for (const p of parts) {
    out.set(p, w);
    w += p.length;
  }
  return out;
}

async function logitsOf(config: any, specs: Spec[], ids: number[]): Promise<Float32Array> {
  return (await tinyModel(config, specs, 5)).newSession().forward(ids, true);
}

describe.each(CASES)('$name (tiny random checkpoint)', (c) => {
  // 80 tokens in chunks of 64 + 16: the first chunk takes the chunked scan forms, the rest recurrent.
  const ids = tokens(80, 11);

  it('chunked prefill equals token-by-token recurrent decode (logits and state)', async () => {
    const chunked = await tinyModel(c.config, c.specs(), 5, 64);
    const stepwise = await tinyModel(c.config, c.specs(), 5, 1);
    const a = chunked.newSession(), b = stepwise.newSession();
    const la = a.forward(ids, true);
    const lb = new Float32Array(la.length);
    for (let t = 0; t < ids.length; t++) lb.set(b.forward([ids[t]]), t * V);
    // f32 activations and state, different accumulation order between the chunked and the stepwise
    // paths: ≤ 1e-5 relative on logits of spread O(1), and on the state payload.
    expect(maxRelErr(la, lb)).toBeLessThan(1e-5);
    expect(Array.from(la).every(Number.isFinite)).toBe(true);
    const sa = chunkIndependentState(chunked, a.snapshot()), sb = chunkIndependentState(stepwise, b.snapshot());
    expect(sa.length).toBeGreaterThan(0);
    expect(maxRelErr(sa, sb)).toBeLessThan(1e-5);
    // the context reaches the output: the logits differ between positions
    expect(maxRelErr(la.subarray(0, V), la.subarray(V, 2 * V))).toBeGreaterThan(1e-3);
  });

  it('snapshot → restore into a fresh model gives identical next-token logits', async () => {
    const m1 = await tinyModel(c.config, c.specs(), 5);
    const s = m1.newSession();
    s.forward(ids.slice(0, 30));
    const snap = s.snapshot();
    const next = s.forward([ids[30]]);
    const m2 = await tinyModel(c.config, c.specs(), 5);
    const r = m2.restore(snap);
    expect(r.pos).toBe(30);
    expect(Array.from(r.forward([ids[30]]))).toEqual(Array.from(next));
  });

  it('a reset session forgets the previous sequence', async () => {
    const m = await tinyModel(c.config, c.specs(), 5);
    const s = m.newSession();
    const first = s.forward(ids.slice(0, 10), true);
    s.reset();
    s.forward(tokens(7, 99));
    s.reset();
    expect(Array.from(s.forward(ids.slice(0, 10), true))).toEqual(Array.from(first));
  });
});

describe('recurrent family config fields', () => {
  it('qwen3_next: rejects a conv kernel the conv1d kernel cannot run, a non-SiLU act, and uneven value heads', async () => {
    await expect(tinyModel({ ...qwen3NextConfig, linear_conv_kernel_dim: 5 }, qwen3NextSpecs(), 1)).rejects.toThrow(/linear_conv_kernel_dim/);
    await expect(tinyModel({ ...qwen3NextConfig, hidden_act: 'gelu' }, qwen3NextSpecs(), 1)).rejects.toBeInstanceOf(ConfigError);
    await expect(tinyModel({ ...qwen3NextConfig, linear_num_value_heads: 3 }, qwen3NextSpecs(), 1)).rejects.toThrow(/linear_num_value_heads/);
  });

  it('qwen3_next: relabelling key heads 0 ↔ 1 (with their value heads) everywhere leaves the logits unchanged', async () => {
    // in_proj_qkvz holds Hk groups of rows [q dk | k dk | v r·dv | z r·dv] and in_proj_ba groups of
    // [b r | a r] (HF fix_query_key_value_ordering). Swapping groups 0 and 1 there, together with the
    // matching conv channels, A_log / dt_bias entries and out_proj columns, is the same model. A reader
    // that took the rows as contiguous [q | k | v | z] blocks would see its q, k, v and z mixed instead.
    const { Hk, Hv, dk, dv } = QN;
    const r = Hv / Hk, Gz = 2 * dk + 2 * r * dv, convDim = 2 * Hk * dk + Hv * dv;
    /** swaps a[off+i·stride … +len) with a[off+i·stride+delta … +len) for each of `rows` rows */
    const swap = (a: Float32Array, rows: number, stride: number, off: number, delta: number, len: number) => {
      for (let i = 0; i < rows; i++) {
        const p = i * stride + off, t = a.slice(p, p + len);
        a.copyWithin(p, p + delta, p + delta + len);
        a.set(t, p + delta);
      }
    };
    const relabel = (name: string, v: Float32Array) => {
      if (!name.includes('linear_attn.')) return;
      if (name.endsWith('in_proj_qkvz.weight')) swap(v, 1, 0, 0, Gz * D, Gz * D);
      else if (name.endsWith('in_proj_ba.weight')) swap(v, 1, 0, 0, 2 * r * D, 2 * r * D);
      else if (name.endsWith('conv1d.weight')) {
        const K = QN.K;
        swap(v, 1, 0, 0, dk * K, dk * K);
        swap(v, 1, 0, Hk * dk * K, dk * K, dk * K);
        swap(v, 1, 0, 2 * Hk * dk * K, r * dv * K, r * dv * K);
      } else if (name.endsWith('A_log') || name.endsWith('dt_bias')) swap(v, 1, 0, 0, r, r);
      else if (name.endsWith('out_proj.weight')) swap(v, D, Hv * dv, 0, r * dv, r * dv);
    };
    expect(convDim).toBe(2 * 2 * 8 + 4 * 6);
    const build = async (permute: boolean) => {
      const rr = rng(5);
      const tensors = qwen3NextSpecs().map(([name, shape, init]) => {
        const v = fill(shape, init, rr);
        if (permute) relabel(name, v);
        return { name, shape, data: v };
      });
      return (await modelFromTensors(qwen3NextConfig, tensors)).newSession().forward(tokens(12, 3), true);
    };
    const a = await build(false), b = await build(true);
    expect(maxRelErr(b, a)).toBeLessThan(1e-5);
  });

  it('lfm2: rejects conv_L_cache outside 2 … 4 and honours block_ff_dim / tie_embedding aliases', async () => {
    await expect(tinyModel({ ...lfm2Config, conv_L_cache: 5 }, lfm2Specs(), 1)).rejects.toThrow(/conv_L_cache/);
    // block_ff_dim (the LiquidAI key) overrides intermediate_size: 96 → ⌊2·96/3⌋ = 64 ≠ the 32-wide weights.
    await expect(tinyModel({ ...lfm2Config, block_ff_dim: 96 }, lfm2Specs(), 1)).rejects.toThrow(/w1/);
    const ids = tokens(8, 2);
    const a = await logitsOf(lfm2Config, lfm2Specs(), ids);
    const b = await logitsOf({ ...lfm2Config, intermediate_size: 7, block_ff_dim: 48, tie_word_embeddings: false, tie_embedding: true }, lfm2Specs(), ids);
    expect(Array.from(b)).toEqual(Array.from(a));
  });

  it('minimax: slopes follow HF get_slope_rate, and the α/β factors change the output', async () => {
    const s = lightningSlopes(8, 2, 5);
    for (let h = 0; h < 8; h++) {
      const want = (1 / 2 ** (8 / 8)) ** (h + 1) * (1 - 2 / (4 + 1e-5) + 1e-5);
      expect(Math.abs(s[h] - want) / want).toBeLessThan(1e-6);
    }
    const ids = tokens(10, 4);
    const a = await logitsOf(miniMaxConfig, miniMaxSpecs(), ids);
    const b = await logitsOf({ ...miniMaxConfig, linear_attn_beta_factor: 1 }, miniMaxSpecs(), ids);
    expect(maxRelErr(b, a)).toBeGreaterThan(1e-3);
  });

  it('recurrent_gemma: √hidden is rounded to bfloat16; rope types other than default are rejected', async () => {
    expect(bf16Round(Math.sqrt(2560))).toBe(50.5);
    expect(bf16Round(Math.sqrt(32))).toBe(5.65625);
    await expect(tinyModel({ ...recurrentGemmaConfig, rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 10000 } }, recurrentGemmaSpecs(), 1))
      .rejects.toThrow(/rope_type/);
    await expect(tinyModel({ ...recurrentGemmaConfig, hidden_activation: 'silu' }, recurrentGemmaSpecs(), 1)).rejects.toThrow(/hidden_activation/);
  });

  it('recurrent_gemma: the attention window bounds the KV state', async () => {
    const m = await tinyModel(recurrentGemmaConfig, recurrentGemmaSpecs(), 5, 4);
    const s = m.newSession();
    s.forward(tokens(20, 1));
    const n20 = payload(s.snapshot()).length;
    s.forward(tokens(40, 2));
    expect(payload(s.snapshot()).length).toBe(n20);
  });

  it('rwkv: eval-mode rescaling is exact up to LayerNorm eps, and the state is constant-size', async () => {
    const ids = tokens(20, 6);
    // A ×100 pre_ln puts the stream's variance near 1e4, so ln_out's fixed eps 1e-5 is negligible even
    // after the stream is halved four times; with the blocks' eps 0 a power-of-two rescale then passes
    // through every LayerNorm unchanged.
    const specs = rwkvSpecs().map(([n, sh, init]): Spec => [n, sh, n.endsWith('pre_ln.weight') ? 'big' : init]);
    const noEps = { ...rwkvConfig, layer_norm_epsilon: 0 };
    const plain = await logitsOf({ ...noEps, rescale_every: 0 }, specs, ids);
    const everyOne = await logitsOf({ ...noEps, rescale_every: 1 }, specs, ids);
    expect(maxRelErr(everyOne, plain)).toBeLessThan(1e-5);
    // With a large eps the rescaled stream meets a relatively larger eps: HF's eval-mode output differs.
    const bigEps = { ...rwkvConfig, layer_norm_epsilon: 5 };
    const p2 = await logitsOf({ ...bigEps, rescale_every: 0 }, specs, ids);
    const e2 = await logitsOf({ ...bigEps, rescale_every: 1 }, specs, ids);
    expect(maxRelErr(e2, p2)).toBeGreaterThan(1e-3);
    // rescale_every ≥ the layer count never rescales a block nor halves the stream before the last one
    const none = await logitsOf({ ...bigEps, rescale_every: 5 }, specs, ids);
    expect(Array.from(none)).toEqual(Array.from(p2));
    const m = await tinyModel(rwkvConfig, rwkvSpecs(), 5);
    expect(m.info().stateBytesPerToken).toBe(0);
  });
});

// ---- HF parity fixtures --------------------------------------------------------------------------

const FAMILIES = ['qwen3_next', 'lfm2', 'minimax', 'recurrent_gemma', 'rwkv'];
const ROOT = 'test/fixtures/parity';

function recurrentFixtures(): string[] {
  let names: string[] = [];
  try {
    names = readdirSync(ROOT);
  } catch {
    return [];
  }
  // Picked by the model_type their reference.json names (lfm2_moe, rwkv7 … belong to other families).
  return names.sort().map((n) => join(ROOT, n)).filter((d) => {
    try {
      return FAMILIES.includes(JSON.parse(readFileSync(join(d, 'reference.json'), 'utf8')).model_type);
    } catch {
      return false;
    }
  });
}

const fixtures = recurrentFixtures();

describe.skipIf(!fixtures.length)('HF parity (test/fixtures/parity)', () => {
  it.each(fixtures)('%s', async (dir) => {
    const r = await runFixture(dir);
    expect(r.error).toBeUndefined();
    expect(r.prefillErr).toBeLessThanOrEqual(TOLERANCE);
    expect(r.decodeErr).toBeLessThanOrEqual(TOLERANCE);
    expect(r.greedyAgree).toBe(r.greedyTotal);
  }, 120_000);
});
