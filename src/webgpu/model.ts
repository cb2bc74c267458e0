// A loaded model's forward pass on WebGPU. The net's one definition (src/graph) is recorded by the
// WebGPU executor (graph.ts): once for one position, which a session replays for every position of
// decoding, greedy batches and rewinds (the position coming from the step uniform); and, on first
// use, once per prefill chunk size T (prefillChunks), which runs T prompt tokens as one compute pass
// of T-row operations. A forward call feeds its tokens as whole chunks, largest first, and the rest
// position by position, all in one submission; several sessions go in one submission with
// forwardBatch().
//
// Two ways to run a session:
// - forward(ids): feeds tokens and reads back logits (prompt processing, sampling on the host);
// - hidden(ids): feeds tokens and reads back every one's final hidden states (embeddings), through
//   recordings of the net's 'hidden' output: the prefill chunk sizes and one of a single token;
// - submitGreedy(k): k greedy steps with the argmax on the GPU, each step's token feeding the next
//   through `ids`; only the k token ids come back, in one read. Several batches can be in flight,
//   so the host's read-back latency overlaps GPU work. A batch keeps a restore point of the
//   recurrent state, so rewind() can cut the session back to the tokens a caller kept (a stop token
//   in the middle of a batch).

import { GpuBuilder, TOKENS_BASE, type Emit, type GpuStateAlloc } from './builder';
import { BufferUsage, MapMode } from './flags';
import { KernelError } from '../kernels/runtime';
import type { Model } from '../models/model';
import type { ForwardOutput } from '../graph/graph';
import { decodeSnapshot, encodeSnapshot, SnapshotError, type Region, type SnapshotOptions, type StateLayout } from '../runtime/state';
import type { GpuDevice } from './device';
import type { SequenceSession, SessionFactory } from '../runtime/session';
import { GpuKernels, writeStep, type Dispatch, type GpuBufs } from './ops';
import type { MatmulTile } from './kernels/matmul.wgsl';
import type { GemmShape } from './kernels/gemm.wgsl';
import { GpuGraph } from './graph';
import './graph-ops';

/**
 * Where a WASM state region lives in `st`: `copy` when the float layouts agree (kv caches, recurrent
 * state), `ring` for a sliding-window cache that WASM keeps as a ring of `capacity` slots (position p
 * at slot p % capacity) and the GPU as a full-length cache (position p at row p).
 */
export interface GpuRegionMap {
  region: Region;
  off: number;
  mode: 'copy' | 'ring';
}

/**
 * Pairs every region of the state layout with the `st` allocation holding it, by the region objects
 * the layers declared (the same handles the WASM forward pass uses); throws on a gap or a mismatch.
 */
export function mapState(layout: StateLayout, allocs: GpuStateAlloc[]): GpuRegionMap[] {
  const L = layout.maxContext;
  const byRegion = new Map<Region, GpuStateAlloc>();
  for (const a of allocs) {
    if (a.region === null) throw new KernelError('webgpu', `a layer's ${a.kind} state (${a.floats} floats at st offset ${a.off}) is not one of its declared state regions, so snapshots could not carry it`);
    const r = layout.region(a.region);
    if (byRegion.has(r)) throw new KernelError('webgpu', `GPU state region ${r.name} is allocated twice`);
    const want = r.kind === 'fixed' ? { kind: 'fixed', floats: r.size } : { kind: 'kv', floats: r.perToken! * L };
    if (a.kind !== want.kind || a.floats !== want.floats) {
      throw new KernelError('webgpu', `GPU state of region ${r.name} (${a.kind}, ${a.floats} floats) does not match the WASM ${r.kind} region (expected ${want.kind}, ${want.floats} floats)`);
    }
    byRegion.set(r, a);
  }
  return layout.regions.map((r) => {
    const a = byRegion.get(r);
    if (!a) throw new KernelError('webgpu', `WASM state region ${r.name} has no GPU state: its layer's WebGPU builder must name it in GpuBuilder.state(), or snapshots would lose it`);
    return { region: r, off: a.off, mode: r.kind === 'ring' ? 'ring' : 'copy' };
  });
}

export interface GpuModelInfo {
  adapter: string;
  weightBytes: number;
  stateBytes: number;
  dispatchesPerToken: number;
  /** Chunk sizes with a T-token recording, and the activation bytes each needs per session. */
  chunkRecordings: { T: number; all: boolean; output: ForwardOutput; activationBytes: number; dispatches: number }[];
}

export interface GpuModelOptions {
  /**
   * Token counts of the prefill recordings (each > 1), recorded on first use: a forward call runs as
   * many whole chunks as fit, largest first, the rest position by position. Default [128, 32, 8].
   */
  prefillChunks?: number[];
  /**
   * Outputs per workgroup of the prefill passes' exact matrix products (where the GEMM does not
   * run), or null for one invocation per output (the default); every choice gives the same sums.
   */
  matmulTile?: MatmulTile | null;
  /**
   * Workgroup shapes of the tiled GEMM that runs the prefill passes' matrix products without
   * routed-expert ids (the first whose grid is large enough; see GpuKernels.gemm), or null to use
   * the kernels of matmulTile (default: DEFAULT_GEMMS on hardware adapters, null on software ones).
   * Its sums equal the decode kernel's up to f32 rounding.
   */
  matmulGemm?: GemmShape | readonly GemmShape[] | null;
  /**
   * Workgroups a prefill product's GEMM is brought towards by splitting its columns into ranges
   * (partial sums added afterwards; 0: never split). Default GEMM_SPLIT_TARGET.
   */
  matmulGemmSplit?: number;
}

/** A recording of the net for T tokens, its activation layout and the constants buffer it binds. */
interface ChunkRecording {
  T: number;
  /** Whether the pass computes every row's output (else the last row's only). */
  all: boolean;
  /** What the pass computes: logits, or the final hidden states (every row's). */
  output: ForwardOutput;
  emits: Emit[];
  actFloats: number;
  /** Float offset in `a` of the output rows. */
  outOff: number;
  c: GPUBuffer;
  dispatches: number;
}

/** A chunk recording bound to one session: its activation buffer and dispatches. */
interface ChunkRun {
  rec: ChunkRecording;
  a: GPUBuffer;
  list: Dispatch[];
}

/** What a session runs on: its buffers, its bound dispatches, and its bound chunk recordings (by chunkKey). */
interface SessionParts {
  bufs: GpuBufs;
  list: Dispatch[];
  greedyList: Dispatch[];
  chunkRuns: Map<string, ChunkRun>;
}

/** Disposed sessions whose parts a model keeps for reuse. */
const KEEP_IDLE = 2;

const DEFAULT_CHUNKS = [128, 32, 8];

/** Chunk recordings are kept by `${T}` (last row's logits), `${T}:all` (every row's) and `${T}:hidden` (every row's hidden states). */
const chunkKey = (T: number, all: boolean, output: ForwardOutput = 'logits') => (output === 'hidden' ? `${T}:hidden` : all ? `${T}:all` : `${T}`);

export class GpuModel implements SessionFactory {
  readonly K: GpuKernels;
  readonly vocab: number;
  readonly hidden: number;
  readonly maxContext: number;
  readonly logitsOff: number;
  readonly weightBytes: number;
  /** Float ranges of `st` holding recurrent state (restore points copy these). */
  readonly fixedRanges: [number, number][];
  readonly fixedFloats: number;
  private readonly actFloats: number;
  readonly stateFloats: number;
  private readonly builder: GpuBuilder;
  /** The constants of every recording so far (re-uploaded when a later recording adds some). */
  private c: GPUBuffer;
  private cFloats: number;
  private readonly emits: Emit[];
  private dispatchCount = 0;
  /** Every WASM state region and where it lives in `st` (snapshots, restore). */
  readonly stateMap: GpuRegionMap[];
  /** Prefill chunk sizes, descending. */
  readonly prefillChunks: number[];
  /** Chunk recordings by chunkKey. */
  private readonly chunks = new Map<string, ChunkRecording>();
  /** Why a chunk size could not be recorded (its tokens then run position by position). */
  readonly chunkErrors = new Map<number, string>();

  constructor(readonly model: Model, readonly gpu: GpuDevice, opts: GpuModelOptions = {}) {
    this.K = new GpuKernels(gpu, { tile: opts.matmulTile, gemm: opts.matmulGemm, gemmSplit: opts.matmulGemmSplit });
    const net = model.net;
    const B = (this.builder = new GpuBuilder(model, this.K));
    this.vocab = net.vocabSize;
    this.hidden = net.hidden;
    this.maxContext = model.maxContext;
    const chunks = opts.prefillChunks ?? DEFAULT_CHUNKS;
    for (const T of chunks) if (!Number.isInteger(T) || T < 2) throw new RangeError(`prefill chunk sizes must be integers ≥ 2, got ${T}`);
    this.prefillChunks = [...new Set(chunks)].sort((a, b) => b - a);
    const g = new GpuGraph(B, model.ctx.opts.exact);
    const logits = net.forward(g, false);
    this.emits = g.emits;
    this.logitsOff = logits.off;
    this.c = this.K.upload(B.packConsts(), undefined, 'constants');
    this.cFloats = B.constFloats;
    this.weightBytes = B.weightBytes;
    this.fixedRanges = B.fixedRanges;
    this.fixedFloats = B.fixedRanges.reduce((s, r) => s + r[1], 0);
    this.actFloats = g.act.high;
    this.stateFloats = B.stateFloats;
    this.stateMap = mapState(model.layout, B.stateAllocs);
  }

  info(): GpuModelInfo {
    return {
      adapter: this.gpu.adapterName, weightBytes: this.builder.weightBytes, stateBytes: this.stateFloats * 4, dispatchesPerToken: this.dispatchCount,
      chunkRecordings: [...this.chunks.values()].map((r) => ({ T: r.T, all: r.all, output: r.output, activationBytes: r.actFloats * 4, dispatches: r.dispatches })),
    };
  }

  /**
   * The recording of the net for T tokens (logits of every row with `all`, else of the last row
   * only; with output 'hidden', every row's final hidden states), made on first use; null when an op
   * cannot run T rows (the reason in chunkErrors), and those tokens run position by position.
   */
  chunkRecording(T: number, all = false, output: ForwardOutput = 'logits'): ChunkRecording | null {
    if (output === 'hidden') all = true;
    const key = chunkKey(T, all, output);
    const have = this.chunks.get(key);
    if (have) return have;
    if (this.chunkErrors.has(T) || T > this.maxContext) return null;
    if (output === 'hidden' && !this.model.net.hiddenOutput) throw new KernelError('webgpu', `model family ${this.model.modelType} has no hidden-state output`);
    const B = this.builder, stateFloats = B.stateFloats;
    try {
      const g = new GpuGraph(B, this.model.ctx.opts.exact, { T });
      const out = this.model.net.forward(g, all, output);
      if (B.stateFloats !== stateFloats) throw new KernelError('webgpu', `the ${T}-token recording named state regions the one-position recording did not`);
      g.checkActivations(`the activations of a ${T}-token pass`);
      if (B.constFloats !== this.cFloats) {
        this.c = this.K.upload(B.packConsts(), undefined, 'constants');
        this.cFloats = B.constFloats;
      }
      const rec: ChunkRecording = { T, all, output, emits: g.emits, actFloats: g.act.high, outOff: out.off, c: this.c, dispatches: 0 };
      this.chunks.set(key, rec);
      return rec;
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      this.chunkErrors.set(T, e.message);
      return null;
    }
  }

  /** Whether the whole state can be cut back by position (no recurrent layers). */
  get positional(): boolean {
    return this.fixedFloats === 0;
  }

  /**
   * Buffers, bound dispatches and chunk runs of disposed sessions, kept for the next sessions: binding
   * a 128-token recording (hundreds of bind groups) costs more host time than the pass it runs.
   */
  private readonly idle: SessionParts[] = [];

  newSession(): GpuSession {
    const parts = this.idle.pop();
    if (parts) {
      // A recycled session starts from zeroed state, as a new buffer does.
      const enc = this.K.device.createCommandEncoder();
      enc.clearBuffer(parts.bufs.st);
      this.K.device.queue.submit([enc.finish()]);
      return new GpuSession(this, parts);
    }
    const K = this.K;
    const bufs: GpuBufs = {
      a: K.buffer(this.actFloats * 4, undefined, 'activations'),
      st: K.buffer(this.stateFloats * 4, undefined, 'state'),
      c: this.c,
      ids: K.buffer((TOKENS_BASE + this.maxContext + 2) * 4, undefined, 'ids'),
      step: K.buffer(16, BufferUsage.UNIFORM | BufferUsage.COPY_DST, 'step'),
    };
    const list = this.emits.flatMap((e) => e(bufs));
    const greedy = [...list, K.argmax(bufs, this.logitsOff, this.vocab)];
    this.dispatchCount = list.length;
    return new GpuSession(this, { bufs, list, greedyList: greedy, chunkRuns: new Map() });
  }

  /** Takes back a disposed session's parts for reuse, or frees them when enough are kept. */
  recycle(parts: SessionParts): void {
    if (this.idle.length < KEEP_IDLE) {
      this.idle.push(parts);
      return;
    }
    for (const b of [parts.bufs.a, parts.bufs.st, parts.bufs.ids, parts.bufs.step]) b.destroy();
    for (const r of parts.chunkRuns.values()) r.a.destroy();
  }

  /**
   * A session resumed from snapshot bytes of this model, from either backend (the WASM format of
   * runtime/state.ts); refuses snapshots of another model or version as WASM does.
   */
  restore(bytes: Uint8Array): GpuSession {
    let s: GpuSession | null = null;
    const data: [GpuRegionMap, Float32Array][] = [];
    const at = new Map(this.stateMap.map((m) => [m.region, m]));
    try {
      const h = decodeSnapshot(this.model.layout, bytes, { modelHash: this.model.hash }, {
        clear: () => void (s = this.newSession()),
        write: (r, d) => void data.push([at.get(r)!, d]),
      });
      if (h.tokens.length !== h.pos) throw new SnapshotError(`snapshot names ${h.tokens.length} tokens for ${h.pos} positions`);
      s!.load(h.tokens, data);
      return s!;
    } catch (e) {
      (s as GpuSession | null)?.dispose();
      throw e;
    }
  }
}

/**
 * Feeds several sessions of one model their tokens in one submission (a batch of sequences: each
 * session's passes are encoded one after another into the same command buffer); resolves to each
 * session's last-token logits, or every token's with `all`.
 */
export async function forwardBatch(items: { session: GpuSession; ids: ArrayLike<number> }[], all = false): Promise<Float32Array[]> {
  if (!items.length) return [];
  const model = items[0].session.model;
  const seen = new Set<GpuSession>();
  for (const it of items) {
    if (it.session.model !== model) throw new Error('forwardBatch: sessions of different models');
    if (seen.has(it.session)) throw new Error('forwardBatch: a session appears twice');
    if (it.ids.length === 0) throw new RangeError('forwardBatch: every session needs at least one token');
    seen.add(it.session);
    it.session.validate(it.ids);
  }
  const staged = items.map((it) => it.session.stageForward(it.ids, all));
  const dev = model.K.device, enc = dev.createCommandEncoder();
  for (const s of staged) s.encode(enc);
  dev.queue.submit([enc.finish()]);
  for (const it of items) it.session.submissions++;
  return Promise.all(staged.map((s) => readLogits(s.rd, model.gpu)));
}

/** Maps a read-back buffer (logits or hidden states) and copies it out. */
async function readLogits(rd: GPUBuffer, gpu: GpuDevice): Promise<Float32Array> {
  await mapped(rd, gpu);
  const out = new Float32Array(rd.getMappedRange().slice(0));
  rd.unmap();
  rd.destroy();
  return out;
}

interface RestorePoint {
  pos: number;
  buf: GPUBuffer | null;
}

/** How many greedy batches keep restore points (callers keep at most this many in flight). */
const KEEP_POINTS = 3;

export class GpuSession implements SequenceSession {
  /** Token ids whose state the session holds (may trail `pos` while greedy batches are in flight). */
  tokens: number[] = [];
  /** Positions fed on the GPU (submitted). */
  pos = 0;
  private points: RestorePoint[] = [];
  private spare: GPUBuffer[] = [];
  private checkpointPoint: RestorePoint | null = null;
  private inFlight = 0;
  private lastBatch: Promise<unknown> = Promise.resolve();
  private disposed = false;
  /**
   * Lowest position a positional rewind may go to: a session restored from a snapshot whose
   * sliding-window rings had wrapped holds no keys before the ring's positions.
   */
  private floor = 0;

  private readonly bufs: GpuBufs;
  private readonly list: Dispatch[];
  private readonly greedyList: Dispatch[];
  /** The model's chunk recordings bound to this session, by chunkKey. */
  private readonly chunkRuns: Map<string, ChunkRun>;

  constructor(readonly model: GpuModel, private readonly parts: SessionParts) {
    this.bufs = parts.bufs;
    this.list = parts.list;
    this.greedyList = parts.greedyList;
    this.chunkRuns = parts.chunkRuns;
  }

  private get device(): GPUDevice {
    return this.model.K.device;
  }

  /** Prefill chunks: one submission each (a 128-token prompt is one submission). */
  get prefillChunk(): number {
    return Math.max(this.model.model.maxChunk, 128);
  }

  snapshotAsync(opts: SnapshotOptions = {}): Promise<Uint8Array> {
    return this.snapshot(opts);
  }

  private check(n: number): void {
    if (this.disposed) throw new Error('session was disposed');
    if (this.inFlight) throw new Error('greedy batches are still in flight');
    if (this.pos + n > this.model.maxContext) throw new RangeError(`context full: ${this.pos} + ${n} tokens > max context ${this.model.maxContext}`);
  }

  /** Throws unless `ids` can be fed now (session usable, context room, ids in the vocabulary). */
  validate(ids: ArrayLike<number>): void {
    this.check(ids.length);
    const V = this.model.vocab;
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= V) throw new RangeError(`token id ${ids[i]} outside the vocabulary [0, ${V})`);
    }
  }

  private writeTokens(at: number, ids: ArrayLike<number>): void {
    const V = this.model.vocab;
    const u = new Uint32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= V) throw new RangeError(`token id ${ids[i]} outside the vocabulary [0, ${V})`);
      u[i] = ids[i];
    }
    this.device.queue.writeBuffer(this.bufs.ids, (TOKENS_BASE + at) * 4, u);
  }

  /**
   * Runs `list` for positions from … from+n−1 in one submission: the step records of all n positions
   * are written once, and before each position's compute pass a copy puts its record in the step
   * uniform (commands of one command buffer run in order).
   */
  private submitSteps(from: number, n: number, list: Dispatch[], after?: (enc: GPUCommandEncoder, t: number) => void): void {
    const per = Math.max(1, Math.floor(this.stepsPerSubmission));
    if (n > per) {
      for (let t = 0; t < n; t += per) this.submitSteps(from + t, Math.min(per, n - t), list, after && ((enc, u) => after(enc, t + u)));
      return;
    }
    const enc = this.device.createCommandEncoder();
    this.encodeSteps(enc, from, n, list, after);
    this.device.queue.submit([enc.finish()]);
    this.submissions++;
  }

  /**
   * Queues the step records of positions from … from+n−1 (n > 1) into the `steps` buffer, from which
   * copies put record t in the step uniform; one position's record goes straight to the uniform.
   * `prompt` marks them as the positions of a forward call of several tokens (step.prompt).
   */
  private writeSteps(from: number, n: number, prompt = false): void {
    const dev = this.device;
    if (n === 1) {
      writeStep(dev, this.bufs.step, 0, from, prompt);
      return;
    }
    const rec = new Uint32Array(n * 4);
    for (let t = 0; t < n; t++) rec.set([0, from + t, from + t + 1, prompt ? 1 : 0], t * 4);
    if (!this.steps || this.steps.size < rec.byteLength) {
      this.steps?.destroy();
      this.steps = dev.createBuffer({ size: Math.max(rec.byteLength, 4096), usage: BufferUsage.COPY_SRC | BufferUsage.COPY_DST, label: 'step records' });
    }
    dev.queue.writeBuffer(this.steps, 0, rec);
  }

  /** One compute pass of `list` with step record t of the n written by writeSteps in the uniform. */
  private encodePass(enc: GPUCommandEncoder, t: number, n: number, list: Dispatch[]): void {
    if (n > 1) enc.copyBufferToBuffer(this.steps!, t * 16, this.bufs.step, 0, 16);
    const pass = enc.beginComputePass();
    this.model.K.encode(pass, list);
    pass.end();
  }

  /** Encodes the passes of positions from … from+n−1 into `enc` (see submitSteps). */
  encodeSteps(enc: GPUCommandEncoder, from: number, n: number, list: Dispatch[], after?: (enc: GPUCommandEncoder, t: number) => void): void {
    this.writeSteps(from, n);
    for (let t = 0; t < n; t++) {
      this.encodePass(enc, t, n, list);
      after?.(enc, t);
    }
  }

  /** The model's T-token recording bound to this session (with an activation buffer of its own), or null. */
  private chunkRun(T: number, all: boolean, output: ForwardOutput = 'logits'): ChunkRun | null {
    const key = chunkKey(T, all, output);
    let run = this.chunkRuns.get(key);
    if (run) return run;
    const rec = this.model.chunkRecording(T, all, output);
    if (!rec) return null;
    const a = this.model.K.buffer(rec.actFloats * 4, undefined, `activations of ${T}-token passes`);
    const bufs: GpuBufs = { ...this.bufs, a, c: rec.c };
    run = { rec, a, list: rec.emits.flatMap((e) => e(bufs)) };
    rec.dispatches = run.list.length;
    this.chunkRuns.set(key, run);
    return run;
  }

  /**
   * How n tokens are fed: whole chunks of the model's prefill sizes (largest first) through their
   * recordings, then the rest position by position (for output 'hidden', through the one-token
   * recording of that output; for logits, the session's one-position list: run null).
   */
  private plan(n: number, all: boolean, output: ForwardOutput = 'logits'): { T: number; run: ChunkRun | null }[] {
    const parts: { T: number; run: ChunkRun | null }[] = [];
    let left = n;
    if (this.chunkedPrefill) {
      for (const T of this.model.prefillChunks) {
        while (left >= T) {
          const run = this.chunkRun(T, all, output);
          if (!run) break;
          parts.push({ T, run });
          left -= T;
        }
      }
    }
    let one: ChunkRun | null = null;
    if (output === 'hidden' && left > 0) {
      one = this.chunkRun(1, true, 'hidden');
      if (!one) throw new KernelError('webgpu', `the hidden states of one position could not be recorded: ${this.model.chunkErrors.get(1) ?? 'unknown reason'}`);
    }
    for (; left > 0; left--) parts.push({ T: 1, run: one });
    return parts;
  }

  /**
   * Checks and stages the tokens of a forward pass (ids written, positions advanced after encoding):
   * returns the read-back buffer of the logits (or, with output 'hidden', of every token's final
   * hidden states) and the function that encodes the pass.
   */
  stageForward(ids: ArrayLike<number>, all: boolean, output: ForwardOutput = 'logits'): { rd: GPUBuffer; encode: (enc: GPUCommandEncoder) => void } {
    const n = ids.length, m = this.model;
    if (output === 'hidden') all = true;
    // Floats per row read back.
    const W = output === 'hidden' ? m.hidden : m.vocab;
    if (n === 0) throw new RangeError('forward needs at least one token');
    this.check(n);
    const parts = this.plan(n, all, output);
    this.writeTokens(this.pos, ids);
    const rows = all ? n : 1;
    const rd = this.device.createBuffer({ size: rows * W * 4, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const start = this.pos;
    this.pos += n;
    for (let i = 0; i < n; i++) this.tokens.push(ids[i]);
    const encode = (enc: GPUCommandEncoder) => {
      this.writeSteps(start, n, n > 1);
      let t = 0;
      for (const { T, run } of parts) {
        if (run) {
          // Every kernel of the chunk's recording reads step.pos as the chunk's first position.
          this.encodePass(enc, t, n, run.list);
          const L = run.rec.outOff;
          if (all) enc.copyBufferToBuffer(run.a, L * 4, rd, t * W * 4, T * W * 4);
          else if (t + T === n) enc.copyBufferToBuffer(run.a, L * 4, rd, 0, W * 4);
          this.chunkPasses++;
        } else {
          this.encodePass(enc, t, n, this.list);
          if (all || t === n - 1) enc.copyBufferToBuffer(this.bufs.a, m.logitsOff * 4, rd, (all ? t : 0) * W * 4, W * 4);
        }
        t += T;
      }
    };
    return { rd, encode };
  }

  /** Step records of a multi-position submission (see submitSteps). */
  private steps: GPUBuffer | null = null;
  /** Whether forward() runs whole prompt chunks through the T-token recordings (benchmarks turn it off to time the per-position replay). */
  chunkedPrefill = true;
  /** Compute passes of T-token recordings encoded so far (each runs one prompt chunk). */
  chunkPasses = 0;
  /** Submissions of forward passes so far (one per forward call, greedy batch or replay). */
  submissions = 0;
  /** Most positions one submission runs (benchmarks set 1 to time one submission per token). */
  stepsPerSubmission = Infinity;

  private async read(src: GPUBuffer, byteOff: number, bytes: number, enc?: GPUCommandEncoder): Promise<ArrayBuffer> {
    const dev = this.device;
    const rd = dev.createBuffer({ size: Math.ceil(bytes / 4) * 4, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    const e = enc ?? dev.createCommandEncoder();
    e.copyBufferToBuffer(src, byteOff, rd, 0, Math.ceil(bytes / 4) * 4);
    if (!enc) dev.queue.submit([e.finish()]);
    await mapped(rd, this.model.gpu);
    const out = rd.getMappedRange().slice(0, bytes);
    rd.unmap();
    rd.destroy();
    return out;
  }

  /**
   * Feeds tokens; resolves to the last token's logits ([V]) or every token's ([T·V]) with `all`. One
   * submission, or one per stepsPerSubmission positions (benchmarks).
   */
  async forward(ids: ArrayLike<number>, all = false): Promise<Float32Array> {
    if (ids.length === 0) throw new RangeError('forward needs at least one token');
    const per = Math.max(1, Math.floor(this.stepsPerSubmission)), V = this.model.vocab;
    const parts: Float32Array[] = [];
    for (let i = 0; i < ids.length; i += per) {
      const chunk = Array.prototype.slice.call(ids, i, i + per) as number[];
      const { rd, encode } = this.stageForward(chunk, all);
      const enc = this.device.createCommandEncoder();
      encode(enc);
      this.device.queue.submit([enc.finish()]);
      this.submissions++;
      parts.push(await readLogits(rd, this.model.gpu));
    }
    if (!all || parts.length === 1) return parts[parts.length - 1];
    const out = new Float32Array(ids.length * V);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  /**
   * Feeds tokens; resolves to every one's final hidden states ([T·hidden], after the final norm,
   * before the LM head), in one submission. Throws where the net has no such output.
   */
  async hidden(ids: ArrayLike<number>): Promise<Float32Array> {
    if (ids.length === 0) throw new RangeError('forward needs at least one token');
    const { rd, encode } = this.stageForward(ids, true, 'hidden');
    const enc = this.device.createCommandEncoder();
    encode(enc);
    this.device.queue.submit([enc.finish()]);
    this.submissions++;
    return readLogits(rd, this.model.gpu);
  }

  /** Copies the recurrent state ranges into a restore point buffer (or back, with `back`). */
  private copyFixed(enc: GPUCommandEncoder, buf: GPUBuffer, back: boolean): void {
    let o = 0;
    for (const [off, len] of this.model.fixedRanges) {
      if (back) enc.copyBufferToBuffer(buf, o * 4, this.bufs.st, off * 4, len * 4);
      else enc.copyBufferToBuffer(this.bufs.st, off * 4, buf, o * 4, len * 4);
      o += len;
    }
  }

  private point(): RestorePoint {
    if (this.model.positional) return { pos: this.pos, buf: null };
    const buf = this.spare.pop() ?? this.model.K.buffer(this.model.fixedFloats * 4, undefined, 'restore point');
    const enc = this.device.createCommandEncoder();
    this.copyFixed(enc, buf, false);
    this.device.queue.submit([enc.finish()]);
    return { pos: this.pos, buf };
  }

  private release(p: RestorePoint): void {
    if (p.buf) this.spare.push(p.buf);
  }

  /**
   * k greedy steps: feeds `first` (or, when omitted, the token the previous batch chose) and then
   * each chosen token; resolves to the k chosen tokens. Up to KEEP_POINTS - 1 batches may be in flight.
   */
  submitGreedy(k: number, first?: number): Promise<number[]> {
    if (this.disposed) throw new Error('session was disposed');
    if (!(k >= 1) || this.pos + k > this.model.maxContext) throw new RangeError(`context full: ${this.pos} + ${k} tokens > max context ${this.model.maxContext}`);
    if (this.inFlight >= KEEP_POINTS - 1) throw new Error(`at most ${KEEP_POINTS - 1} greedy batches may be in flight`);
    if (first !== undefined) this.writeTokens(this.pos, [first]);
    const start = this.pos;
    this.points.push(this.point());
    while (this.points.length > KEEP_POINTS) this.release(this.points.shift()!);
    this.submitSteps(start, k, this.greedyList);
    this.pos += k;
    this.inFlight++;
    // Tokens start … start + k: the one fed first, then the k chosen.
    const read = this.read(this.bufs.ids, (TOKENS_BASE + start) * 4, (k + 1) * 4);
    // Bookkeeping in submission order.
    const done = this.lastBatch.then(() => read);
    this.lastBatch = done.catch(() => undefined);
    return done.then(
      (buf) => {
        this.inFlight--;
        const t = Array.from(new Uint32Array(buf));
        // Batches resolve in order: this one's fed tokens follow the previous ones.
        this.tokens.length = start;
        for (let i = 0; i < k; i++) this.tokens.push(t[i]);
        return t.slice(1);
      },
      (e) => {
        this.inFlight--;
        throw e;
      },
    );
  }

  /**
   * Greedy decoding of n tokens after `first` (fed first): yields the chosen tokens batch by batch,
   * batches of 2, 4, … up to maxBatch steps with two in flight, so reading one back overlaps
   * computing the next. Leaving early waits for the batches still in flight.
   */
  async *greedy(first: number, n: number, maxBatch = 32): AsyncGenerator<number[]> {
    const queue: Promise<number[]>[] = [];
    let submitted = 0, size = 2;
    try {
      while (submitted < n || queue.length) {
        while (queue.length < 2 && submitted < n) {
          const k = Math.min(size, n - submitted);
          queue.push(this.submitGreedy(k, submitted === 0 ? first : undefined));
          submitted += k;
          size = Math.min(size * 2, maxBatch);
        }
        yield await queue.shift()!;
      }
    } finally {
      await Promise.allSettled(queue);
    }
  }

  /** Cuts the state back to its first `pos` tokens (no further back than the oldest restore point, unless positional). */
  rewind(pos: number): void {
    this.check(0);
    if (pos === this.pos) return;
    if (pos > this.pos || pos < 0) throw new RangeError(`cannot rewind to ${pos} (session holds ${this.pos})`);
    if (this.model.positional) {
      if (pos < this.floor) throw new RangeError(`cannot rewind to ${pos}: the session was restored at ${this.floor} from sliding-window caches`);
      this.pos = pos;
      this.tokens.length = pos;
      return;
    }
    let i = this.points.length - 1;
    while (i >= 0 && this.points[i].pos > pos) i--;
    const cp = this.checkpointPoint;
    const p = i >= 0 ? this.points[i] : cp && cp.pos <= pos ? cp : null;
    if (!p) throw new RangeError(`cannot rewind to ${pos}: no restore point at or before it`);
    const enc = this.device.createCommandEncoder();
    this.copyFixed(enc, p.buf!, true);
    this.device.queue.submit([enc.finish()]);
    // The tokens from the restore point on are still in `ids`.
    this.submitSteps(p.pos, pos - p.pos, this.list);
    for (const q of this.points.splice(i + 1)) this.release(q);
    this.pos = pos;
    this.tokens.length = pos;
  }

  /** Keeps a restore point of the current state (ModelSession's end-of-prompt checkpoint). */
  markCheckpoint(): void {
    this.check(0);
    if (this.checkpointPoint) this.release(this.checkpointPoint);
    this.checkpointPoint = this.point();
  }

  get checkpointPos(): number | null {
    return this.checkpointPoint?.pos ?? null;
  }

  /** Returns to the checkpoint taken by markCheckpoint(). */
  restoreCheckpoint(): void {
    this.check(0);
    const p = this.checkpointPoint;
    if (!p) throw new Error('no checkpoint');
    if (p.buf) {
      const enc = this.device.createCommandEncoder();
      this.copyFixed(enc, p.buf, true);
      this.device.queue.submit([enc.finish()]);
    }
    for (const q of this.points.splice(0)) this.release(q);
    this.pos = p.pos;
    this.tokens.length = p.pos;
  }

  /** An independent copy (state, tokens). */
  fork(): GpuSession {
    this.check(0);
    const s = this.model.newSession();
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.bufs.st, 0, s.bufs.st, 0, this.bufs.st.size);
    enc.copyBufferToBuffer(this.bufs.ids, 0, s.bufs.ids, 0, this.bufs.ids.size);
    this.device.queue.submit([enc.finish()]);
    s.tokens = this.tokens.slice();
    s.pos = this.pos;
    s.floor = this.floor;
    return s;
  }

  /** Whether rewind(pos) can cut the state back to `pos` tokens without a restore point. */
  canRewind(pos: number): boolean {
    return pos === this.pos || (pos < this.pos && pos >= this.floor && this.model.positional);
  }

  /**
   * The state as snapshot bytes in the WASM format (runtime/state.ts): each region read back trimmed
   * to the positions in use, sliding-window caches laid out as WASM's ring. Resolves once read back.
   */
  async snapshot(opts: SnapshotOptions = {}): Promise<Uint8Array> {
    this.check(0);
    const pos = this.pos;
    if (this.tokens.length !== pos) throw new Error(`session holds ${this.tokens.length} token ids for ${pos} positions`);
    // The floats each region needs, as one range of `st`: kv rows 0 … pos−1, a ring's last
    // min(pos, capacity) rows, fixed state whole.
    const parts = this.model.stateMap.map((m) => {
      const r = m.region;
      if (r.kind === 'fixed') return { m, from: m.off, n: r.size };
      const rows = r.kind === 'ring' ? Math.min(pos, r.capacity!) : pos;
      return { m, from: m.off + (pos - rows) * r.perToken!, n: rows * r.perToken! };
    });
    const total = parts.reduce((a, p) => a + p.n, 0);
    const all = new Float32Array(total);
    if (total > 0) {
      const dev = this.device;
      const rd = dev.createBuffer({ size: total * 4, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
      const enc = dev.createCommandEncoder();
      let o = 0;
      for (const p of parts) {
        if (p.n) enc.copyBufferToBuffer(this.bufs.st, p.from * 4, rd, o * 4, p.n * 4);
        o += p.n;
      }
      dev.queue.submit([enc.finish()]);
      await mapped(rd, this.model.gpu);
      all.set(new Float32Array(rd.getMappedRange()));
      rd.unmap();
      rd.destroy();
    }
    const got = new Map<Region, Float32Array>();
    let o = 0;
    for (const p of parts) {
      const v = all.subarray(o, o + p.n);
      o += p.n;
      const r = p.m.region;
      if (p.m.mode !== 'ring') {
        got.set(r, v);
        continue;
      }
      // GPU rows pos − rows … pos − 1 to ring slots (position q at slot q % capacity).
      const cap = r.capacity!, per = r.perToken!, rows = p.n / per, ring = new Float32Array(p.n);
      for (let i = 0; i < rows; i++) {
        const q = pos - rows + i;
        ring.set(v.subarray(i * per, (i + 1) * per), (q % cap) * per);
      }
      got.set(r, ring);
    }
    const m = this.model.model;
    return encodeSnapshot(m.layout, { modelHash: m.hash, modelType: m.modelType, pos, tokens: this.tokens.slice() }, (r, n) => got.get(r)!.subarray(0, n), opts);
  }

  /** Loads decoded snapshot regions and their token ids into this fresh session (GpuModel.restore). */
  load(tokens: number[], regions: [GpuRegionMap, Float32Array][]): void {
    this.check(tokens.length);
    const pos = tokens.length, q = this.device.queue;
    if (pos) this.writeTokens(0, tokens);
    let floor = 0;
    for (const [m, d] of regions) {
      if (!d.length) continue;
      const r = m.region;
      if (m.mode === 'copy') {
        q.writeBuffer(this.bufs.st, m.off * 4, d);
        continue;
      }
      // Ring slots to GPU rows: the last rows = min(pos, capacity) positions, position p from slot p % capacity.
      const cap = r.capacity!, per = r.perToken!, rows = d.length / per;
      if (rows !== Math.min(pos, cap)) throw new SnapshotError(`snapshot region ${r.name} holds ${rows} positions, expected ${Math.min(pos, cap)}`);
      const lin = new Float32Array(d.length);
      for (let i = 0; i < rows; i++) {
        const p = pos - rows + i;
        lin.set(d.subarray((p % cap) * per, (p % cap + 1) * per), i * per);
      }
      q.writeBuffer(this.bufs.st, (m.off + (pos - rows) * per) * 4, lin);
      if (pos > rows) floor = pos;
    }
    this.tokens = tokens.slice();
    this.pos = pos;
    this.floor = floor;
  }

  reset(): void {
    this.check(0);
    const enc = this.device.createCommandEncoder();
    enc.clearBuffer(this.bufs.st);
    this.device.queue.submit([enc.finish()]);
    for (const q of this.points.splice(0)) this.release(q);
    if (this.checkpointPoint) this.release(this.checkpointPoint);
    this.checkpointPoint = null;
    this.tokens = [];
    this.pos = 0;
    this.floor = 0;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of [this.steps, ...this.spare, ...this.points.map((p) => p.buf), this.checkpointPoint?.buf]) b?.destroy();
    this.model.recycle(this.parts);
  }
}

/** Maps a read-back buffer; a failure names the device error behind it (e.g. a submit that failed validation). */
async function mapped(rd: GPUBuffer, gpu: GpuDevice): Promise<void> {
  try {
    await rd.mapAsync(MapMode.READ);
  } catch (e) {
    const why = gpu.lastError();
    throw new KernelError('webgpu', `reading results back failed: ${(e as Error).message}${why ? ` (device error: ${why})` : ''}`);
  }
}

/** Builds the WebGPU forward pass of a loaded (WASM) model. */
export function gpuModel(model: Model, gpu: GpuDevice, opts: GpuModelOptions = {}): GpuModel {
  return new GpuModel(model, gpu, opts);
}
