// RWKV-7 time-mix kernels (docs/recurrences.md §17): the WKV-7 recurrence, the key preparation
// before it and the output head after it. Buffers are arena byte offsets of f32, row-major; the
// state is f32 [H, dk, dv] (fla's layout, row i = key channel i).
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import { scanScratch, staticScanScratch } from './scan_scratch';
import type { K } from './types';

export interface Wkv7Options {
  T: number;
  H: number;
  /** Key head size (r, w, k, κ̂, a). */
  dk: number;
  /** Value head size (v, y). */
  dv: number;
  /**
   * Scratch of wkv7ScratchBytes(k, dk) bytes. Without it the kernel uses free committed memory
   * above the arena top, else the module's static area (smaller token groups, same results).
   */
  scratch?: number;
}

/** Bytes of scratch a call with key head size dk uses at most (independent of T, H, dv). */
export function wkv7ScratchBytes(k: K, dk: number): number {
  return k.exports.wkv7ScratchFloats(dk) * 4;
}

/**
 * RWKV-7 WKV over T tokens (the official S ← S·Diag(exp w) − (Sκ̂)(κ̂⊙a)ᵀ + v kᵀ, y = S r on the
 * transposed state). Per head, with S [dk, dv]:
 *   u = Sᵀκ̂;  S ← Diag(exp(w)) S − (κ̂ ⊙ a) uᵀ + k vᵀ;  y = Sᵀ r.
 * r, w (log-decay ≤ 0), kk (the key buffer k of the equations), kappa (κ̂, unit rows per head), a:
 * [T, H, dk]; v, y: [T, H, dv]; S updated in place. One call over T tokens is bit-identical to T
 * single-token calls (prefill pieces and decode steps compose exactly).
 */
export function wkv7(k: K, y: number, S: number, r: number, w: number, kk: number, v: number, kappa: number, a: number, opts: Wkv7Options): void {
  const kernel = 'wkv7';
  const { T, H, dk, dv } = opts;
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'dk', dk);
  checkInt(kernel, 'dv', dv);
  const nk = T * H * dk * 4, nv = T * H * dv * 4;
  checkBuf(k, kernel, 'y', y, nv);
  checkBuf(k, kernel, 'S', S, H * dk * dv * 4);
  checkBuf(k, kernel, 'r', r, nk);
  checkBuf(k, kernel, 'w', w, nk);
  checkBuf(k, kernel, 'k', kk, nk);
  checkBuf(k, kernel, 'v', v, nv);
  checkBuf(k, kernel, 'kappa', kappa, nk);
  checkBuf(k, kernel, 'a', a, nk);
  if (T === 0) return;
  const need = wkv7ScratchBytes(k, dk);
  const scr = scanScratch(k, kernel, opts.scratch, need) ?? staticScanScratch(k);
  const min = 2 * (Math.ceil(dk / 4) * 4) * 4;
  if (scr.bytes < min) throw new KernelError(kernel, `scratch: needs ${need} bytes (wkv7ScratchBytes); pass opts.scratch`);
  k.exports.wkv7F32(y, S, r, w, kk, v, kappa, a, T, H, dk, dv, scr.ptr, Math.floor(Math.min(scr.bytes, need) / 4));
}

/** How κ̂ = κ/‖κ‖ is guarded: fla's l2_norm (fuse_norm) adds eps under the root, F.normalize clamps the norm. */
export type KappaNorm = { mode: 'add' | 'clamp'; eps: number };

/**
 * RWKV-7 keys, per row and head of dk floats: κ̂ = normalize(k ⊙ k_k) into kappa, then in place
 * k ← k + (k ⊙ (a − 1)) ⊙ k_a. k, a, kappa: [rows, H·dk]; kK, kA: arena vectors [H·dk].
 */
export function rwkv7Keys(k: K, kappa: number, kk: number, a: number, kK: number, kA: number, rows: number, H: number, dk: number, norm: KappaNorm): void {
  const kernel = 'rwkv7Keys';
  checkInt(kernel, 'rows', rows, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'dk', dk);
  if (!(norm.eps > 0)) throw new KernelError(kernel, `eps must be > 0, got ${norm.eps}`);
  if (norm.mode !== 'add' && norm.mode !== 'clamp') throw new KernelError(kernel, `mode must be 'add' or 'clamp', got ${norm.mode}`);
  const n = rows * H * dk * 4;
  checkBuf(k, kernel, 'kappa', kappa, n);
  checkBuf(k, kernel, 'k', kk, n);
  checkBuf(k, kernel, 'a', a, n);
  checkBuf(k, kernel, 'kK', kK, H * dk * 4);
  checkBuf(k, kernel, 'kA', kA, H * dk * 4);
  if (kappa === kk || kappa === a) throw new KernelError(kernel, 'kappa aliases an input');
  k.exports.rwkv7KeysF32(kappa, kk, a, kK, kA, rows, H, dk, norm.eps, norm.mode === 'clamp' ? 1 : 0);
}

/**
 * RWKV-7 output head, in place on y, per row and head h:
 *   y ← (GroupNorm_h(y)·gw + gb + (Σ r ⊙ k ⊙ rK)·v) ⊙ g
 * GroupNorm over the head's dv values with `eps`; y, v, g: [rows, H·dv]; r, k: [rows, H·dk]; rK:
 * [H·dk], gw, gb: [H·dv] (arena vectors).
 */
export function rwkv7Output(k: K, y: number, r: number, kk: number, v: number, g: number, rK: number, gw: number, gb: number,
  rows: number, H: number, dk: number, dv: number, eps: number): void {
  const kernel = 'rwkv7Output';
  checkInt(kernel, 'rows', rows, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'dk', dk);
  checkInt(kernel, 'dv', dv);
  if (!(eps > 0)) throw new KernelError(kernel, `eps must be > 0, got ${eps}`);
  const nk = rows * H * dk * 4, nv = rows * H * dv * 4;
  checkBuf(k, kernel, 'y', y, nv);
  checkBuf(k, kernel, 'r', r, nk);
  checkBuf(k, kernel, 'k', kk, nk);
  checkBuf(k, kernel, 'v', v, nv);
  checkBuf(k, kernel, 'g', g, nv);
  checkBuf(k, kernel, 'rK', rK, H * dk * 4);
  checkBuf(k, kernel, 'gw', gw, H * dv * 4);
  checkBuf(k, kernel, 'gb', gb, H * dv * 4);
  k.exports.rwkv7OutputF32(y, r, kk, v, g, rK, gw, gb, rows, H, dk, dv, eps);
}
