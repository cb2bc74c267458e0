// LFM2 (Lfm2ForCausalLM): a pre-norm decoder whose layers are gated short convolutions or GQA
// attention with per-head q/k RMSNorm (`layer_types` "conv" / "full_attention"), each followed by
// a SwiGLU feed-forward (w1 gate, w3 up, w2 down). The final norm is `embedding_norm`.
//
// Short conv (HF Lfm2ShortConv.slow_forward), per token:
//   [B, C, x] = in_proj h                  (three chunks of hidden, in that order)
//   y = C ⊙ conv1d_L(B ⊙ x)               (depthwise causal, kernel conv_L_cache, no activation)
//   out = out_proj y                       (in_proj, conv and out_proj biased iff conv_bias)

import type { Graph, Tensor } from '../graph/graph';
import { causalConv, linear, mul } from '../graph/ops';
import type { Weight } from '../kernels/types';
import { Attention } from '../layers/attention';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedFfn, rowsOf } from '../layers/mlp';
import { attentionShape, bool, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import type { RegionSpec } from '../runtime/state';

export class ShortConv implements Mixer {
  readonly inProj: Weight;
  /** The rows of in_proj that make B, C and x. */
  readonly inParts: Weight[];
  readonly inBias: number;
  readonly convW: number;
  readonly convB: number;
  readonly outProj: Weight;
  readonly outBias: number;

  /** Session state: the short conv window. */
  readonly convState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly hidden: number, readonly L: number, bias: boolean) {
    const { ws } = ctx;
    const D = hidden;
    this.inProj = ws.mat(`${prefix}.in_proj.weight`, 3 * D, D);
    this.inParts = [0, 1, 2].map((i) => ({ ...rowsOf(this.inProj, i * D, D), name: this.inProj.name }));
    this.inBias = bias ? ws.vec(`${prefix}.in_proj.bias`, 3 * D) : 0;
    this.convW = ws.vec(`${prefix}.conv.weight`, D * L);
    this.convB = bias ? ws.vec(`${prefix}.conv.bias`, D) : 0;
    this.outProj = ws.mat(`${prefix}.out_proj.weight`, D, D);
    this.outBias = bias ? ws.vec(`${prefix}.out_proj.bias`, D) : 0;
    this.convState = { name: `${this.prefix}.conv`, kind: 'fixed', floats: this.hidden * (this.L - 1) };
  }

  specs(): RegionSpec[] {
    return [this.convState];
  }

  forward(g: Graph, h: Tensor, out: Tensor): void {
    const D = this.hidden;
    const b = g.tmp(D), c = g.tmp(D), x = g.tmp(D);
    // in_proj rows are [B | C | x], each D wide (its bias likewise).
    [b, c, x].forEach((part, i) => linear(g, part, h, this.inParts[i], this.inBias && this.inBias + i * D * 4));
    mul(g, b, b, x);
    causalConv(g, b, b, { w: this.convW, bias: this.convB, state: this.convState, W: this.L, act: 'none' });
    mul(g, c, c, b);
    linear(g, out, c, this.outProj, this.outBias);
  }
}

/** Lfm2MLP: w2(silu(w1 x) ⊙ w3 x). */
/** Lfm2MLP's feed-forward width: block_ff_dim, adjusted ⅔ · multiplier, rounded up to block_multiple_of. */
export function lfm2FfnDim(c: RawConfig): number {
  // Lfm2Config: a block_ff_dim key overrides intermediate_size.
  let inter = c.block_ff_dim !== undefined ? int(c, 'block_ff_dim') : int(c, 'intermediate_size', 12288);
  if (bool(c, 'block_auto_adjust_ff_dim', true)) {
    inter = Math.floor((2 * inter) / 3);
    const mult = c.block_ffn_dim_multiplier ?? 1.0;
    if (mult !== null) {
      rejectIf(typeof mult !== 'number', 'block_ffn_dim_multiplier', 'must be a number or null');
      const m = int(c, 'block_multiple_of', 256);
      rejectIf(m < 1, 'block_multiple_of', 'must be ≥ 1');
      inter = Math.floor((mult as number) * inter);
      inter = m * Math.floor((inter + m - 1) / m);
    }
  }
  return inter;
}

export type Lfm2LayerType = 'conv' | 'full_attention';

/** The fields of an LFM2-style config (LFM2, LFM2-MoE) that its decoder is built from. */
export interface Lfm2Shape {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** norm_eps */
  eps: number;
  /** conv_L_cache: the short convolution's kernel width */
  convL: number;
  convBias: boolean;
  layerTypes: Lfm2LayerType[];
  rope: RopeParams;
  tieEmbeddings: boolean;
}

export interface Lfm2Config extends Lfm2Shape {
  /** Feed-forward width (lfm2FfnDim). */
  inter: number;
}

export function parseLfm2(c: RawConfig): Lfm2Config {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'norm_eps', 1e-5);
  const convL = int(c, 'conv_L_cache', 3);
  const convBias = bool(c, 'conv_bias', false);
  rejectIf(convL < 2 || convL > 4, 'conv_L_cache', `${convL} is not supported (2 … 4)`);
  // Lfm2Config without layer_types: full_attn_idxs lists the attention layers (default: all).
  const fullAttn = (): unknown[] => {
    const full = c.full_attn_idxs ?? Array.from({ length: nLayers }, (_, i) => i);
    rejectIf(!Array.isArray(full), 'full_attn_idxs', 'must be a list of layer indices');
    return full as unknown[];
  };
  const types = layerTypes<Lfm2LayerType>(c, nLayers, ['conv', 'full_attention'], (i) => (fullAttn().includes(i) ? 'full_attention' : 'conv'));
  const inter = lfm2FfnDim(c);
  rejectPartialScaledRope(c);
  return {
    hidden, nLayers, vocab, attn, eps, convL, convBias, layerTypes: types, inter, rope: ropeParams(c),
    // Lfm2Config: a tie_embedding key overrides tie_word_embeddings (default true).
    tieEmbeddings: Boolean(c.tie_embedding ?? c.tie_word_embeddings ?? true),
  };
}

/**
 * Rejects a partial_rotary_factor other than 1 with a scaled rope_type: the default RoPE here rotates
 * the whole head whatever partial_rotary_factor says; the scaled types would build partial tables that
 * HF's full-head apply_rotary_pos_emb cannot take.
 */
export function rejectPartialScaledRope(c: RawConfig): void {
  const rp = obj(c.rope_parameters), rs = obj(c.rope_scaling);
  const ropeType = rp.rope_type ?? rs.rope_type ?? rs.type ?? 'default';
  const prf = rp.partial_rotary_factor ?? c.partial_rotary_factor ?? 1;
  rejectIf(ropeType !== 'default' && prf !== 1, 'rope_parameters.partial_rotary_factor', `${prf} is not supported with rope_type ${JSON.stringify(ropeType)}`);
}

/**
 * Builds an LFM2-style decoder: per layer a short convolution or GQA attention with per-head q/k
 * RMSNorm, then the feed-forward `ffnAt(layer, prefix)` gives for `${prefix}` = the layer's
 * `feed_forward`, in pre-norm blocks; the final norm is `embedding_norm`.
 */
export function buildLfm2Net(ctx: Ctx, c: Lfm2Shape, ffnAt: (layer: number, prefix: string) => Ffn): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, convL: L, convBias } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const conv = c.layerTypes[i] === 'conv';
    const mixer: Mixer = conv
      ? new ShortConv(ctx, `${p}.conv`, hidden, L, convBias)
      : new Attention(ctx, `${p}.self_attn`, {
        hidden, nHeads, nKv, headDim, qkvBias: false, oBias: false,
        qkNorm: { eps, addOne: false }, rope, scale: 1 / Math.sqrt(headDim),
        names: { o: 'out_proj', qNorm: 'q_layernorm', kNorm: 'k_layernorm' },
      });
    blocks.push(new PreNormBlock(ctx, {
      kind: conv ? 'short_conv' : 'attention', hidden, mixer,
      ffn: ffnAt(i, `${p}.feed_forward`),
      preMixer: { w: ws.vec(`${p}.operator_norm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.ffn_norm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.embedding_norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export function buildLfm2(ctx: Ctx, c: Lfm2Config): Net {
  return buildLfm2Net(ctx, c, (_, p) => lfm2Mlp(ctx, p, c.hidden, c.inter));
}

export const lfm2: Family<Lfm2Config> = {
  types: ['lfm2'],
  keepF32: (name) => name.endsWith('.conv.conv.weight'),
  parse: parseLfm2,
  build: buildLfm2,
};

/** Lfm2MLP: w1 (gate), w3 (up), w2 (down), SiLU. */
export function lfm2Mlp(ctx: Ctx, prefix: string, hidden: number, inter: number): GatedFfn {
  const { ws } = ctx;
  return new GatedFfn({
    gate: ws.mat(`${prefix}.w1.weight`, inter, hidden),
    up: ws.mat(`${prefix}.w3.weight`, inter, hidden),
    down: ws.mat(`${prefix}.w2.weight`, hidden, inter),
  }, 'silu');
}
