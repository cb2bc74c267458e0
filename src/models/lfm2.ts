// LFM2 (Lfm2ForCausalLM): a pre-norm decoder whose layers are gated short convolutions or GQA
// attention with per-head q/k RMSNorm (`layer_types` "conv" / "full_attention"), each followed by
// a SwiGLU feed-forward (w1 gate, w3 up, w2 down). The final norm is `embedding_norm`.
//
// Short conv (HF Lfm2ShortConv.slow_forward), per token:
//   [B, C, x] = in_proj h                  (three chunks of hidden, in that order)
//   y = C ⊙ conv1d_L(B ⊙ x)               (depthwise causal, kernel conv_L_cache, no activation)
//   out = out_proj y                       (in_proj, conv and out_proj biased iff conv_bias)

import { mul } from '../kernels/act';
import { conv1d } from '../kernels/conv';
import type { Weight } from '../kernels/types';
import { Attention } from '../layers/attention';
import { addBias, type Ctx, type Ffn, type Mixer } from '../layers/context';
import { gatedFfn, reserveGatedFfn, rowsOf, type GatedWeights } from '../layers/mlp';
import { attentionShape, bool, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import type { RegionSpec, SeqState } from '../runtime/state';

export class ShortConv implements Mixer {
  readonly inProj: Weight;
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
    this.inBias = bias ? ws.vec(`${prefix}.in_proj.bias`, 3 * D) : 0;
    this.convW = ws.vec(`${prefix}.conv.weight`, D * L);
    this.convB = bias ? ws.vec(`${prefix}.conv.bias`, D) : 0;
    this.outProj = ws.mat(`${prefix}.out_proj.weight`, D, D);
    this.outBias = bias ? ws.vec(`${prefix}.out_proj.bias`, D) : 0;
    const T = ctx.maxChunk;
    ctx.scratch.need('sconv.b', T * D);
    ctx.scratch.need('sconv.c', T * D);
    ctx.scratch.need('sconv.x', T * D);
    this.convState = { name: `${this.prefix}.conv`, kind: 'fixed', floats: this.hidden * (this.L - 1) };
  }

  specs(): RegionSpec[] {
    return [this.convState];
  }

  forward(state: SeqState, h: number, out: number, T: number): void {
    const { ctx, hidden: D } = this;
    const s = ctx.scratch;
    const b = s.get('sconv.b'), c = s.get('sconv.c'), x = s.get('sconv.x');
    const parts = [b, c, x];
    for (let i = 0; i < 3; i++) {
      ctx.mm(parts[i], h, rowsOf(this.inProj, i * D, D), T);
      if (this.inBias) addBias(ctx, parts[i], this.inBias + i * D * 4, T, D);
    }
    mul(ctx.k, b, b, x, T * D);
    conv1d(ctx.k, b, b, this.convW, this.convB, state.ptr(this.convState), T, D, this.L, 'none');
    mul(ctx.k, c, c, b, T * D);
    ctx.mm(out, c, this.outProj, T);
    addBias(ctx, out, this.outBias, T, D);
  }
}

/** Lfm2MLP: w2(silu(w1 x) ⊙ w3 x). */
export class Lfm2Mlp implements Ffn {
  readonly w: GatedWeights;
  constructor(readonly ctx: Ctx, prefix: string, hidden: number, inter: number) {
    const { ws } = ctx;
    this.w = {
      gate: ws.mat(`${prefix}.w1.weight`, inter, hidden),
      up: ws.mat(`${prefix}.w3.weight`, inter, hidden),
      down: ws.mat(`${prefix}.w2.weight`, hidden, inter),
    };
    reserveGatedFfn(ctx, inter);
  }
  forward(x: number, out: number, T: number): void {
    gatedFfn(this.ctx, this.w, 'silu', x, out, T);
  }
}

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

export interface Lfm2Config {
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
  /** Feed-forward width (lfm2FfnDim). */
  inter: number;
  rope: RopeParams;
  tieEmbeddings: boolean;
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
  // The default RoPE here rotates the whole head whatever partial_rotary_factor says; the scaled types
  // would build partial tables that HF's full-head apply_rotary_pos_emb cannot take.
  const rp = obj(c.rope_parameters), rs = obj(c.rope_scaling);
  const ropeType = rp.rope_type ?? rs.rope_type ?? rs.type ?? 'default';
  const prf = rp.partial_rotary_factor ?? c.partial_rotary_factor ?? 1;
  rejectIf(ropeType !== 'default' && prf !== 1, 'rope_parameters.partial_rotary_factor', `${prf} is not supported with rope_type ${JSON.stringify(ropeType)}`);
  return {
    hidden, nLayers, vocab, attn, eps, convL, convBias, layerTypes: types, inter, rope: ropeParams(c),
    // Lfm2Config: a tie_embedding key overrides tie_word_embeddings (default true).
    tieEmbeddings: Boolean(c.tie_embedding ?? c.tie_word_embeddings ?? true),
  };
}

export function buildLfm2(ctx: Ctx, c: Lfm2Config): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, convL: L, convBias, inter } = c;
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
      ffn: new Lfm2Mlp(ctx, `${p}.feed_forward`, hidden, inter),
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

export const lfm2: Family<Lfm2Config> = {
  types: ['lfm2'],
  keepF32: (name) => name.endsWith('.conv.conv.weight'),
  parse: parseLfm2,
  build: buildLfm2,
};
