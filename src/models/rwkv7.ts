// RWKV-7 "Goose" (fla's RWKV7ForCausalLM, model_type "rwkv7": the HF-format checkpoints of fla-hub).
// LayerNorm pre-norm blocks of time mixing (a WKV-7 recurrence: a delta rule with a vector-valued
// decay and a diagonal-plus-low-rank transition) and channel mixing, both fed by a token shift of
// their normed input. Layer 0 also LayerNorms the embeddings (pre_norm, with norm_first); its value
// vector v_first is carried to every later layer.
//
// Time mix (official RWKV-v7 equations, fla/layers/rwkv7.py), x̄ = the previous token's attn_norm output:
//   x_m = x + (x̄ − x) ⊙ μ_m  for m ∈ r, w, k, v, a, g
//   r = W_r x_r;  k = W_k x_k;  v = W_v x_v
//   w = −e^{−1/2}·σ(w0 + tanh(x_w A_w) B_w)                 log-decay: d = exp(w) = exp(−e^{−1/2}σ(·))
//   layer 0: v_first = v;  else v = lerp(v, v_first, σ(v0 + x_v A_v B_v))
//   a = σ(a0 + x_a A_a B_a);  g = σ(x_g A_g) B_g
//   κ̂ = normalize_head(k ⊙ k_k);  k ← k + (k ⊙ (a − 1)) ⊙ k_a
//   per head, S [dk, dv]:  S ← Diag(exp w) S − (κ̂ ⊙ a)(Sᵀκ̂)ᵀ + k vᵀ;  y = Sᵀ r
//   out = W_o( (GroupNorm_H(y) + (Σ_head r ⊙ k ⊙ r_k)·v) ⊙ g )   GroupNorm eps = head_dim·norm_eps
// Channel mix: out = W_v relu(W_k (x + (x̄ − x) ⊙ μ_k))²  (x̄: the previous ffn_norm output).
//
// normalize_head is fla's l2_norm, κ/√(Σκ² + 1e-6), with fuse_norm (the default), else F.normalize,
// κ/max(‖κ‖, 1e-12) (the official form).

import type { Weight } from '../kernels/types';
import type { Ctx } from '../layers/context';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import { add, copy, embed, linear, matmul, mulSigmoid, norm, scale, sigmoid, softcap, type NormSpec } from '../graph/ops';
import { relu2, tokenShift } from '../graph/ops-recurrent';
import { rwkv7Keys, rwkv7Output, wkv7, type KappaNorm } from '../graph/ops-rwkv7';
import type { RegionSpec } from '../runtime/state';
import { bool, int, num, rejectIf, tiedEmbeddings, type RawConfig } from './common';
import type { Family, Net } from './net';

/** −e^{−1/2}: the log-decay is this times σ(·) (fla's −0.6065306597126334). */
const LOG_DECAY_SCALE = -Math.exp(-0.5);

export interface Rwkv7Config {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** Heads: hidden_size / head_dim. */
  H: number;
  /** head_dim: key head size. */
  dk: number;
  /** value_dim / H: value head size. */
  dv: number;
  /** decay_low_rank_dim, gate_low_rank_dim, a_low_rank_dim, v_low_rank_dim (fla's formulas when null). */
  decayRank: number;
  gateRank: number;
  aRank: number;
  vRank: number;
  /** intermediate_size (else hidden_size·hidden_ratio rounded up to a multiple of 32). */
  inter: number;
  /** norm_eps of every LayerNorm; the GroupNorm takes head_dim·norm_eps. */
  eps: number;
  /** norm_first: layer 0 LayerNorms the embeddings. */
  normFirst: boolean;
  /** norm_bias: the LayerNorms have biases. */
  normBias: boolean;
  /** fuse_norm picks fla's l2_norm (eps 1e-6 under the root), else F.normalize (norm clamped at 1e-12). */
  kappaNorm: KappaNorm;
  tieEmbeddings: boolean;
}

/** Python's round(): halves go to the even neighbour. */
function pyRound(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

/** An optional integer field: the value, or `dflt()` when absent or null. */
function optInt(c: RawConfig, field: string, dflt: () => number): number {
  return c[field] === undefined || c[field] === null ? dflt() : int(c, field);
}

/** A LoRA rank: RWKV7Config's default when absent; RWKV7Attention's formula when null (factor = head_dim / 64). */
function loraRank(c: RawConfig, field: string, classDefault: number, formula: () => number): number {
  if (c[field] === undefined) return classDefault;
  return optInt(c, field, formula);
}

export function parseRwkv7(c: RawConfig): Rwkv7Config {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  rejectIf(hidden < 1, 'hidden_size', 'must be ≥ 1');
  // fla's RWKV7Attention: head_dim wins; num_heads only when head_dim is null.
  let dk: number;
  if (c.head_dim === null) {
    rejectIf(c.num_heads === undefined || c.num_heads === null, 'head_dim', 'is null and num_heads is not set');
    const nh = int(c, 'num_heads');
    rejectIf(nh < 1 || hidden % nh !== 0, 'num_heads', `${nh} does not divide hidden_size ${hidden}`);
    dk = hidden / nh;
  } else {
    dk = int(c, 'head_dim', 64);
    rejectIf(dk < 1 || hidden % dk !== 0, 'head_dim', `${dk} does not divide hidden_size ${hidden}`);
  }
  const H = hidden / dk;

  // value_dim: one width for every layer (v_first is mixed into each layer's value).
  let valueDim = hidden;
  const vd = c.value_dim;
  if (Array.isArray(vd)) {
    rejectIf(vd.length !== nLayers, 'value_dim', `has ${vd.length} entries for ${nLayers} layers`);
    rejectIf(!vd.every((x) => Number.isInteger(x) && x === vd[0]), 'value_dim', `per-layer widths ${JSON.stringify(vd)} differ; one width for all layers is supported`);
    valueDim = vd[0] as number;
  } else if (vd !== undefined && vd !== null) {
    valueDim = int(c, 'value_dim');
  }
  rejectIf(valueDim < 1 || valueDim % H !== 0, 'value_dim', `${valueDim} is not a multiple of the ${H} heads`);

  const act = c.hidden_act ?? 'sqrelu';
  rejectIf(act !== 'sqrelu', 'hidden_act', `${JSON.stringify(act)} is not supported (RWKV-7 channel mixing uses sqrelu)`);
  rejectIf(c.attn !== undefined && c.attn !== null, 'attn', 'hybrid attention layers are not supported');
  const mode = c.attn_mode ?? 'chunk';
  rejectIf(mode !== 'chunk' && mode !== 'fused_recurrent', 'attn_mode', `${JSON.stringify(mode)} is not one of "chunk", "fused_recurrent"`);

  const factor = dk / 64;
  const rank = (field: string, classDefault: number, mult: number, useFactor: boolean) =>
    loraRank(c, field, classDefault, () => Math.max(32, pyRound((mult * Math.sqrt(hidden) * (useFactor ? factor : 1)) / 32) * 32));
  const decayRank = rank('decay_low_rank_dim', 64, 2.5, true);
  const gateRank = rank('gate_low_rank_dim', 128, 5, false);
  const aRank = rank('a_low_rank_dim', 64, 2.5, true);
  const vRank = rank('v_low_rank_dim', 16, 1.7, true);
  for (const [f, v] of [['decay_low_rank_dim', decayRank], ['gate_low_rank_dim', gateRank], ['a_low_rank_dim', aRank], ['v_low_rank_dim', vRank]] as const) {
    rejectIf(v < 1, f, 'must be ≥ 1');
  }

  // RWKV7FeedForward: int(hidden_size · hidden_ratio) rounded up to a multiple of 32.
  const inter = optInt(c, 'intermediate_size', () => {
    const ratio = c.hidden_ratio === undefined || c.hidden_ratio === null ? 4 : num(c, 'hidden_ratio');
    rejectIf(!(ratio > 0), 'hidden_ratio', `must be > 0, got ${ratio}`);
    return 32 * Math.ceil(Math.trunc(hidden * ratio) / 32);
  });
  rejectIf(inter < 1, 'intermediate_size', 'must be ≥ 1');

  const eps = num(c, 'norm_eps', 1e-5);
  rejectIf(!(eps > 0), 'norm_eps', `must be > 0, got ${eps}`);
  return {
    hidden, nLayers, vocab, H, dk, dv: valueDim / H, decayRank, gateRank, aRank, vRank, inter, eps,
    normFirst: bool(c, 'norm_first', true),
    normBias: bool(c, 'norm_bias', true),
    kappaNorm: bool(c, 'fuse_norm', true) ? { mode: 'add', eps: 1e-6 } : { mode: 'clamp', eps: 1e-12 },
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/** A LoRA of fla (lora.0: down [rank, in], lora.2: up [out, rank], optional lora.2.bias). */
interface LoRA {
  down: Weight;
  up: Weight;
  bias: number;
}

export class Rwkv7Block {
  readonly kind = 'rwkv7';
  readonly preNorm: NormSpec | null;
  readonly attnNorm: NormSpec;
  readonly ffnNorm: NormSpec;
  /** Token-shift weights as the kernel takes them: 1 − μ (x·(1 − μ) + x̄·μ = x + (x̄ − x)·μ). */
  readonly attMix: Float32Array[];
  readonly ffnMix: Float32Array;
  readonly att: {
    r: Weight; k: Weight; v: Weight; o: Weight;
    w: LoRA; a: LoRA; g: LoRA; v0: LoRA | null;
    /** Arena vectors: k_k, k_a [hidden], r_k [H·dk], g_norm weight and bias [value_dim]. */
    kK: number; kA: number; rK: number; normW: number; normB: number;
  };
  readonly ffn: { key: Weight; value: Weight };

  /** Session state: the previous token's attn_norm output. */
  readonly attShiftState: RegionSpec;
  /** Session state: the previous token's ffn_norm output. */
  readonly ffnShiftState: RegionSpec;
  /** Session state: the WKV state S [H, dk, dv]. */
  readonly wkvState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly layer: number, readonly cfg: Rwkv7Config) {
    const { ws } = ctx;
    const { hidden: D, H, dk, dv, inter: I, eps, normBias } = cfg;
    const V = H * dv;
    const ln = (n: string): NormSpec => ({ kind: 'layer', w: ws.vec(`${prefix}.${n}.weight`, D), b: normBias ? ws.vec(`${prefix}.${n}.bias`, D) : 0, eps });
    this.preNorm = cfg.normFirst && layer === 0 ? ln('pre_norm') : null;
    this.attnNorm = ln('attn_norm');
    this.ffnNorm = ln('ffn_norm');
    const a = `${prefix}.attn`, f = `${prefix}.ffn`;
    const shiftWeight = (name: string) => Float32Array.from(ctx.f32(ws.vec(name, D), D), (m) => 1 - m);
    this.attMix = ['r', 'w', 'k', 'v', 'a', 'g'].map((m) => shiftWeight(`${a}.x_${m}`));
    this.ffnMix = shiftWeight(`${f}.x_k`);
    const lora = (n: string, rank: number, out: number, bias: boolean): LoRA => ({
      down: ws.mat(`${a}.${n}_lora.lora.0.weight`, rank, D),
      up: ws.mat(`${a}.${n}_lora.lora.2.weight`, out, rank),
      bias: bias ? ws.vec(`${a}.${n}_lora.lora.2.bias`, out) : 0,
    });
    this.att = {
      r: ws.mat(`${a}.r_proj.weight`, D, D), k: ws.mat(`${a}.k_proj.weight`, D, D),
      v: ws.mat(`${a}.v_proj.weight`, V, D), o: ws.mat(`${a}.o_proj.weight`, D, V),
      w: lora('w', cfg.decayRank, D, true), a: lora('a', cfg.aRank, D, true), g: lora('g', cfg.gateRank, V, false),
      v0: layer > 0 ? lora('v', cfg.vRank, V, true) : null,
      kK: ws.vec(`${a}.k_k`, D), kA: ws.vec(`${a}.k_a`, D), rK: ws.vec(`${a}.r_k`, H * dk),
      normW: ws.vec(`${a}.g_norm.weight`, V), normB: ws.vec(`${a}.g_norm.bias`, V),
    };
    this.ffn = { key: ws.mat(`${f}.key.weight`, I, D), value: ws.mat(`${f}.value.weight`, D, I) };
    this.attShiftState = { name: `${prefix}.att_shift`, kind: 'fixed', floats: D };
    this.ffnShiftState = { name: `${prefix}.ffn_shift`, kind: 'fixed', floats: D };
    this.wkvState = { name: `${prefix}.wkv`, kind: 'fixed', floats: H * dk * dv };
  }

  specs(): RegionSpec[] {
    return [this.attShiftState, this.ffnShiftState, this.wkvState];
  }

  /** x [T, hidden] updated in place; vFirst [T, value_dim]: written by layer 0, read by the others. */
  forward(g: Graph, x: Tensor, vFirst: Tensor): void {
    const { hidden: D, H, dk, dv, inter: I, eps } = this.cfg;
    const V = H * dv, att = this.att;
    if (this.preNorm) norm(g, this.preNorm, x, x);

    // time mix
    const h = g.tmp(D), o = g.tmp(D);
    const [xr, xw, xk, xv, xa, xg] = this.attMix.map(() => g.tmp(D));
    norm(g, this.attnNorm, h, x);
    tokenShift(g, [xr, xw, xk, xv, xa, xg], h, this.attShiftState, this.attMix);
    const r = g.tmp(D), k = g.tmp(D), v = g.tmp(V), w = g.tmp(D), a = g.tmp(D), gate = g.tmp(V);
    matmul(g, r, xr, att.r);
    matmul(g, k, xk, att.k);
    matmul(g, v, xv, att.v);
    // w = −e^{−1/2}·σ(w0 + tanh(x_w A) B)
    this.lora(g, w, xw, att.w, 'tanh');
    sigmoid(g, w, w);
    scale(g, w, w, LOG_DECAY_SCALE);
    if (att.v0) {
      // v ← v + σ(v0 + x_v A B) ⊙ (v_first − v)
      const mix = g.tmp(V), d = g.tmp(V);
      this.lora(g, mix, xv, att.v0, 'none');
      scale(g, d, v, -1);
      add(g, d, d, vFirst);
      mulSigmoid(g, d, d, mix);
      add(g, v, v, d);
    } else {
      copy(g, vFirst, v, { chunks: 1, len: V });
    }
    this.lora(g, a, xa, att.a, 'none');
    sigmoid(g, a, a);
    this.lora(g, gate, xg, att.g, 'sigmoid');
    const kappa = g.tmp(D), y = g.tmp(V);
    rwkv7Keys(g, kappa, k, a, { kK: att.kK, kA: att.kA, dk, norm: this.cfg.kappaNorm });
    wkv7(g, y, { r, w, k, v, kappa, a }, { H, dk, dv, state: this.wkvState });
    rwkv7Output(g, y, { r, k, v, g: gate }, { H, dk, dv, rK: att.rK, normW: att.normW, normB: att.normB, eps: dk * eps });
    matmul(g, o, y, att.o);
    add(g, x, x, o);

    // channel mix
    const fk = g.tmp(I);
    norm(g, this.ffnNorm, h, x);
    tokenShift(g, [xk], h, this.ffnShiftState, [this.ffnMix]);
    matmul(g, fk, xk, this.ffn.key);
    relu2(g, fk);
    matmul(g, o, fk, this.ffn.value);
    add(g, x, x, o);
  }

  /** y = up(act(down · x)) + bias */
  private lora(g: Graph, y: Tensor, x: Tensor, l: LoRA, act: 'tanh' | 'sigmoid' | 'none'): void {
    const z = g.tmp(l.down.rows);
    matmul(g, z, x, l.down);
    if (act === 'tanh') softcap(g, z, z, 1);
    else if (act === 'sigmoid') sigmoid(g, z, z);
    linear(g, y, z, l.up, l.bias || undefined);
  }
}

/** embed → blocks (v_first passed from layer 0 to the rest) → final norm → LM head. */
export class Rwkv7Net implements Net {
  readonly vocabSize: number;
  readonly hidden: number;
  readonly layerKinds: string[];
  readonly hiddenOutput = true;
  private readonly labels: string[];

  constructor(readonly cfg: Rwkv7Config, readonly embedW: Weight, readonly blocks: Rwkv7Block[], readonly finalNorm: NormSpec, readonly head: Weight) {
    this.vocabSize = cfg.vocab;
    this.hidden = cfg.hidden;
    this.layerKinds = blocks.map((b) => b.kind);
    this.labels = blocks.map((_, i) => `layer ${i}`);
  }

  specs(): RegionSpec[] {
    return this.blocks.flatMap((b) => b.specs());
  }

  forward(g: Graph, all: boolean, output: ForwardOutput = 'logits'): Tensor {
    const x = g.tmp(this.cfg.hidden);
    const vFirst = g.tmp(this.cfg.H * this.cfg.dv);
    embed(g, x, this.embedW);
    for (let i = 0; i < this.blocks.length; i++) g.scope(this.labels[i], () => this.blocks[i].forward(g, x, vFirst));
    const xs = all ? x : g.last(x);
    norm(g, this.finalNorm, xs, xs);
    if (output === 'hidden') return xs;
    const logits = g.tmp(this.cfg.vocab, xs.rows);
    matmul(g, logits, xs, this.head);
    return logits;
  }
}

export function buildRwkv7(ctx: Ctx, c: Rwkv7Config): Net {
  const { ws } = ctx;
  const { hidden: D, vocab } = c;
  const blocks = Array.from({ length: c.nLayers }, (_, i) => new Rwkv7Block(ctx, `model.layers.${i}`, i, c));
  const embedW = ws.mat('model.embeddings.weight', vocab, D);
  const head = c.tieEmbeddings ? embedW : ws.mat('lm_head.weight', vocab, D);
  const finalNorm: NormSpec = { kind: 'layer', w: ws.vec('model.norm.weight', D), b: c.normBias ? ws.vec('model.norm.bias', D) : 0, eps: c.eps };
  return new Rwkv7Net(c, embedW, blocks, finalNorm, head);
}

export const rwkv7: Family<Rwkv7Config> = {
  types: ['rwkv7'],
  // Token-shift weights are read on the host; k_k, k_a, r_k are per-channel vectors (r_k is 2-D).
  keepF32: (name) => /\.attn\.(x_[rwkvag]|k_k|k_a|r_k)$|\.ffn\.x_k$/.test(name),
  // Layer 0 has no value residual; converted checkpoints may still carry its unused LoRA.
  ignore: (name) => /^model\.layers\.0\.attn\.v_lora\./.test(name),
  parse: parseRwkv7,
  build: buildRwkv7,
};
