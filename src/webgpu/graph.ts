// The WebGPU executor of the model description (src/graph/graph.ts). A net's forward pass is run
// once against this graph for a fixed token count T: each op records its dispatches (built when a
// session binds its buffers), and a session replays the recording. The T = 1 recording runs one
// position and is replayed for every position fed (decode, greedy batches, short remainders); a
// recording of T > 1 runs a whole prompt chunk at positions step.pos … step.pos + T − 1, matmuls
// over T rows, recurrences over the T tokens in order.
//
// Tensors are float offsets into the recording's activation buffer `a` (each recording lays out its
// own): temporaries are bump-allocated and released when their scope (or the op that took them)
// ends, as on WASM; scratch that every layer reuses (attention score rows) is taken once and kept
// below the release point. State regions live in `st` at offsets the builder hands out once per
// region, so every recording of a model addresses the same state.

import { KernelError } from '../kernels/runtime';
import { OpTable, type Graph, type OpDef, type Tensor } from '../graph/graph';
import type { RegionSpec } from '../runtime/state';
import { Floats, type GpuBuilder, type Emit } from './builder';
import type { GpuKernels } from './ops';

export const GPU_OPS = new OpTable<GpuGraph>('webgpu');

export class GpuGraph implements Graph {
  readonly backend = 'webgpu';
  /** Tokens of the recording. */
  readonly T: number;
  /** The activation floats of `a` this recording lays out (`act.high`: the size `a` needs). */
  readonly act = new Floats();
  /** The recording: dispatch builders in order, called when a session binds its buffers. */
  readonly emits: Emit[] = [];
  private where = '';
  /** Release never goes below this: allocations that outlive every scope (shared scratch). */
  private floor = 0;
  private readonly scratches = new Map<string, { off: number; n: number }>();

  constructor(readonly B: GpuBuilder, readonly exact: boolean, o: { T?: number } = {}) {
    const T = o.T ?? 1;
    if (!Number.isInteger(T) || T < 1) throw new KernelError('webgpu', `a recording of ${T} tokens`);
    this.T = T;
  }

  get K(): GpuKernels {
    return this.B.K;
  }

  get label(): string {
    return this.where;
  }

  tmp(width: number, rows = this.T): Tensor {
    if (!(width >= 1) || !(rows >= 1)) throw new KernelError('webgpu', `${this.where}: a temporary of ${rows}×${width}`);
    return { off: this.act.take(rows * width), rows, width };
  }

  scope<R>(label: string, fn: () => R): R {
    const outer = this.where, mark = this.act.top;
    this.where = label;
    try {
      return fn();
    } finally {
      this.where = outer;
      this.release(mark);
    }
  }

  private release(mark: number): void {
    this.act.top = Math.max(mark, this.floor);
  }

  /**
   * Offset in `a` of `n` floats of scratch named `name`, shared by every op of the recording that asks
   * for it (ops run one after another): allocated once (again when a later op needs more) and never
   * released, so no temporary of a later layer overlaps it.
   */
  scratch(name: string, n: number): number {
    let s = this.scratches.get(name);
    if (!s || s.n < n) {
      s = { off: this.act.take(n), n };
      this.scratches.set(name, s);
      this.floor = this.act.top;
    }
    return s.off;
  }

  last(x: Tensor): Tensor {
    return { off: x.off + (x.rows - 1) * x.width, rows: 1, width: x.width };
  }

  run<A>(op: OpDef<A>, args: A): void {
    const fn = GPU_OPS.get(op, this.where || 'model');
    const mark = this.act.top;
    try {
      fn(this, args);
    } finally {
      this.release(mark);
    }
  }

  /** Adds dispatches, built when a session binds its buffers. */
  emit(e: Emit): void {
    this.emits.push(e);
  }

  /** The `st` offset of a state region: caches (kv or ring) at maxContext positions, recurrent state as is. */
  state(spec: RegionSpec): number {
    return this.B.region(spec, this.where);
  }

  /** Throws unless the activation layout fits one storage binding (`what` names the cause). */
  checkActivations(what: string): void {
    const limit = this.K.gpu.limits.maxStorageBufferBindingSize;
    if (this.act.high * 4 > limit) throw new KernelError('webgpu', `${this.where}: ${what} exceeds the device's storage binding limit ${limit} (use a shorter maxContext)`);
  }
}
