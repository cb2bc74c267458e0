// Elementwise linear recurrences: RG-LRU (RecurrentGemma / Griffin) and the RWKV-4 WKV.
// Buffers are arena byte offsets (f32 unless stated), row-major; states are f32.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

/**
 * RG-LRU scan (HF RecurrentGemmaRglru forward + _rnn_scan). Per token t and channel:
 *   a = exp(logA);  x̃ = xGated·sqrt(1 − exp(2·logA));  h = a·h + x̃;  y = h
 * and where resetMask[t] ≠ 0 (HF reset = position_ids == 0): a = 0 and x̃ = xGated.
 * logA [T, W]: log_a = −8·r·softplus(Λ) (caller); xGated [T, W]: input_gate ⊙ conv output; y [T, W];
 * h [W] in/out (the recurrent state, f32); resetMask: u8 [T] or 0.
 * One call over T tokens is bit-identical to T single-token calls.
 */
export function rglruScan(k: K, y: number, h: number, logA: number, xGated: number, resetMask: number, T: number, W: number): void {
  const kernel = 'rglruScan';
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'W', W);
  checkBuf(k, kernel, 'y', y, T * W * 4);
  checkBuf(k, kernel, 'h', h, W * 4);
  checkBuf(k, kernel, 'logA', logA, T * W * 4);
  checkBuf(k, kernel, 'xGated', xGated, T * W * 4);
  if (resetMask !== 0) {
    if (!Number.isInteger(resetMask) || resetMask <= 0 || resetMask + T > k.memory.buffer.byteLength) {
      throw new KernelError(kernel, `resetMask: bad pointer ${resetMask}`);
    }
  }
  if (T === 0) return;
  k.exports.rglruScanF32(y, h, logA, xGated, resetMask, T, W);
}

/**
 * RWKV-4 WKV (HF rwkv_linear_attention_cpu) over T tokens: key, value, out [T, C]; timeDecay [C] (the
 * raw parameter; −exp is applied inside, as HF does); timeFirst [C]; state [3, C] = HF's
 * (num_state, den_state, max_state) of this layer (HF state[2], state[3], state[4]); the token-shift
 * parts of HF's state belong to the caller. One call over T tokens is bit-identical to T single steps.
 */
export function wkv4(k: K, out: number, state: number, key: number, value: number, timeDecay: number, timeFirst: number, T: number, C: number): void {
  const kernel = 'wkv4';
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'C', C);
  checkBuf(k, kernel, 'out', out, T * C * 4);
  checkBuf(k, kernel, 'state', state, 3 * C * 4);
  checkBuf(k, kernel, 'key', key, T * C * 4);
  checkBuf(k, kernel, 'value', value, T * C * 4);
  checkBuf(k, kernel, 'timeDecay', timeDecay, C * 4);
  checkBuf(k, kernel, 'timeFirst', timeFirst, C * 4);
  if (T === 0) return;
  k.exports.wkv4F32(out, state, key, value, timeDecay, timeFirst, T, C);
}

/** HF's initial WKV state: num = den = 0, max = −1e38. */
export function wkv4InitState(k: K, state: number, C: number): void {
  checkInt('wkv4InitState', 'C', C);
  checkBuf(k, 'wkv4InitState', 'state', state, 3 * C * 4);
  const s = k.arena.f32(state, 3 * C);
  s.fill(0, 0, 2 * C);
  s.fill(-1e38, 2 * C);
}
