// The resources of a model's WebGPU forward pass: the net's weights uploaded once, in their arena
// layout (GGUF blocks for Q8_0/Q4_0), constants (norm weights, biases, RoPE tables), and the float
// layouts of the activation buffer `a` and of session state `st`. The WASM model is built first (it
// parses the checkpoint, permutes and quantizes the weights, and defines the net); the WebGPU
// executor (graph.ts) records the net's forward pass against this builder.
//
// Buffers (see ops.ts GpuBufs): activations `a` (offsets from `act`), session state `st` (offsets
// from `state()`; recurrent regions are marked `fixed` so a session can keep restore points of just
// those), constants `c`, integer scratch `ids` (routing ids, then the token ids of the sequence).

import { toF32 } from '../formats/dtype';
import { KernelError } from '../kernels/runtime';
import { rowBytes, type Weight } from '../kernels/types';
import type { RegionSpec } from '../runtime/state';
import type { Model } from '../models/model';
import type { GpuKernels, Dispatch, GpuBufs, GpuWeight } from './ops';

export { TOKENS_BASE } from './ops';

export const unsupported = (what: string) => new KernelError('webgpu', `${what} has no WebGPU path yet (use backend 'wasm')`);

/** Bump allocator of float offsets (16-byte aligned). */
export class Floats {
  top = 0;
  take(n: number): number {
    const o = this.top;
    this.top += Math.ceil(Math.max(n, 1) / 4) * 4;
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

export class GpuBuilder {
  readonly K: GpuKernels;
  /** Activation / scratch floats of `a`. */
  readonly act = new Floats();
  /** State floats of `st`. */
  private readonly stateAlloc = new Floats();
  /** [offset, floats) ranges of `st` that cannot be cut back by position (recurrent state). */
  readonly fixedRanges: [number, number][] = [];
  private readonly consts: Float32Array[] = [];
  private constTop = 0;
  private readonly constByPtr = new Map<number, number>();
  private readonly weights = new Map<string, GpuWeight>();
  readonly emits: Emit[] = [];
  weightBytes = 0;

  constructor(readonly model: Model, K: GpuKernels) {
    this.K = K;
  }

  get maxContext(): number {
    return this.model.maxContext;
  }

  /** Adds dispatches, built when a session binds its buffers. */
  emit(e: Emit): void {
    this.emits.push(e);
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

  packConsts(): Float32Array {
    const all = new Float32Array(Math.max(this.constTop, 4));
    let o = 0;
    for (const c of this.consts) {
      all.set(c, o);
      o += c.length;
    }
    return all;
  }

  /** Offset in `c` of a copy of `data` (arena vectors deduplicated by pointer). */
  constant(data: Float32Array, ptr?: number): number {
    if (ptr !== undefined && this.constByPtr.has(ptr)) return this.constByPtr.get(ptr)!;
    const off = this.constTop;
    const copy = data.slice();
    // Keep constants 16-byte aligned like everything else.
    const padded = new Float32Array(Math.ceil(Math.max(copy.length, 1) / 4) * 4);
    padded.set(copy);
    this.consts.push(padded);
    this.constTop += padded.length;
    if (ptr !== undefined) this.constByPtr.set(ptr, off);
    return off;
  }

  /** An arena f32 vector (norm weights, biases, conv taps) as a constant. */
  vec(ptr: number, n: number): number {
    return this.constant(this.model.k.arena.f32(ptr, n), ptr);
  }

  rawWeight(w: Weight): { bytes: Uint8Array; dtype: 'f32' | 'q8_0' | 'q4_0' } {
    const n = w.rows * rowBytes(w.dtype, w.cols);
    const src = this.model.k.arena.u8(w.ptr, n);
    if (w.dtype === 'f32' || w.dtype === 'q8_0' || w.dtype === 'q4_0') return { bytes: src, dtype: w.dtype };
    // f16 / bf16 go up as f32 (exact widening).
    const f = toF32(w.dtype, src, w.rows * w.cols);
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

  /** The same matrix of every expert, stacked in one buffer. */
  stack(ws: Weight[], label: string): GpuWeight {
    const parts = ws.map((w) => this.rawWeight(w));
    const per = parts[0].bytes.byteLength;
    const all = new Uint8Array(per * parts.length);
    parts.forEach((p, e) => all.set(p.bytes, e * per));
    this.weightBytes += all.byteLength;
    return this.K.weight(all, parts[0].dtype, ws[0].rows, ws[0].cols, ws.length, label);
  }
}
