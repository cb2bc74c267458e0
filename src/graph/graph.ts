// The backend-neutral model description. A family's forward pass is written once, as calls of ops
// on a Graph over tensor handles; an executor runs it. The WASM executor (./wasm.ts) runs each op
// eagerly on the kernels of src/kernels over the T tokens of a chunk. The WebGPU executor
// (src/webgpu/graph.ts) records each op as dispatches once per token count: for one position, whose
// index comes from the step uniform, replayed for every position of decoding; and for a prompt chunk
// of T tokens at positions step.pos … step.pos + T − 1.
//
// Positions are never seen by family code: ops that need them (RoPE, cache appends, attention) take
// them from the executor. Session state is reached through the RegionSpec objects that layers
// declare (runtime/state.ts), never by name.

import { KernelError } from '../kernels/runtime';

/** `rows` rows of `width` floats in the executor's activation memory (`off`: the executor's address). */
export interface Tensor {
  readonly off: number;
  readonly rows: number;
  readonly width: number;
}

/**
 * What a net's forward pass returns: 'logits' (the LM head's output), or 'hidden', the final hidden
 * states (the residual stream after the final norm, the LM head's input), `hidden` floats a row.
 */
export type ForwardOutput = 'logits' | 'hidden';

/** An operation; `A` is its argument record. Executors implement ops by these objects. */
export interface OpDef<A> {
  readonly name: string;
  /**
   * The op reads or writes a sequence's state (caches, recurrent state) or its positions. In a
   * pass over several sequences it runs once per sequence, its per-token tensor arguments (those
   * of the pass's row count) cut to that sequence's rows; every other op runs over all rows.
   */
  readonly perSequence: boolean;
  /** Carries A for type inference only. */
  readonly args?: A;
}

export function defineOp<A>(name: string, o: { perSequence?: boolean } = {}): OpDef<A> {
  return { name, perSequence: o.perSequence ?? false };
}

export interface Graph {
  readonly backend: 'wasm' | 'webgpu';
  /**
   * Rows of this pass: its tokens (the chunk length on WASM, the recording's token count on
   * WebGPU); in a pass over several sequences, their tokens one sequence after another.
   */
  readonly T: number;
  /** Parity mode: quantized weights dequantized in the dot product. */
  readonly exact: boolean;
  /** A planning pass (WASM): ops size their temporaries and compute nothing. */
  readonly dry?: boolean;
  /** A temporary of `rows` (default T) rows of `width` floats, valid until its scope ends. */
  tmp(width: number, rows?: number): Tensor;
  /** Runs `fn` with `label` as the place named in errors and traces; its temporaries end with it. */
  scope<R>(label: string, fn: () => R): R;
  /** The last row of x; in a pass over several sequences, the last row of each. */
  last(x: Tensor): Tensor;
  run<A>(op: OpDef<A>, args: A): void;
}

/** Implementations of ops for one executor kind. */
export class OpTable<G> {
  /** Each op's implementation is kept on the op object under this table's key (one lookup per call). */
  private readonly key = Symbol('impl');
  constructor(readonly backend: string) {}
  set<A>(op: OpDef<A>, fn: (g: G, a: A) => void): void {
    (op as unknown as Record<symbol, unknown>)[this.key] = fn;
  }
  get<A>(op: OpDef<A>, where: string): (g: G, a: A) => void {
    const fn = (op as unknown as Record<symbol, ((g: G, a: A) => void) | undefined>)[this.key];
    if (!fn) {
      const gpu = this.backend === 'webgpu';
      throw new KernelError(this.backend, `${where}: op ${op.name} has no ${gpu ? 'WebGPU' : 'WASM'} path yet${gpu ? ` (use backend 'wasm')` : ''}`);
    }
    return fn as (g: G, a: A) => void;
  }
  has(op: OpDef<unknown>): boolean {
    return (op as unknown as Record<symbol, unknown>)[this.key] !== undefined;
  }
}

/** Checks that tensors agree in shape (an error in a family's description, named with the op). */
export function sameShape(op: string, ...ts: Tensor[]): void {
  const [a] = ts;
  for (const t of ts) {
    if (t.rows !== a.rows || t.width !== a.width) throw new KernelError(op, `shape ${t.rows}×${t.width} does not match ${a.rows}×${a.width}`);
  }
}
