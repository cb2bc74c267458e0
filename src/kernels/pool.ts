// Worker pool for the 'threads' build (Node worker_threads, Bun and Deno module Workers).
//
// The instance's memory is a shared WebAssembly.Memory; each worker instantiates the same compiled
// module over it and calls the row-range kernels (…, r0, r1) on chunks of rows it claims with
// Atomics.add. The calling thread takes chunks too, so nThreads counts it: createPool(k, 2) starts
// one worker. Output rows are independent and each is computed by the same code whichever thread
// takes it, so pooled results are bit-identical to single-thread ones.
//
// Synchronisation is a control block in the arena (Int32 slots; f64 arguments from byte 64):
// the host writes the job, bumps SEQ and notifies; workers spin briefly, then Atomics.wait on SEQ;
// each counts itself in DONE, which the host spins/waits on (Node, Bun and Deno main threads may
// Atomics.wait). Cloudflare Workers have neither Worker nor Atomics.wait: no pool there.
import { KernelError } from './runtime';
import type { K } from './types';

const SEQ = 0, NEXT = 1, DONE = 2, FN = 3, NARGS = 4, ROWS = 5, CHUNK = 6, QUIT = 7, READY = 8, ERR = 9, WCHUNKS = 10;
const ARGS_AT = 64, MAX_ARGS = 16, CTRL_BYTES = ARGS_AT + 8 * MAX_ARGS;

export interface PoolOptions {
  /** How long an idle worker (and the host waiting for workers) spins before sleeping, in ms. Default 2. */
  spinMs?: number;
  /** Smallest rows·cols·batch for which matmul hands work to the pool. Default 2^17. */
  minWork?: number;
}

export interface Pool {
  readonly nThreads: number;
  /** matmul uses the pool for products of at least this many multiply-adds (rows·cols·batch). */
  minWork: number;
  /** Row chunks the workers (not the calling thread) have computed since the pool started. */
  readonly workerChunks: number;
  /**
   * Calls export `fn`(...args, r0, r1) over rows [0, rows) split in chunks across the workers and
   * the calling thread; returns when every row is done.
   */
  run(fn: string, args: number[], rows: number): void;
  /**
   * Stops and terminates the workers; the pool cannot run afterwards. Under Deno a live pool keeps
   * the process from exiting (its Worker has no unref), so destroy it when done.
   */
  destroy(): Promise<void>;
}

interface WorkerHandle {
  post(msg: unknown): void;
  terminate(): Promise<unknown> | void;
  error: string | null;
}

const attached = new WeakMap<K, Pool>();

/** matmul (and anything else that asks poolOf) splits its rows over `pool` from now on; null detaches. */
export function attachPool(k: K, pool: Pool | null): void {
  if (pool) attached.set(k, pool);
  else attached.delete(k);
}

export function poolOf(k: K): Pool | undefined {
  return attached.get(k);
}

const g = globalThis as any;
const webWorkers = typeof g.Deno !== 'undefined' || typeof g.Bun !== 'undefined';

async function spawn(url: URL): Promise<WorkerHandle> {
  if (webWorkers) {
    const w = new g.Worker(url.href, { type: 'module' });
    // Bun's Worker has unref (a forgotten pool then does not keep the process alive); Deno's has not.
    w.unref?.();
    const h: WorkerHandle = { post: (m) => w.postMessage(m), terminate: () => w.terminate(), error: null };
    w.onmessage = (e: any) => { if (e.data?.error) h.error = e.data.error; };
    w.onerror = (e: any) => { h.error = String(e?.message ?? e); e?.preventDefault?.(); };
    return h;
  }
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(url);
  const h: WorkerHandle = { post: (m) => w.postMessage(m), terminate: () => w.terminate(), error: null };
  w.on('message', (d: any) => { if (d?.error) h.error = d.error; });
  w.on('error', (e) => { h.error = e.message; });
  // After the listeners: adding a 'message' listener refs the worker again. Unref'd, a pool that
  // is never destroyed does not keep the process alive.
  w.unref();
  return h;
}

const modules = new WeakMap<K, WebAssembly.Module>();

/** The compiled module behind k: the instance's own when the runtime records it, else build/threads.wasm. */
async function moduleOf(k: K): Promise<WebAssembly.Module> {
  const own = (k as any).module;
  if (own instanceof WebAssembly.Module) return own;
  const hit = modules.get(k);
  if (hit) return hit;
  const url = new URL('../../build/threads.wasm', import.meta.url);
  let bytes: Uint8Array;
  if (url.protocol === 'file:') {
    const fs = await import('node:fs/promises');
    const { fileURLToPath } = await import('node:url');
    bytes = new Uint8Array(await fs.readFile(fileURLToPath(url)));
  } else {
    const res = await fetch(url);
    if (!res.ok) throw new KernelError('pool', `cannot fetch ${url.href}: ${res.status}`);
    bytes = new Uint8Array(await res.arrayBuffer());
  }
  const mod = await WebAssembly.compile(bytes as BufferSource);
  const names = WebAssembly.Module.exports(mod).map((e) => e.name).sort().join(',');
  const have = Object.keys(k.exports).sort().join(',');
  if (names !== have) throw new KernelError('pool', 'build/threads.wasm does not match the instance (rebuild with npm run asbuild)');
  modules.set(k, mod);
  return mod;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts nThreads − 1 workers over k's shared memory. k must come from instantiate({ build: 'threads' }).
 * The control block (192 bytes) is taken from k's arena. Call attachPool(k, pool) to let matmul use it.
 */
export async function createPool(k: K, nThreads: number, opts: PoolOptions = {}): Promise<Pool> {
  if (!Number.isInteger(nThreads) || nThreads < 1 || nThreads > 256) throw new KernelError('pool', `nThreads must be an integer in [1, 256], got ${nThreads}`);
  if (k.build !== 'threads' || typeof SharedArrayBuffer === 'undefined' || !(k.memory.buffer instanceof SharedArrayBuffer)) {
    throw new KernelError('pool', `needs an instance of the 'threads' build with shared memory (got the ${k.build} build)`);
  }
  if (typeof Atomics.wait !== 'function') throw new KernelError('pool', 'Atomics.wait is not available on this runtime');
  const spinMs = opts.spinMs ?? 2;
  const names = Object.keys(k.exports).filter((n) => typeof k.exports[n] === 'function');
  const index = new Map(names.map((n, i) => [n, i]));
  const ctrl = k.arena.alloc(CTRL_BYTES, 64);
  const c = new Int32Array(k.memory.buffer, ctrl, 16);
  const a = new Float64Array(k.memory.buffer, ctrl + ARGS_AT, MAX_ARGS);
  c.fill(0);
  const nWorkers = nThreads - 1;
  const workers: WorkerHandle[] = [];
  if (nWorkers > 0) {
    const module = await moduleOf(k);
    const url = new URL('./pool-worker.js', import.meta.url);
    for (let i = 0; i < nWorkers; i++) workers.push(await spawn(url));
    for (const w of workers) w.post({ module, memory: k.memory, ctrl, names, spinMs });
    const t0 = Date.now();
    while (Atomics.load(c, READY) < nWorkers) {
      const bad = workers.find((w) => w.error);
      if (bad || Date.now() - t0 > 30_000) {
        await Promise.all(workers.map((w) => w.terminate()));
        throw new KernelError('pool', `worker failed to start: ${bad?.error ?? 'timed out'}`);
      }
      await sleep(1);
    }
  }
  let alive = true;

  const pool: Pool = {
    nThreads,
    minWork: opts.minWork ?? 1 << 17,
    get workerChunks() {
      return Atomics.load(c, WCHUNKS);
    },
    run(fn, args, rows) {
      if (!alive) throw new KernelError('pool', 'the pool was destroyed');
      const f = k.exports[fn];
      const id = index.get(fn);
      if (typeof f !== 'function' || id === undefined) throw new KernelError('pool', `no kernel export ${fn}`);
      if (args.length > MAX_ARGS) throw new KernelError('pool', `${args.length} arguments > ${MAX_ARGS}`);
      if (rows <= 0) return;
      // Several chunks per thread so that a thread slowed by the OS hands its share to the others.
      const chunk = Math.max(4, Math.ceil(rows / (nThreads * 4)));
      if (nWorkers === 0) {
        f(...args, 0, rows);
        return;
      }
      c[FN] = id;
      c[NARGS] = args.length;
      c[ROWS] = rows;
      c[CHUNK] = chunk;
      for (let i = 0; i < args.length; i++) a[i] = args[i];
      Atomics.store(c, NEXT, 0);
      Atomics.store(c, DONE, 0);
      Atomics.store(c, ERR, 0);
      Atomics.add(c, SEQ, 1);
      Atomics.notify(c, SEQ);
      let failure: unknown = null;
      try {
        for (;;) {
          const r0 = Atomics.add(c, NEXT, 1) * chunk;
          if (r0 >= rows) break;
          f(...args, r0, Math.min(rows, r0 + chunk));
        }
      } catch (e) {
        failure = e;
        Atomics.store(c, NEXT, 1 << 30);
      }
      // Every worker acknowledges every job, so the control block is free for the next one on return.
      // The rest of a job is at most a chunk per worker: spin (a futex wake-up costs tens of µs),
      // and only sleep once the wait has gone on for longer than any chunk should take.
      const t0 = performance.now();
      let spins = 0;
      for (let d = Atomics.load(c, DONE); d < nWorkers; d = Atomics.load(c, DONE)) {
        if ((++spins & 255) === 0 && performance.now() - t0 > spinMs) {
          Atomics.wait(c, DONE, d, 100);
          if (performance.now() - t0 > 60_000) {
            alive = false;
            throw new KernelError('pool', `workers did not finish ${fn} within 60 s`);
          }
        }
      }
      if (failure) throw failure;
      if (Atomics.load(c, ERR)) throw new KernelError('pool', `${fn} failed in a worker`);
    },
    async destroy() {
      if (!alive) return;
      alive = false;
      if (attached.get(k) === pool) attached.delete(k);
      Atomics.store(c, QUIT, 1);
      Atomics.add(c, SEQ, 1);
      Atomics.notify(c, SEQ);
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
  return pool;
}
