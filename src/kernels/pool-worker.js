// Worker side of src/kernels/pool.ts. Plain JavaScript so that Node's worker_threads, Bun and Deno
// all load it without a TypeScript loader.
//
// The worker instantiates the host's compiled 'threads' module over the host's shared memory
// (each instance has its own stub-runtime heap pointer, which is never used: the host lays out
// memory), then serves jobs forever: it waits for the job counter in the control block to move,
// claims row chunks with Atomics.add until none are left, and counts itself done.
// Control block layout (Int32 slots, then f64 arguments at byte 64) is defined in pool.ts.

const SEQ = 0, NEXT = 1, DONE = 2, FN = 3, NARGS = 4, ROWS = 5, CHUNK = 6, QUIT = 7, READY = 8, ERR = 9, WCHUNKS = 10;

const isWeb = typeof globalThis.Deno !== 'undefined' || typeof globalThis.Bun !== 'undefined';

function serve(init) {
  const { module, memory, ctrl, names, spinMs } = init;
  const instance = new WebAssembly.Instance(module, {
    env: { memory, abort() { throw new Error('wasm abort'); } },
  });
  const fns = names.map((n) => instance.exports[n]);
  const c = new Int32Array(memory.buffer, ctrl, 16);
  const a = new Float64Array(memory.buffer, ctrl + 64, 16);
  let seen = Atomics.load(c, SEQ);
  Atomics.add(c, READY, 1);
  for (;;) {
    let s = Atomics.load(c, SEQ);
    if (s === seen) {
      // Spin first: back-to-back matmuls of one forward pass arrive microseconds apart, far
      // sooner than a futex wake-up.
      const t0 = performance.now();
      let i = 0;
      while ((s = Atomics.load(c, SEQ)) === seen) {
        if ((++i & 1023) === 0 && performance.now() - t0 > spinMs) {
          Atomics.wait(c, SEQ, seen);
        }
      }
    }
    seen = s;
    if (Atomics.load(c, QUIT)) return;
    try {
      const fn = fns[c[FN]];
      const n = c[NARGS], rows = c[ROWS], chunk = c[CHUNK];
      const args = [];
      for (let j = 0; j < n; j++) args.push(a[j]);
      for (;;) {
        const r0 = Atomics.add(c, NEXT, 1) * chunk;
        if (r0 >= rows) break;
        fn(...args, r0, Math.min(rows, r0 + chunk));
        Atomics.add(c, WCHUNKS, 1);
      }
    } catch {
      Atomics.store(c, ERR, 1);
    }
    Atomics.add(c, DONE, 1);
    Atomics.notify(c, DONE);
  }
}

function fail(post, e) {
  post({ error: String(e && e.message ? e.message : e) });
}

if (isWeb) {
  self.onmessage = (e) => {
    try {
      serve(e.data);
    } catch (err) {
      fail((m) => self.postMessage(m), err);
    }
  };
} else {
  const { parentPort } = await import('node:worker_threads');
  parentPort.once('message', (d) => {
    try {
      serve(d);
    } catch (err) {
      fail((m) => parentPort.postMessage(m), err);
    }
    parentPort.close();
  });
}
