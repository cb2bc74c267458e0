// The WASM executor of the model description: runs each op at once on the kernels of src/kernels,
// over the T tokens of a chunk at positions pos0 … pos0+T−1 of one session's state.
//
// Temporaries come from one scratch area of the arena, bump-allocated and released at the end of
// their scope. Its size is planned when the model is built: the net runs once "dry" for a chunk of
// maxChunk tokens, ops allocating what they would but running no kernels, and the high-water mark
// is reserved. No forward pass grows memory.

import { KernelError } from '../kernels/runtime';
import type { WasmInstance } from '../kernels/runtime';
import type { SeqState, RegionSpec } from '../runtime/state';
import { OpTable, type Graph, type OpDef, type Tensor } from './graph';

export const WASM_OPS = new OpTable<WasmGraph>('wasm');

/** The part of a net the executor runs: forward(g, all) returns the logits tensor. */
export interface GraphNet {
  forward(g: Graph, all: boolean): Tensor;
}

const ALIGN = 64;

export class WasmGraph implements Graph {
  readonly backend = 'wasm';
  T = 0;
  pos0 = 0;
  /** Planning pass: ops allocate their temporaries but run nothing. */
  dry = false;
  /** Token ids of the chunk. */
  ids: Int32Array = new Int32Array(0);
  private seq: SeqState | null = null;
  private base = 0;
  private capacity = 0;
  private top = 0;
  private high = 0;
  /** i32[maxChunk]: the chunk's positions (pos0 + t), for RoPE. */
  private positionsPtr = 0;
  private where = '';
  private readonly consts = new Map<object, number>();
  /** The memory's buffer, taken once per forward (nothing grows memory during one). */
  private buf: ArrayBuffer | SharedArrayBuffer;
  /** All of memory as floats (same lifetime as buf). */
  private heap: Float32Array;
  /** Host index space for ops that group rows (MoE routing), grown as needed. */
  private ints = new Int32Array(64);

  /** maxContext: the positions a session holds (ops may need scratch of that many floats). */
  constructor(readonly k: WasmInstance, readonly exact: boolean, readonly maxChunk: number, readonly maxContext: number) {
    this.buf = k.memory.buffer;
    this.heap = new Float32Array(this.buf);
  }

  /** Sizes and reserves the scratch area by running `net` dry for a full chunk (at load time). */
  plan(net: GraphNet): void {
    this.dry = true;
    this.T = this.maxChunk;
    this.pos0 = 0;
    this.ids = new Int32Array(this.maxChunk);
    this.top = this.high = 0;
    this.capacity = Infinity;
    try {
      net.forward(this, true);
    } finally {
      this.dry = false;
    }
    this.capacity = this.high;
    this.base = this.k.arena.alloc(Math.max(this.capacity, ALIGN), ALIGN);
    this.positionsPtr = this.k.arena.alloc(this.maxChunk * 4, ALIGN);
  }

  /** Runs `ids` (≤ maxChunk tokens at positions pos0 …) through `net` on `seq`; returns the logits tensor. */
  forward(net: GraphNet, seq: SeqState, ids: Int32Array, pos0: number, all: boolean): Tensor {
    if (!this.base) throw new KernelError('wasm', 'the graph executor was not planned');
    if (ids.length < 1 || ids.length > this.maxChunk) throw new KernelError('wasm', `a chunk of ${ids.length} tokens (1 … ${this.maxChunk})`);
    this.T = ids.length;
    this.pos0 = pos0;
    this.ids = ids;
    this.seq = seq;
    this.top = 0;
    if (this.buf !== this.k.memory.buffer) {
      this.buf = this.k.memory.buffer;
      this.heap = new Float32Array(this.buf);
    }
    const pv = this.k.arena.i32(this.positionsPtr, this.T);
    for (let t = 0; t < this.T; t++) pv[t] = pos0 + t;
    return net.forward(this, all);
  }

  tmp(width: number, rows = this.T): Tensor {
    if (!(width >= 1) || !(rows >= 1)) throw new KernelError('wasm', `${this.where}: a temporary of ${rows}×${width}`);
    const bytes = Math.ceil((rows * width * 4) / ALIGN) * ALIGN;
    const off = this.top;
    if (off + bytes > this.capacity) throw new KernelError('wasm', `${this.where}: scratch of ${this.capacity} bytes exhausted (the planning pass saw less)`);
    this.top += bytes;
    if (this.top > this.high) this.high = this.top;
    return { off: this.base + off, rows, width };
  }

  scope<R>(label: string, fn: () => R): R {
    const mark = this.top, outer = this.where;
    this.where = label;
    try {
      return fn();
    } finally {
      this.top = mark;
      this.where = outer;
    }
  }

  last(x: Tensor): Tensor {
    return { off: x.off + (x.rows - 1) * x.width * 4, rows: 1, width: x.width };
  }

  // An op's temporaries end with it (after a throw, the next forward starts the scratch afresh).
  run<A>(op: OpDef<A>, args: A): void {
    const fn = WASM_OPS.get(op, this.where || 'model');
    const mark = this.top;
    fn(this, args);
    this.top = mark;
  }

  /** The arena address of a state region of the session being run (0 while planning). */
  state(spec: RegionSpec): number {
    return this.seq && !this.dry ? this.seq.ptr(spec) : 0;
  }

  /** The session being run. */
  get session(): SeqState {
    if (!this.seq) throw new KernelError('wasm', `${this.where}: no session bound`);
    return this.seq;
  }

  get positions(): number {
    return this.positionsPtr;
  }

  /** Places named in errors. */
  get label(): string {
    return this.where;
  }

  /** An arena copy of host floats, made once per key object (while planning, at load time). */
  constant(key: object, data: Float32Array): number {
    let p = this.consts.get(key);
    if (p === undefined) {
      p = this.k.arena.putF32(data).ptr;
      this.consts.set(key, p);
    }
    return p;
  }

  f32(t: Tensor): Float32Array {
    return new Float32Array(this.buf, t.off, t.rows * t.width);
  }

  /** Copies n floats from byte offset src to byte offset dst (ranges may overlap). */
  move(dst: number, src: number, n: number): void {
    this.heap.copyWithin(dst >> 2, src >> 2, (src >> 2) + n);
  }

  /** The tensor's floats read as int32 (index outputs of kernels). */
  i32(t: Tensor): Int32Array {
    return new Int32Array(this.buf, t.off, t.rows * t.width);
  }

  /** Host int32 space of at least n entries, valid until the next call. */
  hostInts(n: number): Int32Array {
    if (this.ints.length < n) this.ints = new Int32Array(Math.max(n, 2 * this.ints.length));
    return this.ints;
  }
}
