// Shared pieces of the WebGPU check scripts (test/webgpu/checks-*.ts): a seeded random source,
// error measures, the result collector that prints the one JSON line { adapter, results }, device
// acquisition that prints { error } instead, and the buffer set a kernel check dispatches into.

import { BufferUsage } from '../../src/webgpu/flags';
import { acquireGpu, type GpuDevice } from '../../src/webgpu/device';
import { GpuKernels, TOKENS_BASE, writeStep, type Dispatch, type GpuBufs } from '../../src/webgpu/ops';

/** A linear congruential generator from `seed`: `rnd()` uniform in [−1, 1), `randn(n, s, m)` n values m + rnd()·s. */
export function rng(seed: number) {
  let state = seed;
  const rnd = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return (state / 2 ** 32) * 2 - 1;
  };
  const randn = (n: number, s = 1, m = 0) => Float32Array.from({ length: n }, () => m + rnd() * s);
  return { rnd, randn };
}

/** max |a − b| / max |b| (Infinity on any non-finite difference or a length mismatch). */
export function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!Number.isFinite(d)) return Infinity;
    num = Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]));
  }
  return den ? num / den : num;
}

/** n NaNs: written over outputs before a dispatch, so a value the kernel did not write shows. */
export const nan = (n: number) => new Float32Array(n).fill(NaN);

export interface CheckResult {
  name: string;
  err: number;
  tol: number;
  pass: boolean;
  detail?: string;
}

/** Collects check results and prints them as one JSON line. */
export class Checks {
  readonly results: CheckResult[] = [];

  /** A measured error against its tolerance: passes when err ≤ tol. */
  check = (name: string, err: number, tol: number) => {
    this.results.push({ name, err, tol, pass: err <= tol });
  };

  /** A yes / no check (err 1 when it fails), with a detail kept only on failure. */
  ok = (name: string, ok: boolean, detail?: string) => {
    this.results.push({ name, err: ok ? 0 : 1, tol: 0, pass: ok, detail: ok ? undefined : detail });
  };

  /** Prints { adapter, ...extra, results }. */
  print(adapter: string, extra: Record<string, unknown> = {}) {
    console.log(JSON.stringify({ adapter, ...extra, results: this.results }));
  }
}

/** Prints { error: "Name: message", stack } for an exception thrown by a check script. */
export function printError(e: unknown, extra: Record<string, unknown> = {}) {
  const err = e as Error;
  console.log(JSON.stringify({ error: `${err.name}: ${err.message}`, stack: err.stack, ...extra }));
}

/** Runs `fn` on an acquired device; prints { error } when none is acquired or `fn` throws. */
export async function withGpu(fn: (gpu: GpuDevice) => Promise<void>): Promise<void> {
  let gpu: GpuDevice;
  try {
    gpu = await acquireGpu();
  } catch (e) {
    console.log(JSON.stringify({ error: (e as Error).message }));
    return;
  }
  try {
    await fn(gpu);
  } catch (e) {
    printError(e);
  }
}

/** Kernels on `gpu` and the buffer set a check dispatches into, with host writes and read-backs. */
export function gpuBench(gpu: GpuDevice) {
  const K = new GpuKernels(gpu);
  const dev = gpu.device;
  /** Writes `d` at float offset `off` of `buf`. */
  const put = (buf: GPUBuffer, off: number, d: Float32Array | Uint32Array) => dev.queue.writeBuffer(buf, off * 4, d);
  /** Fills n floats at `off` of `buf` with NaN. */
  const poison = (buf: GPUBuffer, off: number, n: number) => put(buf, off, nan(n));
  /**
   * Activations of `actFloats` and state of `stFloats` floats, both NaN; constants uploaded from
   * `cData` (a placeholder without); token ids with `tokens` slots past TOKENS_BASE; the step uniform.
   */
  const mk = (actFloats: number, stFloats: number, cData?: Float32Array, tokens = 64): GpuBufs => {
    const b: GpuBufs = {
      a: K.buffer(actFloats * 4),
      st: K.buffer(stFloats * 4),
      c: cData ? K.upload(cData) : K.buffer(16),
      ids: K.buffer((TOKENS_BASE + tokens) * 4),
      step: K.buffer(16, BufferUsage.UNIFORM | BufferUsage.COPY_DST),
    };
    poison(b.a, 0, actFloats);
    poison(b.st, 0, stFloats);
    return b;
  };
  /** Runs the dispatches, then reads n floats at `off` of `src`. */
  const run = (list: Dispatch[], src: GPUBuffer, off: number, n: number) => K.run(list, { src, off, n }) as Promise<Float32Array>;
  /** Reads n floats at `off` of `src`. */
  const read = (src: GPUBuffer, off: number, n: number) => run([], src, off, n);
  /** Sets the step uniform to token 0 at position `pos`. */
  const setStep = (b: GpuBufs, pos: number) => writeStep(dev, b.step, 0, pos);
  return { K, dev, mk, put, poison, run, read, setStep };
}
