// GraniteMoE (GraniteMoeForCausalLM): a Llama-shaped decoder whose feed-forward is a sparse mixture
// of experts — top-k of the router logits, softmax over those k, experts fused as
// block_sparse_moe.input_linear [E, 2I, D] (gate rows, then up rows) and output_linear [E, D, I] —
// with Granite's multipliers: embeddings × embedding_multiplier, each residual branch ×
// residual_multiplier, attention scores × attention_multiplier (in place of head_dim^-0.5), logits
// ÷ logits_scaling.

import { Attention } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { parseActivation, type Activation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, bool, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertWeights } from './shared';

export interface GraniteMoeConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  attn: AttentionShape;
  attnBias: boolean;
  /** attention_multiplier */
  attnScale: number;
  /** num_local_experts, num_experts_per_tok, intermediate_size (per expert) */
  nExperts: number;
  topk: number;
  inter: number;
  rope: RopeParams;
  residualMultiplier: number;
  embeddingMultiplier: number;
  logitsScaling: number;
  tieEmbeddings: boolean;
}

export function parseGraniteMoe(c: RawConfig): GraniteMoeConfig {
  const hidden = int(c, 'hidden_size');
  const nExperts = int(c, 'num_local_experts', 8);
  const topk = int(c, 'num_experts_per_tok', 2);
  rejectIf(nExperts < 1, 'num_local_experts', 'must be ≥ 1');
  rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
  return {
    hidden,
    nLayers: int(c, 'num_hidden_layers'),
    vocab: int(c, 'vocab_size'),
    eps: num(c, 'rms_norm_eps', 1e-6),
    act: parseActivation(c.hidden_act ?? 'silu'),
    attn: attentionShape(c, hidden),
    attnBias: bool(c, 'attention_bias', false),
    attnScale: num(c, 'attention_multiplier', 1),
    nExperts, topk,
    inter: int(c, 'intermediate_size'),
    rope: ropeParams(c),
    residualMultiplier: num(c, 'residual_multiplier', 1),
    embeddingMultiplier: num(c, 'embedding_multiplier', 1),
    logitsScaling: num(c, 'logits_scaling', 1),
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildGraniteMoe(ctx: Ctx, c: GraniteMoeConfig): Net {
  const { ws } = ctx;
  const { hidden, vocab, eps, nExperts: E, topk, inter } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `model.layers.${i}`, moe = `${p}.block_sparse_moe`;
    blocks.push(new PreNormBlock(ctx, {
      kind: 'attention', hidden,
      mixer: new Attention(ctx, `${p}.self_attn`, { hidden, nHeads, nKv, headDim, qkvBias: c.attnBias, oBias: c.attnBias, rope, scale: c.attnScale }),
      ffn: new Moe(ctx, {
        hidden, nExperts: E, topk, inter, act: c.act, routing: { mode: 'topk_softmax' },
        router: ws.mat(`${moe}.router.layer.weight`, E, hidden), expert: expertWeights(ws, moe, E, inter, hidden),
      }),
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
      residualMultiplier: c.residualMultiplier,
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    embedScale: c.embeddingMultiplier,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
    logitsDivisor: c.logitsScaling,
  });
}

export const graniteMoe: Family<GraniteMoeConfig> = {
  types: ['granitemoe'],
  parse: parseGraniteMoe,
  build: buildGraniteMoe,
};
