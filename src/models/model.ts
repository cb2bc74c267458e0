// A loaded model: one arena holding the weights, shared scratch, and session state slots.
// Sessions run tokens through the net in chunks, and snapshot / restore their state as bytes.

import type { Checkpoint } from '../formats/checkpoint';
import { isKQuant } from '../formats/kquants';
import { reserveKMatmulScratch } from '../kernels/kquant';
import { reserveMatmulScratch } from '../kernels/matmul';
import { instantiate, type BuildChoice, type WasmInstance } from '../kernels/runtime';
import { KV_CACHE_TYPES, type KvCacheType } from '../kernels/kvcache';
import { Ctx } from '../layers/context';
import { WasmGraph } from '../graph/wasm';
import '../graph/wasm-ops';
import type { Net, Family } from './net';
import { familyFor } from './registry';
import { ConfigError } from '../formats/errors';
import { checkSnapshotModel, crc32, readSnapshotHeader, restoreSnapshot, SeqState, SlotPool, StateLayout, writeSnapshot, type SnapshotOptions } from '../runtime/state';
import { WeightStore, type LoadDType } from '../runtime/weights';
import { fitAttention, formatAttention, resolveAttention, type AttentionModeOptions, type ResolvedAttention } from '../runtime/attention-mode';
import { isPageBounds } from '../layers/attention';
import type { SequenceSession, SessionFactory } from '../runtime/session';

export interface ModelOptions {
  dtype?: LoadDType;
  build?: BuildChoice;
  /** Arena budget in bytes (weights + scratch + session state); exceeding it is a BudgetError. */
  memoryBudget?: number;
  /** Positions a session can hold (attention caches are sized for it). Default: min(config max, 4096). */
  maxContext?: number;
  /** Tokens per forward call during prefill. */
  maxChunk?: number;
  /** Dequantized-weight dot products (parity); default false. */
  exact?: boolean;
  /** Most sessions alive at once. */
  maxSessions?: number;
  /**
   * Element type of attention KV caches: 'f32' (default), or 'q8_0' / 'q4_0' rows per head (blocks
   * of 32 along the head dimension, 0.27× and 0.14× the bytes), which attention reads in place.
   */
  kvCache?: KvCacheType;
  /** Attention at decode: dense (default) or sparse top-k pages (runtime/attention-mode.ts). */
  attention?: AttentionModeOptions;
  onProgress?: (done: number, total: number, what: string) => void;
}

export interface ModelInfo {
  modelType: string;
  build: string;
  layers: string[];
  params: number;
  bytesByDType: Record<string, number>;
  vocabSize: number;
  hidden: number;
  maxContext: number;
  /** Snapshot bytes at 0 tokens and per additional token (attention caches grow; recurrent state does not). */
  stateBytesFixed: number;
  stateBytesPerToken: number;
  /** Element type of the attention KV caches. */
  kvCache: KvCacheType;
  /** The attention setting, in the `--attention` form (dense, or topk:pages=…,page=…,sinks=…,window=…). */
  attention: string;
  arenaBytes: number;
}

function hashHex(parts: Uint8Array[]): string {
  let h = 0;
  for (const p of parts) h = crc32(p, h);
  let h2 = 0x811c9dc5;
  for (const p of parts) for (let i = 0; i < p.length; i += 7) h2 = Math.imul(h2 ^ p[i], 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0');
}

export class Model implements SessionFactory {
  readonly layout: StateLayout;
  readonly slots: SlotPool;
  readonly modelType: string;
  constructor(
    readonly k: WasmInstance,
    readonly ctx: Ctx,
    readonly net: Net,
    readonly config: any,
    readonly ws: WeightStore,
    readonly hash: string,
    readonly maxContext: number,
    readonly checkpoint: Checkpoint,
    /** Runs the net's forward pass on the kernels (planned at load). */
    readonly graph: WasmGraph,
    maxSessions = Infinity,
  ) {
    this.modelType = config.model_type;
    this.layout = new StateLayout(net.specs(maxContext), maxContext);
    this.slots = new SlotPool(k.arena, this.layout, maxSessions);
  }

  get maxChunk(): number {
    return this.ctx.maxChunk;
  }

  /** Element type of the attention KV caches (the load option kvCache). */
  get kvCache(): KvCacheType {
    return this.layout.kvCache;
  }

  /** The attention setting (load option attention). */
  get attention(): ResolvedAttention {
    return this.ctx.attention;
  }

  newSession(): Session {
    return new Session(this, this.slots.acquire());
  }

  /** A session resumed from snapshot bytes; refuses snapshots of another model, version or KV cache type. */
  restore(bytes: Uint8Array): Session {
    const { header } = readSnapshotHeader(bytes);
    checkSnapshotModel(header, { modelHash: this.hash, kvCache: this.kvCache });
    const s = this.newSession();
    try {
      const h = restoreSnapshot(s.state, bytes, { modelHash: this.hash });
      s.tokens = h.tokens.slice();
    } catch (e) {
      s.dispose();
      throw e;
    }
    return s;
  }

  /**
   * Feeds several sessions of this model their tokens together: each pass holds up to maxChunk
   * tokens of several sessions, so each weight streams once for all of them (batched decoding:
   * one token per session per call). Returns each session's last-token logits ([V]), or every
   * token's ([n·V]) with `all` — the same as each session's forward().
   */
  forwardBatch(items: { session: Session; ids: ArrayLike<number> }[], all = false): Float32Array[] {
    const V = this.net.vocabSize;
    const seen = new Set<Session>();
    for (const it of items) {
      if (it.session.model !== this) throw new Error('forwardBatch: a session of another model');
      if (seen.has(it.session)) throw new Error('forwardBatch: a session appears twice');
      seen.add(it.session);
      it.session.check(it.ids);
    }
    const outs = items.map((it) => new Float32Array(all ? it.ids.length * V : V));
    const done = items.map(() => 0);
    for (;;) {
      const part: { i: number; n: number }[] = [];
      let used = 0;
      items.forEach((it, i) => {
        const n = Math.min(it.ids.length - done[i], this.maxChunk - used);
        if (n > 0) {
          part.push({ i, n });
          used += n;
        }
      });
      if (!part.length) return outs;
      const batch = part.map(({ i, n }) => ({
        seq: items[i].session.state, pos0: items[i].session.pos, prompt: items[i].ids.length > 1,
        ids: Int32Array.from(Array.prototype.slice.call(items[i].ids, done[i], done[i] + n) as number[]),
      }));
      const p = this.graph.forwardBatch(this.net, batch, all).off;
      let row = 0;
      part.forEach(({ i, n }, j) => {
        const s = items[i].session;
        if (all) {
          outs[i].set(this.k.arena.f32(p + row * V * 4, n * V), done[i] * V);
          row += n;
        } else {
          if (done[i] + n === items[i].ids.length) outs[i].set(this.k.arena.f32(p + row * V * 4, V));
          row++;
        }
        for (const id of batch[j].ids) s.tokens.push(id);
        done[i] += n;
      });
    }
  }

  info(): ModelInfo {
    const fixed = this.layout.snapshotFloats(0) * 4;
    const perTok = this.layout.snapshotFloats(1) * 4 - fixed;
    return {
      modelType: this.modelType,
      build: this.k.build,
      layers: this.net.layerKinds,
      params: this.ws.paramCount,
      bytesByDType: { ...this.ws.bytesByDType },
      vocabSize: this.net.vocabSize,
      hidden: this.net.hidden,
      maxContext: this.maxContext,
      stateBytesFixed: fixed,
      stateBytesPerToken: perTok,
      kvCache: this.kvCache,
      attention: formatAttention(this.attention),
      arenaBytes: this.k.arena.top,
    };
  }

  dispose(): void {
    void this.checkpoint.close?.();
  }
}

export class Session implements SequenceSession {
  tokens: number[] = [];
  readonly state: SeqState;
  private disposed = false;
  /** The state kept by markCheckpoint(): its position, and its bytes unless the state is all positional. */
  private checkpoint: { pos: number; bytes: Uint8Array | null } | null = null;
  constructor(readonly model: Model, private readonly slot: number) {
    this.state = new SeqState(model.k.arena, model.layout, slot);
  }

  get pos(): number {
    return this.tokens.length;
  }

  get prefillChunk(): number {
    return this.model.maxChunk;
  }

  canRewind(pos: number): boolean {
    if (pos >= this.pos) return pos === this.pos;
    if (pos < 0) return false;
    for (const r of this.model.layout.regions) {
      if (r.kind === 'fixed') return false;
      if (r.kind === 'ring' && this.pos > (r.capacity ?? 0)) return false;
    }
    return true;
  }

  rewind(pos: number): void {
    if (!this.canRewind(pos)) throw new RangeError(`cannot rewind to ${pos} (session holds ${this.pos}; recurrent state or a wrapped window cache cannot be cut back)`);
    this.tokens.length = pos;
  }

  markCheckpoint(): void {
    this.checkpoint = { pos: this.pos, bytes: this.canRewind(0) ? null : this.snapshot() };
  }

  get checkpointPos(): number | null {
    return this.checkpoint?.pos ?? null;
  }

  restoreCheckpoint(): void {
    const cp = this.checkpoint;
    if (!cp) throw new Error('no checkpoint');
    if (!cp.bytes) {
      this.rewind(cp.pos);
      return;
    }
    const h = restoreSnapshot(this.state, cp.bytes, { modelHash: this.model.hash });
    this.tokens = h.tokens.slice();
  }

  async snapshotAsync(opts: SnapshotOptions = {}): Promise<Uint8Array> {
    return this.snapshot(opts);
  }

  snapshotSync(opts: SnapshotOptions = {}): Uint8Array {
    return this.snapshot(opts);
  }

  /**
   * Feeds tokens; returns a copy of the logits of the last one ([V]), or of every one ([T·V]) when
   * `all` is set.
   */
  /** Refuses tokens this session cannot take (after disposal, none, past the context, outside the vocabulary). */
  check(ids: ArrayLike<number>): void {
    if (this.disposed) throw new Error('session was disposed');
    const m = this.model;
    const V = m.net.vocabSize;
    const n = ids.length;
    if (n === 0) throw new RangeError('forward needs at least one token');
    if (this.pos + n > m.maxContext) throw new RangeError(`context full: ${this.pos} + ${n} tokens > max context ${m.maxContext}`);
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`token id ${id} outside the vocabulary [0, ${V})`);
    }
  }

  forward(ids: ArrayLike<number>, all = false): Float32Array {
    this.check(ids);
    const m = this.model;
    const V = m.net.vocabSize;
    const n = ids.length;
    const out = new Float32Array(all ? n * V : V);
    // Several tokens are a prompt: every chunk of it runs as prefill (WasmGraph.prompt).
    m.graph.prompt = n > 1;
    try {
      for (let i = 0; i < n; i += m.maxChunk) {
        const chunk = Int32Array.from(Array.prototype.slice.call(ids, i, Math.min(n, i + m.maxChunk)));
        const last = i + chunk.length === n;
        const p = m.graph.forward(m.net, this.state, chunk, this.pos, all).off;
        if (all) out.set(m.k.arena.f32(p, chunk.length * V), i * V);
        else if (last) out.set(m.k.arena.f32(p, V));
        for (let j = 0; j < chunk.length; j++) this.tokens.push(chunk[j]);
      }
    } finally {
      m.graph.prompt = false;
    }
    return out;
  }

  /**
   * Feeds tokens; returns a copy of every one's final hidden states ([T·hidden], after the final
   * norm, before the LM head). Throws where the net has no such output.
   */
  hidden(ids: ArrayLike<number>): Float32Array {
    const m = this.model;
    if (!m.net.hiddenOutput) throw new Error(`model family ${m.modelType} has no hidden-state output`);
    this.check(ids);
    const H = m.net.hidden;
    const n = ids.length;
    const out = new Float32Array(n * H);
    m.graph.prompt = n > 1;
    try {
      for (let i = 0; i < n; i += m.maxChunk) {
        const chunk = Int32Array.from(Array.prototype.slice.call(ids, i, Math.min(n, i + m.maxChunk)));
        const t = m.graph.forward(m.net, this.state, chunk, this.pos, true, 'hidden');
        if (t.width !== H || t.rows !== chunk.length) throw new Error(`hidden states of ${t.rows}×${t.width}, expected ${chunk.length}×${H}`);
        out.set(m.k.arena.f32(t.off, chunk.length * H), i * H);
        for (let j = 0; j < chunk.length; j++) this.tokens.push(chunk[j]);
      }
    } finally {
      m.graph.prompt = false;
    }
    return out;
  }

  snapshot(opts: SnapshotOptions = {}): Uint8Array {
    return writeSnapshot(this.state, { modelHash: this.model.hash, modelType: this.model.modelType, pos: this.pos, tokens: this.tokens }, opts);
  }

  reset(): void {
    this.state.clear();
    this.tokens = [];
    this.checkpoint = null;
  }

  /** A new session with the same state and checkpoint (prefix sharing between requests). */
  fork(): Session {
    const s = this.model.restore(this.snapshot());
    s.checkpoint = this.checkpoint;
    return s;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.model.slots.release(this.slot);
  }
}

export async function buildModel(ckpt: Checkpoint, opts: ModelOptions = {}): Promise<Model> {
  const config = ckpt.config;
  const family: Family = familyFor(config);
  const kvCache = opts.kvCache ?? 'f32';
  if (!KV_CACHE_TYPES.includes(kvCache)) throw new ConfigError('options.kvCache', `must be one of ${KV_CACHE_TYPES.join(', ')}, got ${JSON.stringify(opts.kvCache)}`);
  const attention = resolveAttention(opts.attention);
  const k = await instantiate({ build: opts.build, budget: opts.memoryBudget });
  const ws = new WeightStore(k, ckpt);
  await ws.loadAll(
    { dtype: opts.dtype, onProgress: opts.onProgress },
    (name) => family.keepF32?.(name, config) ?? false,
    (name) => family.ignore?.(name, config) ?? false,
  );
  const maxChunk = opts.maxChunk ?? Math.max(64, family.minChunk?.(config) ?? 0);
  const ctx = new Ctx(k, ws, { exact: opts.exact ?? false, maxChunk, kvCache, attention });
  const net = family.build(ctx, family.parse(config));
  // The int8 activation scratch of quantized products is laid out now, so no forward grows memory.
  let maxCols = 32;
  for (const info of ckpt.tensors.values()) if (info.shape.length >= 2) maxCols = Math.max(maxCols, info.shape[info.shape.length - 1]);
  reserveMatmulScratch(k, maxChunk, maxCols);
  if (Object.keys(ws.bytesByDType).some(isKQuant)) reserveKMatmulScratch(k, maxChunk, maxCols);
  const positions = Number(config.max_position_embeddings);
  const cfgMax = positions > 0 ? positions : 4096;
  const maxContext = opts.maxContext ?? Math.min(cfgMax, 4096);
  if (positions > 0 && maxContext > positions) {
    throw new ConfigError('options.maxContext', `is ${maxContext}, but the model has ${positions} positions (config max_position_embeddings); use at most ${positions}`);
  }
  // Layers declare their state (page bounds included) from the first specs() call on.
  ctx.opts.attention = fitAttention(attention, opts.attention, maxContext);
  if (kvCache !== 'f32' && !net.specs(maxContext).some((r) => r.quant)) {
    throw new ConfigError('options.kvCache', `'${kvCache}' quantizes attention KV caches, and model type ${config.model_type} has none (its layers are ${[...new Set(net.layerKinds)].join(', ')}, with constant-size state): use kvCache 'f32'`);
  }
  if (attention.mode === 'topk' && !net.specs(maxContext).some((r) => isPageBounds(r.name))) {
    throw new ConfigError('options.attention.mode', `'topk' selects KV pages of full-attention layers, and model type ${config.model_type} has none (its layers are ${[...new Set(net.layerKinds)].join(', ')}; sliding-window, MLA and DSA attention keep their own): use attention mode 'dense'`);
  }
  const graph = new WasmGraph(k, opts.exact ?? false, maxChunk, maxContext);
  graph.plan(net);
  checkStateFits(k, net, maxContext, opts);
  const parts: Uint8Array[] = [new TextEncoder().encode(JSON.stringify(config)), ...ws.digestParts];
  return new Model(k, ctx, net, config, ws, hashHex(parts), maxContext, ckpt, graph, opts.maxSessions);
}

/** The most bytes a WebAssembly memory (32-bit addresses) can hold. */
export const WASM_MEMORY_LIMIT = 65536 * 65536;

/**
 * Refuses a context whose session state cannot fit beside the weights: one slot per session that may
 * be alive at once (maxSessions, at least one) within the memory budget, or within what a
 * WebAssembly memory can address. The error gives the numbers and the largest context that fits.
 */
function checkStateFits(k: WasmInstance, net: Net, maxContext: number, opts: ModelOptions): void {
  const limit = Math.min(opts.memoryBudget ?? Infinity, WASM_MEMORY_LIMIT);
  const slots = Number.isFinite(opts.maxSessions) && opts.maxSessions! > 0 ? opts.maxSessions! : 1;
  const used = k.arena.top;
  const slot = new StateLayout(net.specs(maxContext), maxContext).bytes;
  const need = used + slot * slots;
  if (need <= limit) return;
  const perToken = net.specs(maxContext).reduce((a, r) => a + (r.kind === 'kv' ? r.perToken! * 4 : 0), 0);
  const fixed = slot - perToken * maxContext;
  const fits = perToken ? Math.max(0, Math.floor(((limit - used) / slots - fixed) / perToken)) : 0;
  const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
  const what = opts.memoryBudget !== undefined && opts.memoryBudget < WASM_MEMORY_LIMIT ? 'the memory budget' : 'a WebAssembly memory';
  throw new ConfigError('options.maxContext',
    `is ${maxContext}: ${slots} session${slots > 1 ? 's' : ''} of ${mib(slot)} state each plus ${mib(used)} of weights and scratch need ${mib(need)}, ` +
    `more than ${what} holds (${mib(limit)}); at most about ${fits} positions fit`);
}
