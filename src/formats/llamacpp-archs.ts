// Per-architecture tables of llama.cpp's GGUF layout: the hyperparameter keys each llama.cpp
// architecture carries (HF config ↔ `<arch>.*` keys) and its tensor name templates (HF ↔ GGUF).
// llamacpp.ts drives them in both directions.

import { ConfigError } from './errors';
import type { GGUFValue } from './gguf';
import {
  column, groups, negexpColumn, rowVector, squeezeConv, t, type Template, type Xf,
} from './llamacpp-tensors';

export type Cfg = Record<string, any>;

/** Adds one metadata key under the architecture prefix. */
export type Put = (key: string, value: GGUFValue, type: string) => void;

/** What a config reader knows of the GGUF file besides its metadata. */
export interface GGView {
  has(name: string): boolean;
  shape(name: string): number[] | undefined;
  /** Layers whose tensors include `blk.{i}.<suffix>`. */
  layersWith(suffix: string): number[];
}

/** Typed access to `<arch>.*` keys; a missing required key is a ConfigError naming it. */
export class KV {
  constructor(readonly arch: string, private readonly meta: Record<string, GGUFValue>) {}
  key(k: string): string {
    return `${this.arch}.${k}`;
  }
  has(k: string): boolean {
    return this.meta[this.key(k)] !== undefined;
  }
  raw(k: string): GGUFValue | undefined {
    return this.meta[this.key(k)];
  }
  private field(k: string): string {
    return `gguf.metadata[${JSON.stringify(this.key(k))}]`;
  }
  int(k: string, dflt?: number): number {
    const v = this.meta[this.key(k)];
    if (v === undefined) {
      if (dflt === undefined) throw new ConfigError(this.field(k), `is required for llama.cpp architecture ${JSON.stringify(this.arch)}`);
      return dflt;
    }
    const n = Array.isArray(v) ? v[0] : v;
    if (typeof n !== 'number' || !Number.isInteger(n)) throw new ConfigError(this.field(k), `must be an integer, got ${JSON.stringify(String(v)).slice(0, 40)}`);
    return n;
  }
  num(k: string, dflt?: number): number {
    const v = this.meta[this.key(k)];
    if (v === undefined) {
      if (dflt === undefined) throw new ConfigError(this.field(k), `is required for llama.cpp architecture ${JSON.stringify(this.arch)}`);
      return dflt;
    }
    if (typeof v !== 'number') throw new ConfigError(this.field(k), `must be a number, got ${JSON.stringify(String(v)).slice(0, 40)}`);
    return shortF32(v);
  }
  bool(k: string, dflt: boolean): boolean {
    const v = this.meta[this.key(k)];
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw new ConfigError(this.field(k), `must be a boolean, got ${JSON.stringify(String(v))}`);
    return v;
  }
  str(k: string): string | undefined {
    const v = this.meta[this.key(k)];
    return typeof v === 'string' ? v : undefined;
  }
  /** A per-layer value: an array of n entries, or one number for every layer. */
  perLayer(k: string, n: number, dflt?: number): number[] {
    const v = this.meta[this.key(k)];
    if (Array.isArray(v)) {
      if (v.length !== n || !v.every((x) => typeof x === 'number')) throw new ConfigError(this.field(k), `must hold ${n} numbers (one per layer)`);
      return v as number[];
    }
    const x = this.int(k, dflt);
    return new Array<number>(n).fill(x);
  }
  boolArray(k: string, n: number): boolean[] | undefined {
    const v = this.meta[this.key(k)];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length !== n) throw new ConfigError(this.field(k), `must hold ${n} entries (one per layer)`);
    return v.map((x) => Boolean(x));
  }
}

/** The shortest decimal that reads back as the same float32 (f32 metadata values read as written). */
export function shortF32(x: number): number {
  if (!Number.isFinite(x) || Number.isInteger(x)) return x;
  const f = Math.fround(x);
  if (f !== x) return x;
  for (let p = 1; p <= 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === f) return y;
  }
  return x;
}

export interface ArchSpec {
  /** llama.cpp `general.architecture`. */
  arch: string;
  /** HF model_types written as this architecture. */
  hfTypes: string[];
  /** `hfShape`: the shape of an HF tensor of the checkpoint, undefined when it has none of that name. */
  writeKV(c: Cfg, put: Put, hfShape: (name: string) => number[] | undefined): void;
  readConfig(kv: KV, g: GGView): Cfg;
  templates(c: Cfg): Template[];
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

const L = 'model.layers.{i}';
const B = 'blk.{i}';
const perm = (heads: number): Xf => ({ k: 'permute', heads });

/** weight + bias templates of one projection. */
function wb(hf: string, gg: string, xf?: Xf, biasXf?: Xf): Template[] {
  return [t(`${hf}.weight`, `${gg}.weight`, xf), t(`${hf}.bias`, `${gg}.bias`, biasXf ?? xf)];
}

function embedAndHead(norm = 'model.norm.weight', normXf?: Xf): Template[] {
  return [t('model.embed_tokens.weight', 'token_embd.weight'), t(norm, 'output_norm.weight', normXf), t('lm_head.weight', 'output.weight')];
}

/** Self-attention q/k/v/o (+ biases); `permute` gives the head counts for llama.cpp's Q/K row order. */
function attention(c: Cfg, permute: boolean, o = 'o_proj'): Template[] {
  const nh = c.num_attention_heads as number;
  const nkv = (c.num_key_value_heads ?? nh) as number;
  return [
    ...wb(`${L}.self_attn.q_proj`, `${B}.attn_q`, permute ? perm(nh) : undefined),
    ...wb(`${L}.self_attn.k_proj`, `${B}.attn_k`, permute ? perm(nkv) : undefined),
    ...wb(`${L}.self_attn.v_proj`, `${B}.attn_v`),
    ...wb(`${L}.self_attn.${o}`, `${B}.attn_output`),
  ];
}

function denseMlp(prefix: string, names: [string, string, string] = ['gate_proj', 'up_proj', 'down_proj'], suffix = ''): Template[] {
  return [
    ...wb(`${prefix}.${names[0]}`, `${B}.ffn_gate${suffix}`),
    ...wb(`${prefix}.${names[1]}`, `${B}.ffn_up${suffix}`),
    ...wb(`${prefix}.${names[2]}`, `${B}.ffn_down${suffix}`),
  ];
}

/** Routed experts: per-expert HF tensors (first: the form the reader gives back) or fused v5 tensors. */
function experts(moe: string, names: [string, string, string] = ['gate_proj', 'up_proj', 'down_proj']): Template[] {
  return [
    t(`${moe}.experts.{e}.${names[0]}.weight`, `${B}.ffn_gate_exps.weight`, { k: 'experts' }),
    t(`${moe}.experts.{e}.${names[1]}.weight`, `${B}.ffn_up_exps.weight`, { k: 'experts' }),
    t(`${moe}.experts.{e}.${names[2]}.weight`, `${B}.ffn_down_exps.weight`, { k: 'experts' }),
    t(`${moe}.experts.gate_up_proj`, [`${B}.ffn_gate_exps.weight`, `${B}.ffn_up_exps.weight`], { k: 'splitRows' }),
    t(`${moe}.experts.down_proj`, `${B}.ffn_down_exps.weight`),
  ];
}

function norms(pairs: [string, string][], xf?: Xf): Template[] {
  return pairs.map(([h, g]) => t(`${L}.${h}.weight`, `${B}.${g}.weight`, xf));
}

/** Common decoder keys. */
function putCommon(c: Cfg, put: Put, opts: { ff?: boolean; eps?: string } = {}): void {
  put('context_length', c.max_position_embeddings ?? 4096, 'u32');
  put('embedding_length', c.hidden_size, 'u32');
  put('block_count', c.num_hidden_layers, 'u32');
  if (opts.ff !== false && c.intermediate_size != null) put('feed_forward_length', c.intermediate_size, 'u32');
  put('vocab_size', c.vocab_size, 'u32');
  put('attention.layer_norm_rms_epsilon', c[opts.eps ?? 'rms_norm_eps'] ?? 1e-6, 'f32');
}

function putHeads(c: Cfg, put: Put, kvPerLayer?: number[]): void {
  const nh = c.num_attention_heads;
  put('attention.head_count', nh, 'u32');
  if (kvPerLayer) put('attention.head_count_kv', kvPerLayer, 'array<u32>');
  else put('attention.head_count_kv', c.num_key_value_heads ?? nh, 'u32');
  const hd = c.head_dim ?? Math.floor(c.hidden_size / nh);
  put('attention.key_length', hd, 'u32');
  put('attention.value_length', hd, 'u32');
}

function readCommon(kv: KV, g: GGView, modelType: string, opts: { eps?: string; epsDefault?: number } = {}): Cfg {
  const nLayers = kv.int('block_count');
  const hidden = kv.int('embedding_length');
  const vocab = kv.int('vocab_size', g.shape('token_embd.weight')?.[0]);
  const c: Cfg = {
    model_type: modelType,
    hidden_size: hidden,
    num_hidden_layers: nLayers,
    vocab_size: vocab,
    max_position_embeddings: kv.int('context_length', 4096),
    tie_word_embeddings: !g.has('output.weight'),
  };
  c[opts.eps ?? 'rms_norm_eps'] = kv.num('attention.layer_norm_rms_epsilon', opts.epsDefault);
  return c;
}

function readHeads(kv: KV, c: Cfg): void {
  const nh = kv.int('attention.head_count');
  c.num_attention_heads = nh;
  const kvh = kv.perLayer('attention.head_count_kv', c.num_hidden_layers, nh);
  c.num_key_value_heads = Math.max(...kvh) || nh;
  c.head_dim = kv.int('attention.key_length', Math.floor(c.hidden_size / nh));
}

// ---- RoPE ------------------------------------------------------------------------------------------

function ropeOf(c: Cfg, layerType?: string): Cfg {
  let rp = c.rope_parameters;
  if (rp && layerType && rp[layerType]) rp = rp[layerType];
  if (rp && typeof rp === 'object' && ('rope_theta' in rp || 'rope_type' in rp)) return { rope_theta: rp.rope_theta ?? c.rope_theta, ...rp };
  const s = c.rope_scaling && typeof c.rope_scaling === 'object' ? c.rope_scaling : {};
  return { rope_type: s.rope_type ?? s.type ?? 'default', ...s, rope_theta: c.rope_theta ?? 10000 };
}

function putRope(c: Cfg, put: Put, layerType?: string): void {
  const rp = ropeOf(c, layerType);
  put('rope.freq_base', rp.rope_theta ?? 10000, 'f32');
  const type = rp.rope_type ?? rp.type ?? 'default';
  if (type === 'default') return;
  if (type === 'llama3') {
    // llama.cpp reads Llama 3 scaling from the rope_freqs.weight tensor, with no scaling keys.
    put('rope.scaling.llama3.factor', rp.factor, 'f32');
    put('rope.scaling.llama3.low_freq_factor', rp.low_freq_factor ?? 1, 'f32');
    put('rope.scaling.llama3.high_freq_factor', rp.high_freq_factor ?? 4, 'f32');
    put('rope.scaling.llama3.original_context_length', rp.original_max_position_embeddings, 'u32');
    return;
  }
  put('rope.scaling.type', type, 'string');
  if (rp.factor != null) put('rope.scaling.factor', rp.factor, 'f32');
  if (rp.original_max_position_embeddings != null) put('rope.scaling.original_context_length', rp.original_max_position_embeddings, 'u32');
  if (type === 'yarn') {
    if (rp.beta_fast != null) put('rope.scaling.yarn_beta_fast', rp.beta_fast, 'f32');
    if (rp.beta_slow != null) put('rope.scaling.yarn_beta_slow', rp.beta_slow, 'f32');
    if (rp.mscale_all_dim != null) put('rope.scaling.yarn_log_multiplier', 0.1 * rp.mscale_all_dim, 'f32');
    if (rp.attention_factor != null) put('rope.scaling.attn_factor', rp.attention_factor, 'f32');
    if (rp.truncate != null) put('rope.scaling.yarn_truncate', rp.truncate, 'bool');
  }
}

function readRope(kv: KV, opts: { theta?: number; truncateDefault?: boolean; mscale?: boolean } = {}): Cfg {
  const rp: Cfg = { rope_theta: kv.num('rope.freq_base', opts.theta ?? 10000) };
  if (kv.has('rope.scaling.llama3.factor')) {
    return {
      ...rp, rope_type: 'llama3', factor: kv.num('rope.scaling.llama3.factor'), low_freq_factor: kv.num('rope.scaling.llama3.low_freq_factor', 1),
      high_freq_factor: kv.num('rope.scaling.llama3.high_freq_factor', 4), original_max_position_embeddings: kv.int('rope.scaling.llama3.original_context_length', 8192),
    };
  }
  const type = kv.str('rope.scaling.type') ?? 'default';
  rp.rope_type = type === 'none' ? 'default' : type;
  if (rp.rope_type === 'default') return rp;
  if (kv.has('rope.scaling.factor')) rp.factor = kv.num('rope.scaling.factor');
  if (kv.has('rope.scaling.original_context_length')) rp.original_max_position_embeddings = kv.int('rope.scaling.original_context_length');
  if (rp.rope_type === 'yarn') {
    rp.beta_fast = kv.num('rope.scaling.yarn_beta_fast', 32);
    rp.beta_slow = kv.num('rope.scaling.yarn_beta_slow', 1);
    if (kv.has('rope.scaling.yarn_log_multiplier')) {
      const m = shortF32(Math.fround(kv.num('rope.scaling.yarn_log_multiplier') / 0.1));
      rp.mscale_all_dim = Number(m.toPrecision(6));
      if (opts.mscale) rp.mscale = rp.mscale_all_dim;
    }
    if (kv.has('rope.scaling.attn_factor')) rp.attention_factor = kv.num('rope.scaling.attn_factor');
    const tr = kv.has('rope.scaling.yarn_truncate') ? kv.bool('rope.scaling.yarn_truncate', true) : opts.truncateDefault;
    if (tr !== undefined) rp.truncate = tr;
  }
  return rp;
}

/** Rotary dims of the head when they differ from head_dim (partial rotary). */
function putRopeDims(c: Cfg, put: Put, headDim: number): void {
  const rp = ropeOf(c);
  const f = c.partial_rotary_factor ?? rp.partial_rotary_factor ?? 1;
  put('rope.dimension_count', Math.floor(headDim * f), 'u32');
}

// ---- Sliding windows -------------------------------------------------------------------------------

function putSwa(c: Cfg, put: Put, n: number, dflt: (i: number) => boolean): void {
  if (c.sliding_window) put('attention.sliding_window', c.sliding_window, 'u32');
  const types: unknown[] = Array.isArray(c.layer_types) ? c.layer_types : Array.from({ length: n }, (_, i) => (dflt(i) ? 'sliding_attention' : 'full_attention'));
  put('attention.sliding_window_pattern', types.map((x) => x === 'sliding_attention'), 'array<bool>');
}

function readSwa(kv: KV, c: Cfg, dflt: (i: number) => boolean): void {
  const n = c.num_hidden_layers;
  const pat = kv.boolArray('attention.sliding_window_pattern', n) ?? Array.from({ length: n }, (_, i) => dflt(i));
  c.sliding_window = kv.int('attention.sliding_window', 4096);
  c.layer_types = pat.map((s) => (s ? 'sliding_attention' : 'full_attention'));
}

// ---- Experts ---------------------------------------------------------------------------------------

function putExperts(c: Cfg, put: Put, E: number, opts: { inter?: number; shared?: number; norm?: boolean } = {}): void {
  put('expert_count', E, 'u32');
  put('expert_used_count', c.num_experts_per_tok, 'u32');
  if (opts.inter != null) put('expert_feed_forward_length', opts.inter, 'u32');
  if (opts.shared != null) put('expert_shared_feed_forward_length', opts.shared, 'u32');
  if (opts.norm != null) put('expert_weights_norm', opts.norm, 'bool');
}

function experts0(c: Cfg): number {
  return (c.num_local_experts ?? c.num_experts ?? c.n_routed_experts ?? 0) as number;
}

/** Layers whose feed-forward is dense, from the GGUF tensors (no router). */
function denseLayers(g: GGView, n: number): number[] {
  const sparse = new Set(g.layersWith('ffn_gate_inp.weight'));
  return Array.from({ length: n }, (_, i) => i).filter((i) => !sparse.has(i));
}

// ---- SSM -------------------------------------------------------------------------------------------

function mamba1Mixer(p: string): Template[] {
  return [
    ...wb(`${p}.in_proj`, `${B}.ssm_in`),
    t(`${p}.conv1d.weight`, `${B}.ssm_conv1d.weight`, squeezeConv),
    t(`${p}.conv1d.bias`, `${B}.ssm_conv1d.bias`),
    t(`${p}.x_proj.weight`, `${B}.ssm_x.weight`),
    ...wb(`${p}.dt_proj`, `${B}.ssm_dt`),
    t(`${p}.A_log`, `${B}.ssm_a`, { k: 'negexp' }),
    t(`${p}.D`, `${B}.ssm_d`),
    ...wb(`${p}.out_proj`, `${B}.ssm_out`),
  ];
}

function mamba2Mixer(p: string, G: number): Template[] {
  return [
    ...wb(`${p}.in_proj`, `${B}.ssm_in`),
    t(`${p}.conv1d.weight`, `${B}.ssm_conv1d.weight`, squeezeConv),
    t(`${p}.conv1d.bias`, `${B}.ssm_conv1d.bias`),
    t(`${p}.dt_bias`, `${B}.ssm_dt.bias`),
    t(`${p}.A_log`, `${B}.ssm_a`, negexpColumn),
    t(`${p}.D`, `${B}.ssm_d`, column),
    t(`${p}.norm.weight`, `${B}.ssm_norm.weight`, groups(G)),
    ...wb(`${p}.out_proj`, `${B}.ssm_out`),
  ];
}

/** The (period, offset) rule that selects exactly `layers` of n, or null. */
function periodOffset(layers: number[], n: number): [number, number] | null {
  const want = new Set(layers);
  for (let p = 1; p <= n; p++) {
    for (let o = 0; o < p; o++) {
      let ok = true;
      for (let i = 0; i < n && ok; i++) ok = (i % p === o) === want.has(i);
      if (ok) return [p, o];
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Architectures

const llama: ArchSpec = {
  arch: 'llama',
  hfTypes: ['llama', 'mistral', 'mixtral'],
  writeKV(c, put) {
    putCommon(c, put);
    putHeads(c, put);
    putRope(c, put);
    put('rope.dimension_count', c.head_dim ?? Math.floor(c.hidden_size / c.num_attention_heads), 'u32');
    if (c.sliding_window) put('attention.sliding_window', c.sliding_window, 'u32');
    if (c.model_type === 'mixtral') putExperts(c, put, experts0(c) || 8);
  },
  readConfig(kv, g) {
    const E = kv.int('expert_count', 0);
    const swa = kv.int('attention.sliding_window', 0);
    const c = readCommon(kv, g, E > 0 ? 'mixtral' : swa ? 'mistral' : 'llama');
    readHeads(kv, c);
    c.intermediate_size = kv.int('feed_forward_length', g.shape('blk.0.ffn_gate_exps.weight')?.[1]);
    c.rope_parameters = readRope(kv);
    c.hidden_act = 'silu';
    if (E > 0) {
      c.num_local_experts = E;
      c.num_experts_per_tok = kv.int('expert_used_count');
    }
    if (swa) c.sliding_window = swa;
    else if (E > 0) c.sliding_window = null;
    if (c.model_type === 'llama') {
      c.attention_bias = g.has('blk.0.attn_q.bias');
      c.mlp_bias = g.has('blk.0.ffn_gate.bias');
    }
    return c;
  },
  templates(c) {
    return [
      ...embedAndHead(),
      ...attention(c, true),
      ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'ffn_norm']]),
      ...denseMlp(`${L}.mlp`),
      t(`${L}.block_sparse_moe.gate.weight`, `${B}.ffn_gate_inp.weight`),
      ...experts(`${L}.block_sparse_moe`, ['w1', 'w3', 'w2']),
      t(`${L}.mlp.gate.weight`, `${B}.ffn_gate_inp.weight`),
      ...experts(`${L}.mlp`),
    ];
  },
};

function qwenLike(arch: string, modelType: string, qkNorm: boolean): ArchSpec {
  return {
    arch,
    hfTypes: [modelType],
    writeKV(c, put) {
      putCommon(c, put);
      putHeads(c, put);
      putRope(c, put);
    },
    readConfig(kv, g) {
      const c = readCommon(kv, g, modelType);
      readHeads(kv, c);
      c.intermediate_size = kv.int('feed_forward_length');
      c.rope_parameters = readRope(kv);
      c.hidden_act = 'silu';
      if (qkNorm) c.attention_bias = g.has('blk.0.attn_q.bias');
      return c;
    },
    templates(c) {
      return [
        ...embedAndHead(),
        ...attention(c, false),
        ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'ffn_norm'], ['self_attn.q_norm', 'attn_q_norm'], ['self_attn.k_norm', 'attn_k_norm']]),
        ...denseMlp(`${L}.mlp`),
      ];
    },
  };
}

function qwenMoe(arch: string, modelType: string, opts: { qkNorm: boolean; shared: boolean; normDefault: boolean; clip?: boolean }): ArchSpec {
  return {
    arch,
    hfTypes: [modelType],
    writeKV(c, put) {
      putCommon(c, put);
      putHeads(c, put);
      putRope(c, put);
      putExperts(c, put, experts0(c), { inter: c.moe_intermediate_size ?? c.intermediate_size, shared: opts.shared ? c.shared_expert_intermediate_size : undefined, norm: c.norm_topk_prob ?? opts.normDefault });
      if (opts.clip && c.clip_qkv != null) put('attention.clamp_kqv', c.clip_qkv, 'f32');
    },
    readConfig(kv, g) {
      const c = readCommon(kv, g, modelType);
      readHeads(kv, c);
      c.rope_parameters = readRope(kv);
      c.hidden_act = 'silu';
      c.num_experts = kv.int('expert_count');
      c.num_experts_per_tok = kv.int('expert_used_count');
      c.norm_topk_prob = kv.bool('expert_weights_norm', opts.normDefault);
      const expertFF = kv.int('expert_feed_forward_length', g.shape('blk.0.ffn_gate_exps.weight')?.[1] ?? 0);
      if (modelType === 'olmoe') {
        c.intermediate_size = expertFF;
        if (kv.has('attention.clamp_kqv')) c.clip_qkv = kv.num('attention.clamp_kqv');
        c.attention_bias = g.has('blk.0.attn_q.bias');
        return c;
      }
      c.moe_intermediate_size = expertFF;
      c.intermediate_size = kv.int('feed_forward_length', expertFF);
      if (opts.shared) c.shared_expert_intermediate_size = kv.int('expert_shared_feed_forward_length');
      c.decoder_sparse_step = 1;
      c.mlp_only_layers = denseLayers(g, c.num_hidden_layers);
      if (opts.qkNorm) c.attention_bias = g.has('blk.0.attn_q.bias');
      else c.qkv_bias = g.has('blk.0.attn_q.bias');
      return c;
    },
    templates(c) {
      return [
        ...embedAndHead(),
        ...attention(c, false),
        ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'ffn_norm'], ['self_attn.q_norm', 'attn_q_norm'], ['self_attn.k_norm', 'attn_k_norm']]),
        ...denseMlp(`${L}.mlp`),
        t(`${L}.mlp.gate.weight`, `${B}.ffn_gate_inp.weight`),
        ...experts(`${L}.mlp`),
        ...denseMlp(`${L}.mlp.shared_expert`, undefined, '_shexp'),
        t(`${L}.mlp.shared_expert_gate.weight`, `${B}.ffn_gate_inp_shexp.weight`, rowVector),
      ];
    },
  };
}

function gemma(arch: string, modelType: string): ArchSpec {
  const three = arch === 'gemma3';
  const dfltSliding = three ? (i: number) => (i + 1) % 6 !== 0 : (i: number) => i % 2 === 0;
  return {
    arch,
    hfTypes: [modelType],
    writeKV(c, put) {
      putCommon(c, put);
      putHeads(c, put);
      putRope(c, put, three ? 'full_attention' : undefined);
      if (three) put('rope.freq_base_swa', ropeOf(c, 'sliding_attention').rope_theta ?? c.rope_local_base_freq ?? 10000, 'f32');
      putSwa(c, put, c.num_hidden_layers, dfltSliding);
      if (c.attn_logit_softcapping != null) put('attn_logit_softcapping', c.attn_logit_softcapping, 'f32');
      if (c.final_logit_softcapping != null) put('final_logit_softcapping', c.final_logit_softcapping, 'f32');
      const hd = c.head_dim ?? Math.floor(c.hidden_size / c.num_attention_heads);
      if (c.query_pre_attn_scalar != null && c.query_pre_attn_scalar !== hd) put('attention.scale', 1 / Math.sqrt(c.query_pre_attn_scalar), 'f32');
    },
    readConfig(kv, g) {
      const c = readCommon(kv, g, modelType);
      readHeads(kv, c);
      c.intermediate_size = kv.int('feed_forward_length');
      c.hidden_activation = 'gelu_pytorch_tanh';
      readSwa(kv, c, dfltSliding);
      const full = readRope(kv, { theta: three ? 1_000_000 : 10000 });
      c.rope_parameters = three ? { full_attention: full, sliding_attention: { rope_theta: kv.num('rope.freq_base_swa', 10000), rope_type: 'default' } } : full;
      c.attn_logit_softcapping = kv.has('attn_logit_softcapping') ? kv.num('attn_logit_softcapping') : three ? null : 50;
      c.final_logit_softcapping = kv.has('final_logit_softcapping') ? kv.num('final_logit_softcapping') : three ? null : 30;
      const scale = kv.has('attention.scale') ? kv.num('attention.scale') : 0;
      c.query_pre_attn_scalar = scale ? Math.round(1 / (scale * scale) * 1e4) / 1e4 : c.head_dim;
      c.attention_bias = false;
      return c;
    },
    templates(c) {
      return [
        t('model.embed_tokens.weight', 'token_embd.weight'),
        t('model.norm.weight', 'output_norm.weight', { k: 'plus1' }),
        ...attention(c, false),
        ...norms([
          ['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'post_attention_norm'],
          ['pre_feedforward_layernorm', 'ffn_norm'], ['post_feedforward_layernorm', 'post_ffw_norm'],
          ['self_attn.q_norm', 'attn_q_norm'], ['self_attn.k_norm', 'attn_k_norm'],
        ], { k: 'plus1' }),
        ...denseMlp(`${L}.mlp`),
      ];
    },
  };
}

const mamba: ArchSpec = {
  arch: 'mamba',
  hfTypes: ['mamba', 'falcon_mamba'],
  writeKV(c, put) {
    const inner = c.intermediate_size ?? (c.expand ?? 2) * c.hidden_size;
    put('context_length', 1 << 20, 'u32');
    put('embedding_length', c.hidden_size, 'u32');
    put('block_count', c.num_hidden_layers, 'u32');
    put('feed_forward_length', 0, 'u32');
    put('attention.head_count', 0, 'u32');
    put('vocab_size', c.vocab_size, 'u32');
    put('ssm.conv_kernel', c.conv_kernel ?? 4, 'u32');
    put('ssm.inner_size', inner, 'u32');
    put('ssm.state_size', c.state_size ?? 16, 'u32');
    put('ssm.time_step_rank', c.time_step_rank === 'auto' || c.time_step_rank == null ? Math.ceil(c.hidden_size / 16) : c.time_step_rank, 'u32');
    put('attention.layer_norm_rms_epsilon', c.layer_norm_epsilon ?? 1e-5, 'f32');
    if (c.model_type === 'falcon_mamba') {
      put('ssm.dt_b_c_rms', true, 'bool');
      put('ssm.dt_b_c_rms_epsilon', c.mixer_rms_eps ?? 1e-6, 'f32');
    }
  },
  readConfig(kv, g) {
    // FalconMamba is llama.cpp's mamba with RMSNorms on dt, B and C (ssm.dt_b_c_rms).
    const falcon = kv.bool('ssm.dt_b_c_rms', false);
    const c = readCommon(kv, g, falcon ? 'falcon_mamba' : 'mamba', { eps: 'layer_norm_epsilon', epsDefault: 1e-5 });
    if (falcon) c.mixer_rms_eps = kv.num('ssm.dt_b_c_rms_epsilon', c.layer_norm_epsilon);
    delete c.max_position_embeddings;
    const inner = kv.int('ssm.inner_size');
    Object.assign(c, {
      intermediate_size: inner, expand: inner / c.hidden_size, state_size: kv.int('ssm.state_size'),
      conv_kernel: kv.int('ssm.conv_kernel'), time_step_rank: kv.int('ssm.time_step_rank'),
      use_bias: g.has('blk.0.ssm_in.bias'), use_conv_bias: g.has('blk.0.ssm_conv1d.bias'), hidden_act: 'silu',
    });
    return c;
  },
  templates() {
    return [
      t('backbone.embeddings.weight', 'token_embd.weight'),
      t('backbone.embedding.weight', 'token_embd.weight'),
      t('backbone.norm_f.weight', 'output_norm.weight'),
      t('lm_head.weight', 'output.weight'),
      t('backbone.layers.{i}.norm.weight', `${B}.attn_norm.weight`),
      ...mamba1Mixer('backbone.layers.{i}.mixer'),
    ];
  },
};

const mamba2: ArchSpec = {
  arch: 'mamba2',
  hfTypes: ['mamba2'],
  writeKV(c, put) {
    const H = c.num_heads;
    put('context_length', 1 << 20, 'u32');
    put('embedding_length', c.hidden_size, 'u32');
    put('block_count', c.num_hidden_layers, 'u32');
    put('feed_forward_length', 0, 'u32');
    put('attention.head_count', 0, 'u32');
    put('vocab_size', c.vocab_size, 'u32');
    put('ssm.conv_kernel', c.conv_kernel ?? 4, 'u32');
    put('ssm.inner_size', H * c.head_dim, 'u32');
    put('ssm.state_size', c.state_size ?? 128, 'u32');
    put('ssm.time_step_rank', H, 'u32');
    put('ssm.group_count', c.n_groups ?? 1, 'u32');
    put('attention.layer_norm_rms_epsilon', c.layer_norm_epsilon ?? 1e-5, 'f32');
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'mamba2', { eps: 'layer_norm_epsilon', epsDefault: 1e-5 });
    delete c.max_position_embeddings;
    const inner = kv.int('ssm.inner_size');
    const H = kv.int('ssm.time_step_rank');
    Object.assign(c, {
      num_heads: H, head_dim: inner / H, expand: inner / c.hidden_size, n_groups: kv.int('ssm.group_count', 1),
      state_size: kv.int('ssm.state_size'), conv_kernel: kv.int('ssm.conv_kernel'),
      use_bias: g.has('blk.0.ssm_in.bias'), use_conv_bias: g.has('blk.0.ssm_conv1d.bias'), rms_norm: true, hidden_act: 'silu',
    });
    return c;
  },
  templates(c) {
    return [
      t('backbone.embeddings.weight', 'token_embd.weight'),
      t('backbone.embedding.weight', 'token_embd.weight'),
      t('backbone.norm_f.weight', 'output_norm.weight'),
      t('lm_head.weight', 'output.weight'),
      t('backbone.layers.{i}.norm.weight', `${B}.attn_norm.weight`),
      ...mamba2Mixer('backbone.layers.{i}.mixer', c.n_groups ?? 1),
    ];
  },
};

const jamba: ArchSpec = {
  arch: 'jamba',
  hfTypes: ['jamba'],
  writeKV(c, put) {
    const n = c.num_hidden_layers;
    putCommon(c, put);
    const attn = (i: number) => i % (c.attn_layer_period ?? 8) === (c.attn_layer_offset ?? 4);
    put('attention.head_count', c.num_attention_heads, 'u32');
    put('attention.head_count_kv', Array.from({ length: n }, (_, i) => (attn(i) ? c.num_key_value_heads ?? c.num_attention_heads : 0)), 'array<u32>');
    put('ssm.conv_kernel', c.mamba_d_conv ?? 4, 'u32');
    put('ssm.inner_size', (c.mamba_expand ?? 2) * c.hidden_size, 'u32');
    put('ssm.state_size', c.mamba_d_state ?? 16, 'u32');
    put('ssm.time_step_rank', c.mamba_dt_rank === 'auto' || c.mamba_dt_rank == null ? Math.ceil(c.hidden_size / 16) : c.mamba_dt_rank, 'u32');
    putExperts(c, put, experts0(c));
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'jamba');
    const n = c.num_hidden_layers;
    c.num_attention_heads = kv.int('attention.head_count');
    const kvh = kv.perLayer('attention.head_count_kv', n, 0);
    c.num_key_value_heads = Math.max(...kvh) || c.num_attention_heads;
    const attnLayers = g.layersWith('attn_q.weight');
    const [ap, ao] = periodOffset(attnLayers, n) ?? [n + 1, n];
    const [ep, eo] = periodOffset(g.layersWith('ffn_gate_inp.weight'), n) ?? [n + 1, n];
    const inner = kv.int('ssm.inner_size');
    Object.assign(c, {
      intermediate_size: kv.int('feed_forward_length'), hidden_act: 'silu',
      attn_layer_period: ap, attn_layer_offset: ao, expert_layer_period: ep, expert_layer_offset: eo,
      num_experts: kv.int('expert_count', 1), num_experts_per_tok: kv.int('expert_used_count', 1),
      mamba_d_conv: kv.int('ssm.conv_kernel'), mamba_d_state: kv.int('ssm.state_size'), mamba_dt_rank: kv.int('ssm.time_step_rank'),
      mamba_expand: inner / c.hidden_size, mamba_conv_bias: g.layersWith('ssm_conv1d.bias').length > 0,
      mamba_proj_bias: g.layersWith('ssm_in.bias').length > 0,
    });
    return c;
  },
  templates() {
    const p = `${L}.mamba`;
    return [
      t('model.embed_tokens.weight', 'token_embd.weight'), t('model.final_layernorm.weight', 'output_norm.weight'), t('lm_head.weight', 'output.weight'),
      ...attention({ num_attention_heads: 1 }, false),
      ...norms([['input_layernorm', 'attn_norm'], ['pre_ff_layernorm', 'ffn_norm']]),
      ...mamba1Mixer(p),
      t(`${p}.dt_layernorm.weight`, `${B}.ssm_dt_norm.weight`),
      t(`${p}.b_layernorm.weight`, `${B}.ssm_b_norm.weight`),
      t(`${p}.c_layernorm.weight`, `${B}.ssm_c_norm.weight`),
      ...denseMlp(`${L}.feed_forward`),
      t(`${L}.feed_forward.router.weight`, `${B}.ffn_gate_inp.weight`),
      ...experts(`${L}.feed_forward`),
    ];
  },
};

const granitehybrid: ArchSpec = {
  arch: 'granitehybrid',
  hfTypes: ['granitemoehybrid'],
  writeKV(c, put) {
    const n = c.num_hidden_layers;
    putCommon(c, put);
    const types: string[] = Array.isArray(c.layer_types) ? c.layer_types : new Array(n).fill('mamba');
    const attn = (i: number) => types[i] === 'attention' || types[i] === 'full_attention';
    const nh = c.num_attention_heads;
    put('attention.head_count', nh, 'u32');
    put('attention.head_count_kv', types.map((_, i) => (attn(i) ? c.num_key_value_heads ?? nh : 0)), 'array<u32>');
    put('attention.key_length', c.head_dim ?? Math.floor(c.hidden_size / nh), 'u32');
    put('attention.value_length', c.head_dim ?? Math.floor(c.hidden_size / nh), 'u32');
    putRope(c, put);
    put('rope.dimension_count', c.head_dim ?? Math.floor(c.hidden_size / nh), 'u32');
    // llama.cpp's switch for RoPE in Granite attention (default on).
    put('rope.scaling.finetuned', c.position_embedding_type === 'rope', 'bool');
    put('ssm.conv_kernel', c.mamba_d_conv ?? 4, 'u32');
    put('ssm.inner_size', (c.mamba_expand ?? 2) * c.hidden_size, 'u32');
    put('ssm.state_size', c.mamba_d_state ?? 256, 'u32');
    put('ssm.time_step_rank', c.mamba_n_heads ?? 128, 'u32');
    put('ssm.group_count', c.mamba_n_groups ?? 1, 'u32');
    put('embedding_scale', c.embedding_multiplier ?? 1, 'f32');
    put('residual_scale', c.residual_multiplier ?? 1, 'f32');
    put('attention.scale', c.attention_multiplier ?? 1, 'f32');
    put('logit_scale', c.logits_scaling ?? 1, 'f32');
    putExperts(c, put, c.num_local_experts ?? 0, { inter: c.intermediate_size, shared: c.shared_intermediate_size });
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'granitemoehybrid');
    const n = c.num_hidden_layers;
    c.num_attention_heads = kv.int('attention.head_count');
    const kvh = kv.perLayer('attention.head_count_kv', n, 0);
    c.num_key_value_heads = Math.max(...kvh) || c.num_attention_heads;
    const attnLayers = new Set(g.layersWith('attn_q.weight'));
    c.layer_types = Array.from({ length: n }, (_, i) => (attnLayers.has(i) ? 'full_attention' : 'linear_attention'));
    const inner = kv.int('ssm.inner_size');
    const H = kv.int('ssm.time_step_rank');
    Object.assign(c, {
      hidden_act: 'silu', rope_parameters: readRope(kv), position_embedding_type: kv.bool('rope.scaling.finetuned', true) ? 'rope' : 'nope',
      mamba_d_conv: kv.int('ssm.conv_kernel'), mamba_d_state: kv.int('ssm.state_size'), mamba_n_heads: H, mamba_d_head: inner / H,
      mamba_n_groups: kv.int('ssm.group_count', 1), mamba_expand: inner / c.hidden_size,
      mamba_conv_bias: g.layersWith('ssm_conv1d.bias').length > 0, mamba_proj_bias: g.layersWith('ssm_in.bias').length > 0,
      embedding_multiplier: kv.num('embedding_scale', 1), residual_multiplier: kv.num('residual_scale', 1),
      attention_multiplier: kv.num('attention.scale', 1), logits_scaling: kv.num('logit_scale', 1),
      num_local_experts: kv.int('expert_count', 0), num_experts_per_tok: kv.int('expert_used_count', 0),
      intermediate_size: kv.int('expert_feed_forward_length', kv.int('feed_forward_length', 0)),
      shared_intermediate_size: kv.int('expert_shared_feed_forward_length', 0),
      attention_bias: g.layersWith('attn_q.bias').length > 0,
    });
    return c;
  },
  templates(c) {
    const moe = `${L}.block_sparse_moe`;
    return [
      ...embedAndHead(),
      ...attention(c, true),
      ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'ffn_norm']]),
      ...mamba2Mixer(`${L}.mamba`, c.mamba_n_groups ?? 1),
      t(`${moe}.router.layer.weight`, `${B}.ffn_gate_inp.weight`),
      t(`${moe}.input_linear.weight`, [`${B}.ffn_gate_exps.weight`, `${B}.ffn_up_exps.weight`], { k: 'splitRows' }),
      t(`${moe}.output_linear.weight`, `${B}.ffn_down_exps.weight`),
      t(`${L}.shared_mlp.input_linear.weight`, [`${B}.ffn_gate_shexp.weight`, `${B}.ffn_up_shexp.weight`], { k: 'splitRows' }),
      t(`${L}.shared_mlp.output_linear.weight`, `${B}.ffn_down_shexp.weight`),
    ];
  },
};

const lfm2: ArchSpec = {
  arch: 'lfm2',
  hfTypes: ['lfm2'],
  writeKV(c, put, hfShape) {
    const n = c.num_hidden_layers;
    putCommon(c, put, { ff: false, eps: 'norm_eps' });
    // The stored w1 rows, which block_auto_adjust_ff_dim may make differ from intermediate_size.
    put('feed_forward_length', hfShape('model.layers.0.feed_forward.w1.weight')?.[0] ?? c.intermediate_size, 'u32');
    const types: string[] = Array.isArray(c.layer_types) ? c.layer_types : new Array(n).fill('conv');
    put('attention.head_count', c.num_attention_heads, 'u32');
    put('attention.head_count_kv', types.map((x) => (x === 'full_attention' ? c.num_key_value_heads ?? c.num_attention_heads : 0)), 'array<u32>');
    putRope(c, put);
    put('shortconv.l_cache', c.conv_L_cache ?? 3, 'u32');
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'lfm2', { eps: 'norm_eps' });
    const n = c.num_hidden_layers;
    c.num_attention_heads = kv.int('attention.head_count');
    const kvh = kv.perLayer('attention.head_count_kv', n, 0);
    c.num_key_value_heads = Math.max(...kvh) || c.num_attention_heads;
    const attnLayers = new Set(g.layersWith('attn_q.weight'));
    c.layer_types = Array.from({ length: n }, (_, i) => (attnLayers.has(i) ? 'full_attention' : 'conv'));
    const ff = kv.int('feed_forward_length', g.shape('blk.0.ffn_gate.weight')?.[0]);
    Object.assign(c, {
      intermediate_size: ff, block_ff_dim: ff, block_auto_adjust_ff_dim: false, conv_L_cache: kv.int('shortconv.l_cache', 3),
      conv_bias: g.layersWith('shortconv.in_proj.bias').length > 0, rope_parameters: readRope(kv, { theta: 1_000_000 }),
    });
    return c;
  },
  templates(c) {
    return [
      t('model.embed_tokens.weight', 'token_embd.weight'),
      // llama.cpp names LFM2's final norm token_embd_norm (older files: output_norm).
      t('model.embedding_norm.weight', 'token_embd_norm.weight'),
      t('model.embedding_norm.weight', 'output_norm.weight'),
      t('lm_head.weight', 'output.weight'),
      ...attention(c, false, 'out_proj'),
      ...norms([['operator_norm', 'attn_norm'], ['ffn_norm', 'ffn_norm'], ['self_attn.q_layernorm', 'attn_q_norm'], ['self_attn.k_layernorm', 'attn_k_norm']]),
      ...wb(`${L}.conv.in_proj`, `${B}.shortconv.in_proj`),
      t(`${L}.conv.conv.weight`, `${B}.shortconv.conv.weight`, squeezeConv),
      t(`${L}.conv.conv.bias`, `${B}.shortconv.conv.bias`),
      ...wb(`${L}.conv.out_proj`, `${B}.shortconv.out_proj`),
      ...denseMlp(`${L}.feed_forward`, ['w1', 'w3', 'w2']),
    ];
  },
};

const deepseek2: ArchSpec = {
  arch: 'deepseek2',
  hfTypes: ['deepseek_v3'],
  writeKV(c, put) {
    putCommon(c, put);
    put('attention.head_count', c.num_attention_heads, 'u32');
    put('attention.head_count_kv', 1, 'u32');
    if (c.q_lora_rank != null) put('attention.q_lora_rank', c.q_lora_rank, 'u32');
    put('attention.kv_lora_rank', c.kv_lora_rank, 'u32');
    put('attention.key_length', c.kv_lora_rank + c.qk_rope_head_dim, 'u32');
    put('attention.value_length', c.kv_lora_rank, 'u32');
    put('attention.key_length_mla', c.qk_nope_head_dim + c.qk_rope_head_dim, 'u32');
    put('attention.value_length_mla', c.v_head_dim, 'u32');
    put('leading_dense_block_count', c.first_k_dense_replace ?? 0, 'u32');
    putExperts(c, put, c.n_routed_experts, { inter: c.moe_intermediate_size, norm: c.norm_topk_prob ?? false });
    put('expert_shared_count', c.n_shared_experts ?? 0, 'u32');
    put('expert_weights_scale', c.routed_scaling_factor ?? 1, 'f32');
    put('expert_gating_func', 2, 'u32');
    put('expert_group_count', c.n_group ?? 1, 'u32');
    put('expert_group_used_count', c.topk_group ?? 1, 'u32');
    put('rope.dimension_count', c.qk_rope_head_dim, 'u32');
    putRope(c, put);
    // No nextn_predict_layers: llama.cpp would take that many of the last blocks as multi-token-prediction
    // layers and leave them out of the forward pass, while HF's num_hidden_layers excludes them.
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'deepseek_v3');
    const nh = kv.int('attention.head_count');
    const rope = kv.int('rope.dimension_count');
    const mla = kv.has('attention.key_length_mla');
    const qk = mla ? kv.int('attention.key_length_mla') : kv.int('attention.key_length');
    Object.assign(c, {
      num_attention_heads: nh, num_key_value_heads: nh, hidden_act: 'silu',
      intermediate_size: kv.int('feed_forward_length'), moe_intermediate_size: kv.int('expert_feed_forward_length'),
      q_lora_rank: kv.has('attention.q_lora_rank') && kv.int('attention.q_lora_rank') > 0 ? kv.int('attention.q_lora_rank') : null,
      kv_lora_rank: kv.int('attention.kv_lora_rank'), qk_rope_head_dim: rope, qk_nope_head_dim: qk - rope, head_dim: rope,
      v_head_dim: mla ? kv.int('attention.value_length_mla') : kv.int('attention.value_length'),
      first_k_dense_replace: kv.int('leading_dense_block_count', 0), n_routed_experts: kv.int('expert_count'),
      n_shared_experts: kv.int('expert_shared_count', 0), num_experts_per_tok: kv.int('expert_used_count'),
      routed_scaling_factor: kv.num('expert_weights_scale', 1), norm_topk_prob: kv.bool('expert_weights_norm', false),
      n_group: kv.int('expert_group_count', 1), topk_group: kv.int('expert_group_used_count', 1),
      rope_interleave: true, rope_parameters: readRope(kv, { mscale: true }), attention_bias: false,
    });
    const gating = kv.int('expert_gating_func', 2);
    if (gating !== 2) throw new ConfigError(`gguf.metadata[${JSON.stringify(kv.key('expert_gating_func'))}]`, `${gating} (softmax gating, DeepSeek-V2) is not supported: only 2 (sigmoid, DeepSeek-V3)`);
    if (kv.has('nextn_predict_layers')) {
      // llama.cpp's block_count includes the multi-token-prediction blocks at the end; HF's does not.
      c.num_nextn_predict_layers = kv.int('nextn_predict_layers');
      c.num_hidden_layers -= c.num_nextn_predict_layers;
    }
    return c;
  },
  templates(c) {
    const a = `${L}.self_attn`;
    return [
      ...embedAndHead(),
      t(`${a}.q_proj.weight`, `${B}.attn_q.weight`),
      t(`${a}.q_a_proj.weight`, `${B}.attn_q_a.weight`),
      t(`${a}.q_a_layernorm.weight`, `${B}.attn_q_a_norm.weight`),
      t(`${a}.q_b_proj.weight`, `${B}.attn_q_b.weight`),
      t(`${a}.kv_a_proj_with_mqa.weight`, `${B}.attn_kv_a_mqa.weight`),
      t(`${a}.kv_a_layernorm.weight`, `${B}.attn_kv_a_norm.weight`),
      t(`${a}.kv_b_proj.weight`, [`${B}.attn_k_b.weight`, `${B}.attn_v_b.weight`], { k: 'kvb', heads: c.num_attention_heads, nope: c.qk_nope_head_dim, v: c.v_head_dim }),
      t(`${a}.kv_b_proj.weight`, `${B}.attn_kv_b.weight`),
      t(`${a}.o_proj.weight`, `${B}.attn_output.weight`),
      ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'ffn_norm']]),
      ...denseMlp(`${L}.mlp`),
      t(`${L}.mlp.gate.weight`, `${B}.ffn_gate_inp.weight`),
      t(`${L}.mlp.gate.e_score_correction_bias`, `${B}.exp_probs_b.bias`),
      ...experts(`${L}.mlp`),
      ...denseMlp(`${L}.mlp.shared_experts`, undefined, '_shexp'),
    ];
  },
};

const gptOss: ArchSpec = {
  arch: 'gpt-oss',
  hfTypes: ['gpt_oss'],
  writeKV(c, put) {
    putCommon(c, put, { ff: false });
    putHeads(c, put);
    putRope(c, put);
    putSwa(c, put, c.num_hidden_layers, (i) => i % 2 === 0);
    putExperts(c, put, experts0(c), { inter: c.intermediate_size });
    put('feed_forward_length', c.intermediate_size, 'u32');
    if (c.swiglu_limit != null) put('swiglu_clamp_exp', new Array(c.num_hidden_layers).fill(c.swiglu_limit), 'array<f32>');
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'gpt_oss', { epsDefault: 1e-5 });
    readHeads(kv, c);
    readSwa(kv, c, (i) => i % 2 === 0);
    const clamp = kv.raw('swiglu_clamp_exp');
    Object.assign(c, {
      hidden_act: 'silu', intermediate_size: kv.int('expert_feed_forward_length', kv.int('feed_forward_length', 0)),
      num_local_experts: kv.int('expert_count'), num_experts_per_tok: kv.int('expert_used_count'),
      rope_parameters: readRope(kv, { theta: 150000, truncateDefault: false }), attention_bias: true,
      swiglu_limit: shortF32(Array.isArray(clamp) ? (clamp[0] as number) : typeof clamp === 'number' ? clamp : 7),
    });
    return c;
  },
  templates(c) {
    const ex = `${L}.mlp.experts`;
    return [
      ...embedAndHead(),
      ...attention(c, false),
      t(`${L}.self_attn.sinks`, `${B}.attn_sinks.weight`),
      ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'post_attention_norm']]),
      ...wb(`${L}.mlp.router`, `${B}.ffn_gate_inp`),
      t(`${ex}.gate_up_proj`, [`${B}.ffn_gate_exps.weight`, `${B}.ffn_up_exps.weight`], { k: 'ossGateUp' }),
      t(`${ex}.gate_up_proj_bias`, [`${B}.ffn_gate_exps.bias`, `${B}.ffn_up_exps.bias`], { k: 'ossBias' }),
      t(`${ex}.down_proj`, `${B}.ffn_down_exps.weight`, { k: 'ossDown' }),
      t(`${ex}.down_proj_bias`, `${B}.ffn_down_exps.bias`),
    ];
  },
};

const qwen3next: ArchSpec = {
  arch: 'qwen3next',
  hfTypes: ['qwen3_next'],
  writeKV(c, put) {
    putCommon(c, put);
    putHeads(c, put);
    putRope(c, put);
    putRopeDims(c, put, c.head_dim ?? Math.floor(c.hidden_size / c.num_attention_heads));
    putExperts(c, put, c.num_experts ?? 0, { inter: c.moe_intermediate_size, shared: c.shared_expert_intermediate_size, norm: c.norm_topk_prob ?? true });
    put('ssm.conv_kernel', c.linear_conv_kernel_dim ?? 4, 'u32');
    put('ssm.state_size', c.linear_key_head_dim, 'u32');
    put('ssm.group_count', c.linear_num_key_heads, 'u32');
    put('ssm.time_step_rank', c.linear_num_value_heads, 'u32');
    put('ssm.inner_size', c.linear_value_head_dim * c.linear_num_value_heads, 'u32');
    // llama.cpp takes layer i as full attention when (i + 1) % interval == 0: the interval layer_types follows.
    const types: unknown[] | undefined = Array.isArray(c.layer_types) ? c.layer_types : undefined;
    const fits = (p: number) => types!.every((x, i) => (x === 'full_attention') === ((i + 1) % p === 0));
    const interval = types ? Array.from({ length: types.length }, (_, i) => i + 1).find(fits) : undefined;
    put('full_attention_interval', interval ?? c.full_attention_interval ?? 4, 'u32');
  },
  readConfig(kv, g) {
    const c = readCommon(kv, g, 'qwen3_next');
    readHeads(kv, c);
    const n = c.num_hidden_layers;
    const attnLayers = new Set(g.layersWith('attn_q.weight'));
    const rotary = kv.int('rope.dimension_count', c.head_dim);
    const rp = readRope(kv);
    rp.partial_rotary_factor = rotary / c.head_dim;
    const Hv = kv.int('ssm.time_step_rank');
    Object.assign(c, {
      hidden_act: 'silu', intermediate_size: kv.int('feed_forward_length'), rope_parameters: rp, partial_rotary_factor: rotary / c.head_dim,
      layer_types: Array.from({ length: n }, (_, i) => (attnLayers.has(i) ? 'full_attention' : 'linear_attention')),
      full_attention_interval: kv.int('full_attention_interval', 4),
      num_experts: kv.int('expert_count', 0), num_experts_per_tok: kv.int('expert_used_count', 0),
      moe_intermediate_size: kv.int('expert_feed_forward_length', 0), shared_expert_intermediate_size: kv.int('expert_shared_feed_forward_length', 0),
      norm_topk_prob: kv.bool('expert_weights_norm', true), decoder_sparse_step: 1, mlp_only_layers: denseLayers(g, n),
      linear_conv_kernel_dim: kv.int('ssm.conv_kernel'), linear_key_head_dim: kv.int('ssm.state_size'),
      linear_num_key_heads: kv.int('ssm.group_count'), linear_num_value_heads: Hv, linear_value_head_dim: kv.int('ssm.inner_size') / Hv,
      attention_bias: false,
    });
    return c;
  },
  templates(c) {
    const la = `${L}.linear_attn`;
    const p1: Xf = { k: 'plus1' };
    return [
      t('model.embed_tokens.weight', 'token_embd.weight'),
      t('model.norm.weight', 'output_norm.weight', p1),
      t('lm_head.weight', 'output.weight'),
      ...attention(c, false),
      ...norms([['input_layernorm', 'attn_norm'], ['post_attention_layernorm', 'post_attention_norm'], ['self_attn.q_norm', 'attn_q_norm'], ['self_attn.k_norm', 'attn_k_norm']], p1),
      t(`${la}.in_proj_qkvz.weight`, `${B}.ssm_in.weight`),
      t(`${la}.in_proj_ba.weight`, `${B}.ssm_ba.weight`),
      t(`${la}.conv1d.weight`, `${B}.ssm_conv1d.weight`, squeezeConv),
      t(`${la}.A_log`, `${B}.ssm_a`, { k: 'negexp' }),
      t(`${la}.dt_bias`, `${B}.ssm_dt.bias`),
      t(`${la}.norm.weight`, `${B}.ssm_norm.weight`),
      t(`${la}.out_proj.weight`, `${B}.ssm_out.weight`),
      ...denseMlp(`${L}.mlp`),
      t(`${L}.mlp.gate.weight`, `${B}.ffn_gate_inp.weight`),
      ...experts(`${L}.mlp`),
      ...denseMlp(`${L}.mlp.shared_expert`, undefined, '_shexp'),
      t(`${L}.mlp.shared_expert_gate.weight`, `${B}.ffn_gate_inp_shexp.weight`, rowVector),
    ];
  },
};

export const ARCHS: ArchSpec[] = [
  llama,
  qwenLike('qwen2', 'qwen2', false),
  qwenLike('qwen3', 'qwen3', true),
  gemma('gemma2', 'gemma2'),
  gemma('gemma3', 'gemma3_text'),
  qwenMoe('qwen2moe', 'qwen2_moe', { qkNorm: false, shared: true, normDefault: false }),
  qwenMoe('qwen3moe', 'qwen3_moe', { qkNorm: true, shared: false, normDefault: true }),
  qwenMoe('olmoe', 'olmoe', { qkNorm: true, shared: false, normDefault: false, clip: true }),
  mamba,
  mamba2,
  jamba,
  granitehybrid,
  lfm2,
  deepseek2,
  gptOss,
  qwen3next,
];
