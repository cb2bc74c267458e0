// Mamba (MambaForCausalLM, model_type "mamba"): a stack of pre-norm residual blocks
// x += Mamba1Mixer(RMSNorm(x)) with no feed-forward, final RMSNorm `norm_f`, LM head tied to
// `backbone.embeddings` by default. buildMamba1Net is shared with FalconMamba, which adds RMSNorms
// on δ, B and C inside the mixer.

import type { Ctx } from '../layers/context';
import { Mamba1Mixer, ssmKeepF32, type Mamba1Config } from '../layers/mamba';
import { bool, int, lmHead, num, rejectIf } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';

/** The conv / gate activation: HF applies config.hidden_act after conv1d; the kernel implements SiLU. */
export function requireSilu(c: any, field = 'hidden_act'): void {
  const act = c[field] ?? 'silu';
  rejectIf(act !== 'silu' && act !== 'swish', field, `${JSON.stringify(act)} is not supported after the SSM conv (silu only)`);
}

/** time_step_rank: an integer, or "auto" = ceil(hidden / 16). */
export function dtRank(c: any, field: string, hidden: number): number {
  const v = c[field] ?? 'auto';
  return v === 'auto' ? Math.ceil(hidden / 16) : int(c, field);
}

export function buildMamba1Net(ctx: Ctx, c: any, innerNorm: Mamba1Config['innerNorm']): Net {
  const { ws } = ctx;
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'layer_norm_epsilon', 1e-5);
  const expand = num(c, 'expand', 2);
  const dInner = c.intermediate_size !== undefined ? int(c, 'intermediate_size') : Math.floor(expand * hidden);
  requireSilu(c);
  const mix: Mamba1Config = {
    hidden, dInner, N: int(c, 'state_size', 16), R: dtRank(c, 'time_step_rank', hidden), W: int(c, 'conv_kernel', 4),
    projBias: bool(c, 'use_bias', false), convBias: bool(c, 'use_conv_bias', true), innerNorm,
  };
  // Older checkpoints name the embedding `backbone.embedding` (MambaModel.load_hook renames it).
  const embedName = ws.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `backbone.layers.${i}`;
    blocks.push(new PreNormBlock(ctx, {
      kind: 'mamba', hidden, mixer: new Mamba1Mixer(ctx, `${p}.mixer`, mix), ffn: null,
      preMixer: { w: ws.vec(`${p}.norm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat(embedName, vocab, hidden), blocks,
    finalNorm: { w: ws.vec('backbone.norm_f.weight', hidden), eps },
    lmHead: lmHead(ws, { ...c, tie_word_embeddings: c.tie_word_embeddings ?? true }, vocab, hidden, embedName),
  });
}

export const mamba: Family = {
  types: ['mamba'],
  keepF32: (name) => ssmKeepF32(name),
  build: (ctx, c) => buildMamba1Net(ctx, c, null),
};
