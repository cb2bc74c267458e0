// DiffLlama (DiffLlamaForCausalLM): a Llama decoder whose attention is differential. Per layer l,
// with queries and keys as in Llama (GQA, RoPE) and values split by KV head into two halves
// V₁ = heads [0, nKv/2) and V₂ = heads [nKv/2, nKv), each repeated to nKv heads:
//   o_h = [softmax(q_h·Kᵀ/√d)·V₁ | softmax(q_h·Kᵀ/√d)·V₂]            (2d floats per query head h)
//   y_j = (1 − λ_init) · RMSNorm(o_j − λ · o_{j + H/2})             (j < H/2, RMSNorm over 2d, no weight)
//   λ = exp(Σ λ_q1 ⊙ λ_k1) − exp(Σ λ_q2 ⊙ λ_k2) + λ_init,  λ_init = 0.8 − 0.6·exp(−0.3·l)
// and y (H/2 heads of 2d = H·d floats) goes through o_proj.
//
// Both value halves are cached side by side as one value head of 2d per KV head (head i holds
// [v_{i mod nKv/2} | v_{nKv/2 + i mod nKv/2}]), so one attention pass yields o_h for every head.
// λ depends on weights only: it is computed once at build (the sums and exponentials in f32).

import type { Weight } from '../kernels/types';
import type { Ctx, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import type { Graph, Tensor } from '../graph/graph';
import { add, attention, copy, kvAppend, linear, norm, rope, scale, type RopeSpec } from '../graph/ops';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import { attentionShape, bool, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';

export interface DiffLlamaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** intermediate_size */
  inter: number;
  /** rms_norm_eps (decoder norms and the per-head RMSNorm of the attention output) */
  eps: number;
  act: Activation;
  /** attention_bias: q/k/v/o biases */
  bias: boolean;
  rope: RopeParams;
  tieEmbeddings: boolean;
}

export function parseDiffLlama(c: RawConfig): DiffLlamaConfig {
  const hidden = int(c, 'hidden_size');
  const attn = attentionShape(c, hidden);
  rejectIf(attn.nKv % 2 !== 0, 'num_key_value_heads', `${attn.nKv} must be even: the values split into two halves of KV heads`);
  rejectIf((c.pretraining_tp ?? 1) !== 1, 'pretraining_tp', 'only 1 is supported');
  return {
    hidden,
    nLayers: int(c, 'num_hidden_layers'),
    vocab: int(c, 'vocab_size'),
    attn,
    inter: int(c, 'intermediate_size'),
    eps: num(c, 'rms_norm_eps', 1e-5),
    act: parseActivation(c.hidden_act ?? 'silu'),
    bias: bool(c, 'attention_bias', false),
    rope: ropeParams(c),
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/** exp(Σ a ⊙ b) with the sum and the exponential rounded to f32, as HF computes λ₁ and λ₂. */
function expDotF32(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s = Math.fround(s + Math.fround(a[i] * b[i]));
  return Math.fround(Math.exp(s));
}

export interface DiffAttentionConfig {
  hidden: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  bias: boolean;
  rope: RopeSpec;
  eps: number;
  /** The layer index (λ_init). */
  layer: number;
}

/** Differential attention with its KV cache (keys d, values 2d per KV head). */
export class DiffAttention implements Mixer {
  readonly q: Weight;
  readonly k: Weight;
  readonly v: Weight;
  readonly o: Weight;
  readonly bq: number;
  readonly bk: number;
  readonly bv: number;
  readonly bo: number;
  /** λ of the layer and the output factor 1 − λ_init. */
  readonly lambda: number;
  readonly outScale: number;
  kState!: RegionSpec;
  vState!: RegionSpec;
  private declared = false;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: DiffAttentionConfig) {
    const { ws } = ctx;
    const { hidden, nHeads, nKv, headDim: d } = cfg;
    this.q = ws.mat(`${prefix}.q_proj.weight`, nHeads * d, hidden);
    this.k = ws.mat(`${prefix}.k_proj.weight`, nKv * d, hidden);
    this.v = ws.mat(`${prefix}.v_proj.weight`, nKv * d, hidden);
    this.o = ws.mat(`${prefix}.o_proj.weight`, hidden, nHeads * d);
    this.bq = cfg.bias ? ws.vec(`${prefix}.q_proj.bias`, nHeads * d) : 0;
    this.bk = cfg.bias ? ws.vec(`${prefix}.k_proj.bias`, nKv * d) : 0;
    this.bv = cfg.bias ? ws.vec(`${prefix}.v_proj.bias`, nKv * d) : 0;
    this.bo = cfg.bias ? ws.vec(`${prefix}.o_proj.bias`, hidden) : 0;
    const lam = (n: string) => ctx.f32(ws.vec(`${prefix}.${n}`, d), d);
    const init = 0.8 - 0.6 * Math.exp(-0.3 * cfg.layer);
    this.lambda = expDotF32(lam('lambda_q1'), lam('lambda_k1')) - expDotF32(lam('lambda_q2'), lam('lambda_k2')) + init;
    this.outScale = 1 - init;
  }

  specs(_maxContext: number): RegionSpec[] {
    if (!this.declared) {
      const { nKv, headDim: d } = this.cfg;
      this.kState = kvCacheRegion(`${this.prefix}.k`, nKv, d, this.ctx.kvCache);
      this.vState = kvCacheRegion(`${this.prefix}.v`, nKv, 2 * d, this.ctx.kvCache);
      this.declared = true;
    }
    return [this.kState, this.vState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { nHeads: H, nKv, headDim: d, rope: r, eps } = this.cfg;
    const half = nKv / 2, hd = H * d;
    const q = g.tmp(hd), k = g.tmp(nKv * d), v = g.tmp(nKv * d), vc = g.tmp(nKv * 2 * d);
    const ao = g.tmp(2 * hd), a = g.tmp(hd), b = g.tmp(hd);
    linear(g, q, x, this.q, this.bq);
    linear(g, k, x, this.k, this.bk);
    linear(g, v, x, this.v, this.bv);
    rope(g, q, H, d, r);
    rope(g, k, nKv, d, r);
    // Cached value head i = [v_{i mod half} | v_{half + i mod half}]: heads i and i + half are equal.
    for (const base of [0, half]) {
      copy(g, vc, v, { chunks: half, len: d, xOff: 0, xStride: d, yOff: base * 2 * d, yStride: 2 * d });
      copy(g, vc, v, { chunks: half, len: d, xOff: half * d, xStride: d, yOff: base * 2 * d + d, yStride: 2 * d });
    }
    kvAppend(g, this.kState, k);
    kvAppend(g, this.vState, vc);
    attention(g, { y: ao, q, k: this.kState, v: this.vState, nHeads: H, nKv, headDim: d, vDim: 2 * d, scale: 1 / Math.sqrt(d) });
    // Heads [0, H/2) are the first H·d floats of a row, heads [H/2, H) the rest.
    copy(g, a, ao, { chunks: 1, len: hd });
    copy(g, b, ao, { chunks: 1, len: hd, xOff: hd });
    scale(g, b, b, -this.lambda);
    add(g, a, a, b);
    norm(g, { w: 0, eps }, a, a, 2 * d);
    scale(g, a, a, this.outScale);
    linear(g, out, a, this.o, this.bo);
  }
}

export function buildDiffLlama(ctx: Ctx, c: DiffLlamaConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, inter, eps } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const r = ropeSpec(c.rope, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    blocks.push(new PreNormBlock(ctx, {
      kind: 'attention', hidden,
      mixer: new DiffAttention(ctx, `${p}.self_attn`, { hidden, nHeads, nKv, headDim, bias: c.bias, rope: r, eps, layer: i }),
      ffn: new GatedMlp(ctx, `${p}.mlp`, hidden, inter, c.act),
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

export const diffLlama: Family<DiffLlamaConfig> = {
  types: ['diffllama'],
  parse: parseDiffLlama,
  build: buildDiffLlama,
};
