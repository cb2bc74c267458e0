// The WebGPU executor of the model description (src/graph/graph.ts). A net's forward pass is run
// once against this graph, for one position: each op records its dispatches (built when a session
// binds its buffers), and a session replays the recording for every position it feeds, many
// positions per submission, the position coming from the step uniform.
//
// Tensors are float offsets into the activation buffer `a`; state regions are allocated in `st`
// (position-indexed caches at full length, recurrent state as `fixed` ranges) the first time an op
// names them.

import { KernelError } from '../kernels/runtime';
import { OpTable, type Graph, type OpDef, type Tensor } from '../graph/graph';
import type { RegionSpec } from '../runtime/state';
import type { GpuBuilder, Emit } from './builder';
import type { GpuKernels } from './ops';

export const GPU_OPS = new OpTable<GpuGraph>('webgpu');

export class GpuGraph implements Graph {
  readonly backend = 'webgpu';
  readonly T = 1;
  private where = '';
  private readonly states = new Map<RegionSpec, number>();

  constructor(readonly B: GpuBuilder, readonly exact: boolean) {}

  get K(): GpuKernels {
    return this.B.K;
  }

  get label(): string {
    return this.where;
  }

  tmp(width: number, rows = 1): Tensor {
    if (!(width >= 1) || !(rows >= 1)) throw new KernelError('webgpu', `${this.where}: a temporary of ${rows}×${width}`);
    return { off: this.B.act.take(rows * width), rows, width };
  }

  // Temporaries are not reused across scopes: activations of one position are small.
  scope<R>(label: string, fn: () => R): R {
    const outer = this.where;
    this.where = label;
    try {
      return fn();
    } finally {
      this.where = outer;
    }
  }

  last(x: Tensor): Tensor {
    return { off: x.off + (x.rows - 1) * x.width, rows: 1, width: x.width };
  }

  run<A>(op: OpDef<A>, args: A): void {
    GPU_OPS.get(op, this.where || 'model')(this, args);
  }

  emit(e: Emit): void {
    this.B.emit(e);
  }

  /** The `st` offset of a state region: caches (kv or ring) at maxContext positions, recurrent state as is. */
  state(spec: RegionSpec): number {
    let off = this.states.get(spec);
    if (off !== undefined) return off;
    const L = this.B.maxContext;
    off = spec.kind === 'fixed' ? this.B.state(spec.floats!, 'fixed', spec) : this.B.state(L * spec.perToken!, 'kv', spec);
    const limit = this.K.gpu.limits.maxStorageBufferBindingSize;
    if (this.B.stateFloats * 4 > limit) {
      throw new KernelError('webgpu', `${this.where}: session state for ${L} positions needs ${this.B.stateFloats * 4} bytes, over the device's storage binding limit ${limit} (use a shorter maxContext)`);
    }
    this.states.set(spec, off);
    return off;
  }
}
