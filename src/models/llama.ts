// Llama (and the Llama-shaped Mistral / Qwen2 / Qwen3): pre-norm decoder, GQA attention with RoPE,
// SwiGLU MLP. Variants differ in biases, q/k norms and sliding windows.

import { Attention } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { attentionShape, bool, int, layerTypes, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';

/** The config of a Llama-shaped decoder (Llama, Mistral, Qwen2, Qwen3). */
export interface LlamaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** intermediate_size */
  inter: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  mlpBias: boolean;
  qkvBias: boolean;
  oBias: boolean;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3). */
  qkNorm: boolean;
  /** Sliding window of each layer, or 0 for full attention. */
  windows: number[];
  rope: RopeParams;
  tieEmbeddings: boolean;
}

export type LlamaLayerType = 'full_attention' | 'sliding_attention';

export interface LlamaVariant {
  qkvBias: boolean;
  oBias: boolean;
  qkNorm: boolean;
  /** Sliding window of layer i given the validated `layer_types`, or 0. */
  window: (types: LlamaLayerType[], i: number) => number;
}

/** The fields every Llama-shaped variant reads, plus the variant's own choices. */
export function parseLlamaLike(c: RawConfig, v: LlamaVariant): LlamaConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const inter = int(c, 'intermediate_size');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const act = parseActivation(c.hidden_act ?? 'silu');
  const mlpBias = bool(c, 'mlp_bias', false);
  rejectIf((c.pretraining_tp ?? 1) !== 1, 'pretraining_tp', 'only 1 is supported');
  const types = layerTypes(c, nLayers, ['full_attention', 'sliding_attention'], () => 'full_attention');
  return {
    hidden, nLayers, vocab, attn, inter, eps, act, mlpBias,
    qkvBias: v.qkvBias, oBias: v.oBias, qkNorm: v.qkNorm,
    windows: types.map((_, i) => v.window(types, i)),
    rope: ropeParams(c),
    tieEmbeddings: tiedEmbeddings(c, true),
  };
}

export function buildLlamaLike(ctx: Ctx, c: LlamaConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, inter, eps } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const window = c.windows[i];
    const attn = new Attention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv, headDim, qkvBias: c.qkvBias, oBias: c.oBias,
      qkNorm: c.qkNorm ? { eps, addOne: false } : null, rope, scale: 1 / Math.sqrt(headDim),
      window: window || undefined,
    });
    blocks.push(new PreNormBlock(ctx, {
      kind: window ? 'sliding_attention' : 'attention', hidden, mixer: attn,
      ffn: new GatedMlp(ctx, `${p}.mlp`, hidden, inter, c.act, c.mlpBias),
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

export const llama: Family<LlamaConfig> = {
  types: ['llama'],
  parse: (c) => {
    const bias = bool(c, 'attention_bias', false);
    return parseLlamaLike(c, { qkvBias: bias, oBias: bias, qkNorm: false, window: () => 0 });
  },
  build: buildLlamaLike,
};
