// Mamba-2 (Mamba2ForCausalLM, model_type "mamba2"): pre-norm residual blocks x += Mamba2Mixer(RMSNorm(x))
// with no feed-forward, final RMSNorm `norm_f`; the LM head is untied unless tie_word_embeddings.
// The mixer's gated RMSNorm spans the whole d_inner (HF MambaRMSNormGated ignores n_groups).

import type { Ctx } from '../layers/context';
import { Mamba2Mixer, ssmKeepF32, timeStepLimit, type Mamba2Config } from '../layers/mamba';
import { bool, int, lmHead, num, rejectIf, tiedEmbeddings, type RawConfig } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { requireSilu } from './shared';

export interface Mamba2NetConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** layer_norm_epsilon (block norms, final norm and the mixer's gated norm) */
  eps: number;
  mixer: Mamba2Config;
  tieEmbeddings: boolean;
}

export function parseMamba2(c: RawConfig): Mamba2NetConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'layer_norm_epsilon', 1e-5);
  const H = int(c, 'num_heads'), P = int(c, 'head_dim');
  const expand = num(c, 'expand', 2);
  rejectIf(Math.floor(expand * hidden) !== H * P, 'num_heads', `num_heads · head_dim (${H * P}) must equal expand · hidden_size (${expand * hidden})`);
  requireSilu(c);
  const mixer: Mamba2Config = {
    hidden, H, P, G: int(c, 'n_groups', 8), N: int(c, 'state_size', 128), W: int(c, 'conv_kernel', 4),
    projBias: bool(c, 'use_bias', false), convBias: bool(c, 'use_conv_bias', true), normEps: eps,
    dtLimit: timeStepLimit(c),
  };
  return { hidden, nLayers, vocab, eps, mixer, tieEmbeddings: tiedEmbeddings(c, false) };
}

export function buildMamba2(ctx: Ctx, c: Mamba2NetConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps } = c;
  const embedName = ws.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `backbone.layers.${i}`;
    blocks.push(new PreNormBlock(ctx, {
      kind: 'mamba2', hidden, mixer: new Mamba2Mixer(ctx, `${p}.mixer`, c.mixer), ffn: null,
      preMixer: { w: ws.vec(`${p}.norm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat(embedName, vocab, hidden), blocks,
    finalNorm: { w: ws.vec('backbone.norm_f.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden, embedName),
  });
}

export const mamba2: Family<Mamba2NetConfig> = {
  types: ['mamba2'],
  keepF32: (name) => ssmKeepF32(name),
  parse: parseMamba2,
  build: buildMamba2,
};
