// Jamba (JambaForCausalLM, model_type "jamba"): pre-norm decoder of Mamba-1 layers, with GQA attention
// (no positional encoding, head_dim^-0.5) on layers i ≡ attn_layer_offset (mod attn_layer_period).
// The Mamba mixer RMS-normalises δ, B and C with learned weights (dt_layernorm, b_layernorm,
// c_layernorm; eps rms_norm_eps). Layers i ≡ expert_layer_offset (mod expert_layer_period) have a
// sparse MoE (router p = softmax(W x), top-k of p, not renormalised); the others a SwiGLU MLP.

import { Attention } from '../layers/attention';
import type { Ctx, Ffn } from '../layers/context';
import { Mamba1Mixer, ssmKeepF32, type Mamba1Config } from '../layers/mamba';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, bool, int, lmHead, num, rejectIf, tiedEmbeddings, type AttentionShape, type RawConfig } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { dtRank, expertCount, expertWeights, requireSilu } from './shared';

export interface JambaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps (block norms and the mixer's δ/B/C norms) */
  eps: number;
  /** intermediate_size of the MLPs and of each expert */
  inter: number;
  act: Activation;
  attn: AttentionShape;
  /** Whether each layer's mixer is attention (else Mamba-1): i ≡ attn_layer_offset (mod attn_layer_period). */
  attnLayers: boolean[];
  /** Whether each layer's feed-forward is the MoE: i ≡ expert_layer_offset (mod expert_layer_period), E > 1. */
  sparse: boolean[];
  nExperts: number;
  topk: number;
  mamba: Mamba1Config;
  tieEmbeddings: boolean;
}

export function parseJamba(c: RawConfig): JambaConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const inter = int(c, 'intermediate_size');
  const act = parseActivation(c.hidden_act ?? 'silu');
  requireSilu(c);
  const attn = attentionShape(c, hidden);
  const attnPeriod = int(c, 'attn_layer_period', 8), attnOffset = int(c, 'attn_layer_offset', 4);
  const expPeriod = int(c, 'expert_layer_period', 2), expOffset = int(c, 'expert_layer_offset', 1);
  rejectIf(attnPeriod < 1 || attnOffset >= attnPeriod, 'attn_layer_offset', `must be below attn_layer_period ${attnPeriod}`);
  rejectIf(expPeriod < 1 || expOffset >= expPeriod, 'expert_layer_offset', `must be below expert_layer_period ${expPeriod}`);
  const E = expertCount(c, 16);
  const topk = int(c, 'num_experts_per_tok', 2);
  rejectIf(E > 1 && (topk < 1 || topk > E), 'num_experts_per_tok', `${topk} must be in [1, ${E}]`);
  const mamba: Mamba1Config = {
    hidden, dInner: int(c, 'mamba_expand', 2) * hidden, N: int(c, 'mamba_d_state', 16),
    R: dtRank(c, 'mamba_dt_rank', hidden), W: int(c, 'mamba_d_conv', 4),
    projBias: bool(c, 'mamba_proj_bias', false), convBias: bool(c, 'mamba_conv_bias', true),
    innerNorm: { eps, weighted: true },
  };
  const layers = Array.from({ length: nLayers }, (_, i) => i);
  return {
    hidden, nLayers, vocab, eps, inter, act, attn,
    attnLayers: layers.map((i) => i % attnPeriod === attnOffset),
    // JambaConfig.layers_num_experts: num_experts on expert layers, else 1 (a dense MLP).
    sparse: layers.map((i) => i % expPeriod === expOffset && E > 1),
    nExperts: E, topk, mamba,
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildJamba(ctx: Ctx, c: JambaConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, inter, act, nExperts: E, topk } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const isAttn = c.attnLayers[i];
    const mixer = isAttn
      ? new Attention(ctx, `${p}.self_attn`, { hidden, nHeads, nKv, headDim, qkvBias: false, oBias: false, rope: null, scale: 1 / Math.sqrt(headDim) })
      : new Mamba1Mixer(ctx, `${p}.mamba`, c.mamba);
    const ff = `${p}.feed_forward`;
    const ffn: Ffn = c.sparse[i]
      ? new Moe(ctx, {
        hidden, nExperts: E, topk, inter, act, routing: { mode: 'softmax_topk', renormalize: false },
        router: ws.mat(`${ff}.router.weight`, E, hidden), expert: expertWeights(ws, ff, E, inter, hidden),
      })
      : new GatedMlp(ctx, ff, hidden, inter, act);
    blocks.push(new PreNormBlock(ctx, {
      kind: isAttn ? 'attention' : 'mamba', hidden, mixer, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.pre_ff_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.final_layernorm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export const jamba: Family<JambaConfig> = {
  types: ['jamba'],
  keepF32: (name) => ssmKeepF32(name),
  parse: parseJamba,
  build: buildJamba,
};
