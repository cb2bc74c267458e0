// RWKV-4 (RwkvForCausalLM): LayerNorm pre-norm blocks of time-mix (WKV linear attention with
// per-channel decay) and channel-mix, both fed by a token shift (the previous token's normed input).
// Layer 0 also LayerNorms the embeddings (pre_ln). ln_out has nn.LayerNorm's default eps 1e−5.
//
// Time mix (HF RwkvSelfAttention), x̄ = the previous token's ln1 output:
//   k = W_k lerp(x̄, x, μ_k);  v = W_v lerp(x̄, x, μ_v);  r = sigmoid(W_r lerp(x̄, x, μ_r))
//   wkv_t = (Σ_{i<t} e^{−(t−1−i)w + k_i} v_i + e^{u + k_t} v_t) / (same with v ≡ 1),  w = exp(time_decay), u = time_first
//   out = W_o (r ⊙ wkv)            (numerator, denominator and running max kept per channel, f32)
// Channel mix (HF RwkvFeedForward): out = sigmoid(W_r lerp(x̄, x, μ_r)) ⊙ W_v relu(W_k lerp(x̄, x, μ_k))²
// with lerp(x̄, x, μ) = x·μ + x̄·(1 − μ).
//
// Eval-mode rescaling (HF RwkvModel._rescale_layers, applied by every forward outside training when
// rescale_every > 0): block i's attention.output and feed_forward.value are divided by
// 2^⌊i / rescale_every⌋ and the residual stream is halved after every rescale_every-th block. It is
// not a no-op — LayerNorm's eps then acts on a scaled stream — so it is reproduced exactly (powers of
// two: the branch outputs are scaled instead of the weights).

import type { Weight } from '../kernels/types';
import type { Ctx } from '../layers/context';
import type { Graph, Tensor } from '../graph/graph';
import { add, matmul, mul, norm, scale, sigmoid } from '../graph/ops';
import { relu2, tokenShift, wkv4 } from '../graph/ops-recurrent';
import { int, num, rejectIf, tiedEmbeddings, type RawConfig } from './common';
import { DecoderNet, type Block, type NormSpec } from './decoder';
import type { Family, Net } from './net';
import type { RegionSpec } from '../runtime/state';

export interface RwkvBlockConfig {
  hidden: number;
  /** attention_hidden_size */
  A: number;
  /** intermediate_size */
  I: number;
  eps: number;
  /** 2^−⌊i / rescale_every⌋: the scale of this block's branch outputs. */
  branchScale: number;
  /** Halve the residual stream after this block. */
  halveAfter: boolean;
}

export class RwkvBlock implements Block {
  readonly kind = 'rwkv';
  readonly preLn: NormSpec | null;
  readonly ln1: NormSpec;
  readonly ln2: NormSpec;
  readonly att: { mk: Float32Array; mv: Float32Array; mr: Float32Array; k: Weight; v: Weight; r: Weight; o: Weight; timeDecay: number; timeFirst: number };
  readonly ffn: { mk: Float32Array; mr: Float32Array; k: Weight; r: Weight; v: Weight };

  /** Session state: the previous token of the time-mixing block. */
  readonly attShiftState: RegionSpec;
  /** Session state: the previous token of the channel-mixing block. */
  readonly ffnShiftState: RegionSpec;
  /** Session state: HF's (num_state, den_state, max_state) of this layer, [3, A]. */
  readonly wkvState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly layer: number, readonly cfg: RwkvBlockConfig) {
    const { ws } = ctx;
    const { hidden: D, A, I, eps } = cfg;
    const ln = (n: string): NormSpec => ({ kind: 'layer', w: ws.vec(`${prefix}.${n}.weight`, D), b: ws.vec(`${prefix}.${n}.bias`, D), eps });
    this.preLn = layer === 0 ? ln('pre_ln') : null;
    this.ln1 = ln('ln1');
    this.ln2 = ln('ln2');
    const host = (name: string, n: number) => ctx.f32(ws.vec(name, n), n).slice();
    const a = `${prefix}.attention`, f = `${prefix}.feed_forward`;
    this.att = {
      mk: host(`${a}.time_mix_key`, D), mv: host(`${a}.time_mix_value`, D), mr: host(`${a}.time_mix_receptance`, D),
      k: ws.mat(`${a}.key.weight`, A, D), v: ws.mat(`${a}.value.weight`, A, D), r: ws.mat(`${a}.receptance.weight`, A, D),
      o: ws.mat(`${a}.output.weight`, D, A),
      timeDecay: ws.vec(`${a}.time_decay`, A), timeFirst: ws.vec(`${a}.time_first`, A),
    };
    this.ffn = {
      mk: host(`${f}.time_mix_key`, D), mr: host(`${f}.time_mix_receptance`, D),
      k: ws.mat(`${f}.key.weight`, I, D), r: ws.mat(`${f}.receptance.weight`, D, D), v: ws.mat(`${f}.value.weight`, D, I),
    };
    this.attShiftState = { name: `${this.prefix}.att_shift`, kind: 'fixed', floats: this.cfg.hidden };
    this.ffnShiftState = { name: `${this.prefix}.ffn_shift`, kind: 'fixed', floats: this.cfg.hidden };
    this.wkvState = { name: `${this.prefix}.wkv`, kind: 'fixed', floats: 3 * this.cfg.A };
  }

  specs(): RegionSpec[] {
    return [this.attShiftState, this.ffnShiftState, this.wkvState];
  }

  forward(g: Graph, x: Tensor): void {
    const { hidden: D, A, I, branchScale, halveAfter } = this.cfg;
    const h = g.tmp(D), xk = g.tmp(D), xv = g.tmp(D), xr = g.tmp(D), o = g.tmp(D);
    const residual = () => {
      if (branchScale !== 1) scale(g, o, o, branchScale);
      add(g, x, x, o);
    };
    if (this.preLn) norm(g, this.preLn, x, x);

    // time mix
    const att = this.att;
    const kb = g.tmp(A), vb = g.tmp(A), rb = g.tmp(A), wkv = g.tmp(A);
    norm(g, this.ln1, h, x);
    tokenShift(g, [xk, xv, xr], h, this.attShiftState, [att.mk, att.mv, att.mr]);
    matmul(g, kb, xk, att.k);
    matmul(g, vb, xv, att.v);
    matmul(g, rb, xr, att.r);
    sigmoid(g, rb, rb);
    wkv4(g, wkv, kb, vb, this.wkvState, att.timeDecay, att.timeFirst);
    mul(g, wkv, wkv, rb);
    matmul(g, o, wkv, att.o);
    residual();

    // channel mix
    const ffn = this.ffn;
    const fk = g.tmp(I), fr = g.tmp(D);
    norm(g, this.ln2, h, x);
    tokenShift(g, [xk, xr], h, this.ffnShiftState, [ffn.mk, ffn.mr]);
    matmul(g, fk, xk, ffn.k);
    relu2(g, fk);
    matmul(g, o, fk, ffn.v);
    matmul(g, fr, xr, ffn.r);
    sigmoid(g, fr, fr);
    mul(g, o, o, fr);
    residual();
    if (halveAfter) scale(g, x, x, 0.5);
  }
}

export interface RwkvConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** attention_hidden_size */
  A: number;
  /** intermediate_size */
  I: number;
  /** layer_norm_epsilon of the block LayerNorms */
  eps: number;
  /** rescale_every (≤ 0: no rescaling) */
  rescaleEvery: number;
  tieEmbeddings: boolean;
}

export function parseRwkv(c: RawConfig): RwkvConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const A = int(c, 'attention_hidden_size', hidden);
  const I = int(c, 'intermediate_size', 4 * hidden);
  const eps = num(c, 'layer_norm_epsilon', 1e-5);
  const R = c.rescale_every ?? 6;
  rejectIf(!Number.isInteger(R), 'rescale_every', `must be an integer, got ${JSON.stringify(R)}`);
  return { hidden, nLayers, vocab, A, I, eps, rescaleEvery: R as number, tieEmbeddings: tiedEmbeddings(c, false) };
}

export function buildRwkv(ctx: Ctx, c: RwkvConfig): Net {
  const { ws } = ctx;
  const { hidden: D, nLayers, vocab, A, I, eps, rescaleEvery: R } = c;
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    blocks.push(new RwkvBlock(ctx, `rwkv.blocks.${i}`, i, {
      hidden: D, A, I, eps,
      branchScale: R > 0 ? 2 ** -Math.floor(i / R) : 1,
      halveAfter: R > 0 && (i + 1) % R === 0,
    }));
  }
  return new DecoderNet(ctx, {
    hidden: D, vocab, embed: ws.mat('rwkv.embeddings.weight', vocab, D), blocks,
    finalNorm: { kind: 'layer', w: ws.vec('rwkv.ln_out.weight', D), b: ws.vec('rwkv.ln_out.bias', D), eps: 1e-5 },
    lmHead: c.tieEmbeddings && !ws.has('head.weight') ? ws.mat('rwkv.embeddings.weight', vocab, D) : ws.mat('head.weight', vocab, D),
  });
}

export const rwkv: Family<RwkvConfig> = {
  types: ['rwkv'],
  keepF32: (name) => /\.time_(mix_key|mix_value|mix_receptance|decay|first)$/.test(name),
  parse: parseRwkv,
  build: buildRwkv,
};
