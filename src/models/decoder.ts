// The decoder skeleton most families share: embed → blocks → final norm → LM head (or, for output
// 'hidden', embed → blocks → final norm: the final hidden states).
// Each block is pre-norm residual: x += [postNorm](mixer(norm(x))); x += [postNorm](ffn(norm(x))).

import type { Weight } from '../kernels/types';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import { add, embed, matmul, norm, scale, softcap, type NormSpec } from '../graph/ops';
import type { Net } from './net';
import type { RegionSpec } from '../runtime/state';

export type { NormSpec };

/** norm(x) → y over rows of `dim` (the whole width by default). */
export function applyNorm(g: Graph, n: NormSpec, y: Tensor, x: Tensor): void {
  norm(g, n, y, x);
}

export interface Block {
  kind: string;
  specs(maxContext: number): RegionSpec[];
  /** Updates the residual stream x[T, hidden] in place. */
  forward(g: Graph, x: Tensor): void;
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
  }
  specs(maxContext: number): RegionSpec[] {
    return this.s.mixer.specs(maxContext);
  }
  forward(g: Graph, x: Tensor): void {
    const { s } = this;
    const h = g.tmp(s.hidden), o = g.tmp(s.hidden);
    norm(g, s.preMixer, h, x);
    s.mixer.forward(g, h, o);
    if (s.postMixer) norm(g, s.postMixer, o, o);
    this.residual(g, x, o);
    if (!s.ffn) return;
    norm(g, s.preFfn!, h, x);
    s.ffn.forward(g, h, o);
    if (s.postFfn) norm(g, s.postFfn, o, o);
    this.residual(g, x, o);
  }
  /** x += [m ·] branch */
  private residual(g: Graph, x: Tensor, o: Tensor): void {
    if (this.s.residualMultiplier !== undefined) scale(g, o, o, this.s.residualMultiplier);
    add(g, x, x, o);
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
  /** The final norm's rows are the LM head's input: forward() can stop there. */
  readonly hiddenOutput = true;
  private readonly labels: string[];
  constructor(readonly ctx: Ctx, readonly d: DecoderSpec) {
    this.vocabSize = d.vocab;
    this.hidden = d.hidden;
    this.layerKinds = d.blocks.map((b) => b.kind);
    this.labels = d.blocks.map((_, i) => `layer ${i}`);
  }
  specs(maxContext: number): RegionSpec[] {
    return this.d.blocks.flatMap((b) => b.specs(maxContext));
  }
  forward(g: Graph, all: boolean, output: ForwardOutput = 'logits'): Tensor {
    const { d } = this;
    const x = g.tmp(d.hidden);
    embed(g, x, d.embed, d.embedScale ?? 1);
    for (let i = 0; i < d.blocks.length; i++) g.scope(this.labels[i], () => d.blocks[i].forward(g, x));
    const xs = all ? x : g.last(x);
    norm(g, d.finalNorm, xs, xs);
    if (output === 'hidden') return xs;
    const logits = g.tmp(d.vocab, xs.rows);
    matmul(g, logits, xs, d.lmHead);
    if (d.logitsDivisor !== undefined) scale(g, logits, logits, 1 / d.logitsDivisor);
    if (d.finalSoftcap) softcap(g, logits, logits, d.finalSoftcap);
    return logits;
  }
}
