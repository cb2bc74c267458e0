// What every layer gets: the kernel instance, the weights, shared scratch, and numerics options.

import { matmul } from '../kernels/matmul';
import { KernelError, type Buf } from '../kernels/runtime';
import type { K, Weight } from '../kernels/types';
import type { WeightStore } from '../runtime/weights';
import type { RegionSpec, SeqState } from '../runtime/state';

/**
 * Scratch shared by all layers: layers declare the floats they need per key while the net is
 * built (`need`), one allocation happens after (`allocate`), then `get` hands out offsets.
 * Layers run one after another, so the same key can serve every layer.
 */
export class Scratch {
  private sizes = new Map<string, number>();
  private bufs = new Map<string, Buf>();
  constructor(private readonly k: K) {}
  need(key: string, floats: number): void {
    if (this.bufs.size) throw new KernelError('scratch', `need(${key}) after allocation`);
    this.sizes.set(key, Math.max(this.sizes.get(key) ?? 0, Math.ceil(floats)));
  }
  allocate(): void {
    for (const [key, n] of this.sizes) this.bufs.set(key, this.k.arena.f32buf(Math.max(n, 4)));
  }
  get(key: string): number {
    const b = this.bufs.get(key);
    if (!b) throw new KernelError('scratch', `no scratch buffer ${key}`);
    return b.ptr;
  }
  buf(key: string): Buf {
    const b = this.bufs.get(key);
    if (!b) throw new KernelError('scratch', `no scratch buffer ${key}`);
    return b;
  }
}

export interface NetOptions {
  /** Parity mode: quantized weights are dequantized in the dot product (no activation quantization). */
  exact: boolean;
  /** Most tokens one forward call processes (prefill is cut into chunks of this size). */
  maxChunk: number;
}

export class Ctx {
  readonly scratch: Scratch;
  constructor(readonly k: K, readonly ws: WeightStore, readonly opts: NetOptions) {
    this.scratch = new Scratch(k);
  }
  /** y[T, w.rows] = x[T, w.cols] · wᵀ */
  mm(y: number, x: number, w: Weight, T: number): void {
    matmul(this.k, y, x, w, T, { exact: this.opts.exact });
  }
  f32(ptr: number, n: number): Float32Array {
    return this.k.arena.f32(ptr, n);
  }
  get maxChunk(): number {
    return this.opts.maxChunk;
  }
}

/** A sequence mixer (attention, SSM, linear attention, conv …) with its own per-sequence state. */
export interface Mixer {
  specs(maxContext: number): RegionSpec[];
  /** out[T, hidden] = mixer(x[T, hidden]) for tokens at positions pos0 … pos0+T−1. */
  forward(state: SeqState, x: number, out: number, T: number, pos0: number): void;
}

/** A position-wise feed-forward block (dense MLP or MoE). */
export interface Ffn {
  forward(x: number, out: number, T: number): void;
}

/** Adds bias[n] to each of T rows of y[T, n] (host loop; biases are small). */
export function addBias(ctx: Ctx, y: number, bias: number, T: number, n: number): void {
  if (!bias) return;
  const b = ctx.f32(bias, n);
  const v = ctx.f32(y, T * n);
  for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) v[t * n + i] += b[i];
}
