// The resources of a model's WebGPU forward pass: the net's weights uploaded once, in their arena
// layout (GGUF blocks for Q8_0/Q4_0 and the K-quants of kernels/kquant.wgsl.ts), constants (norm
// weights, biases, RoPE tables), and the float layout of session state `st`. The WASM model is built
// first (it parses the checkpoint, permutes and quantizes the weights, and defines the net); the
// WebGPU executor (graph.ts) records the net's forward pass against this builder once per token
// count (one position for decode, a prompt chunk of T positions for prefill); every recording shares
// the builder's weights, constants and state layout.
//
// Buffers (see ops.ts GpuBufs): activations `a` (each recording lays out its own, see GpuGraph),
// session state `st` (one region per declared state region, allocated by the first recording that
// names it; recurrent regions are marked `fixed` so a session can keep restore points of just
// those), constants `c`, integer scratch `ids` (routing ids, then the token ids of the sequence).

import { quantizeQ8_0, toF32 } from '../formats/dtype';
import { isKQuant } from '../formats/kquants';
import { KernelError } from '../kernels/runtime';
import { rowBytes, type Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import type { Model } from '../models/model';
import { isGpuKQuant } from './kernels/kquant.wgsl';
import type { GpuKernels, Dispatch, GpuBufs, GpuWeight, GpuWeightDType } from './ops';

export { TOKENS_BASE } from './ops';

export const unsupported = (what: string) => new KernelError('webgpu', `${what} has no WebGPU path yet (use backend 'wasm')`);

/** Bump allocator of float offsets (16-byte aligned); `high` is the most ever in use. */
export class Floats {
  top = 0;
  high = 0;
  take(n: number): number {
    const o = this.top;
    this.top += Math.ceil(Math.max(n, 1) / 4) * 4;
    this.high = Math.max(this.high, this.top);
    return o;
  }
}

/** One allocation of session state in `st` and the state region (as its layer declared it) it holds. */
export interface GpuStateAlloc {
  off: number;
  floats: number;
  kind: 'kv' | 'fixed';
  region: RegionSpec | null;
}

export type Emit = (b: GpuBufs) => Dispatch[];

/** FNV-1a over the words of a float vector (constant deduplication). */
function hashWords(d: Float32Array): number {
  const u = new Uint32Array(d.buffer, d.byteOffset, d.length);
  let h = 0x811c9dc5 ^ u.length;
  for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i], 0x01000193);
  return h >>> 0;
}

export class GpuBuilder {
  readonly K: GpuKernels;
  /** State floats of `st`. */
  private readonly stateAlloc = new Floats();
  /** [offset, floats) ranges of `st` that cannot be cut back by position (recurrent state). */
  readonly fixedRanges: [number, number][] = [];
  private readonly consts: Float32Array[] = [];
  private constTop = 0;
  private readonly constByPtr = new Map<number, number>();
  /** Constants without an arena pointer, by content hash: recordings of other token counts reuse them. */
  private readonly constByHash = new Map<number, { data: Float32Array; off: number }[]>();
  private readonly weights = new Map<string, GpuWeight>();
  /** The `st` offset of every state region a recording has named. */
  private readonly regions = new Map<RegionSpec, number>();
  weightBytes = 0;

  constructor(readonly model: Model, K: GpuKernels) {
    this.K = K;
  }

  get maxContext(): number {
    return this.model.maxContext;
  }

  /** Every allocation of `st`, with the WASM state region it holds (see GpuStateMap). */
  readonly stateAllocs: GpuStateAlloc[] = [];

  /**
   * State floats of `st`: `kv` for position-indexed caches (cut back by moving the position), `fixed`
   * for recurrent state. `region` names the WASM state region (runtime/state.ts) the floats hold, so
   * snapshots carry them: a `kv` allocation holds maxContext positions of the region's perToken
   * floats (a WASM ring too: on the GPU it is a full-length cache); a `fixed` one the region as is.
   */
  state(n: number, kind: 'kv' | 'fixed', region?: RegionSpec): number {
    const o = this.stateAlloc.take(n);
    if (kind === 'fixed') {
      const last = this.fixedRanges[this.fixedRanges.length - 1];
      const len = this.stateAlloc.top - o;
      if (last && last[0] + last[1] === o) last[1] += len;
      else this.fixedRanges.push([o, len]);
    }
    this.stateAllocs.push({ off: o, floats: n, kind, region: region ?? null });
    return o;
  }

  get stateFloats(): number {
    return this.stateAlloc.top;
  }

  /**
   * The `st` offset of a state region, allocated the first time any recording names it: caches (kv
   * or ring) at maxContext positions, recurrent state as is. `where` names the layer in errors.
   */
  region(spec: RegionSpec, where: string): number {
    let off = this.regions.get(spec);
    if (off !== undefined) return off;
    const L = this.maxContext;
    off = spec.kind === 'fixed' ? this.state(spec.floats!, 'fixed', spec) : this.state(L * spec.perToken!, 'kv', spec);
    const limit = this.K.gpu.limits.maxStorageBufferBindingSize;
    if (this.stateFloats * 4 > limit) {
      throw new KernelError('webgpu', `${where}: session state for ${L} positions needs ${this.stateFloats * 4} bytes, over the device's storage binding limit ${limit} (use a shorter maxContext)`);
    }
    this.regions.set(spec, off);
    return off;
  }

  /** Floats of `c` so far (a recording made after `c` was uploaded may add constants). */
  get constFloats(): number {
    return this.constTop;
  }

  packConsts(): Float32Array {
    const all = new Float32Array(Math.max(this.constTop, 4));
    let o = 0;
    for (const c of this.consts) {
      all.set(c, o);
      o += c.length;
    }
    return all;
  }

  /** Offset in `c` of a copy of `data` (arena vectors deduplicated by pointer, others by content). */
  constant(data: Float32Array, ptr?: number): number {
    if (ptr !== undefined && this.constByPtr.has(ptr)) return this.constByPtr.get(ptr)!;
    const h = ptr === undefined ? hashWords(data) : 0;
    if (ptr === undefined) {
      const same = this.constByHash.get(h)?.find((e) => e.data.length === data.length && e.data.every((v, i) => Object.is(v, data[i])));
      if (same) return same.off;
    }
    const off = this.constTop;
    const copy = data.slice();
    // Keep constants 16-byte aligned like everything else.
    const padded = new Float32Array(Math.ceil(Math.max(copy.length, 1) / 4) * 4);
    padded.set(copy);
    this.consts.push(padded);
    this.constTop += padded.length;
    if (ptr !== undefined) this.constByPtr.set(ptr, off);
    else {
      const list = this.constByHash.get(h) ?? [];
      list.push({ data: copy, off });
      this.constByHash.set(h, list);
    }
    return off;
  }

  /** An arena f32 vector (norm weights, biases, conv taps) as a constant. */
  vec(ptr: number, n: number): number {
    return this.constant(this.model.k.arena.f32(ptr, n), ptr);
  }

  /**
   * The bytes and GPU dtype of a weight. `asQ8_0`: K-quant weights go up re-quantized to q8_0 (a
   * stack of experts of different K-quant types shares one dtype that way).
   */
  rawWeight(w: Weight, asQ8_0 = false): { bytes: Uint8Array; dtype: GpuWeightDType } {
    const n = w.rows * rowBytes(w.dtype, w.cols);
    const src = this.model.k.arena.u8(w.ptr, n);
    // f32, Q8_0, Q4_0 and the K-quants q2_k … q6_k, iq4_nl, iq4_xs, mxfp4 go up as their blocks.
    if (w.dtype === 'f32' || w.dtype === 'q8_0' || w.dtype === 'q4_0' || (isGpuKQuant(w.dtype) && !asQ8_0)) return { bytes: src, dtype: w.dtype };
    // f16 / bf16 go up as f32 (exact widening).
    const f = toF32(w.dtype, src, w.rows * w.cols);
    // q8_k (no WGSL kernels), and any K-quant with asQ8_0, goes up dequantized and re-quantized to
    // q8_0 (whole 32-blocks per row), else as f32.
    if (isKQuant(w.dtype) && w.cols % 32 === 0) return { bytes: quantizeQ8_0(f, w.rows, w.cols, w.name), dtype: 'q8_0' };
    return { bytes: new Uint8Array(f.buffer, f.byteOffset, f.byteLength), dtype: 'f32' };
  }

  /** A weight matrix on the device (uploaded once per arena matrix). */
  weight(w: Weight, label: string): GpuWeight {
    const key = `${w.ptr}:${w.rows}:${w.cols}:${w.dtype}`;
    let g = this.weights.get(key);
    if (!g) {
      const { bytes, dtype } = this.rawWeight(w);
      g = this.K.weight(bytes, dtype, w.rows, w.cols, 1, label);
      this.weightBytes += bytes.byteLength;
      this.weights.set(key, g);
    }
    return g;
  }

  /** The same matrix of every expert, stacked in one buffer (uploaded once per list of arena matrices). */
  stack(ws: Weight[], label: string): GpuWeight {
    const key = `stack:${ws.map((w) => `${w.ptr}:${w.rows}:${w.cols}:${w.dtype}`).join(',')}`;
    const hit = this.weights.get(key);
    if (hit) return hit;
    const mixed = ws.some((w) => w.dtype !== ws[0].dtype);
    const parts = ws.map((w) => this.rawWeight(w, mixed));
    const per = parts[0].bytes.byteLength;
    const all = new Uint8Array(per * parts.length);
    parts.forEach((p, e) => all.set(p.bytes, e * per));
    this.weightBytes += all.byteLength;
    const g = this.K.weight(all, parts[0].dtype, ws[0].rows, ws[0].cols, ws.length, label);
    this.weights.set(key, g);
    return g;
  }
}
