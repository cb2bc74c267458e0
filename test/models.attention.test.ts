// Attention-family and MoE decoders: Gemma 2/3, Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, gpt-oss, and the
// Llama-shaped Llama / Mistral / Qwen2 / Qwen3.
//  - parity against HF transformers fixtures in test/fixtures/parity/ (when present);
//  - on small random checkpoints written here in HF layout: logits against a float64 reference
//    forward written from the HF modeling code (independent of src/models), prefill = token-by-token
//    decode = chunked prefill, snapshot → restore into a fresh model gives identical next logits;
//  - the expert FFN never reads the weights of experts the router did not pick (NaN-poisoned).

import { readdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { toF32 } from '../src/formats/dtype';
import { ropeTables } from '../src/kernels/rope';
import { rowBytes, type Weight } from '../src/kernels/types';
import { KernelError } from '../src/kernels/runtime';
import { Moe } from '../src/layers/moe';
import { buildModel, type Model } from '../src/models/index';
import { runFixture } from '../tools/parity-lib';
import { rng } from './helpers';

// ---- parity fixtures --------------------------------------------------------------------------

const FIXTURES = 'test/fixtures/parity';
/** The model types this file covers (others' fixtures, e.g. qwen3_next, belong to their own tests). */
const TYPES = ['gemma2', 'gemma3_text', 'mixtral', 'olmoe', 'qwen2_moe', 'qwen3_moe', 'gpt_oss', 'llama', 'mistral', 'qwen2', 'qwen3'];
const fixtureDirs: string[] = [];
if (existsSync(FIXTURES)) {
  for (const d of await readdir(FIXTURES, { withFileTypes: true })) {
    const ref = join(FIXTURES, d.name, 'reference.json');
    if (d.isDirectory() && existsSync(ref) && TYPES.includes(JSON.parse(await readFile(ref, 'utf8')).model_type)) fixtureDirs.push(join(FIXTURES, d.name));
  }
}

describe.runIf(fixtureDirs.length > 0)('HF parity fixtures', () => {
  for (const dir of fixtureDirs) {
    it(dir.split('/').pop()!, async () => {
      const r = await runFixture(dir);
      expect(r.error).toBeUndefined();
      expect(r.prefillErr).toBeLessThanOrEqual(1e-4);
      expect(r.decodeErr).toBeLessThanOrEqual(1e-4);
      expect(r.greedyAgree).toBe(r.greedyTotal);
    }, 600_000);
  }
});

// ---- random HF-layout checkpoints -------------------------------------------------------------

type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

/** f32 → bf16 bits, round to nearest even. */
function bf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** model.safetensors bytes: f32 tensors, or bf16 for the names `bf16` selects. */
function safetensors(t: Tensors, bf16: (name: string) => boolean = () => false): Uint8Array {
  const header: Record<string, unknown> = {};
  const blobs: Uint8Array[] = [];
  let off = 0;
  for (const [name, { shape, data }] of t) {
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bf16(name)) bytes = new Uint8Array(Uint16Array.from(data, bf16Bits).buffer);
    header[name] = { dtype: bf16(name) ? 'BF16' : 'F32', shape, data_offsets: [off, off + bytes.byteLength] };
    blobs.push(bytes);
    off += bytes.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let o = 8 + hb.length;
  for (const b of blobs) {
    out.set(b, o);
    o += b.byteLength;
  }
  return out;
}

/** An in-memory HF directory holding the config and the tensors. */
function checkpointFiles(config: any, t: Tensors, bf16?: (name: string) => boolean): { files: Record<string, Uint8Array | string> } {
  return { files: { 'config.json': JSON.stringify(config), 'model.safetensors': safetensors(t, bf16) } };
}

type Files = ReturnType<typeof checkpointFiles>;

async function load(files: Files, opts: Parameters<typeof buildModel>[1] = {}): Promise<Model> {
  return buildModel(await openCheckpoint(files), { exact: true, maxContext: 64, ...opts });
}

/** A family's random model: its config, tensors, and the float64 reference's description of it. */
interface Synth {
  config: any;
  tensors: Tensors;
  ref: RefSpec;
}

interface RefFfnDense { kind: 'dense'; act: 'silu' | 'gelu_tanh'; prefix: string }
interface RefFfnMoe {
  kind: 'moe';
  E: number;
  k: number;
  routing: 'softmax' | 'softmax_norm' | 'topk_softmax';
  /** Expert tensor layout: fused v5 gate_up [E, 2I, D]; per-expert w1/w2/w3; per-expert gate/up/down_proj; gpt-oss. */
  layout: 'fused' | 'w123' | 'proj' | 'gptoss';
  prefix: string;
  shared?: boolean;
  swiglu?: { alpha: number; limit: number };
}

interface RefSpec {
  hidden: number;
  nLayers: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  vocab: number;
  eps: number;
  /** Gemma (1 + w) norms and sandwich norms. */
  gemma: boolean;
  embedScale: number;
  qkNorm: 'none' | 'head' | 'full';
  clip?: number;
  qkvBias: boolean;
  oBias: boolean;
  scale: number;
  softcap?: number;
  sinks: boolean;
  window: (i: number) => number;
  rope: (i: number) => { invFreq: Float32Array; factor: number };
  ffn: (i: number) => RefFfnDense | RefFfnMoe;
  finalSoftcap?: number;
  lmHead: string;
}

class Gen {
  readonly t: Tensors = new Map();
  private r: () => number;
  constructor(seed: number) {
    this.r = rng(seed);
  }
  add(name: string, shape: number[], scale = 0.2, offset = 0): void {
    const n = shape.reduce((a, b) => a * b, 1);
    const d = new Float32Array(n);
    for (let i = 0; i < n; i++) d[i] = offset + (this.r() * 2 - 1) * scale;
    this.t.set(name, { shape, data: d });
  }
  attn(p: string, D: number, H: number, KV: number, hd: number, o: { bias?: boolean; oBias?: boolean; qk?: 'head' | 'full'; sinks?: boolean; normOffset?: number } = {}): void {
    const s = 1 / Math.sqrt(D);
    this.add(`${p}.q_proj.weight`, [H * hd, D], s);
    this.add(`${p}.k_proj.weight`, [KV * hd, D], s);
    this.add(`${p}.v_proj.weight`, [KV * hd, D], s);
    this.add(`${p}.o_proj.weight`, [D, H * hd], 1 / Math.sqrt(H * hd));
    if (o.bias) for (const [n, r] of [['q', H * hd], ['k', KV * hd], ['v', KV * hd]] as const) this.add(`${p}.${n}_proj.bias`, [r], 0.1);
    if (o.oBias) this.add(`${p}.o_proj.bias`, [D], 0.1);
    if (o.qk === 'head') {
      this.add(`${p}.q_norm.weight`, [hd], 0.2, o.normOffset ?? 1);
      this.add(`${p}.k_norm.weight`, [hd], 0.2, o.normOffset ?? 1);
    } else if (o.qk === 'full') {
      this.add(`${p}.q_norm.weight`, [H * hd], 0.2, 1);
      this.add(`${p}.k_norm.weight`, [KV * hd], 0.2, 1);
    }
    if (o.sinks) this.add(`${p}.sinks`, [H], 1);
  }
  mlp(p: string, D: number, I: number, names: [string, string, string] = ['gate_proj', 'up_proj', 'down_proj']): void {
    this.add(`${p}.${names[0]}.weight`, [I, D], 1 / Math.sqrt(D));
    this.add(`${p}.${names[1]}.weight`, [I, D], 1 / Math.sqrt(D));
    this.add(`${p}.${names[2]}.weight`, [D, I], 1 / Math.sqrt(I));
  }
  common(D: number, V: number, normOffset: number, untied: boolean): void {
    this.add('model.embed_tokens.weight', [V, D], 1);
    this.add('model.norm.weight', [D], 0.2, normOffset);
    if (untied) this.add('lm_head.weight', [V, D], 1 / Math.sqrt(D));
  }
}

const D = 64, H = 4, KV = 2, HD = 16, V = 96, L = 3;
const base = { hidden_size: D, num_attention_heads: H, num_key_value_heads: KV, head_dim: HD, vocab_size: V, num_hidden_layers: L, max_position_embeddings: 256 };

function rope(theta: number, scaling: any = null, headDim = HD) {
  const { invFreq, attentionFactor } = ropeTables({ headDim, rotaryDim: headDim, theta, scaling, maxPositions: 256 });
  return { invFreq, factor: attentionFactor };
}

function synthGemma(v: 2 | 3): Synth {
  const g = new Gen(v);
  const I = 80, W = 4;
  const layerTypes = v === 2 ? ['sliding_attention', 'full_attention', 'sliding_attention'] : ['sliding_attention', 'sliding_attention', 'full_attention'];
  const config: any = {
    ...base, model_type: v === 2 ? 'gemma2' : 'gemma3_text', intermediate_size: I, rms_norm_eps: 1e-6,
    hidden_activation: 'gelu_pytorch_tanh', query_pre_attn_scalar: 24, sliding_window: W, layer_types: layerTypes,
    attn_logit_softcapping: v === 2 ? 2.5 : null, final_logit_softcapping: v === 2 ? 3.0 : null, tie_word_embeddings: true,
  };
  if (v === 2) config.rope_parameters = { rope_type: 'default', rope_theta: 10000 };
  else config.rope_parameters = { sliding_attention: { rope_type: 'default', rope_theta: 10000 }, full_attention: { rope_type: 'linear', factor: 4, rope_theta: 1000000 } };
  g.common(D, V, 0, false);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    g.attn(`${p}.self_attn`, D, H, KV, HD, { qk: v === 3 ? 'head' : undefined, normOffset: 0 });
    g.mlp(`${p}.mlp`, D, I);
    for (const n of ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm']) g.add(`${p}.${n}.weight`, [D], 0.3);
  }
  const ropes = { sliding_attention: rope(10000), full_attention: v === 2 ? rope(10000) : rope(1000000, { rope_type: 'linear', factor: 4 }) };
  return {
    config, tensors: g.t, ref: {
      hidden: D, nLayers: L, nHeads: H, nKv: KV, headDim: HD, vocab: V, eps: 1e-6, gemma: true, embedScale: Math.sqrt(D),
      qkNorm: v === 3 ? 'head' : 'none', qkvBias: false, oBias: false, scale: 24 ** -0.5, softcap: v === 2 ? 2.5 : undefined, sinks: false,
      window: (i) => (layerTypes[i] === 'sliding_attention' ? W : 0), rope: (i) => (ropes as any)[layerTypes[i]],
      ffn: (i) => ({ kind: 'dense', act: 'gelu_tanh', prefix: `model.layers.${i}.mlp` }), finalSoftcap: v === 2 ? 3.0 : undefined,
      lmHead: 'model.embed_tokens.weight',
    },
  };
}

/** Llama-shaped MoE models; `layout` picks the expert tensor names. */
function synthMoe(kind: 'mixtral' | 'mixtral_v5' | 'olmoe' | 'qwen2_moe' | 'qwen3_moe'): Synth {
  const g = new Gen(kind.length * 7);
  const E = 8, K = 2, I = 48, DENSE_I = 72, SHARED_I = 40;
  const mt = kind === 'mixtral_v5' ? 'mixtral' : kind;
  const config: any = { ...base, model_type: mt, rms_norm_eps: 1e-5, hidden_act: 'silu', num_experts_per_tok: K, rope_parameters: { rope_type: 'default', rope_theta: 10000 }, tie_word_embeddings: false };
  let layout: RefFfnMoe['layout'] = 'fused', routing: RefFfnMoe['routing'] = 'softmax_norm', qk: RefSpec['qkNorm'] = 'none', bias = false, window = 0;
  let sparse = (_i: number) => true, shared = false, moeName = 'mlp', clip: number | undefined;
  if (kind === 'mixtral' || kind === 'mixtral_v5') {
    Object.assign(config, { num_local_experts: E, intermediate_size: I, sliding_window: 5 });
    window = 5;
    if (kind === 'mixtral') {
      layout = 'w123';
      moeName = 'block_sparse_moe';
    }
  } else if (kind === 'olmoe') {
    Object.assign(config, { num_experts: E, intermediate_size: I, norm_topk_prob: false, clip_qkv: 0.6 });
    routing = 'softmax';
    qk = 'full';
    layout = 'proj';
    clip = 0.6;
  } else if (kind === 'qwen2_moe') {
    Object.assign(config, {
      num_experts: E, moe_intermediate_size: I, intermediate_size: DENSE_I, shared_expert_intermediate_size: SHARED_I, norm_topk_prob: true,
      mlp_only_layers: [1], decoder_sparse_step: 1, qkv_bias: true, use_sliding_window: true, sliding_window: 4, max_window_layers: 2,
      layer_types: ['sliding_attention', 'full_attention', 'full_attention'],
    });
    bias = true;
    shared = true;
    sparse = (i) => i !== 1;
    routing = 'softmax_norm';
  } else {
    Object.assign(config, { num_experts: E, moe_intermediate_size: I, intermediate_size: DENSE_I, norm_topk_prob: false, decoder_sparse_step: 2, mlp_only_layers: [], attention_bias: false, use_sliding_window: false, sliding_window: null });
    qk = 'head';
    sparse = (i) => (i + 1) % 2 === 0;
    routing = 'softmax';
  }
  g.common(D, V, 1, true);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    g.attn(`${p}.self_attn`, D, H, KV, HD, { bias, qk: qk === 'none' ? undefined : qk });
    g.add(`${p}.input_layernorm.weight`, [D], 0.2, 1);
    g.add(`${p}.post_attention_layernorm.weight`, [D], 0.2, 1);
    if (!sparse(i)) {
      g.mlp(`${p}.mlp`, D, DENSE_I);
      continue;
    }
    const m = `${p}.${moeName}`;
    g.add(`${m}.gate.weight`, [E, D], 0.5);
    if (layout === 'fused') {
      g.add(`${m}.experts.gate_up_proj`, [E, 2 * I, D], 1 / Math.sqrt(D));
      g.add(`${m}.experts.down_proj`, [E, D, I], 1 / Math.sqrt(I));
    } else {
      for (let e = 0; e < E; e++) g.mlp(`${m}.experts.${e}`, D, I, layout === 'w123' ? ['w1', 'w3', 'w2'] : undefined);
    }
    if (shared) {
      g.mlp(`${m}.shared_expert`, D, SHARED_I);
      g.add(`${m}.shared_expert_gate.weight`, [1, D], 0.5);
    }
  }
  const r = rope(10000);
  return {
    config, tensors: g.t, ref: {
      hidden: D, nLayers: L, nHeads: H, nKv: KV, headDim: HD, vocab: V, eps: 1e-5, gemma: false, embedScale: 1,
      qkNorm: qk, clip, qkvBias: bias, oBias: false, scale: HD ** -0.5, sinks: false,
      window: (i) => (kind === 'qwen2_moe' ? (i === 0 ? 4 : 0) : window), rope: () => r,
      ffn: (i) => (sparse(i)
        ? { kind: 'moe', E, k: K, routing, layout, prefix: `model.layers.${i}.${moeName}`, shared }
        : { kind: 'dense', act: 'silu', prefix: `model.layers.${i}.mlp` }),
      lmHead: 'lm_head.weight',
    },
  };
}

function synthGptOss(): Synth {
  const g = new Gen(77);
  const E = 8, K = 2, I = 32, W = 4;
  const layerTypes = ['sliding_attention', 'full_attention', 'sliding_attention'];
  const yarn = { rope_type: 'yarn', rope_theta: 150000, factor: 32, beta_fast: 32, beta_slow: 1, truncate: false, original_max_position_embeddings: 64 };
  const config = {
    ...base, model_type: 'gpt_oss', num_local_experts: E, num_experts_per_tok: K, intermediate_size: I, rms_norm_eps: 1e-5,
    sliding_window: W, layer_types: layerTypes, rope_parameters: yarn, attention_bias: true, tie_word_embeddings: false,
    hidden_act: 'silu',
  };
  g.common(D, V, 1, true);
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    g.attn(`${p}.self_attn`, D, H, KV, HD, { bias: true, oBias: true, sinks: true });
    g.add(`${p}.input_layernorm.weight`, [D], 0.2, 1);
    g.add(`${p}.post_attention_layernorm.weight`, [D], 0.2, 1);
    g.add(`${p}.mlp.router.weight`, [E, D], 0.5);
    g.add(`${p}.mlp.router.bias`, [E], 0.5);
    g.add(`${p}.mlp.experts.gate_up_proj`, [E, D, 2 * I], 10 / Math.sqrt(D)); // large enough that the ±7 clamp binds
    g.add(`${p}.mlp.experts.gate_up_proj_bias`, [E, 2 * I], 0.3);
    g.add(`${p}.mlp.experts.down_proj`, [E, I, D], 1 / Math.sqrt(I));
    g.add(`${p}.mlp.experts.down_proj_bias`, [E, D], 0.1);
  }
  const r = rope(150000, yarn);
  return {
    config, tensors: g.t, ref: {
      hidden: D, nLayers: L, nHeads: H, nKv: KV, headDim: HD, vocab: V, eps: 1e-5, gemma: false, embedScale: 1,
      qkNorm: 'none', qkvBias: true, oBias: true, scale: HD ** -0.5, sinks: true,
      window: (i) => (layerTypes[i] === 'sliding_attention' ? W : 0), rope: () => r,
      ffn: (i) => ({ kind: 'moe', E, k: K, routing: 'topk_softmax', layout: 'gptoss', prefix: `model.layers.${i}.mlp`, swiglu: { alpha: 1.702, limit: 7 } }),
      lmHead: 'lm_head.weight',
    },
  };
}

function synthLlama(kind: 'llama' | 'mistral' | 'qwen2' | 'qwen3'): Synth {
  const g = new Gen(kind.length * 13);
  const I = 72;
  const config: any = { ...base, model_type: kind, intermediate_size: I, rms_norm_eps: 1e-6, hidden_act: 'silu', rope_parameters: { rope_type: 'default', rope_theta: 10000 }, tie_word_embeddings: kind !== 'llama' };
  let window = 0;
  if (kind === 'mistral') {
    config.sliding_window = 5;
    window = 5;
  }
  const bias = kind === 'qwen2';
  g.common(D, V, 1, kind === 'llama');
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    g.attn(`${p}.self_attn`, D, H, KV, HD, { bias, qk: kind === 'qwen3' ? 'head' : undefined });
    g.mlp(`${p}.mlp`, D, I);
    g.add(`${p}.input_layernorm.weight`, [D], 0.2, 1);
    g.add(`${p}.post_attention_layernorm.weight`, [D], 0.2, 1);
  }
  const r = rope(10000);
  return {
    config, tensors: g.t, ref: {
      hidden: D, nLayers: L, nHeads: H, nKv: KV, headDim: HD, vocab: V, eps: 1e-6, gemma: false, embedScale: 1,
      qkNorm: kind === 'qwen3' ? 'head' : 'none', qkvBias: bias, oBias: false, scale: HD ** -0.5, sinks: false,
      window: () => window, rope: () => r, ffn: (i) => ({ kind: 'dense', act: 'silu', prefix: `model.layers.${i}.mlp` }),
      lmHead: kind === 'llama' ? 'lm_head.weight' : 'model.embed_tokens.weight',
    },
  };
}

// ---- float64 reference forward (HF op order, HF tensor layouts) -------------------------------

function refForward(s: Synth, ids: number[]): Float64Array[] {
  const R = s.ref, t = (n: string) => {
    const x = s.tensors.get(n);
    if (!x) throw new Error(`reference: no tensor ${n}`);
    return x.data;
  };
  const has = (n: string) => s.tensors.has(n);
  const { hidden: Dm, nHeads, nKv, headDim: hd } = R;
  const T = ids.length;
  const linear = (x: ArrayLike<number>, w: Float32Array, rows: number, cols: number, bias?: Float32Array, bOff = 0): Float64Array => {
    const y = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let a = bias ? bias[bOff + r] : 0;
      for (let c = 0; c < cols; c++) a += w[r * cols + c] * x[c];
      y[r] = a;
    }
    return y;
  };
  const rms = (x: Float64Array, w: Float32Array | null, addOne: boolean, eps = R.eps): Float64Array => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const inv = 1 / Math.sqrt(ss / x.length + eps);
    return x.map((v, i) => v * inv * (w ? (addOne ? 1 + w[i] : w[i]) : 1));
  };
  const silu = (x: number) => x / (1 + Math.exp(-x));
  const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  const ropeRot = (x: Float64Array, head: number, pos: number, rp: { invFreq: Float32Array; factor: number }) => {
    const half = hd / 2, o = head * hd;
    for (let i = 0; i < half; i++) {
      const a = pos * rp.invFreq[i], c = Math.cos(a) * rp.factor, sn = Math.sin(a) * rp.factor;
      const x1 = x[o + i], x2 = x[o + half + i];
      x[o + i] = x1 * c - x2 * sn;
      x[o + half + i] = x2 * c + x1 * sn;
    }
  };
  const gatedMlp = (x: Float64Array, gate: Float32Array, up: Float32Array, down: Float32Array, I: number, act: (v: number) => number, go = 0, uo = 0, dno = 0) => {
    const g = new Float64Array(I);
    for (let i = 0; i < I; i++) {
      let a = 0, b = 0;
      for (let d = 0; d < Dm; d++) {
        a += gate[go + i * Dm + d] * x[d];
        b += up[uo + i * Dm + d] * x[d];
      }
      g[i] = act(a) * b;
    }
    const y = new Float64Array(Dm);
    for (let d = 0; d < Dm; d++) {
      let a = 0;
      for (let i = 0; i < I; i++) a += down[dno + d * I + i] * g[i];
      y[d] = a;
    }
    return y;
  };
  const topk = (v: ArrayLike<number>, k: number) => Array.from(v, (_, i) => i).sort((a, b) => (v[b] - v[a]) || (a - b)).slice(0, k);

  const emb = t('model.embed_tokens.weight');
  let xs: Float64Array[] = ids.map((id) => Float64Array.from(emb.subarray(id * Dm, (id + 1) * Dm), (v) => v * R.embedScale));
  for (let l = 0; l < R.nLayers; l++) {
    const p = `model.layers.${l}`, a = `${p}.self_attn`;
    const rp = R.rope(l), W = R.window(l);
    const ks: Float64Array[] = [], vs: Float64Array[] = [], qs: Float64Array[] = [];
    for (let i = 0; i < T; i++) {
      const h = rms(xs[i], t(`${p}.input_layernorm.weight`), R.gemma);
      let q = linear(h, t(`${a}.q_proj.weight`), nHeads * hd, Dm, R.qkvBias ? t(`${a}.q_proj.bias`) : undefined);
      let k = linear(h, t(`${a}.k_proj.weight`), nKv * hd, Dm, R.qkvBias ? t(`${a}.k_proj.bias`) : undefined);
      let v = linear(h, t(`${a}.v_proj.weight`), nKv * hd, Dm, R.qkvBias ? t(`${a}.v_proj.bias`) : undefined);
      if (R.qkNorm === 'full') {
        q = rms(q, t(`${a}.q_norm.weight`), false);
        k = rms(k, t(`${a}.k_norm.weight`), false);
      } else if (R.qkNorm === 'head') {
        const qn = t(`${a}.q_norm.weight`), kn = t(`${a}.k_norm.weight`);
        for (let hh = 0; hh < nHeads; hh++) q.set(rms(q.slice(hh * hd, (hh + 1) * hd), qn, R.gemma), hh * hd);
        for (let hh = 0; hh < nKv; hh++) k.set(rms(k.slice(hh * hd, (hh + 1) * hd), kn, R.gemma), hh * hd);
      }
      if (R.clip !== undefined) {
        const c = R.clip, cl = (z: Float64Array) => z.map((e) => Math.min(Math.max(e, -c), c));
        q = cl(q); k = cl(k); v = cl(v);
      }
      for (let hh = 0; hh < nHeads; hh++) ropeRot(q, hh, i, rp);
      for (let hh = 0; hh < nKv; hh++) ropeRot(k, hh, i, rp);
      qs.push(q); ks.push(k); vs.push(v);
    }
    const sinks = R.sinks ? t(`${a}.sinks`) : null;
    const next: Float64Array[] = [];
    for (let i = 0; i < T; i++) {
      const ao = new Float64Array(nHeads * hd);
      for (let hh = 0; hh < nHeads; hh++) {
        const g = Math.floor(hh / (nHeads / nKv));
        const js: number[] = [], sc: number[] = [];
        for (let j = 0; j <= i; j++) {
          if (W && !(j > i - W)) continue;
          let sdot = 0;
          for (let d = 0; d < hd; d++) sdot += qs[i][hh * hd + d] * ks[j][g * hd + d];
          sdot *= R.scale;
          if (R.softcap) sdot = R.softcap * Math.tanh(sdot / R.softcap);
          js.push(j);
          sc.push(sdot);
        }
        let m = Math.max(...sc);
        if (sinks) m = Math.max(m, sinks[hh]);
        const e = sc.map((z) => Math.exp(z - m));
        const den = e.reduce((x, y) => x + y, 0) + (sinks ? Math.exp(sinks[hh] - m) : 0);
        for (let n = 0; n < js.length; n++) for (let d = 0; d < hd; d++) ao[hh * hd + d] += (e[n] / den) * vs[js[n]][g * hd + d];
      }
      let o = linear(ao, t(`${a}.o_proj.weight`), Dm, nHeads * hd, R.oBias ? t(`${a}.o_proj.bias`) : undefined);
      if (R.gemma) o = rms(o, t(`${p}.post_attention_layernorm.weight`), true);
      const x1 = xs[i].map((z, d) => z + o[d]);
      const h2 = R.gemma ? rms(x1, t(`${p}.pre_feedforward_layernorm.weight`), true) : rms(x1, t(`${p}.post_attention_layernorm.weight`), false);
      const f = R.ffn(l);
      let y: Float64Array;
      if (f.kind === 'dense') {
        const I = s.tensors.get(`${f.prefix}.gate_proj.weight`)!.shape[0];
        y = gatedMlp(h2, t(`${f.prefix}.gate_proj.weight`), t(`${f.prefix}.up_proj.weight`), t(`${f.prefix}.down_proj.weight`), I, f.act === 'silu' ? silu : geluTanh);
      } else {
        const m = f.prefix;
        const routerW = has(`${m}.router.weight`) ? t(`${m}.router.weight`) : t(`${m}.gate.weight`);
        const logits = linear(h2, routerW, f.E, Dm, has(`${m}.router.bias`) ? t(`${m}.router.bias`) : undefined);
        let sel: number[], w: number[];
        if (f.routing === 'topk_softmax') {
          sel = topk(logits, f.k);
          const mx = Math.max(...sel.map((e) => logits[e]));
          const ex = sel.map((e) => Math.exp(logits[e] - mx));
          const sm = ex.reduce((x, z) => x + z, 0);
          w = ex.map((z) => z / sm);
        } else {
          const mx = Math.max(...logits);
          const ex = Array.from(logits, (z) => Math.exp(z - mx));
          const sm = ex.reduce((x, z) => x + z, 0);
          const pr = ex.map((z) => z / sm);
          sel = topk(pr, f.k);
          w = sel.map((e) => pr[e]);
          if (f.routing === 'softmax_norm') {
            const ws = w.reduce((x, z) => x + z, 0);
            w = w.map((z) => z / ws);
          }
        }
        y = new Float64Array(Dm);
        for (let j = 0; j < sel.length; j++) {
          const e = sel[j];
          let out: Float64Array;
          if (f.layout === 'gptoss') {
            const gu = t(`${m}.experts.gate_up_proj`), gb = t(`${m}.experts.gate_up_proj_bias`);
            const dn = t(`${m}.experts.down_proj`), db = t(`${m}.experts.down_proj_bias`);
            const I2 = s.tensors.get(`${m}.experts.gate_up_proj`)!.shape[2], I = I2 / 2;
            const z = new Float64Array(I2);
            for (let c = 0; c < I2; c++) {
              let acc = gb[e * I2 + c];
              for (let d = 0; d < Dm; d++) acc += h2[d] * gu[(e * Dm + d) * I2 + c];
              z[c] = acc;
            }
            const { alpha, limit } = f.swiglu!;
            const hcur = new Float64Array(I);
            for (let ii = 0; ii < I; ii++) {
              const gate = Math.min(z[2 * ii], limit), up = Math.min(Math.max(z[2 * ii + 1], -limit), limit);
              hcur[ii] = (up + 1) * gate / (1 + Math.exp(-gate * alpha));
            }
            out = new Float64Array(Dm);
            for (let d = 0; d < Dm; d++) {
              let acc = db[e * Dm + d];
              for (let ii = 0; ii < I; ii++) acc += hcur[ii] * dn[(e * I + ii) * Dm + d];
              out[d] = acc;
            }
          } else if (f.layout === 'fused') {
            const sh = s.tensors.get(`${m}.experts.gate_up_proj`)!.shape, I = sh[1] / 2;
            const gu = t(`${m}.experts.gate_up_proj`);
            out = gatedMlp(h2, gu, gu, t(`${m}.experts.down_proj`), I, silu, e * 2 * I * Dm, (e * 2 * I + I) * Dm, e * Dm * I);
          } else {
            const [gn, un, dn] = f.layout === 'w123' ? ['w1', 'w3', 'w2'] : ['gate_proj', 'up_proj', 'down_proj'];
            const I = s.tensors.get(`${m}.experts.${e}.${gn}.weight`)!.shape[0];
            out = gatedMlp(h2, t(`${m}.experts.${e}.${gn}.weight`), t(`${m}.experts.${e}.${un}.weight`), t(`${m}.experts.${e}.${dn}.weight`), I, silu);
          }
          for (let d = 0; d < Dm; d++) y[d] += w[j] * out[d];
        }
        if (f.shared) {
          const I = s.tensors.get(`${m}.shared_expert.gate_proj.weight`)!.shape[0];
          const so = gatedMlp(h2, t(`${m}.shared_expert.gate_proj.weight`), t(`${m}.shared_expert.up_proj.weight`), t(`${m}.shared_expert.down_proj.weight`), I, silu);
          const sg = linear(h2, t(`${m}.shared_expert_gate.weight`), 1, Dm)[0];
          const gs = 1 / (1 + Math.exp(-sg));
          for (let d = 0; d < Dm; d++) y[d] += gs * so[d];
        }
      }
      if (R.gemma) y = rms(y, t(`${p}.post_feedforward_layernorm.weight`), true);
      next.push(x1.map((z, d) => z + y[d]));
    }
    xs = next;
  }
  return xs.map((x) => {
    const h = rms(x, t('model.norm.weight'), R.gemma);
    let lg = linear(h, t(R.lmHead), R.vocab, Dm);
    if (R.finalSoftcap) lg = lg.map((z) => R.finalSoftcap! * Math.tanh(z / R.finalSoftcap!));
    return lg;
  });
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!Number.isFinite(d)) return Infinity;
    num = Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

const SYNTHS: [string, () => Synth][] = [
  ['gemma2', () => synthGemma(2)],
  ['gemma3_text', () => synthGemma(3)],
  ['mixtral (block_sparse_moe w1/w2/w3)', () => synthMoe('mixtral')],
  ['mixtral (v5 fused experts)', () => synthMoe('mixtral_v5')],
  ['olmoe', () => synthMoe('olmoe')],
  ['qwen2_moe', () => synthMoe('qwen2_moe')],
  ['qwen3_moe', () => synthMoe('qwen3_moe')],
  ['gpt_oss', () => synthGptOss()],
  ['llama', () => synthLlama('llama')],
  ['mistral', () => synthLlama('mistral')],
  ['qwen2', () => synthLlama('qwen2')],
  ['qwen3', () => synthLlama('qwen3')],
];

const IDS = [5, 17, 3, 88, 42, 0, 61, 9, 33, 70, 12, 95, 27, 50];

describe.each(SYNTHS)('%s on a random checkpoint', (_name, make) => {
  const s = make();
  const files = checkpointFiles(s.config, s.tensors);

  it('matches the float64 reference forward (prefill of every position)', async () => {
    const m = await load(files);
    const out = m.newSession().forward(IDS, true);
    const ref = refForward(s, IDS);
    const flat = new Float64Array(IDS.length * V);
    ref.forEach((r, i) => flat.set(r, i * V));
    expect(relErr(out, flat)).toBeLessThan(1e-5);
  });

  it('prefill = token-by-token decode = chunked prefill', async () => {
    const d = files;
    const full = (await load(d)).newSession().forward(IDS, true);
    const m1 = await load(d, { maxChunk: 1 });
    const s1 = m1.newSession();
    const dec = new Float32Array(IDS.length * V);
    IDS.forEach((id, i) => dec.set(s1.forward([id]), i * V));
    expect(relErr(dec, full)).toBeLessThan(1e-5);
    const chunked = (await load(d, { maxChunk: 5 })).newSession().forward(IDS, true);
    expect(relErr(chunked, full)).toBeLessThan(1e-5);
  });

  it('snapshot → restore into a fresh model gives identical next logits', async () => {
    const d = files;
    const a = await load(d, { maxChunk: 4 });
    const sa = a.newSession();
    sa.forward(IDS.slice(0, 11));
    const snap = sa.snapshot();
    const want = sa.forward([IDS[11]]);
    const b = await load(d, { maxChunk: 4 });
    const sb = b.restore(snap);
    expect(sb.pos).toBe(11);
    const got = sb.forward([IDS[11]]);
    expect(Array.from(got)).toEqual(Array.from(want));
  });
});

// ---- experts the router does not pick are never read ------------------------------------------

function moeLayers(m: Model): Moe[] {
  const blocks = (m.net as any).d?.blocks ?? [];
  return blocks.map((b: any) => b.s?.ffn).filter((f: unknown): f is Moe => f instanceof Moe);
}

describe.each(SYNTHS.filter(([n]) => /moe|mixtral|gpt_oss/.test(n)))('%s: unselected experts', (_name, make) => {
  it('NaN-filled weights of experts the router skips leave the logits unchanged', async () => {
    const s = make();
    const m = await load(checkpointFiles(s.config, s.tensors));
    const ids = IDS.slice(0, 3);
    const layers = moeLayers(m);
    expect(layers.length).toBeGreaterThan(0);
    const before = layers.map((l) => l.expertCalls.slice());
    const want = m.newSession().forward(ids, true);
    let poisoned = 0;
    layers.forEach((l, li) => {
      for (let e = 0; e < l.cfg.nExperts; e++) {
        if (l.expertCalls[e] !== before[li][e]) continue;
        const w = l.cfg.expert(e);
        for (const x of [w.gate, w.up, w.down]) {
          expect(x.dtype).toBe('f32');
          m.k.arena.f32(x.ptr, x.rows * x.cols).fill(NaN);
        }
        for (const b of [w.gateBias, w.upBias, w.downBias]) if (b) m.k.arena.f32(b, b === w.downBias ? w.down.rows : w.gate.rows).fill(NaN);
        poisoned++;
      }
    });
    expect(poisoned).toBeGreaterThan(0);
    const got = m.newSession().forward(ids, true);
    expect(got.every(Number.isFinite)).toBe(true);
    expect(Array.from(got)).toEqual(Array.from(want));
  });
});

describe.each(SYNTHS.filter(([n]) => /moe|mixtral|gpt_oss/.test(n)))('%s: non-finite router weights', (_name, make) => {
  it('give a KernelError naming the layer, not a crash in the expert dispatch', async () => {
    const s = make();
    const E = s.config.num_local_experts ?? s.config.num_experts;
    const router = [...s.tensors.keys()].find((n) => /^model\.layers\.\d+\.[a-z_]+\.(gate|router)\.weight$/.test(n) && s.tensors.get(n)!.shape[0] === E);
    expect(router).toBeDefined();
    const tensors: Tensors = new Map(s.tensors);
    const t = tensors.get(router!)!;
    const data = t.data.slice();
    data[3] = NaN;
    tensors.set(router!, { shape: t.shape, data });
    const m = await load(checkpointFiles(s.config, tensors));
    const layer = router!.replace(/\.weight$/, '');
    let err: unknown;
    try {
      m.newSession().forward(IDS.slice(0, 3));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as Error).message).toContain(layer);
    expect((err as Error).message).toMatch(/not finite/);
  });
});

// ---- gpt-oss experts are rearranged in their load dtype ---------------------------------------

describe('gpt_oss expert layout in other dtypes', () => {
  const s = synthGptOss();
  const experts = (n: string) => n.includes('.experts.') && !n.endsWith('_bias');

  it('bf16 experts are permuted element-exactly (same logits as the bf16-rounded f32 checkpoint)', async () => {
    const rounded: Tensors = new Map();
    for (const [n, x] of s.tensors) {
      const d = experts(n) ? Float32Array.from(x.data, (v) => new Float32Array(new Uint32Array([bf16Bits(v) << 16]).buffer)[0]) : x.data;
      rounded.set(n, { shape: x.shape, data: d });
    }
    const mb = await load(checkpointFiles(s.config, s.tensors, experts), { dtype: 'auto' });
    expect(mb.ws.mat('model.layers.0.mlp.experts.gate_up_proj').dtype).toBe('bf16');
    const got = mb.newSession().forward(IDS, true);
    const want = (await load(checkpointFiles(s.config, rounded))).newSession().forward(IDS, true);
    expect(relErr(got, want)).toBeLessThan(1e-6);
  });

  it('q8_0 experts are re-blocked along the new rows (each value within two quantization steps)', async () => {
    const mq = await load(checkpointFiles(s.config, s.tensors), { dtype: 'q8_0', exact: false });
    const moe = moeLayers(mq)[1];
    const gu = s.tensors.get('model.layers.1.mlp.experts.gate_up_proj')!.data;
    const dn = s.tensors.get('model.layers.1.mlp.experts.down_proj')!.data;
    const I = s.config.intermediate_size;
    const held = (w: Weight) => {
      expect(w.dtype).toBe('q8_0');
      return toF32('q8_0', mq.k.arena.u8(w.ptr, rowBytes('q8_0', w.cols) * w.rows), w.rows * w.cols);
    };
    for (let e = 0; e < 8; e++) {
      const w = moe.cfg.expert(e);
      const g = held(w.gate), u = held(w.up), d = held(w.down);
      // The file's f32 values were quantized once on load (blocks along 2I) and once more in the new
      // layout (blocks along D or I): each step errs by at most half a step of amax/127.
      let err = 0, amax = 0;
      for (let i = 0; i < I; i++) {
        for (let x = 0; x < D; x++) {
          const gv = gu[(e * D + x) * 2 * I + 2 * i], uv = gu[(e * D + x) * 2 * I + 2 * i + 1], dv = dn[(e * I + i) * D + x];
          err = Math.max(err, Math.abs(g[i * D + x] - gv), Math.abs(u[i * D + x] - uv), Math.abs(d[x * I + i] - dv));
          amax = Math.max(amax, Math.abs(gv), Math.abs(uv), Math.abs(dv));
        }
      }
      expect(err / amax).toBeLessThan(2 / 127);
    }
  });
});
