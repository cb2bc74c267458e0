// Mamba-2 (Mamba2ForCausalLM, model_type "mamba2"): pre-norm residual blocks x += Mamba2Mixer(RMSNorm(x))
// with no feed-forward, final RMSNorm `norm_f`; the LM head is untied unless tie_word_embeddings.
// The mixer's gated RMSNorm spans the whole d_inner (HF MambaRMSNormGated ignores n_groups).

import { Mamba2Mixer, ssmKeepF32, timeStepLimit } from '../layers/mamba';
import { bool, int, lmHead, num, rejectIf } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import { requireSilu } from './mamba';
import type { Family } from './net';

export const mamba2: Family = {
  types: ['mamba2'],
  keepF32: (name) => ssmKeepF32(name),
  build: (ctx, c) => {
    const { ws } = ctx;
    const hidden = int(c, 'hidden_size');
    const nLayers = int(c, 'num_hidden_layers');
    const vocab = int(c, 'vocab_size');
    const eps = num(c, 'layer_norm_epsilon', 1e-5);
    const H = int(c, 'num_heads'), P = int(c, 'head_dim');
    const expand = num(c, 'expand', 2);
    rejectIf(Math.floor(expand * hidden) !== H * P, 'num_heads', `num_heads · head_dim (${H * P}) must equal expand · hidden_size (${expand * hidden})`);
    requireSilu(c);
    const mix = {
      hidden, H, P, G: int(c, 'n_groups', 8), N: int(c, 'state_size', 128), W: int(c, 'conv_kernel', 4),
      projBias: bool(c, 'use_bias', false), convBias: bool(c, 'use_conv_bias', true), normEps: eps,
      dtLimit: timeStepLimit(c)
    };
    const embedName = ws.has('backbone.embeddings.weight') ? 'backbone.embeddings.weight' : 'backbone.embedding.weight';
    const blocks: Block[] = [];
    for (let i = 0; i < nLayers; i++) {
      const p = `backbone.layers.${i}`;
      blocks.push(new PreNormBlock(ctx, {
        kind: 'mamba2', hidden, mixer: new Mamba2Mixer(ctx, `${p}.mixer`, mix), ffn: null,
        preMixer: { w: ws.vec(`${p}.norm.weight`, hidden), eps },
      }));
    }
    return new DecoderNet(ctx, {
      hidden, vocab, embed: ws.mat(embedName, vocab, hidden), blocks,
      finalNorm: { w: ws.vec('backbone.norm_f.weight', hidden), eps },
      lmHead: lmHead(ws, { ...c, tie_word_embeddings: c.tie_word_embeddings ?? false }, vocab, hidden, embedName),
    });
  },
};
