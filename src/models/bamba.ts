// Bamba (BambaForCausalLM, model_type "bamba"): Llama-style pre-norm decoder whose layers are Mamba-2
// mixers except those in attn_layer_indices, which are GQA attention with RoPE on the first half of
// each head (partial_rotary_factor, hard-coded 0.5 by BambaConfig). Every layer has a SwiGLU MLP
// (`feed_forward`) after `pre_ff_layernorm`. The mixer and its config reading are shared with
// GraniteMoeHybrid, whose Mamba layers are the same module.

import { Attention } from '../layers/attention';
import type { Ctx } from '../layers/context';
import { Mamba2Mixer, ssmKeepF32, timeStepLimit, type Mamba2Config } from '../layers/mamba';
import { GatedMlp, parseActivation } from '../layers/mlp';
import { attentionShape, bool, int, lmHead, num, rejectIf, ropeSpec } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import { requireSilu } from './mamba';
import type { Family } from './net';

/** The Mamba-2 mixer of the hybrids' `mamba_*` config fields (BambaMixer, GraniteMoeHybridMambaLayer). */
export function hybridMamba2Config(c: any, hidden: number): Mamba2Config {
  const H = int(c, 'mamba_n_heads', 128);
  const expand = int(c, 'mamba_expand', 2);
  const P = (c.mamba_d_head ?? 'auto') === 'auto' ? Math.floor((expand * hidden) / H) : int(c, 'mamba_d_head');
  rejectIf(H * P !== expand * hidden, 'mamba_d_head', `mamba_n_heads · mamba_d_head (${H * P}) must equal mamba_expand · hidden_size (${expand * hidden})`);
  requireSilu(c);
  return {
    hidden, H, P, G: int(c, 'mamba_n_groups', 1), N: int(c, 'mamba_d_state', 256), W: int(c, 'mamba_d_conv', 4),
    projBias: bool(c, 'mamba_proj_bias', false), convBias: bool(c, 'mamba_conv_bias', true),
    normEps: num(c, 'rms_norm_eps', 1e-5), dtLimit: timeStepLimit(c),
  };
}

export const bamba: Family = {
  types: ['bamba'],
  keepF32: (name) => ssmKeepF32(name),
  build: (ctx: Ctx, c: any) => {
    const { ws } = ctx;
    const hidden = int(c, 'hidden_size');
    const nLayers = int(c, 'num_hidden_layers');
    const vocab = int(c, 'vocab_size');
    const eps = num(c, 'rms_norm_eps', 1e-5);
    const inter = int(c, 'intermediate_size');
    const act = parseActivation(c.hidden_act ?? 'silu');
    const mix = hybridMamba2Config(c, hidden);
    const { nHeads, nKv, headDim } = attentionShape(c, hidden);
    const attnIdx: unknown = c.attn_layer_indices ?? [];
    rejectIf(!Array.isArray(attnIdx) || !attnIdx.every((i) => Number.isInteger(i) && i >= 0 && i < nLayers), 'attn_layer_indices', `must be layer indices in [0, ${nLayers})`);
    // BambaConfig sets partial_rotary_factor 0.5 (kept in rope_parameters); the rotary embedding
    // rotates int(head_dim · factor) leading dims of each head.
    const prf = c.rope_parameters?.partial_rotary_factor ?? c.partial_rotary_factor ?? 0.5;
    rejectIf(typeof prf !== 'number' || !(prf > 0 && prf <= 1), 'rope_parameters.partial_rotary_factor', `must be in (0, 1], got ${JSON.stringify(prf)}`);
    const rope = ropeSpec(c, headDim, Math.floor(headDim * prf));
    const attnBias = bool(c, 'attention_bias', false);
    const blocks: Block[] = [];
    for (let i = 0; i < nLayers; i++) {
      const p = `model.layers.${i}`;
      const isAttn = (attnIdx as number[]).includes(i);
      const mixer = isAttn
        ? new Attention(ctx, `${p}.self_attn`, { hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: attnBias, rope, scale: 1 / Math.sqrt(headDim) })
        : new Mamba2Mixer(ctx, `${p}.mamba`, mix);
      blocks.push(new PreNormBlock(ctx, {
        kind: isAttn ? 'attention' : 'mamba2', hidden, mixer,
        ffn: new GatedMlp(ctx, `${p}.feed_forward`, hidden, inter, act, bool(c, 'mlp_bias', false)),
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
