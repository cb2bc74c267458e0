// OLMo Hybrid (OlmoHybridForCausalLM): a decoder of Gated DeltaNet layers and softmax attention layers
// (`layer_types`: linear_attention / full_attention, by default every fourth layer full), each with a
// dense SwiGLU MLP.
//
// Attention layers are OLMo-2 style, with no norm on the branch inputs and RMSNorms on their outputs:
//   x ← x + post_attention_layernorm(attn(x));  x ← x + post_feedforward_layernorm(mlp(x))
// with q_norm / k_norm over the whole q and k projections, head_dim = hidden / heads, and RoPE only
// when rope_parameters carries a rope_theta (released checkpoints have none: no position encoding).
// Linear-attention layers are pre-norm:
//   x ← x + linear_attn(input_layernorm(x));  x ← x + mlp(post_attention_layernorm(x))
//
// Gated DeltaNet, per value head h of Hv, key head h / (Hv/Hk):
//   [q k v] = SiLU(causal_conv1d_K([q_proj x; k_proj x; v_proj x]))    (depthwise, no bias)
//   q, k = l2norm(q), l2norm(k) (eps 1e-6);  q ← q · dk^−½
//   β = sigmoid(b_proj x) (× 2 with linear_allow_neg_eigval),  g = −exp(A_log) · softplus(a_proj x + dt_bias)
//   S ← exp(g) S;  S ← S + k (β (v − Sᵀk))ᵀ;  o = Sᵀ q
//   out = o_proj( RMSNorm_1e-5(o)·w ⊙ SiLU(g_proj x) )                    (norm per head over dv)
//
// Checkpoints (released, and as save_pretrained writes them) name input_layernorm attention_layer_norm
// and post_attention_layernorm feedforward_layer_norm, in every layer, and hold the conv taps as
// q_conv1d / k_conv1d / v_conv1d; transformers' own names are read too.

import { ConfigError } from '../formats/errors';
import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { add, copy, matmul, norm, scale, type NormSpec } from '../graph/ops';
import { Attention } from '../layers/attention';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { attentionShape, bool, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { GatedDeltaCore, gatedDeltaConvDim, type GatedDeltaNetConfig } from './qwen3_next';
import type { RegionSpec } from '../runtime/state';

/** FLA's FusedRMSNormGated default, which the gated output norm keeps whatever rms_norm_eps says. */
const GATED_NORM_EPS = 1e-5;

export interface OlmoHybridDeltaConfig extends GatedDeltaNetConfig {
  /** linear_allow_neg_eigval: β = 2·sigmoid(b). */
  negEigval: boolean;
}

/** OLMo Hybrid's Gated DeltaNet over separate q/k/v/a/b/g projections (see the file header). */
export class OlmoHybridDeltaNet extends GatedDeltaCore {
  readonly q: Weight;
  readonly k: Weight;
  readonly v: Weight;
  readonly a: Weight;
  readonly b: Weight;
  readonly gate: Weight;

  constructor(ctx: Ctx, prefix: string, readonly delta: OlmoHybridDeltaConfig) {
    super(ctx, prefix, delta, { norm: 'o_norm', out: 'o_proj' }, convTaps(ctx, prefix, gatedDeltaConvDim(delta), delta.convK));
    const { ws } = ctx;
    const { hidden, Hk, Hv, dk, dv } = delta;
    this.q = ws.mat(`${prefix}.q_proj.weight`, Hk * dk, hidden);
    this.k = ws.mat(`${prefix}.k_proj.weight`, Hk * dk, hidden);
    this.v = ws.mat(`${prefix}.v_proj.weight`, Hv * dv, hidden);
    this.a = ws.mat(`${prefix}.a_proj.weight`, Hv, hidden);
    this.b = ws.mat(`${prefix}.b_proj.weight`, Hv, hidden);
    this.gate = ws.mat(`${prefix}.g_proj.weight`, Hv * dv, hidden);
  }

  protected project(g: Graph, x: Tensor, mixed: Tensor, z: Tensor, ba: Tensor): void {
    const { Hv } = this.cfg;
    // The packed rows [q | k | v] and [b | a] the conv and the gates read, from the separate projections
    // (each may be held in its own dtype).
    let off = 0;
    for (const w of [this.q, this.k, this.v]) {
      const t = g.tmp(w.rows);
      matmul(g, t, x, w);
      copy(g, mixed, t, { chunks: 1, len: w.rows, yOff: off });
      off += w.rows;
    }
    const bt = g.tmp(Hv), at = g.tmp(Hv);
    matmul(g, bt, x, this.b);
    matmul(g, at, x, this.a);
    copy(g, ba, bt, { chunks: 1, len: Hv });
    copy(g, ba, at, { chunks: 1, len: Hv, yOff: Hv });
    matmul(g, z, x, this.gate);
  }

  protected gates(g: Graph, gate: Tensor, beta: Tensor, ba: Tensor): void {
    super.gates(g, gate, beta, ba);
    if (this.delta.negEigval) scale(g, beta, beta, 2);
  }
}

/**
 * The conv taps [q; k; v] (f32, [convDim, 1, K]): `conv1d.weight`, or the checkpoint's separate
 * q_conv1d / k_conv1d / v_conv1d (as released and as save_pretrained writes them) stacked in that order.
 */
function convTaps(ctx: Ctx, prefix: string, convDim: number, K: number): number {
  const { ws } = ctx;
  if (ws.has(`${prefix}.conv1d.weight`)) return ws.vec(`${prefix}.conv1d.weight`, convDim * K);
  const names = ['q', 'k', 'v'].map((n) => `${prefix}.${n}_conv1d.weight`);
  const parts = names.map((n) => ctx.f32(ws.vec(n), ws.shape(n).reduce((a, b) => a * b, 1)));
  const total = parts.reduce((a, p) => a + p.length, 0);
  if (total !== convDim * K) throw new ConfigError(`tensors["${names[0]}"]`, `q/k/v conv taps hold ${total} floats together, expected ${convDim}×${K}`);
  const all = new Float32Array(total);
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return ctx.k.arena.putF32(all).ptr;
}

/** The first of `names` the checkpoint holds (HF names, then the released checkpoints' own). */
function pick(ctx: Ctx, names: string[]): string {
  return names.find((n) => ctx.ws.has(n)) ?? names[0];
}

/** A residual block with norms on the branch outputs only: x += post(mixer(x)); x += postFfn(ffn(x)). */
export class PostNormBlock implements Block {
  constructor(readonly kind: string, readonly hidden: number, readonly mixer: Mixer, readonly ffn: Ffn, readonly post: NormSpec, readonly postFfn: NormSpec) {}
  specs(maxContext: number): RegionSpec[] {
    return this.mixer.specs(maxContext);
  }
  forward(g: Graph, x: Tensor): void {
    const o = g.tmp(this.hidden);
    this.mixer.forward(g, x, o);
    norm(g, this.post, o, o);
    add(g, x, x, o);
    this.ffn.forward(g, x, o);
    norm(g, this.postFfn, o, o);
    add(g, x, x, o);
  }
}

export type OlmoHybridLayerType = 'linear_attention' | 'full_attention';

export interface OlmoHybridConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  inter: number;
  attn: AttentionShape;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  attnBias: boolean;
  delta: OlmoHybridDeltaConfig;
  layerTypes: OlmoHybridLayerType[];
  /** null: no RoPE (rope_parameters absent or without rope_theta). */
  rope: RopeParams | null;
  tieEmbeddings: boolean;
}

export function parseOlmoHybrid(c: RawConfig): OlmoHybridConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const actName = c.hidden_act ?? 'silu';
  const act = parseActivation(actName);
  // The conv activation is ACT2FN[hidden_act]; the conv kernel implements SiLU.
  rejectIf(act !== 'silu', 'hidden_act', `${JSON.stringify(actName)} is not supported (the short convolutions use it; the kernel implements silu)`);
  const Hk = int(c, 'linear_num_key_heads', attn.nHeads);
  const Hv = int(c, 'linear_num_value_heads', attn.nHeads);
  const dk = int(c, 'linear_key_head_dim', Math.floor(0.75 * hidden / Hk));
  const delta: OlmoHybridDeltaConfig = {
    hidden, Hk, Hv, dk,
    dv: int(c, 'linear_value_head_dim', 2 * dk),
    convK: int(c, 'linear_conv_kernel_dim', 4),
    eps: GATED_NORM_EPS,
    negEigval: bool(c, 'linear_allow_neg_eigval', true),
  };
  rejectIf(Hk < 1 || Hv % Hk !== 0, 'linear_num_value_heads', `${Hv} is not a multiple of linear_num_key_heads ${Hk}`);
  rejectIf(delta.convK < 2 || delta.convK > 4, 'linear_conv_kernel_dim', `${delta.convK} is not supported (2 … 4)`);
  rejectIf(dk < 1 || delta.dv < 1, 'linear_key_head_dim', 'key and value head dims must be ≥ 1');
  const types = layerTypes<OlmoHybridLayerType>(c, nLayers, ['linear_attention', 'full_attention'], (i) => (i % 4 === 3 || (nLayers < 4 && i === nLayers - 1) ? 'full_attention' : 'linear_attention'));
  // HF builds the rotary embedding only when rope_parameters has a rope_theta.
  const rp = c.rope_parameters;
  const hasRope = rp !== null && rp !== undefined && obj(rp).rope_theta !== undefined && obj(rp).rope_theta !== null;
  return {
    hidden, nLayers, vocab: int(c, 'vocab_size'), inter: int(c, 'intermediate_size'), attn,
    eps: num(c, 'rms_norm_eps', 1e-6), act, attnBias: bool(c, 'attention_bias', false), delta, layerTypes: types,
    rope: hasRope ? ropeParams(c) : null,
    // OlmoHybridConfig.tie_word_embeddings defaults to false.
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildOlmoHybrid(ctx: Ctx, c: OlmoHybridConfig): Net {
  const { ws } = ctx;
  const { hidden, vocab, eps, act, inter } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = c.rope ? ropeSpec(c.rope, headDim) : null;
  const blocks: Block[] = [];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `model.layers.${i}`;
    const mlp = new GatedMlp(ctx, `${p}.mlp`, hidden, inter, act);
    if (c.layerTypes[i] === 'linear_attention') {
      blocks.push(new PreNormBlock(ctx, {
        kind: 'linear_attention', hidden, mixer: new OlmoHybridDeltaNet(ctx, `${p}.linear_attn`, c.delta), ffn: mlp,
        preMixer: { w: ws.vec(pick(ctx, [`${p}.input_layernorm.weight`, `${p}.attention_layer_norm.weight`]), hidden), eps },
        preFfn: { w: ws.vec(pick(ctx, [`${p}.post_attention_layernorm.weight`, `${p}.feedforward_layer_norm.weight`]), hidden), eps },
      }));
    } else {
      const attn = new Attention(ctx, `${p}.self_attn`, {
        hidden, nHeads, nKv, headDim, qkvBias: c.attnBias, oBias: c.attnBias,
        qkNorm: { eps, addOne: false, full: true }, rope, scale: 1 / Math.sqrt(headDim),
      });
      blocks.push(new PostNormBlock('attention', hidden, attn, mlp,
        { w: ws.vec(pick(ctx, [`${p}.post_attention_layernorm.weight`, `${p}.feedforward_layer_norm.weight`]), hidden), eps },
        { w: ws.vec(`${p}.post_feedforward_layernorm.weight`, hidden), eps }));
    }
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export const olmoHybrid: Family<OlmoHybridConfig> = {
  types: ['olmo_hybrid'],
  keepF32: (name) => name.endsWith('conv1d.weight') || name.endsWith('.A_log') || name.endsWith('.dt_bias'),
  parse: parseOlmoHybrid,
  build: buildOlmoHybrid,
};
