// The decoder skeleton most families share: embed → blocks → final norm → LM head.
// Each block is pre-norm residual: x += [postNorm](mixer(norm(x))); x += [postNorm](ffn(norm(x))).

import { embedRows } from '../kernels/matmul';
import { add, scale, softcap } from '../kernels/act';
import { layerNorm, rmsNorm } from '../kernels/norm';
import type { Weight } from '../kernels/types';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import type { Net } from './net';
import type { RegionSpec, SeqState } from '../runtime/state';

export interface NormSpec {
  w: number;
  b?: number;
  eps: number;
  kind?: 'rms' | 'layer';
  /** Gemma / Qwen3-Next zero-centred RMSNorm: x̂ · (1 + w). */
  addOne?: boolean;
}

export function applyNorm(ctx: Ctx, n: NormSpec, y: number, x: number, T: number, dim: number): void {
  if (n.kind === 'layer') layerNorm(ctx.k, y, x, n.w, n.b ?? 0, T, dim, n.eps);
  else rmsNorm(ctx.k, y, x, n.w, T, dim, n.eps, { addOne: n.addOne });
}

export interface Block {
  kind: string;
  specs(maxContext: number): RegionSpec[];
  /** Updates the residual stream x[T, hidden] in place. */
  forward(state: SeqState, x: number, T: number, pos0: number): void;
}

export interface PreNormBlockSpec {
  kind: string;
  hidden: number;
  mixer: Mixer;
  ffn: Ffn | null;
  preMixer: NormSpec;
  postMixer?: NormSpec;
  preFfn?: NormSpec;
  postFfn?: NormSpec;
  /** Granite residual_multiplier: x += m · branch. */
  residualMultiplier?: number;
}

export class PreNormBlock implements Block {
  readonly kind: string;
  constructor(readonly ctx: Ctx, readonly s: PreNormBlockSpec) {
    this.kind = s.kind;
    ctx.scratch.need('blk.h', ctx.maxChunk * s.hidden);
    ctx.scratch.need('blk.o', ctx.maxChunk * s.hidden);
  }
  specs(maxContext: number): RegionSpec[] {
    return this.s.mixer.specs(maxContext);
  }
  forward(state: SeqState, x: number, T: number, pos0: number): void {
    const { ctx, s } = this;
    const D = s.hidden, n = T * D;
    const h = ctx.scratch.get('blk.h'), o = ctx.scratch.get('blk.o');
    applyNorm(ctx, s.preMixer, h, x, T, D);
    s.mixer.forward(state, h, o, T, pos0);
    if (s.postMixer) applyNorm(ctx, s.postMixer, o, o, T, D);
    if (s.residualMultiplier !== undefined) scale(ctx.k, o, o, s.residualMultiplier, n);
    add(ctx.k, x, x, o, n);
    if (!s.ffn) return;
    applyNorm(ctx, s.preFfn!, h, x, T, D);
    s.ffn.forward(h, o, T);
    if (s.postFfn) applyNorm(ctx, s.postFfn, o, o, T, D);
    if (s.residualMultiplier !== undefined) scale(ctx.k, o, o, s.residualMultiplier, n);
    add(ctx.k, x, x, o, n);
  }
}

export interface DecoderSpec {
  hidden: number;
  vocab: number;
  embed: Weight;
  /** Multiplies the embeddings (Gemma √hidden, Granite embedding_multiplier). */
  embedScale?: number;
  blocks: Block[];
  finalNorm: NormSpec;
  lmHead: Weight;
  /** Gemma final_logit_softcapping. */
  finalSoftcap?: number;
  /** Granite logits_scaling: logits / s. */
  logitsDivisor?: number;
}

export class DecoderNet implements Net {
  readonly vocabSize: number;
  readonly hidden: number;
  readonly layerKinds: string[];
  constructor(readonly ctx: Ctx, readonly d: DecoderSpec) {
    this.vocabSize = d.vocab;
    this.hidden = d.hidden;
    this.layerKinds = d.blocks.map((b) => b.kind);
    const C = ctx.maxChunk;
    ctx.scratch.need('dec.x', C * d.hidden);
    ctx.scratch.need('dec.logits', C * d.vocab);
  }
  specs(maxContext: number): RegionSpec[] {
    return this.d.blocks.flatMap((b) => b.specs(maxContext));
  }
  forward(state: SeqState, ids: Int32Array, pos0: number, all: boolean): number {
    const { ctx, d } = this;
    const T = ids.length, D = d.hidden;
    const x = ctx.scratch.get('dec.x'), logits = ctx.scratch.get('dec.logits');
    embedRows(ctx.k, x, d.embed, ids, d.embedScale ?? 1);
    for (const b of d.blocks) b.forward(state, x, T, pos0);
    const rows = all ? T : 1;
    const xs = all ? x : x + (T - 1) * D * 4;
    applyNorm(ctx, d.finalNorm, xs, xs, rows, D);
    ctx.mm(logits, xs, d.lmHead, rows);
    const n = rows * d.vocab;
    if (d.logitsDivisor !== undefined) scale(ctx.k, logits, logits, 1 / d.logitsDivisor, n);
    if (d.finalSoftcap) softcap(ctx.k, logits, logits, d.finalSoftcap, n);
    return logits;
  }
}
