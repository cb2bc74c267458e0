// Softmax attention with a KV cache: GQA/MQA, optional q/k RMSNorm, RoPE (full or partial),
// sliding window (ring-buffer cache), logit soft-capping, learned sinks, and Qwen3-Next's
// output gate. Keys are cached after RoPE at their absolute position.

import { attention } from '../kernels/attention';
import { mul, sigmoid } from '../kernels/act';
import { rmsNorm } from '../kernels/norm';
import { rope } from '../kernels/rope';
import type { Weight } from '../kernels/types';
import type { RegionSpec, SeqState } from '../runtime/state';
import { addBias, type Ctx, type Mixer } from './context';

export interface RopeSpec {
  invFreq: Float32Array;
  rotaryDim: number;
  style: 'neox' | 'interleaved';
  attentionFactor: number;
}

export interface AttentionConfig {
  hidden: number;
  nHeads: number;
  nKv: number;
  headDim: number;
  vHeadDim?: number;
  qkvBias: boolean;
  oBias: boolean;
  /**
   * RMSNorm of q and k before RoPE: per head (Qwen3, Gemma3, Qwen3-Next), or with `full` over the
   * whole projection width, weights [nHeads·headDim] and [nKv·headDim] (OLMoE).
   */
  qkNorm?: { eps: number; addOne: boolean; full?: boolean } | null;
  /** OLMoE clip_qkv: q, k, v clamped to [−clip, clip] after the q/k norms. */
  clip?: number;
  rope?: RopeSpec | null;
  scale: number;
  /** Sliding window W: a query at p sees keys at positions > p − W. */
  window?: number;
  softcap?: number;
  /** gpt-oss: a learned per-head logit added to the softmax denominator (tensor `<prefix>.sinks`). */
  sinks?: boolean;
  /** Qwen3-Next: q_proj emits [query | gate] per head; output ⊙ sigmoid(gate) before o_proj. */
  gated?: boolean;
  /** Sub-module names where a family departs from q_proj/k_proj/v_proj/o_proj/q_norm/k_norm (LFM2). */
  names?: { q?: string; k?: string; v?: string; o?: string; qNorm?: string; kNorm?: string };
}

export class Attention implements Mixer {
  readonly q: Weight;
  readonly kw: Weight;
  readonly v: Weight;
  readonly o: Weight;
  readonly bq: number;
  readonly bk: number;
  readonly bv: number;
  readonly bo: number;
  readonly qNorm: number;
  readonly kNorm: number;
  readonly sinks: number;
  readonly invFreq: number;
  readonly vDim: number;
  private capacity = 0;
  /** Session state: the key and value caches (rings for a sliding window shorter than the context). */
  kState!: RegionSpec;
  vState!: RegionSpec;
  /** The context the caches were declared for. */
  private declaredFor = -1;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: AttentionConfig) {
    const { ws } = ctx;
    const { hidden, nHeads, nKv, headDim } = cfg;
    this.vDim = cfg.vHeadDim ?? headDim;
    const nm = { q: 'q_proj', k: 'k_proj', v: 'v_proj', o: 'o_proj', qNorm: 'q_norm', kNorm: 'k_norm', ...cfg.names };
    this.q = ws.mat(`${prefix}.${nm.q}.weight`, nHeads * headDim * (cfg.gated ? 2 : 1), hidden);
    this.kw = ws.mat(`${prefix}.${nm.k}.weight`, nKv * headDim, hidden);
    this.v = ws.mat(`${prefix}.${nm.v}.weight`, nKv * this.vDim, hidden);
    this.o = ws.mat(`${prefix}.${nm.o}.weight`, hidden, nHeads * this.vDim);
    this.bq = cfg.qkvBias ? ws.vec(`${prefix}.${nm.q}.bias`, this.q.rows) : 0;
    this.bk = cfg.qkvBias ? ws.vec(`${prefix}.${nm.k}.bias`, this.kw.rows) : 0;
    this.bv = cfg.qkvBias ? ws.vec(`${prefix}.${nm.v}.bias`, this.v.rows) : 0;
    this.bo = cfg.oBias ? ws.vec(`${prefix}.${nm.o}.bias`, hidden) : 0;
    const fullNorm = cfg.qkNorm?.full ?? false;
    this.qNorm = cfg.qkNorm ? ws.vec(`${prefix}.${nm.qNorm}.weight`, fullNorm ? nHeads * headDim : headDim) : 0;
    this.kNorm = cfg.qkNorm ? ws.vec(`${prefix}.${nm.kNorm}.weight`, fullNorm ? nKv * headDim : headDim) : 0;
    this.sinks = cfg.sinks ? ws.vec(`${prefix}.sinks`, nHeads) : 0;
    this.invFreq = cfg.rope ? ctx.k.arena.putF32(cfg.rope.invFreq).ptr : 0;
    const T = ctx.maxChunk;
    ctx.scratch.need('attn.qraw', T * this.q.rows);
    ctx.scratch.need('attn.q', T * nHeads * headDim);
    ctx.scratch.need('attn.gate', cfg.gated ? T * nHeads * headDim : 1);
    ctx.scratch.need('attn.k', T * nKv * headDim);
    ctx.scratch.need('attn.v', T * nKv * this.vDim);
    ctx.scratch.need('attn.out', T * nHeads * this.vDim);
    ctx.scratch.need('pos', T);
  }

  specs(maxContext: number): RegionSpec[] {
    if (maxContext !== this.declaredFor) {
      const { nKv, headDim, window } = this.cfg;
      const ring = !!window && window + this.ctx.maxChunk - 1 < maxContext;
      this.capacity = ring ? window + this.ctx.maxChunk - 1 : 0;
      const cache = (name: string, perToken: number): RegionSpec =>
        ring ? { name, kind: 'ring', perToken, capacity: this.capacity } : { name, kind: 'kv', perToken };
      this.kState = cache(`${this.prefix}.k`, nKv * headDim);
      this.vState = cache(`${this.prefix}.v`, nKv * this.vDim);
      this.declaredFor = maxContext;
    }
    return [this.kState, this.vState];
  }

  forward(state: SeqState, x: number, out: number, T: number, pos0: number): void {
    const { ctx, cfg } = this;
    const { k } = ctx;
    const { nHeads, nKv, headDim } = cfg;
    const s = ctx.scratch;
    const q = s.get('attn.q'), kk = s.get('attn.k'), v = s.get('attn.v'), ao = s.get('attn.out');
    const qd = nHeads * headDim, kd = nKv * headDim, vd = nKv * this.vDim;

    if (cfg.gated) {
      // q_proj rows are per head [query(headDim) | gate(headDim)].
      const raw = s.get('attn.qraw'), gate = s.get('attn.gate');
      ctx.mm(raw, x, this.q, T);
      addBias(ctx, raw, this.bq, T, this.q.rows);
      const r = ctx.f32(raw, T * 2 * qd), qv = ctx.f32(q, T * qd), gv = ctx.f32(gate, T * qd);
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < nHeads; h++) {
          const src = t * 2 * qd + h * 2 * headDim, dst = t * qd + h * headDim;
          qv.set(r.subarray(src, src + headDim), dst);
          gv.set(r.subarray(src + headDim, src + 2 * headDim), dst);
        }
      }
    } else {
      ctx.mm(q, x, this.q, T);
      addBias(ctx, q, this.bq, T, qd);
    }
    ctx.mm(kk, x, this.kw, T);
    addBias(ctx, kk, this.bk, T, kd);
    ctx.mm(v, x, this.v, T);
    addBias(ctx, v, this.bv, T, vd);

    if (cfg.qkNorm?.full) {
      rmsNorm(k, q, q, this.qNorm, T, qd, cfg.qkNorm.eps, { addOne: cfg.qkNorm.addOne });
      rmsNorm(k, kk, kk, this.kNorm, T, kd, cfg.qkNorm.eps, { addOne: cfg.qkNorm.addOne });
    } else if (cfg.qkNorm) {
      rmsNorm(k, q, q, this.qNorm, T * nHeads, headDim, cfg.qkNorm.eps, { addOne: cfg.qkNorm.addOne });
      rmsNorm(k, kk, kk, this.kNorm, T * nKv, headDim, cfg.qkNorm.eps, { addOne: cfg.qkNorm.addOne });
    }
    if (cfg.clip !== undefined) {
      clampInPlace(ctx.f32(q, T * qd), cfg.clip);
      clampInPlace(ctx.f32(kk, T * kd), cfg.clip);
      clampInPlace(ctx.f32(v, T * vd), cfg.clip);
    }
    const pos = s.get('pos');
    const pv = k.arena.i32(pos, T);
    for (let t = 0; t < T; t++) pv[t] = pos0 + t;
    if (cfg.rope) {
      const r = cfg.rope;
      rope(k, q, T, nHeads, headDim, pos, this.invFreq, r.rotaryDim, r.style, r.attentionFactor);
      rope(k, kk, T, nKv, headDim, pos, this.invFreq, r.rotaryDim, r.style, r.attentionFactor);
    }

    // Write this chunk's keys/values into the cache, then attend.
    const kc = state.ptr(this.kState), vc = state.ptr(this.vState);
    const cap = this.capacity;
    const kAll = ctx.f32(kk, T * kd), vAll = ctx.f32(v, T * vd);
    const slots = cap || state.layout.maxContext;
    const kCache = ctx.f32(kc, slots * kd), vCache = ctx.f32(vc, slots * vd);
    for (let t = 0; t < T; t++) {
      const slot = cap ? (pos0 + t) % cap : pos0 + t;
      kCache.set(kAll.subarray(t * kd, (t + 1) * kd), slot * kd);
      vCache.set(vAll.subarray(t * vd, (t + 1) * vd), slot * vd);
    }
    attention(k, ao, q, kc, vc, {
      T, qPos0: pos0, nHeads, nKv, headDim, vDim: this.vDim, scale: cfg.scale,
      window: cfg.window, softcap: cfg.softcap, sinks: this.sinks || undefined, capacity: cap || undefined,
    });
    if (cfg.gated) {
      const gate = s.get('attn.gate');
      sigmoid(k, gate, gate, T * qd);
      mul(k, ao, ao, gate, T * qd);
    }
    ctx.mm(out, ao, this.o, T);
    addBias(ctx, out, this.bo, T, cfg.hidden);
  }
}

/** x ← min(max(x, −c), c) (host loop: one pass over T·width floats, negligible beside the projections). */
function clampInPlace(x: Float32Array, c: number): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v > c) x[i] = c;
    else if (v < -c) x[i] = -c;
  }
}
