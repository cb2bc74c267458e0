// Mixtral: Mistral's pre-norm decoder with a sparse MoE feed-forward — router p = softmax(W_g x),
// top-k of p renormalised to sum 1, y = Σ_j w_j · SwiGLU_{e_j}(x) — and an optional sliding window on
// every layer. buildMoeLike is shared with the other Llama-shaped MoE decoders (OLMoE, Qwen2-MoE,
// Qwen3-MoE), which differ in q/k norms, biases, routing normalisation and shared / dense layers.

import { Attention, type AttentionConfig } from '../layers/attention';
import type { Ctx, Ffn } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertCount, expertWeights, slidingWindow } from './shared';

/** The config of a Llama-shaped MoE decoder (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE). */
export interface MoeLikeConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  act: Activation;
  rope: RopeParams;
  nExperts: number;
  topk: number;
  /** Intermediate size of each routed expert. */
  expertInter: number;
  /** Softmax top-k weights renormalised to sum 1 (norm_topk_prob; always for Mixtral). */
  renormalize: boolean;
  qkvBias: boolean;
  oBias: boolean;
  qkNorm: AttentionConfig['qkNorm'];
  /** OLMoE clip_qkv. */
  clip?: number;
  /** Sliding window of each layer, or 0. */
  windows: number[];
  /** Whether each layer's feed-forward is the sparse MoE block (else a dense MLP of denseInter). */
  sparse: boolean[];
  /** intermediate_size of the dense layers; null when every layer is sparse. */
  denseInter: number | null;
  /**
   * The MoE block is `…mlp`, or this name (Mixtral's older `block_sparse_moe`) in checkpoints
   * without `model.layers.0.mlp.gate.weight`.
   */
  legacyMoeName?: string;
  /** Qwen2-MoE shared expert (`shared_expert`, gated by sigmoid(`shared_expert_gate` x)). */
  sharedInter?: number;
  rmsEps: number;
  tieEmbeddings: boolean;
}

/** What a MoE variant decides itself; parseMoeLike reads the rest. */
export type MoeLikeVariant = Pick<MoeLikeConfig, 'nExperts' | 'topk' | 'expertInter' | 'renormalize' | 'qkvBias' | 'oBias' | 'qkNorm' | 'clip' | 'legacyMoeName' | 'sharedInter' | 'rmsEps'> & {
  /** Sliding window of each layer, or 0. */
  windows: (nLayers: number) => number[];
  /** Whether each layer is sparse. */
  sparse: (nLayers: number) => boolean[];
};

export function parseMoeLike(c: RawConfig, v: MoeLikeVariant): MoeLikeConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const vocab = int(c, 'vocab_size');
  const act = parseActivation(c.hidden_act ?? 'silu');
  rejectIf(v.topk < 1 || v.topk > v.nExperts, 'num_experts_per_tok', `${v.topk} must be in [1, ${v.nExperts}]`);
  const rope = ropeParams(c);
  const sparse = v.sparse(nLayers);
  return {
    hidden, nLayers, vocab, attn, act, rope,
    nExperts: v.nExperts, topk: v.topk, expertInter: v.expertInter, renormalize: v.renormalize,
    qkvBias: v.qkvBias, oBias: v.oBias, qkNorm: v.qkNorm, clip: v.clip,
    windows: v.windows(nLayers), sparse,
    denseInter: sparse.every((s) => s) ? null : int(c, 'intermediate_size'),
    legacyMoeName: v.legacyMoeName, sharedInter: v.sharedInter, rmsEps: v.rmsEps,
    // Every MoE config here defaults tie_word_embeddings to False.
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildMoeLike(ctx: Ctx, c: MoeLikeConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, act } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const eps = c.rmsEps;
  const rope = ropeSpec(c.rope, headDim);
  const moeName = c.legacyMoeName && !ws.has('model.layers.0.mlp.gate.weight') ? c.legacyMoeName : 'mlp';
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const window = c.windows[i];
    const attn = new Attention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv, headDim, qkvBias: c.qkvBias, oBias: c.oBias, qkNorm: c.qkNorm, clip: c.clip,
      rope, scale: 1 / Math.sqrt(headDim), window: window || undefined,
    });
    let ffn: Ffn;
    if (c.sparse[i]) {
      const moe = `${p}.${moeName}`;
      const sharedInter = c.sharedInter;
      ffn = new Moe(ctx, {
        hidden, nExperts: c.nExperts, topk: c.topk, inter: c.expertInter, act,
        routing: { mode: 'softmax_topk', renormalize: c.renormalize },
        router: ws.mat(`${moe}.gate.weight`, c.nExperts, hidden),
        expert: expertWeights(ws, moe, c.nExperts, c.expertInter, hidden),
        shared: sharedInter !== undefined ? {
          inter: sharedInter,
          w: {
            gate: ws.mat(`${moe}.shared_expert.gate_proj.weight`, sharedInter, hidden),
            up: ws.mat(`${moe}.shared_expert.up_proj.weight`, sharedInter, hidden),
            down: ws.mat(`${moe}.shared_expert.down_proj.weight`, hidden, sharedInter),
          },
          gate: ws.mat(`${moe}.shared_expert_gate.weight`, 1, hidden),
        } : undefined,
      });
    } else {
      ffn = new GatedMlp(ctx, `${p}.mlp`, hidden, c.denseInter!, act);
    }
    blocks.push(new PreNormBlock(ctx, {
      kind: window ? 'sliding_attention' : 'attention', hidden, mixer: attn, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export const mixtral: Family<MoeLikeConfig> = {
  types: ['mixtral'],
  parse: (c) => {
    const window = slidingWindow(c);
    return parseMoeLike(c, {
      nExperts: expertCount(c, 8),
      topk: int(c, 'num_experts_per_tok', 2),
      expertInter: int(c, 'intermediate_size'),
      renormalize: true,
      qkvBias: false,
      oBias: false,
      qkNorm: null,
      windows: (n) => new Array<number>(n).fill(window),
      sparse: (n) => new Array<boolean>(n).fill(true),
      // The decoder layer's MoE is `mlp` in transformers v5 checkpoints, `block_sparse_moe` before.
      legacyMoeName: 'block_sparse_moe',
      rmsEps: num(c, 'rms_norm_eps', 1e-5),
    });
  },
  build: buildMoeLike,
};
