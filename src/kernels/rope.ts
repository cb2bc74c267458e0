// Rotary position embeddings: inverse-frequency tables computed the way transformers 5.x
// `modeling_rope_utils.py` computes them (its float32 tensor steps replayed with Math.fround), and the
// in-place rotation kernel.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

/** HF `rope_scaling` / `rope_parameters` (either `rope_type` or the legacy `type` key). */
export interface RopeScaling {
  rope_type?: 'default' | 'linear' | 'dynamic' | 'yarn' | 'llama3' | 'longrope' | string;
  type?: string;
  factor?: number | null;
  original_max_position_embeddings?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  beta_fast?: number | null;
  beta_slow?: number | null;
  mscale?: number | null;
  mscale_all_dim?: number | null;
  attention_factor?: number | null;
  truncate?: boolean;
  short_factor?: number[];
  long_factor?: number[];
  [key: string]: unknown;
}

export interface RopeConfig {
  headDim: number;
  /** Rotated dims per head: int(headDim · partial_rotary_factor); even. */
  rotaryDim: number;
  /** rope_theta */
  theta: number;
  scaling?: RopeScaling | null;
  /** config.max_position_embeddings (yarn, longrope and dynamic read it). */
  maxPositions?: number;
  /**
   * Sequence length the tables are for (dynamic: HF recomputes with seq_len = max position + 1 once it
   * exceeds max_position_embeddings; longrope: long_factor is used when seq_len > original max).
   */
  seqLen?: number;
}

export interface RopeTables {
  /** f32[rotaryDim / 2] */
  invFreq: Float32Array;
  /** HF attention_scaling: multiplies cos and sin. */
  attentionFactor: number;
}

const f = Math.fround;

/** torch: base ** (arange(0, dim, 2).float() / dim), f32 throughout (the base is cast to f32). */
function posFreqs(base: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = f(Math.pow(f(base), f((2 * i) / dim)));
  return out;
}

function defaultInvFreq(base: number, dim: number): Float32Array {
  const p = posFreqs(base, dim);
  for (let i = 0; i < p.length; i++) p[i] = f(1 / p[i]);
  return p;
}

function num(s: RopeScaling, key: string, fallback?: number): number {
  const v = s[key];
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new KernelError('ropeTables', `rope scaling field ${key} is required`);
    return fallback;
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new KernelError('ropeTables', `rope scaling field ${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function ropeTables(cfg: RopeConfig): RopeTables {
  const dim = cfg.rotaryDim;
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0 || dim > cfg.headDim) {
    throw new KernelError('ropeTables', `rotaryDim must be an even integer in [2, headDim=${cfg.headDim}], got ${dim}`);
  }
  const base = cfg.theta;
  if (!(base > 1) || !Number.isFinite(base)) throw new KernelError('ropeTables', `theta must be > 1, got ${base}`);
  const s = cfg.scaling ?? undefined;
  const type = (s?.rope_type ?? s?.type ?? 'default') as string;
  const maxPos = cfg.maxPositions;
  const needMax = (): number => {
    if (!maxPos || !Number.isInteger(maxPos)) throw new KernelError('ropeTables', `rope type ${type} needs maxPositions (max_position_embeddings)`);
    return maxPos;
  };

  switch (type) {
    case 'default':
      return { invFreq: defaultInvFreq(base, dim), attentionFactor: 1 };

    case 'linear': {
      const factor = f(num(s!, 'factor'));
      const inv = defaultInvFreq(base, dim);
      for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i] / factor);
      return { invFreq: inv, attentionFactor: 1 };
    }

    case 'dynamic': {
      const mp = needMax();
      const factor = num(s!, 'factor');
      const seq = Math.max(cfg.seqLen ?? mp, mp);
      const b = base * Math.pow(factor * seq / mp - (factor - 1), dim / (dim - 2));
      return { invFreq: defaultInvFreq(b, dim), attentionFactor: 1 };
    }

    case 'yarn': {
      const orig = s!.original_max_position_embeddings ?? needMax();
      let factor = s!.factor ?? null;
      if (factor === null) factor = needMax() / orig;
      const getMscale = (scale: number, m = 1): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
      let attn = s!.attention_factor ?? null;
      if (attn === null) {
        const ms = s!.mscale, msa = s!.mscale_all_dim;
        attn = ms && msa ? getMscale(factor, ms) / getMscale(factor, msa) : getMscale(factor);
      }
      const betaFast = s!.beta_fast || 32;
      const betaSlow = s!.beta_slow || 1;
      const corrDim = (rot: number): number => (dim * Math.log(orig / (rot * 2 * Math.PI))) / (2 * Math.log(base));
      let low = corrDim(betaFast), high = corrDim(betaSlow);
      if (s!.truncate ?? true) {
        low = Math.floor(low);
        high = Math.ceil(high);
      }
      low = Math.max(low, 0);
      high = Math.min(high, dim - 1);
      if (low === high) high += 0.001;
      const pf = posFreqs(base, dim);
      const ff = f(factor), flo = f(low), fspan = f(high - low);
      const inv = new Float32Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) {
        const extrap = f(1 / pf[i]);
        const interp = f(1 / f(ff * pf[i]));
        const ramp = Math.min(Math.max(f(f(i - flo) / fspan), 0), 1);
        const ef = f(1 - ramp);
        inv[i] = f(f(interp * f(1 - ef)) + f(extrap * ef));
      }
      return { invFreq: inv, attentionFactor: attn };
    }

    case 'llama3': {
      const factor = num(s!, 'factor');
      const lff = num(s!, 'low_freq_factor');
      const hff = num(s!, 'high_freq_factor');
      const ocl = num(s!, 'original_max_position_embeddings');
      const lowW = f(ocl / lff), highW = f(ocl / hff);
      const inv = defaultInvFreq(base, dim);
      const twoPi = f(2 * Math.PI);
      for (let i = 0; i < inv.length; i++) {
        const wl = f(twoPi / inv[i]);
        const il = wl > lowW ? f(inv[i] / f(factor)) : inv[i];
        const sm = f(f(f(f(ocl) / wl) - f(lff)) / f(hff - lff));
        const smoothed = f(f(f(f(1 - sm) * il) / f(factor)) + f(sm * il));
        const medium = !(wl < highW) && !(wl > lowW);
        inv[i] = medium ? smoothed : il;
      }
      return { invFreq: inv, attentionFactor: 1 };
    }

    case 'longrope': {
      const orig = s!.original_max_position_embeddings ?? needMax();
      let factor = s!.factor ?? null;
      if (factor === null) factor = needMax() / orig;
      let attn = s!.attention_factor ?? null;
      if (attn === null) attn = factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig));
      const seq = cfg.seqLen ?? 0;
      const ext = seq > orig ? s!.long_factor : s!.short_factor;
      if (!Array.isArray(ext) || ext.length !== dim / 2) {
        throw new KernelError('ropeTables', `longrope ${seq > orig ? 'long' : 'short'}_factor must have ${dim / 2} entries`);
      }
      const pf = posFreqs(base, dim);
      const inv = new Float32Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) inv[i] = f(1 / f(f(ext[i]) * pf[i]));
      return { invFreq: inv, attentionFactor: attn };
    }

    default:
      throw new KernelError('ropeTables', `rope type ${JSON.stringify(type)} is not supported`);
  }
}

/**
 * In place on the first rotaryDim dims of each head of x: T tokens `rowStride` floats apart, heads
 * `headStride` apart. positions: i32[T] pointer; invFreq: f32[rotaryDim/2] pointer.
 * 'neox' rotates pairs (i, i + rotaryDim/2) (HF rotate_half); 'interleaved' pairs (2i, 2i+1)
 * (GPT-J; HF DeepSeek `rope_interleave` de-interleaves q and k first, which gives the same q·k).
 */
export function rope(
  k: K, x: number, T: number, nHeads: number, headDim: number, positions: number, invFreq: number,
  rotaryDim: number, style: 'neox' | 'interleaved', attentionFactor = 1, headStride = headDim, rowStride = nHeads * headStride,
): void {
  checkInt('rope', 'T', T, 0);
  checkInt('rope', 'nHeads', nHeads);
  checkInt('rope', 'headDim', headDim);
  if (!Number.isInteger(rotaryDim) || rotaryDim < 2 || rotaryDim % 2 !== 0 || rotaryDim > headDim) {
    throw new KernelError('rope', `rotaryDim must be an even integer in [2, headDim=${headDim}], got ${rotaryDim}`);
  }
  if (style !== 'neox' && style !== 'interleaved') throw new KernelError('rope', `style must be 'neox' or 'interleaved', got ${style}`);
  checkInt('rope', 'headStride', headStride, headDim);
  checkInt('rope', 'rowStride', rowStride, (nHeads - 1) * headStride + headDim);
  if (T === 0) return;
  checkBuf(k, 'rope', 'x', x, ((T - 1) * rowStride + (nHeads - 1) * headStride + headDim) * 4);
  checkBuf(k, 'rope', 'positions', positions, T * 4);
  checkBuf(k, 'rope', 'invFreq', invFreq, (rotaryDim / 2) * 4);
  k.exports.ropeF32(x, T, nHeads, positions, invFreq, rotaryDim / 2, style === 'interleaved' ? 1 : 0, attentionFactor, headStride, rowStride);
}
