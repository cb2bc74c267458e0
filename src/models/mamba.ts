// Mamba (MambaForCausalLM, model_type "mamba"): a stack of pre-norm residual blocks
// x += Mamba1Mixer(RMSNorm(x)) with no feed-forward, final RMSNorm `norm_f`, LM head tied to
// `backbone.embeddings` by default. buildMamba1Net is shared with FalconMamba, which adds RMSNorms
// on δ, B and C inside the mixer.

import type { Ctx } from '../layers/context';
import { Mamba1Mixer, ssmKeepF32, type Mamba1Config } from '../layers/mamba';
import { bool, int, lmHead, num, tiedEmbeddings, type RawConfig } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { dtRank, requireSilu } from './shared';

/** The config of a Mamba-1 stack (Mamba, FalconMamba). */
export interface Mamba1NetConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** layer_norm_epsilon */
  eps: number;
  mixer: Mamba1Config;
  tieEmbeddings: boolean;
}

export function parseMamba1Net(c: RawConfig, innerNorm: Mamba1Config['innerNorm']): Mamba1NetConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'layer_norm_epsilon', 1e-5);
  const expand = num(c, 'expand', 2);
  const dInner = c.intermediate_size !== undefined ? int(c, 'intermediate_size') : Math.floor(expand * hidden);
  requireSilu(c);
  const mixer: Mamba1Config = {
    hidden, dInner, N: int(c, 'state_size', 16), R: dtRank(c, 'time_step_rank', hidden), W: int(c, 'conv_kernel', 4),
    projBias: bool(c, 'use_bias', false), convBias: bool(c, 'use_conv_bias', true), innerNorm,
  };
  return { hidden, nLayers, vocab, eps, mixer, tieEmbeddings: tiedEmbeddings(c, true) };
}

export function buildMamba1Net(ctx: Ctx, c: Mamba1NetConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps } = c;
  // Older checkpoints name the embedding `backbone.embedding` (MambaModel.load_hook renames it).
  const embedName = ws.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `backbone.layers.${i}`;
    blocks.push(new PreNormBlock(ctx, {
      kind: 'mamba', hidden, mixer: new Mamba1Mixer(ctx, `${p}.mixer`, c.mixer), ffn: null,
      preMixer: { w: ws.vec(`${p}.norm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat(embedName, vocab, hidden), blocks,
    finalNorm: { w: ws.vec('backbone.norm_f.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden, embedName),
  });
}

export const mamba: Family<Mamba1NetConfig> = {
  types: ['mamba'],
  keepF32: (name) => ssmKeepF32(name),
  parse: (c) => parseMamba1Net(c, null),
  build: buildMamba1Net,
};
