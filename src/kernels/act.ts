// Elementwise activations, vector arithmetic, row softmax, argmax and log-sum-exp (f32).
// Buffers are arena byte offsets of f32; every op may run in place (y equal to an input).
import { KernelError } from './runtime';
import type { K } from './types';

/** Checks that `p` is a 4-byte aligned offset with `bytes` bytes inside the instance memory. */
export function checkBuf(k: K, kernel: string, name: string, p: number, bytes: number): void {
  if (!Number.isInteger(p) || p <= 0 || p % 4 !== 0) throw new KernelError(kernel, `${name}: bad pointer ${p}`);
  if (p + bytes > k.arena.size) throw new KernelError(kernel, `${name}: ${bytes} bytes at ${p} run past the end of memory (${k.arena.size})`);
}

/** Checks an integer argument ≥ min. */
export function checkInt(kernel: string, name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new KernelError(kernel, `${name} must be an integer ≥ ${min}, got ${v}`);
}

function unary(k: K, kernel: string, y: number, x: number, n: number): void {
  checkInt(kernel, 'n', n, 0);
  checkBuf(k, kernel, 'y', y, n * 4);
  checkBuf(k, kernel, 'x', x, n * 4);
}

function binary(k: K, kernel: string, y: number, a: number, b: number, n: number, an = 'a', bn = 'b'): void {
  checkInt(kernel, 'n', n, 0);
  checkBuf(k, kernel, 'y', y, n * 4);
  checkBuf(k, kernel, an, a, n * 4);
  checkBuf(k, kernel, bn, b, n * 4);
}

/** y = x·sigmoid(x) */
export function silu(k: K, y: number, x: number, n: number): void {
  unary(k, 'silu', y, x, n);
  k.exports.siluF32(y, x, n);
}

export function sigmoid(k: K, y: number, x: number, n: number): void {
  unary(k, 'sigmoid', y, x, n);
  k.exports.sigmoidF32(y, x, n);
}

/** 'none': 0.5·x·(1 + erf(x/√2)) (f64 erfc, ~1e-12 relative); 'tanh': gelu_pytorch_tanh. */
export function gelu(k: K, y: number, x: number, n: number, approx: 'tanh' | 'none'): void {
  unary(k, 'gelu', y, x, n);
  k.exports.geluF32(y, x, n, approx === 'tanh' ? 1 : 0);
}

/** y = max(x, 0)² */
export function relu2(k: K, y: number, x: number, n: number): void {
  unary(k, 'relu2', y, x, n);
  k.exports.relu2F32(y, x, n);
}

/** torch softplus, beta 1, threshold 20. */
export function softplus(k: K, y: number, x: number, n: number): void {
  unary(k, 'softplus', y, x, n);
  k.exports.softplusF32(y, x, n);
}

/** y = silu(gate)·up */
export function swiglu(k: K, y: number, gate: number, up: number, n: number): void {
  binary(k, 'swiglu', y, gate, up, n, 'gate', 'up');
  k.exports.swigluF32(y, gate, up, n);
}

/** y = gelu(gate)·up */
export function geglu(k: K, y: number, gate: number, up: number, n: number, approx: 'tanh' | 'none'): void {
  binary(k, 'geglu', y, gate, up, n, 'gate', 'up');
  k.exports.gegluF32(y, gate, up, n, approx === 'tanh' ? 1 : 0);
}

export function mul(k: K, y: number, a: number, b: number, n: number): void {
  binary(k, 'mul', y, a, b, n);
  k.exports.mulF32(y, a, b, n);
}

export function add(k: K, y: number, a: number, b: number, n: number): void {
  binary(k, 'add', y, a, b, n);
  k.exports.addF32(y, a, b, n);
}

/** y += s·x */
export function addScaled(k: K, y: number, x: number, s: number, n: number): void {
  unary(k, 'addScaled', y, x, n);
  k.exports.addScaledF32(y, x, s, n);
}

/** y = s·x */
export function scale(k: K, y: number, x: number, s: number, n: number): void {
  unary(k, 'scale', y, x, n);
  k.exports.scaleF32(y, x, s, n);
}

/** y = cap·tanh(x/cap) */
export function softcap(k: K, y: number, x: number, cap: number, n: number): void {
  unary(k, 'softcap', y, x, n);
  if (!(cap > 0)) throw new KernelError('softcap', `cap must be > 0, got ${cap}`);
  k.exports.softcapF32(y, x, cap, n);
}

export interface SoftmaxOptions {
  /** Soft-cap applied to the logits first: cap·tanh(x/cap). */
  cap?: number;
  /** Logits are divided by this after capping. */
  temperature?: number;
  /** One extra logit in every row's denominator (not in the output): the gpt-oss learned sink. */
  sink?: number;
  /**
   * Per-row sinks instead: f32 array pointer; row r uses sinks[floor(r / sinkGroup)], so for
   * attention weights laid out [H, T, n] pass sinkGroup = T (one sink per head).
   */
  sinks?: number;
  sinkGroup?: number;
}

/** In-place, max-subtracted softmax of `rows` rows of n floats (denominator summed in f64). */
export function softmax(k: K, x: number, rows: number, n: number, opts: SoftmaxOptions = {}): void {
  checkInt('softmax', 'rows', rows, 0);
  checkInt('softmax', 'n', n);
  checkBuf(k, 'softmax', 'x', x, rows * n * 4);
  const cap = opts.cap ?? 0;
  if (cap < 0 || !Number.isFinite(cap)) throw new KernelError('softmax', `cap must be ≥ 0, got ${cap}`);
  const temp = opts.temperature ?? 1;
  if (!(temp > 0) || !Number.isFinite(temp)) throw new KernelError('softmax', `temperature must be > 0, got ${temp}`);
  let mode = 0, sinkGroup = 1;
  if (opts.sinks !== undefined && opts.sink !== undefined) throw new KernelError('softmax', 'give sink or sinks, not both');
  if (opts.sink !== undefined) mode = 1;
  if (opts.sinks !== undefined) {
    mode = 2;
    sinkGroup = opts.sinkGroup ?? 1;
    checkInt('softmax', 'sinkGroup', sinkGroup);
    checkBuf(k, 'softmax', 'sinks', opts.sinks, Math.ceil(rows / sinkGroup) * 4);
  }
  k.exports.softmaxF32(x, rows, n, cap, 1 / temp, mode, opts.sink ?? 0, opts.sinks ?? 0, sinkGroup);
}

/** Index of the largest of n floats (first on ties; NaN ignored). */
export function argmax(k: K, x: number, n: number): number {
  checkInt('argmax', 'n', n);
  checkBuf(k, 'argmax', 'x', x, n * 4);
  return k.exports.argmaxF32(x, n);
}

/** log Σ exp(x) over n floats. */
export function logSumExp(k: K, x: number, n: number): number {
  checkInt('logSumExp', 'n', n);
  checkBuf(k, 'logSumExp', 'x', x, n * 4);
  return k.exports.logSumExpF32(x, n);
}
