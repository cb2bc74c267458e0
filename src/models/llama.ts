// Llama (and the Llama-shaped Mistral / Qwen2 / Qwen3): pre-norm decoder, GQA attention with RoPE,
// SwiGLU MLP. Variants differ in biases, q/k norms and sliding windows.

import { Attention } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { GatedMlp, parseActivation } from '../layers/mlp';
import { attentionShape, int, layerTypes, lmHead, num, bool, rejectIf, ropeSpec } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';

export interface LlamaVariant {
  /** q/k/v biases always on (Qwen2) or from `attention_bias` (Llama, Qwen3). */
  qkvBias: (c: any) => boolean;
  oBias: (c: any) => boolean;
  qkNorm: boolean;
  /** Sliding window of layer i, or 0. */
  window: (c: any, types: string[], i: number) => number;
}

export function buildLlamaLike(ctx: Ctx, c: any, v: LlamaVariant): Net {
  const { ws } = ctx;
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const { nHeads, nKv, headDim } = attentionShape(c, hidden);
  const inter = int(c, 'intermediate_size');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const act = parseActivation(c.hidden_act ?? 'silu');
  const mlpBias = bool(c, 'mlp_bias', false);
  rejectIf((c.pretraining_tp ?? 1) !== 1, 'pretraining_tp', 'only 1 is supported');
  const types = layerTypes(c, nLayers, ['full_attention', 'sliding_attention'], () => 'full_attention');
  const rope = ropeSpec(c, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const window = v.window(c, types, i);
    const attn = new Attention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv, headDim, qkvBias: v.qkvBias(c), oBias: v.oBias(c),
      qkNorm: v.qkNorm ? { eps, addOne: false } : null, rope, scale: 1 / Math.sqrt(headDim),
      window: window || undefined,
    });
    blocks.push(new PreNormBlock(ctx, {
      kind: window ? 'sliding_attention' : 'attention', hidden, mixer: attn,
      ffn: new GatedMlp(ctx, `${p}.mlp`, hidden, inter, act, mlpBias),
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c, vocab, hidden),
  });
}

export const llama: Family = {
  types: ['llama'],
  build: (ctx, c) => buildLlamaLike(ctx, c, {
    qkvBias: (c) => bool(c, 'attention_bias', false),
    oBias: (c) => bool(c, 'attention_bias', false),
    qkNorm: false,
    window: () => 0,
  }),
};
