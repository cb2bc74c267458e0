// Falcon-H1 (FalconH1ForCausalLM, model_type "falcon_h1"): every layer runs attention and a Mamba-2
// mixer side by side on the same normed input, then a gated MLP, with Falcon-H1's µP multipliers:
//   h = RMSNorm(x)
//   x += ssm_out · Mamba2(h) + attention_out · Attn(attention_in · h)
//   x += down_mult · W_down(up(h') ⊙ SiLU(gate_mult · gate(h'))),  h' = RMSNorm(x)
// The Mamba-2 mixer (mamba2_hybrid.ts) scales its input by ssm_in_multiplier and its in_proj output
// by ssm_multipliers [z, x, B, C, dt]; its d_inner is mamba_d_ssm (or mamba_expand · hidden), its
// output y ⊙ SiLU(z) or, with mamba_rms_norm, a gated RMSNorm over mamba_n_groups slices (after or,
// with mamba_norm_before_gate, before the gate). in_proj has mamba_proj_bias, out_proj
// projectors_bias. Attention: GQA with RoPE, keys × key_multiplier (folded into the score scale:
// scores are linear in k). Embeddings × embedding_multiplier, logits × lm_head_multiplier.

import type { Graph, Tensor } from '../graph/graph';
import { add, gatedAct, linear, norm, scale } from '../graph/ops';
import { Attention } from '../layers/attention';
import type { Ctx, Ffn } from '../layers/context';
import { ssmKeepF32, timeStepLimit } from '../layers/mamba';
import type { Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import { attentionShape, bool, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, type Block, type NormSpec } from './decoder';
import { HybridMamba2Mixer, type HybridMamba2Config } from './mamba2_hybrid';
import type { Family, Net } from './net';
import { requireSilu } from './shared';

export interface FalconH1Config {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps (block norms, final norm, Mamba gated norm) */
  eps: number;
  attn: AttentionShape;
  attnBias: boolean;
  rope: RopeParams;
  mamba: HybridMamba2Config;
  inter: number;
  mlpBias: boolean;
  embeddingMultiplier: number;
  lmHeadMultiplier: number;
  /** mlp_multipliers [gate, down] */
  mlpMultipliers: [number, number];
  keyMultiplier: number;
  attnIn: number;
  attnOut: number;
  ssmOut: number;
  tieEmbeddings: boolean;
}

function numList(c: RawConfig, field: string, n: number): number[] | null {
  const v = c[field];
  if (v === undefined || v === null) return null;
  rejectIf(!Array.isArray(v) || v.length !== n || !v.every((x) => typeof x === 'number' && Number.isFinite(x)), field, `must be a list of ${n} numbers, got ${JSON.stringify(v)}`);
  return v as number[];
}

export function parseFalconH1(c: RawConfig): FalconH1Config {
  const hidden = int(c, 'hidden_size');
  const eps = num(c, 'rms_norm_eps', 1e-5);
  // hidden_act is both the MLP activation and the activation after the Mamba conv (SiLU there).
  requireSilu(c);
  const attn = attentionShape(c, hidden);
  const H = int(c, 'mamba_n_heads', 128);
  const dInner = c.mamba_d_ssm === undefined || c.mamba_d_ssm === null ? Math.floor(num(c, 'mamba_expand', 2) * hidden) : int(c, 'mamba_d_ssm');
  const P = (c.mamba_d_head ?? 'auto') === 'auto' ? Math.floor(dInner / H) : int(c, 'mamba_d_head');
  rejectIf(H * P !== dInner, 'mamba_d_head', `mamba_n_heads · mamba_d_head (${H * P}) must equal the Mamba d_inner (${dInner})`);
  const G = int(c, 'mamba_n_groups', 1);
  rejectIf(G < 1 || H % G !== 0, 'mamba_n_groups', `${G} does not divide mamba_n_heads ${H}`);
  const rmsNorm = bool(c, 'mamba_rms_norm', false);
  const ssmMult = numList(c, 'ssm_multipliers', 5) ?? [1, 1, 1, 1, 1];
  const mamba: HybridMamba2Config = {
    hidden, H, P, G, N: int(c, 'mamba_d_state', 256), W: int(c, 'mamba_d_conv', 4),
    inBias: bool(c, 'mamba_proj_bias', false), outBias: bool(c, 'projectors_bias', false),
    convBias: bool(c, 'mamba_conv_bias', true), dtLimit: timeStepLimit(c),
    out: !rmsNorm ? 'gate' : bool(c, 'mamba_norm_before_gate', true) ? 'norm_before_gate' : 'norm_after_gate',
    normGroups: G, normEps: eps,
    inScale: num(c, 'ssm_in_multiplier', 1),
    projScale: ssmMult as [number, number, number, number, number],
  };
  const mlpMult = numList(c, 'mlp_multipliers', 2) ?? [1, 1];
  return {
    hidden, nLayers: int(c, 'num_hidden_layers'), vocab: int(c, 'vocab_size'), eps, attn,
    attnBias: bool(c, 'attention_bias', false),
    rope: ropeParams(c), mamba,
    inter: int(c, 'intermediate_size'),
    mlpBias: bool(c, 'mlp_bias', false),
    embeddingMultiplier: num(c, 'embedding_multiplier', 1),
    lmHeadMultiplier: num(c, 'lm_head_multiplier', 1),
    mlpMultipliers: mlpMult as [number, number],
    keyMultiplier: num(c, 'key_multiplier', 1),
    attnIn: num(c, 'attention_in_multiplier', 1),
    attnOut: num(c, 'attention_out_multiplier', 1),
    ssmOut: num(c, 'ssm_out_multiplier', 1),
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/** FalconH1MLP: down_mult · down(up(x) ⊙ SiLU(gate_mult · gate(x))). */
class FalconH1Mlp implements Ffn {
  readonly gate: Weight;
  readonly up: Weight;
  readonly down: Weight;
  readonly bg: number;
  readonly bu: number;
  readonly bd: number;
  constructor(ctx: Ctx, p: string, hidden: number, readonly inter: number, bias: boolean, readonly mult: [number, number]) {
    const { ws } = ctx;
    this.gate = ws.mat(`${p}.gate_proj.weight`, inter, hidden);
    this.up = ws.mat(`${p}.up_proj.weight`, inter, hidden);
    this.down = ws.mat(`${p}.down_proj.weight`, hidden, inter);
    this.bg = bias ? ws.vec(`${p}.gate_proj.bias`, inter) : 0;
    this.bu = bias ? ws.vec(`${p}.up_proj.bias`, inter) : 0;
    this.bd = bias ? ws.vec(`${p}.down_proj.bias`, hidden) : 0;
  }
  forward(g: Graph, x: Tensor, out: Tensor): void {
    const gt = g.tmp(this.inter), up = g.tmp(this.inter);
    linear(g, gt, x, this.gate, this.bg);
    if (this.mult[0] !== 1) scale(g, gt, gt, this.mult[0]);
    linear(g, up, x, this.up, this.bu);
    gatedAct(g, gt, gt, up, 'silu');
    linear(g, out, gt, this.down, this.bd);
    if (this.mult[1] !== 1) scale(g, out, out, this.mult[1]);
  }
}

class FalconH1Block implements Block {
  readonly kind = 'hybrid';
  constructor(
    readonly hidden: number, readonly inNorm: NormSpec, readonly ffNorm: NormSpec,
    readonly mamba: HybridMamba2Mixer, readonly attn: Attention, readonly mlp: FalconH1Mlp,
    readonly m: { attnIn: number; attnOut: number; ssmOut: number },
  ) {}
  specs(maxContext: number): RegionSpec[] {
    return [...this.mamba.specs(), ...this.attn.specs(maxContext)];
  }
  forward(g: Graph, x: Tensor): void {
    const { hidden, m } = this;
    const h = g.tmp(hidden), s = g.tmp(hidden), a = g.tmp(hidden);
    norm(g, this.inNorm, h, x);
    this.mamba.forward(g, h, s);
    if (m.ssmOut !== 1) scale(g, s, s, m.ssmOut);
    let ha = h;
    if (m.attnIn !== 1) {
      ha = g.tmp(hidden);
      scale(g, ha, h, m.attnIn);
    }
    this.attn.forward(g, ha, a);
    if (m.attnOut !== 1) scale(g, a, a, m.attnOut);
    // x + (mamba + attention), in HF's order
    add(g, s, s, a);
    add(g, x, x, s);
    norm(g, this.ffNorm, h, x);
    this.mlp.forward(g, h, s);
    add(g, x, x, s);
  }
}

export function buildFalconH1(ctx: Ctx, c: FalconH1Config): Net {
  const { ws } = ctx;
  const { hidden, vocab, eps, attnBias } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `model.layers.${i}`;
    blocks.push(new FalconH1Block(
      hidden,
      { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      { w: ws.vec(`${p}.pre_ff_layernorm.weight`, hidden), eps },
      new HybridMamba2Mixer(ctx, `${p}.mamba`, c.mamba),
      new Attention(ctx, `${p}.self_attn`, {
        hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: attnBias, rope, scale: c.keyMultiplier / Math.sqrt(headDim),
      }),
      new FalconH1Mlp(ctx, `${p}.feed_forward`, hidden, c.inter, c.mlpBias, c.mlpMultipliers),
      { attnIn: c.attnIn, attnOut: c.attnOut, ssmOut: c.ssmOut },
    ));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    embedScale: c.embeddingMultiplier,
    finalNorm: { w: ws.vec('model.final_layernorm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
    logitsDivisor: c.lmHeadMultiplier === 1 ? undefined : 1 / c.lmHeadMultiplier,
  });
}

export const falconH1: Family<FalconH1Config> = {
  types: ['falcon_h1'],
  keepF32: (name) => ssmKeepF32(name),
  parse: parseFalconH1,
  build: buildFalconH1,
};
