// Gemma 2: sandwich-normed decoder — x += post_attn_norm(attn(input_norm(x))),
// x += post_ffn_norm(mlp(pre_ffn_norm(x))) — with zero-centred (1 + w) RMSNorms, embeddings × √hidden,
// attention scaled by query_pre_attn_scalar^−½ with tanh soft-capping of the scores, sliding-window
// layers per `layer_types`, a GeGLU MLP (hidden_activation) and tanh soft-capped final logits.
// Gemma 3 (gemma3.ts) reuses buildGemmaLike with per-head q/k norms and per-layer-type RoPE.

import { Attention, type RopeSpec } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { attentionShape, bool, int, layerTypes, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block, type NormSpec } from './decoder';
import type { Family, Net } from './net';

export type GemmaLayerType = 'full_attention' | 'sliding_attention';

/** The config of a Gemma 2 / Gemma 3 text decoder. */
export interface GemmaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** intermediate_size */
  inter: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  /** query_pre_attn_scalar: scores are scaled by its −½ power. */
  qScalar: number;
  attnBias: boolean;
  /** Gemma 3: (1 + w) RMSNorm of each head of q and k before RoPE. */
  qkNorm: boolean;
  /** Tanh soft-cap of the attention scores, if any. */
  attnSoftcap?: number;
  /** Tanh soft-cap of the final logits, if any. */
  finalSoftcap?: number;
  layerTypes: GemmaLayerType[];
  /** sliding_window of the sliding layers (0 when no layer slides). */
  window: number;
  /** RoPE of each layer type present (layers of a type share one table). */
  ropes: Partial<Record<GemmaLayerType, RopeParams>>;
  tieEmbeddings: boolean;
}

export interface GemmaVariant {
  /** Gemma 3: (1 + w) RMSNorm of each head of q and k before RoPE. */
  qkNorm: boolean;
  /** Default `layer_types` rule when the config has none. */
  defaultLayerType: (i: number) => GemmaLayerType;
  /** RoPE of a layer type (Gemma 3 keys its parameters by layer type). */
  rope: (layerType: GemmaLayerType) => RopeParams;
  /**
   * Class default of attn_logit_softcapping (Gemma 2: 50), or 'unused': Gemma3Attention never passes
   * it to the attention function, so HF computes uncapped scores whatever the config says.
   */
  attnSoftcap: number | null | 'unused';
  /** Class default of final_logit_softcapping (Gemma 2: 30; Gemma 3: none). */
  finalSoftcap: number | null;
}

/** A soft-cap field: null (or absent with a null default) means none. */
function softcapField(c: RawConfig, field: string, dflt: number | null): number | undefined {
  const v = field in c ? c[field] : dflt;
  if (v === null || v === undefined) return undefined;
  const cap = num({ [field]: v }, field);
  rejectIf(!(cap > 0), field, `must be > 0 or null, got ${cap}`);
  return cap;
}

export function parseGemmaLike(c: RawConfig, v: GemmaVariant): GemmaConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden, 256);
  const inter = int(c, 'intermediate_size');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  // Gemma configs name the activation `hidden_activation`; older ones only `hidden_act`.
  const act = parseActivation(c.hidden_activation ?? c.hidden_act ?? 'gelu_pytorch_tanh', 'hidden_activation');
  const qScalar = num(c, 'query_pre_attn_scalar', 256);
  const attnBias = bool(c, 'attention_bias', false);
  const attnSoftcap = v.attnSoftcap === 'unused' ? undefined : softcapField(c, 'attn_logit_softcapping', v.attnSoftcap);
  const finalSoftcap = softcapField(c, 'final_logit_softcapping', v.finalSoftcap);
  rejectIf(!(qScalar > 0), 'query_pre_attn_scalar', `must be > 0, got ${qScalar}`);
  rejectIf(c.use_bidirectional_attention === true, 'use_bidirectional_attention', 'bidirectional (embedding) Gemma is not a causal LM');
  const types = layerTypes<GemmaLayerType>(c, nLayers, ['full_attention', 'sliding_attention'], v.defaultLayerType);
  const window = types.includes('sliding_attention') ? int(c, 'sliding_window', 4096) : 0;
  rejectIf(types.includes('sliding_attention') && window < 1, 'sliding_window', 'must be ≥ 1 when layers slide');
  const ropes: Partial<Record<GemmaLayerType, RopeParams>> = {};
  for (const t of types) ropes[t] ??= v.rope(t);
  return {
    hidden, nLayers, vocab, attn, inter, eps, act, qScalar, attnBias, qkNorm: v.qkNorm, attnSoftcap, finalSoftcap,
    layerTypes: types, window, ropes, tieEmbeddings: tiedEmbeddings(c, true),
  };
}

export function buildGemmaLike(ctx: Ctx, c: GemmaConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, inter, eps } = c;
  const { nHeads, nKv, headDim } = c.attn;

  // Each layer type has one RoPE table; layers of a type share it.
  const ropes = new Map<GemmaLayerType, RopeSpec>();
  const ropeOf = (t: GemmaLayerType) => ropes.get(t) ?? ropes.set(t, ropeSpec(c.ropes[t]!, headDim)).get(t)!;
  const norm = (name: string): NormSpec => ({ w: ws.vec(name, hidden), eps, addOne: true });

  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const sliding = c.layerTypes[i] === 'sliding_attention';
    const attn = new Attention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv, headDim, qkvBias: c.attnBias, oBias: c.attnBias,
      qkNorm: c.qkNorm ? { eps, addOne: true } : null,
      rope: ropeOf(c.layerTypes[i]),
      scale: Math.pow(c.qScalar, -0.5),
      window: sliding ? c.window : undefined,
      softcap: c.attnSoftcap,
    });
    blocks.push(new PreNormBlock(ctx, {
      kind: sliding ? 'sliding_attention' : 'attention', hidden, mixer: attn,
      ffn: new GatedMlp(ctx, `${p}.mlp`, hidden, inter, c.act),
      preMixer: norm(`${p}.input_layernorm.weight`),
      postMixer: norm(`${p}.post_attention_layernorm.weight`),
      preFfn: norm(`${p}.pre_feedforward_layernorm.weight`),
      postFfn: norm(`${p}.post_feedforward_layernorm.weight`),
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    // HF multiplies by √hidden cast to the activation dtype; activations here are f32.
    embedScale: Math.fround(Math.sqrt(hidden)),
    finalNorm: norm('model.norm.weight'),
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
    finalSoftcap: c.finalSoftcap,
  });
}

export const gemma2: Family<GemmaConfig> = {
  types: ['gemma2'],
  parse: (c) => parseGemmaLike(c, {
    qkNorm: false,
    // Gemma2Config: even layers (0, 2, …) slide.
    defaultLayerType: (i) => ((i + 1) % 2 ? 'sliding_attention' : 'full_attention'),
    rope: () => ropeParams(c),
    attnSoftcap: 50,
    finalSoftcap: 30,
  }),
  build: buildGemmaLike,
};
