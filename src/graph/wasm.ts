// The WASM executor of the model description: runs each op at once on the kernels of src/kernels,
// over the T tokens of a chunk at positions pos0 … pos0+T−1 of one session's state, or over the
// tokens of several sessions in one pass (forwardBatch): ops without state (matrix products, norms,
// MoE, elementwise) run once over every row, so each weight streams once for the whole batch;
// per-sequence ops (caches, scans, convolutions) run once per session on its rows.
//
// Temporaries come from one scratch area of the arena, bump-allocated and released at the end of
// their scope. Its size is planned when the model is built: the net runs once "dry" for a chunk of
// maxChunk tokens, ops allocating what they would but running no kernels, and the high-water mark
// is reserved. No forward pass grows memory.

import type { MatmulOptions } from '../kernels/matmul';
import { KernelError } from '../kernels/runtime';
import type { WasmInstance } from '../kernels/runtime';
import type { SeqState, RegionSpec } from '../runtime/state';
import { OpTable, type ForwardOutput, type Graph, type OpDef, type Tensor } from './graph';

export const WASM_OPS = new OpTable<WasmGraph>('wasm');

/**
 * The part of a net the executor runs: forward(g, all) returns the logits tensor, or the final
 * hidden states with output 'hidden'.
 */
export interface GraphNet {
  /** Whether forward() takes output 'hidden'. */
  readonly hiddenOutput?: boolean;
  forward(g: Graph, all: boolean, output?: ForwardOutput): Tensor;
}

const ALIGN = 64;

/** One session's rows in a pass: rows r0 … r0+T−1, at positions pos0 … pos0+T−1. */
interface Segment {
  seq: SeqState;
  pos0: number;
  r0: number;
  T: number;
  prompt: boolean;
}

/** A session's part of a batched pass. */
export interface BatchItem {
  seq: SeqState;
  ids: Int32Array;
  pos0: number;
  /** The rows are part of a forward call of several tokens (see WasmGraph.prompt). */
  prompt?: boolean;
}

const isTensor = (v: unknown): v is Tensor =>
  typeof v === 'object' && v !== null && typeof (v as Tensor).off === 'number' && typeof (v as Tensor).rows === 'number' && typeof (v as Tensor).width === 'number';

/**
 * `v` with every tensor of `rows` rows cut to rows r0 … r0+n−1, looking into arrays and plain
 * objects (two levels); objects holding no such tensor come back as they are.
 */
function cutRows(v: unknown, rows: number, r0: number, n: number, depth = 0): unknown {
  if (isTensor(v)) return v.rows === rows ? { off: v.off + r0 * v.width * 4, rows: n, width: v.width } : v;
  if (depth > 2 || typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    const out = v.map((x) => cutRows(x, rows, r0, n, depth + 1));
    return out.some((x, i) => x !== v[i]) ? out : v;
  }
  if (Object.getPrototypeOf(v) !== Object.prototype) return v;
  let out: Record<string, unknown> | null = null;
  for (const [key, x] of Object.entries(v)) {
    const c = cutRows(x, rows, r0, n, depth + 1);
    if (c !== x) (out ??= { ...(v as Record<string, unknown>) })[key] = c;
  }
  return out ?? v;
}

export class WasmGraph implements Graph {
  readonly backend = 'wasm';
  T = 0;
  private first = 0;
  /** Planning pass: ops allocate their temporaries but run nothing. */
  dry = false;
  /** Token ids of the chunk. */
  ids: Int32Array = new Int32Array(0);
  /**
   * The pass is a chunk of a forward call of several tokens (a prompt), set by the caller around
   * forward(); in a batched pass, per session. Ops that treat one-token decode steps apart (sparse
   * top-k attention) run a prompt chunk as prefill, even a chunk of one token.
   */
  prompt = false;
  private seq: SeqState | null = null;
  /** The sessions of a batched pass (empty for a pass of one session). */
  private segs: Segment[] = [];
  /** Inside a per-sequence op of a batched pass. */
  private inSegment = false;
  /** Planning: last() sizes its gather as for a batch of one-token sessions. */
  private planLast = false;
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
  /** The options of every matrix product the ops run (one object, made once). */
  readonly matmulOpts: MatmulOptions;

  constructor(readonly k: WasmInstance, readonly exact: boolean, readonly maxChunk: number, readonly maxContext: number) {
    this.matmulOpts = { exact };
    this.buf = k.memory.buffer;
    this.heap = new Float32Array(this.buf);
  }

  /**
   * Sizes and reserves the scratch area by running `net` dry for a full chunk (at load time): once
   * with every row's logits, once as a batch of maxChunk sessions taking each one's last row, and
   * once with every row's hidden states where the net has that output.
   */
  plan(net: GraphNet): void {
    this.dry = true;
    this.T = this.maxChunk;
    this.first = 0;
    this.ids = new Int32Array(this.maxChunk);
    this.high = 0;
    this.capacity = Infinity;
    try {
      this.top = 0;
      net.forward(this, true);
      this.top = 0;
      this.planLast = true;
      net.forward(this, false);
      this.planLast = false;
      if (net.hiddenOutput) {
        this.top = 0;
        net.forward(this, true, 'hidden');
      }
    } finally {
      this.dry = false;
      this.planLast = false;
    }
    this.capacity = this.high;
    this.base = this.k.arena.alloc(Math.max(this.capacity, ALIGN), ALIGN);
    this.positionsPtr = this.k.arena.alloc(this.maxChunk * 4, ALIGN);
  }

  /**
   * Runs `ids` (≤ maxChunk tokens at positions pos0 …) through `net` on `seq`; returns the logits
   * tensor, or the final hidden states with output 'hidden'.
   */
  forward(net: GraphNet, seq: SeqState, ids: Int32Array, pos0: number, all: boolean, output: ForwardOutput = 'logits'): Tensor {
    if (!this.base) throw new KernelError('wasm', 'the graph executor was not planned');
    if (ids.length < 1 || ids.length > this.maxChunk) throw new KernelError('wasm', `a chunk of ${ids.length} tokens (1 … ${this.maxChunk})`);
    this.T = ids.length;
    this.first = pos0;
    this.ids = ids;
    this.seq = seq;
    this.segs = [];
    this.begin();
    const pv = this.k.arena.i32(this.positionsPtr, this.T);
    for (let t = 0; t < this.T; t++) pv[t] = pos0 + t;
    return net.forward(this, all, output);
  }

  /**
   * Runs the tokens of several sessions (≤ maxChunk in all, each session once) through `net` in one
   * pass; returns the logits tensor: each session's last row in item order, or every row with `all`.
   */
  forwardBatch(net: GraphNet, items: BatchItem[], all: boolean): Tensor {
    if (items.length === 1) {
      const prompt = this.prompt;
      this.prompt = items[0].prompt ?? false;
      try {
        return this.forward(net, items[0].seq, items[0].ids, items[0].pos0, all);
      } finally {
        this.prompt = prompt;
      }
    }
    if (!this.base) throw new KernelError('wasm', 'the graph executor was not planned');
    let rows = 0;
    for (const it of items) {
      if (it.ids.length < 1) throw new KernelError('wasm', 'a batch item without tokens');
      rows += it.ids.length;
    }
    if (!items.length || rows > this.maxChunk) throw new KernelError('wasm', `a batch of ${rows} tokens (1 … ${this.maxChunk})`);
    if (new Set(items.map((it) => it.seq)).size !== items.length) throw new KernelError('wasm', 'a session appears twice in a batch');
    const ids = new Int32Array(rows);
    const pv = this.k.arena.i32(this.positionsPtr, rows);
    this.segs = [];
    let r0 = 0;
    for (const it of items) {
      ids.set(it.ids, r0);
      for (let t = 0; t < it.ids.length; t++) pv[r0 + t] = it.pos0 + t;
      this.segs.push({ seq: it.seq, pos0: it.pos0, r0, T: it.ids.length, prompt: it.prompt ?? false });
      r0 += it.ids.length;
    }
    this.T = rows;
    this.first = 0;
    this.ids = ids;
    this.seq = null;
    this.begin();
    try {
      return net.forward(this, all);
    } finally {
      this.segs = [];
    }
  }

  private begin(): void {
    this.top = 0;
    this.inSegment = false;
    if (this.buf !== this.k.memory.buffer) {
      this.buf = this.k.memory.buffer;
      this.heap = new Float32Array(this.buf);
    }
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
    if (this.planLast) return this.tmp(x.width, x.rows);
    if (this.segs.length < 2) return { off: x.off + (x.rows - 1) * x.width * 4, rows: 1, width: x.width };
    if (x.rows !== this.T) throw new KernelError('wasm', `${this.where}: the last rows of ${x.rows} rows in a pass of ${this.T}`);
    const y = this.tmp(x.width, this.segs.length);
    this.segs.forEach((s, i) => this.move(y.off + i * x.width * 4, x.off + (s.r0 + s.T - 1) * x.width * 4, x.width));
    return y;
  }

  // An op's temporaries end with it (after a throw, the next forward starts the scratch afresh).
  run<A>(op: OpDef<A>, args: A): void {
    const fn = WASM_OPS.get(op, this.where || 'model');
    const mark = this.top;
    if (op.perSequence && this.segs.length > 1 && !this.dry) this.perSequence(fn, args, mark);
    else fn(this, args);
    this.top = mark;
  }

  /** Runs a per-sequence op once for each session of a batched pass, on that session's rows. */
  private perSequence<A>(fn: (g: WasmGraph, a: A) => void, args: A, mark: number): void {
    const rows = this.T, prompt = this.prompt;
    this.inSegment = true;
    try {
      for (const s of this.segs) {
        this.T = s.T;
        this.first = s.pos0;
        this.seq = s.seq;
        this.prompt = s.prompt;
        fn(this, cutRows(args, rows, s.r0, s.T) as A);
        this.top = mark;
      }
    } finally {
      this.T = rows;
      this.first = 0;
      this.seq = null;
      this.prompt = prompt;
      this.inSegment = false;
    }
  }

  /** The arena address of a state region of the session being run (0 while planning). */
  state(spec: RegionSpec): number {
    if (this.segs.length > 1 && !this.inSegment) throw new KernelError('wasm', `${this.where}: state ${spec.name} read by an op not marked per-sequence in a batched pass`);
    return this.seq && !this.dry ? this.seq.ptr(spec) : 0;
  }

  /** Position of the pass's first token (in a batched pass: of the session a per-sequence op runs on). */
  get pos0(): number {
    if (this.segs.length > 1 && !this.inSegment) throw new KernelError('wasm', `${this.where}: the position read by an op not marked per-sequence in a batched pass`);
    return this.first;
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
