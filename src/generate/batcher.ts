// Batched decoding: sessions of one WASM model hand their forward requests to the model's step
// batcher instead of running them one by one. Requests made in the same turn of the event loop are
// run together when the turn ends (a macrotask, yieldToHost): every session waiting to feed one
// token gets it in one multi-sequence pass (Model.forwardBatch), so each weight is read once for
// all of them; a prompt (several tokens) is fed in chunks of the session's prefill chunk, one chunk
// per step, taking turns with the decode passes so running streams keep flowing while it fills.
//
// Exactness: each session gets the logits its own forward() gives, bit for bit, so a seeded
// generation writes the same text whether it runs alone, beside others, or without batching.
//  - Decode passes run with batch-invariant matrix products (kernels/matmul.ts setBatchInvariant):
//    every row takes the one-row path a lone decode step takes. The quantized kernels' four-row
//    path sums in another order, so without this a row's last bits would depend on its neighbours.
//  - A prompt chunk runs as a pass of its own, cut where feeding the prompt alone cuts it (chunks
//    of the session's prefillChunk from the first token fed), so chunked scans and the kernels'
//    row grouping see the same rows as they do alone.
// Elementwise kernels whose SIMD body and scalar tail differ (softcaps, tanh-GELU) are exact per
// row only when the row width is a multiple of 4; bench/RESULTS.md names the fixtures where not.
//
// A request that fails fails alone: tokens are checked per request before a pass, and when a pass
// throws anyway its sessions whose state is all positional caches run again one by one (their
// cache rows are rewritten in place); a session with recurrent state in a failed pass gets the
// error, since its state may have moved.
//
// Sessions of the WebGPU backend are not batched here (they run their forward as before).

import { isBatchInvariant, setBatchInvariant } from '../kernels/matmul';
import { Session, type Model } from '../models/model';
import type { SequenceSession } from '../runtime/session';
import { yieldToHost } from './host';

export interface RunOptions {
  /** Every token's logits ([n·V], row by row) instead of the last one's ([V]). */
  all?: boolean;
  /** Checked before each step of the request: once it has fired, the request resolves with null (tokens already fed stay fed). */
  signal?: AbortSignal;
  /** Called with the last token's logits after each chunk fed (the state then holds the tokens so far). */
  onChunk?: (logits: Float32Array) => void;
}

export interface BatcherStats {
  /** Passes that fed one token to each of one or more sessions. */
  decodePasses: number;
  /** Tokens those passes fed. */
  decodeTokens: number;
  /** Most sessions in one decode pass. */
  widest: number;
  /** Prompt chunks fed (one pass each). */
  prefillChunks: number;
}

interface Job {
  session: Session;
  ids: number[];
  all: boolean;
  signal?: AbortSignal;
  onChunk?: (logits: Float32Array) => void;
  /** Tokens fed so far. */
  done: number;
  /** With `all`: every token's logits, filled chunk by chunk. */
  out: Float32Array | null;
  resolve(logits: Float32Array | null): void;
  reject(e: unknown): void;
}

/** Whether a session's state is all position-indexed caches that a failed pass cannot have spoiled for a rerun. */
function rerunnable(s: Session): boolean {
  return s.model.layout.regions.every((r) => r.kind === 'kv' || (r.kind === 'ring' && s.pos < (r.capacity ?? 0)));
}

export class StepBatcher {
  readonly stats: BatcherStats = { decodePasses: 0, decodeTokens: 0, widest: 0, prefillChunks: 0 };
  private readonly queue: Job[] = [];
  private scheduled = false;
  /** Whether the last step fed a prompt chunk: prompt chunks and decode passes take turns. */
  private lastWasPrompt = false;

  constructor(readonly model: Model) {}

  /** Requests waiting (a prompt counts once however many chunks it has left). */
  get pending(): number {
    return this.queue.length;
  }

  /**
   * Feeds `ids` to `session` in the coming steps; resolves with the last token's logits ([V]), or
   * every token's with `all`, or null when `signal` fired first. Rejects with the error of this
   * request alone (tokens outside the vocabulary, past the context, a disposed session …).
   */
  run(session: SequenceSession, ids: ArrayLike<number>, opts: RunOptions = {}): Promise<Float32Array | null> {
    if (!(session instanceof Session) || session.model !== this.model) return Promise.reject(new Error('StepBatcher: not a WASM session of this model'));
    const list = Array.from(ids);
    if (!list.length) return Promise.reject(new RangeError('forward needs at least one token'));
    return new Promise((resolve, reject) => {
      const all = !!opts.all && list.length > 1;
      this.queue.push({
        session, ids: list, all, signal: opts.signal, onChunk: opts.onChunk, done: 0,
        out: all ? new Float32Array(list.length * this.model.net.vocabSize) : null, resolve, reject,
      });
      this.schedule();
    });
  }

  /** run() without a signal: the logits always come. */
  async forward(session: SequenceSession, ids: ArrayLike<number>, all = false): Promise<Float32Array> {
    return (await this.run(session, ids, { all }))!;
  }

  private schedule(): void {
    if (this.scheduled || !this.queue.length) return;
    this.scheduled = true;
    void yieldToHost().then(() => {
      this.scheduled = false;
      try {
        this.step();
      } finally {
        this.schedule();
      }
    });
  }

  private remove(j: Job): void {
    const i = this.queue.indexOf(j);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /**
   * One step: a decode pass for every session waiting with one token, or the next chunk of the
   * first prompt waiting; when both wait, they alternate. A session's requests run in the order made.
   */
  private step(): void {
    for (const j of this.queue.filter((j) => j.signal?.aborted)) {
      this.remove(j);
      j.resolve(null);
    }
    // Each session's first request: a later one waits until the earlier ones have run.
    const seen = new Set<Session>();
    const heads: Job[] = [];
    for (const j of this.queue) {
      if (seen.has(j.session)) continue;
      seen.add(j.session);
      heads.push(j);
    }
    const singles = heads.filter((j) => j.ids.length === 1);
    const prompt = heads.find((j) => j.ids.length > 1);
    if (prompt && (!singles.length || !this.lastWasPrompt)) {
      this.lastWasPrompt = true;
      this.promptChunk(prompt);
    } else if (singles.length) {
      this.lastWasPrompt = false;
      const ok: Job[] = [];
      for (const j of singles) {
        this.remove(j);
        try {
          j.session.check(j.ids);
          ok.push(j);
        } catch (e) {
          j.reject(e);
        }
      }
      const C = this.model.maxChunk;
      for (let i = 0; i < ok.length; i += C) this.decodePass(ok.slice(i, i + C));
    }
  }

  /** One token for each job's session in one pass (batch-invariant products), each job its logits. */
  private decodePass(jobs: Job[]): void {
    if (!jobs.length) return;
    const k = this.model.k;
    const was = isBatchInvariant(k);
    let outs: Float32Array[] | null = null;
    let failure: unknown = null;
    setBatchInvariant(k, true);
    try {
      outs = this.model.forwardBatch(jobs.map((j) => ({ session: j.session, ids: j.ids })));
    } catch (e) {
      failure = e;
    } finally {
      setBatchInvariant(k, was);
    }
    if (!outs) {
      this.isolate(jobs, failure);
      return;
    }
    this.stats.decodePasses++;
    this.stats.decodeTokens += jobs.length;
    this.stats.widest = Math.max(this.stats.widest, jobs.length);
    jobs.forEach((j, i) => {
      j.onChunk?.(outs[i]);
      j.resolve(outs[i]);
    });
  }

  /** After a failed pass: sessions that can run again do so one by one; the others get the error. */
  private isolate(jobs: Job[], failure: unknown): void {
    for (const j of jobs) {
      if (jobs.length === 1 || !rerunnable(j.session)) {
        j.reject(failure);
        continue;
      }
      try {
        const l = j.session.forward(j.ids);
        j.onChunk?.(l);
        j.resolve(l);
      } catch (e) {
        j.reject(e);
      }
    }
  }

  /** The next chunk of a prompt, as feeding it alone cuts it; resolves the job after its last chunk. */
  private promptChunk(j: Job): void {
    const V = this.model.net.vocabSize;
    const n = Math.min(j.session.prefillChunk, j.ids.length - j.done);
    let l: Float32Array;
    try {
      // The whole request is checked before its first token runs (context room, vocabulary).
      if (j.done === 0) j.session.check(j.ids);
      l = j.session.forward(j.ids.slice(j.done, j.done + n), j.all);
    } catch (e) {
      this.remove(j);
      j.reject(e);
      return;
    }
    this.stats.prefillChunks++;
    if (j.out) j.out.set(l, j.done * V);
    j.done += n;
    j.onChunk?.(j.all ? l.slice((n - 1) * V) : l);
    if (j.done === j.ids.length) {
      this.remove(j);
      j.resolve(j.out ?? l);
    }
  }
}

const batchers = new WeakMap<Model, StepBatcher>();

/** Turns batched decoding on or off for sessions of `model` (LanguageModel.batching). */
export function setBatching(model: Model, on: boolean): void {
  if (!on) batchers.delete(model);
  else if (!batchers.has(model)) batchers.set(model, new StepBatcher(model));
}

/** The model's step batcher while batching is on. */
export function batcherOf(model: Model): StepBatcher | undefined {
  return batchers.get(model);
}

/** The step batcher `inner` goes through: the model's, when batching is on and `inner` is one of its WASM sessions. */
export function batcherFor(model: Model, inner: SequenceSession): StepBatcher | null {
  const b = batchers.get(model);
  return b && inner instanceof Session && inner.model === model ? b : null;
}

/** `inner.forward(ids)`, through the model's step batcher when batcherFor finds one. */
export function forwardStep(model: Model, inner: SequenceSession, ids: ArrayLike<number>): Float32Array | Promise<Float32Array> {
  return batcherFor(model, inner)?.forward(inner, ids) ?? inner.forward(ids);
}
