// What every layer gets at construction (weights, options) and the interfaces of mixers and feed-forward
// layers, whose forward passes are written against the graph (src/graph/graph.ts).

import type { KvCacheType } from '../kernels/kvcache';
import type { ResolvedAttention } from '../runtime/attention-mode';
import type { K } from '../kernels/types';
import type { WeightStore } from '../runtime/weights';
import type { RegionSpec } from '../runtime/state';
import type { Graph, Tensor } from '../graph/graph';

export interface NetOptions {
  /** Parity mode: quantized weights are dequantized in the dot product (no activation quantization). */
  exact: boolean;
  /** Most tokens one forward call processes (prefill is cut into chunks of this size). */
  maxChunk: number;
  /** Element type of attention KV caches (f32, or quantized rows; kernels/kvcache.ts). */
  kvCache: KvCacheType;
  /** Attention at decode: dense (default) or sparse top-k pages (runtime/attention-mode.ts). */
  attention?: ResolvedAttention;
}

/** What a family's constructors get: the kernel instance (load-time weight preparation), the weights, options. */
export class Ctx {
  constructor(readonly k: K, readonly ws: WeightStore, readonly opts: NetOptions) {}
  f32(ptr: number, n: number): Float32Array {
    return this.k.arena.f32(ptr, n);
  }
  get maxChunk(): number {
    return this.opts.maxChunk;
  }
  get kvCache(): KvCacheType {
    return this.opts.kvCache;
  }
  get attention(): ResolvedAttention {
    return this.opts.attention ?? { mode: 'dense' };
  }
}

/** A sequence mixer (attention, SSM, linear attention, conv …) with its own per-sequence state. */
export interface Mixer {
  specs(maxContext: number): RegionSpec[];
  /** out = mixer(x), both [T, hidden], for the pass's tokens. */
  forward(g: Graph, x: Tensor, out: Tensor): void;
}

/** A position-wise feed-forward block (dense MLP or MoE): out = ffn(x). */
export interface Ffn {
  forward(g: Graph, x: Tensor, out: Tensor): void;
}
