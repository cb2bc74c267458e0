// xLSTM mLSTM kernels (TypeScript over the arena): the matrix-memory recurrence with exponential
// gating and its stabiliser, and the gated per-head LayerNorm after it. Buffers are arena byte
// offsets of f32, row-major; the state is f32 and stored after every token, so a call over T tokens
// runs exactly the operations of T single-token calls.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

export interface MlstmOptions {
  T: number;
  H: number;
  /** Query/key head size. */
  dk: number;
  /** Value head size. */
  dv: number;
  /** Added to the denominator (HF config.eps). */
  eps: number;
}

/** Floats of the state of one layer: C [H, dk, dv], then n [H, dk], then m [H]. */
export function mlstmStateFloats(H: number, dk: number, dv: number): number {
  return H * (dk * dv + dk + 1);
}

/** log σ(x), stably. */
function logSigmoid(x: number): number {
  return Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));
}

/**
 * The mLSTM recurrence (HF mlstm_recurrent_step_native) over T tokens, per head with input and
 * forget gate preactivations i, f:
 *   m' = max(log σ(f) + m, i);  a = exp(log σ(f) + m − m');  b = exp(i − m')
 *   C ← a C + b k vᵀ;  n ← a n + b k;  m ← m'
 *   h = (q̃ᵀC) / (max(|q̃·n|, exp(−m')) + eps),  q̃ = q · dk^−½
 * q, kk [T, H, dk]; v, y [T, H, dv]; ig, fg [T, H]; S the state (mlstmStateFloats), updated in place.
 */
export function mlstm(k: K, y: number, S: number, q: number, kk: number, v: number, ig: number, fg: number, opts: MlstmOptions): void {
  const kernel = 'mlstm';
  const { T, H, dk, dv, eps } = opts;
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'dk', dk);
  checkInt(kernel, 'dv', dv);
  if (!(eps >= 0)) throw new KernelError(kernel, `eps must be ≥ 0, got ${eps}`);
  const nk = T * H * dk, nv = T * H * dv;
  checkBuf(k, kernel, 'y', y, nv * 4);
  checkBuf(k, kernel, 'S', S, mlstmStateFloats(H, dk, dv) * 4);
  checkBuf(k, kernel, 'q', q, nk * 4);
  checkBuf(k, kernel, 'k', kk, nk * 4);
  checkBuf(k, kernel, 'v', v, nv * 4);
  checkBuf(k, kernel, 'i', ig, T * H * 4);
  checkBuf(k, kernel, 'f', fg, T * H * 4);
  if (T === 0) return;
  const A = k.arena;
  const Y = A.f32(y, nv), Q = A.f32(q, nk), Kk = A.f32(kk, nk), V = A.f32(v, nv), I = A.f32(ig, T * H), F = A.f32(fg, T * H);
  const C = A.f32(S, H * dk * dv), N = A.f32(S + H * dk * dv * 4, H * dk), M = A.f32(S + H * (dk * dv + dk) * 4, H);
  const scale = 1 / Math.sqrt(dk);
  const qs = new Float64Array(dk), num = new Float64Array(dv);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const kb = (t * H + h) * dk, vb = (t * H + h) * dv, cb = h * dk * dv, nb = h * dk;
      const logF = logSigmoid(F[t * H + h]), it = I[t * H + h], m = M[h];
      const mNew = Math.max(logF + m, it);
      const fa = Math.exp(logF + m - mNew), ia = Math.exp(it - mNew);
      for (let i = 0; i < dk; i++) qs[i] = Q[kb + i] * scale;
      num.fill(0);
      let qn = 0;
      for (let i = 0; i < dk; i++) {
        const ki = ia * Kk[kb + i], qi = qs[i], row = cb + i * dv;
        N[nb + i] = fa * N[nb + i] + ki;
        qn += qi * N[nb + i];
        for (let j = 0; j < dv; j++) {
          C[row + j] = fa * C[row + j] + ki * V[vb + j];
          num[j] += qi * C[row + j];
        }
      }
      M[h] = mNew;
      const den = Math.max(Math.abs(qn), Math.exp(-mNew)) + eps;
      for (let j = 0; j < dv; j++) Y[vb + j] = num[j] / den;
    }
  }
}

/**
 * The mLSTM layer's output head, in place on y [rows, H·dv], per row and head h:
 *   y ← σ(o) ⊙ (LayerNorm_h(y) · w + b)
 * LayerNorm over the head's dv values (biased variance, eps); o [rows, H·dv]; w, b arena vectors of
 * H·dv floats (b = 0: none).
 */
export function mlstmOutput(k: K, y: number, o: number, w: number, b: number, rows: number, H: number, dv: number, eps: number): void {
  const kernel = 'mlstmOutput';
  checkInt(kernel, 'rows', rows, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'dv', dv);
  if (!(eps > 0)) throw new KernelError(kernel, `eps must be > 0, got ${eps}`);
  const n = rows * H * dv, C = H * dv;
  checkBuf(k, kernel, 'y', y, n * 4);
  checkBuf(k, kernel, 'o', o, n * 4);
  checkBuf(k, kernel, 'w', w, C * 4);
  if (b !== 0) checkBuf(k, kernel, 'b', b, C * 4);
  const A = k.arena;
  const Y = A.f32(y, n), O = A.f32(o, n), W = A.f32(w, C), B = b ? A.f32(b, C) : null;
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < H; h++) {
      const base = r * C + h * dv;
      let mean = 0;
      for (let j = 0; j < dv; j++) mean += Y[base + j];
      mean /= dv;
      let vr = 0;
      for (let j = 0; j < dv; j++) vr += (Y[base + j] - mean) ** 2;
      const inv = 1 / Math.sqrt(vr / dv + eps);
      for (let j = 0; j < dv; j++) {
        const c = h * dv + j;
        const x = (Y[base + j] - mean) * inv * W[c] + (B ? B[c] : 0);
        Y[base + j] = x / (1 + Math.exp(-O[base + j]));
      }
    }
  }
}
