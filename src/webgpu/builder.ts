// Builds a loaded (WASM) model's forward pass as a list of WebGPU dispatches. The WASM model is
// built first (it parses the checkpoint, permutes and quantizes the weights, and defines the net);
// its weights are uploaded once, in their arena layout (GGUF blocks for Q8_0/Q4_0), and each layer
// kind contributes dispatches through a builder registered for its class (./layers/*), so a family
// gains a GPU path by adding a file, not by editing this one.
//
// Buffers (see ops.ts GpuBufs): activations `a` (offsets from `act`), session state `st` (offsets
// from `state()`; recurrent regions are marked `fixed` so a session can keep restore points of just
// those), constants `c`, integer scratch `ids` (routing ids, then the token ids of the sequence).

import { toF32 } from '../formats/dtype';
import { KernelError } from '../kernels/runtime';
import { rowBytes, type Weight } from '../kernels/types';
import type { Block, NormSpec } from '../models/decoder';
import type { Ffn, Mixer } from '../layers/context';
import type { RegionSpec } from '../runtime/state';
import type { Model } from '../models/model';
import { EW, type GpuKernels, type Dispatch, type GpuBufs, type GpuWeight } from './ops';

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

/** Adds a layer's dispatches: reads x (a offset), writes out (a offset); `where` names it in errors. */
export type MixerBuilder<T = any> = (B: GpuBuilder, m: T, x: number, out: number, where: string) => void;
export type FfnBuilder<T = any> = (B: GpuBuilder, f: T, x: number, out: number, where: string) => void;
/** Updates the residual stream at a offset x (hidden floats) in place. */
export type BlockBuilder<T = any> = (B: GpuBuilder, blk: T, x: number, where: string) => void;

type Ctor = abstract new (...args: any[]) => any;
const mixers = new Map<Ctor, MixerBuilder>();
const ffns = new Map<Ctor, FfnBuilder>();
const blocks = new Map<Ctor, BlockBuilder>();

/** Registers the GPU builder of a mixer class (exact class: subclasses register their own). */
export function registerMixer<T>(cls: abstract new (...args: any[]) => T, fn: MixerBuilder<T>): void {
  mixers.set(cls, fn);
}
export function registerFfn<T>(cls: abstract new (...args: any[]) => T, fn: FfnBuilder<T>): void {
  ffns.set(cls, fn);
}
export function registerBlock<T>(cls: abstract new (...args: any[]) => T, fn: BlockBuilder<T>): void {
  blocks.set(cls, fn);
}

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

  /** y[rows, D] = norm(x) (RMSNorm, optionally 1 + w, or LayerNorm with its bias). */
  norm(n: NormSpec, y: number, x: number, D: number, rows = 1): void {
    if (n.kind === 'layer') {
      const w = this.vec(n.w, D), bias = n.b ? this.vec(n.b, D) : -1;
      this.emit((b) => [this.K.layerNorm(b, y, x, w, bias, rows, D, n.eps)]);
      return;
    }
    const w = this.vec(n.w, D);
    this.emit((b) => [this.K.rmsNorm(b, y, x, w, rows, D, n.eps, { addOne: n.addOne })]);
  }

  /** y += x over n floats. */
  add(y: number, x: number, n: number): void {
    this.emit((b) => [this.K.elementwise(b, EW.add, y, y, x, n)]);
  }

  mixer(m: Mixer, x: number, out: number, where: string): void {
    const fn = mixers.get(m.constructor as Ctor);
    if (!fn) throw unsupported(`${where}: mixer ${m.constructor.name}`);
    fn(this, m, x, out, where);
  }

  ffn(f: Ffn, x: number, out: number, where: string): void {
    const fn = ffns.get(f.constructor as Ctor);
    if (!fn) throw unsupported(`${where}: FFN ${f.constructor.name}`);
    fn(this, f, x, out, where);
  }

  block(blk: Block, x: number, where: string): void {
    const fn = blocks.get(blk.constructor as Ctor);
    if (!fn) throw unsupported(`${where} (${blk.constructor.name})`);
    fn(this, blk, x, where);
  }
}
