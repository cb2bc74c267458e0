// Jamba (JambaForCausalLM, model_type "jamba"): pre-norm decoder of Mamba-1 layers, with GQA attention
// (no positional encoding, head_dim^-0.5) on layers i ≡ attn_layer_offset (mod attn_layer_period).
// The Mamba mixer RMS-normalises δ, B and C with learned weights (dt_layernorm, b_layernorm,
// c_layernorm; eps rms_norm_eps). Layers i ≡ expert_layer_offset (mod expert_layer_period) have a
// sparse MoE (router p = softmax(W x), top-k of p, not renormalised); the others a SwiGLU MLP.

import { Attention } from '../layers/attention';
import type { Ffn } from '../layers/context';
import { Mamba1Mixer, ssmKeepF32 } from '../layers/mamba';
import { GatedMlp, parseActivation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { bool, int, lmHead, num, rejectIf } from './common';
import { attentionShape } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import { dtRank, requireSilu } from './mamba';
import { expertCount, expertWeights } from './mixtral';
import type { Family } from './net';

export const jamba: Family = {
  types: ['jamba'],
  keepF32: (name) => ssmKeepF32(name),
  build: (ctx, c) => {
    const { ws } = ctx;
    const hidden = int(c, 'hidden_size');
    const nLayers = int(c, 'num_hidden_layers');
    const vocab = int(c, 'vocab_size');
    const eps = num(c, 'rms_norm_eps', 1e-6);
    const inter = int(c, 'intermediate_size');
    const act = parseActivation(c.hidden_act ?? 'silu');
    requireSilu(c);
    const { nHeads, nKv, headDim } = attentionShape(c, hidden);
    const attnPeriod = int(c, 'attn_layer_period', 8), attnOffset = int(c, 'attn_layer_offset', 4);
    const expPeriod = int(c, 'expert_layer_period', 2), expOffset = int(c, 'expert_layer_offset', 1);
    rejectIf(attnPeriod < 1 || attnOffset >= attnPeriod, 'attn_layer_offset', `must be below attn_layer_period ${attnPeriod}`);
    rejectIf(expPeriod < 1 || expOffset >= expPeriod, 'expert_layer_offset', `must be below expert_layer_period ${expPeriod}`);
    const E = expertCount(c, 16);
    const topk = int(c, 'num_experts_per_tok', 2);
    rejectIf(E > 1 && (topk < 1 || topk > E), 'num_experts_per_tok', `${topk} must be in [1, ${E}]`);
    const mix = {
      hidden, dInner: int(c, 'mamba_expand', 2) * hidden, N: int(c, 'mamba_d_state', 16),
      R: dtRank(c, 'mamba_dt_rank', hidden), W: int(c, 'mamba_d_conv', 4),
      projBias: bool(c, 'mamba_proj_bias', false), convBias: bool(c, 'mamba_conv_bias', true),
      innerNorm: { eps, weighted: true },
    };
    const blocks: Block[] = [];
    for (let i = 0; i < nLayers; i++) {
      const p = `model.layers.${i}`;
      const isAttn = i % attnPeriod === attnOffset;
      const mixer = isAttn
        ? new Attention(ctx, `${p}.self_attn`, { hidden, nHeads, nKv, headDim, qkvBias: false, oBias: false, rope: null, scale: 1 / Math.sqrt(headDim) })
        : new Mamba1Mixer(ctx, `${p}.mamba`, mix);
      // JambaConfig.layers_num_experts: num_experts on expert layers, else 1 (a dense MLP).
      const sparse = i % expPeriod === expOffset && E > 1;
      const ff = `${p}.feed_forward`;
      const ffn: Ffn = sparse
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
      lmHead: lmHead(ws, { ...c, tie_word_embeddings: c.tie_word_embeddings ?? false }, vocab, hidden),
    });
  },
};
