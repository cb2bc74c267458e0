// Bamba (BambaForCausalLM, model_type "bamba"): Llama-style pre-norm decoder whose layers are Mamba-2
// mixers except those in attn_layer_indices, which are GQA attention with RoPE on the first half of
// each head (partial_rotary_factor, hard-coded 0.5 by BambaConfig). Every layer has a SwiGLU MLP
// (`feed_forward`) after `pre_ff_layernorm`. The mixer's config reading (hybridMamba2Config) is
// shared with GraniteMoeHybrid, whose Mamba layers are the same module.

import { Attention } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { Mamba2Mixer, ssmKeepF32, type Mamba2Config } from '../layers/mamba';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { attentionShape, bool, int, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { hybridMamba2Config } from './shared';

export interface BambaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  /** intermediate_size */
  inter: number;
  act: Activation;
  mlpBias: boolean;
  mamba: Mamba2Config;
  attn: AttentionShape;
  attnBias: boolean;
  /** attn_layer_indices: the attention layers (the others are Mamba-2). */
  attnLayers: number[];
  /** int(head_dim · partial_rotary_factor) */
  rotaryDim: number;
  rope: RopeParams;
  tieEmbeddings: boolean;
}

export function parseBamba(c: RawConfig): BambaConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-5);
  const inter = int(c, 'intermediate_size');
  const act = parseActivation(c.hidden_act ?? 'silu');
  const mamba = hybridMamba2Config(c, hidden);
  const attn = attentionShape(c, hidden);
  const attnIdx = c.attn_layer_indices ?? [];
  rejectIf(!Array.isArray(attnIdx) || !attnIdx.every((i) => Number.isInteger(i) && i >= 0 && i < nLayers), 'attn_layer_indices', `must be layer indices in [0, ${nLayers})`);
  // BambaConfig sets partial_rotary_factor 0.5 (kept in rope_parameters); the rotary embedding
  // rotates int(head_dim · factor) leading dims of each head.
  const prf = obj(c.rope_parameters).partial_rotary_factor ?? c.partial_rotary_factor ?? 0.5;
  rejectIf(typeof prf !== 'number' || !(prf > 0 && prf <= 1), 'rope_parameters.partial_rotary_factor', `must be in (0, 1], got ${JSON.stringify(prf)}`);
  return {
    hidden, nLayers, vocab, eps, inter, act, mlpBias: bool(c, 'mlp_bias', false), mamba, attn,
    attnBias: bool(c, 'attention_bias', false),
    attnLayers: attnIdx as number[],
    rotaryDim: Math.floor(attn.headDim * (prf as number)),
    rope: ropeParams(c),
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildBamba(ctx: Ctx, c: BambaConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, inter, act, attnBias } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim, c.rotaryDim);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const isAttn = c.attnLayers.includes(i);
    const mixer = isAttn
      ? new Attention(ctx, `${p}.self_attn`, { hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: attnBias, rope, scale: 1 / Math.sqrt(headDim) })
      : new Mamba2Mixer(ctx, `${p}.mamba`, c.mamba);
    blocks.push(new PreNormBlock(ctx, {
      kind: isAttn ? 'attention' : 'mamba2', hidden, mixer,
      ffn: new GatedMlp(ctx, `${p}.feed_forward`, hidden, inter, act, c.mlpBias),
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

export const bamba: Family<BambaConfig> = {
  types: ['bamba'],
  keepF32: (name) => ssmKeepF32(name),
  parse: parseBamba,
  build: buildBamba,
};
