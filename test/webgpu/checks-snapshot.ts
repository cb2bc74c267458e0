// State snapshots across backends: for every parity fixture and models/sparrow-mini, a prompt longer
// than any sliding window (the WASM models are built with maxChunk 4, so windowed attention keeps a
// ring that wraps) is fed on the GPU, snapshotted and restored into a WASM session, whose next-token
// logits must equal those of a WASM session fed the same tokens; then the reverse (WASM snapshot,
// GPU restore); the f16 option both ways; a snapshot of another model refused; a GPU model whose
// builders leave a state region unmapped refused. Last, LanguageModel sessions: generate on the
// webgpu backend, snapshotAsync(), restore on WASM, continue greedily on both (and the reverse).
// Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../../src/formats/checkpoint';
import { loadModel } from '../../src/index';
import { buildModel, type Model } from '../../src/models/index';
import { readSnapshotHeader, SnapshotError } from '../../src/runtime/state';
import { acquireGpu } from '../../src/webgpu/device';
import { gpuModel, mapState, type GpuModel } from '../../src/webgpu/model';
import { findFixtures, loadFixtureModel, type FixtureReference } from '../../tools/parity-lib';

const out: { name: string; err: number; tol: number; pass: boolean; detail?: string }[] = [];
const num = (name: string, err: number, tol: number, detail?: string) => out.push({ name, err, tol, pass: err <= tol, detail: err <= tol ? undefined : detail });
const check = (name: string, ok: boolean, detail?: string) => out.push({ name, err: ok ? 0 : 1, tol: 0, pass: ok, detail: ok ? undefined : detail });

/** max |a − b| / max |b| (NaN or a length mismatch: Infinity) */
function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let n = 0, d = 0;
  for (let i = 0; i < b.length; i++) {
    const e = Math.abs(a[i] - b[i]);
    if (!(e <= n)) n = Number.isNaN(e) ? Infinity : e;
    d = Math.max(d, Math.abs(b[i]));
  }
  return n / d;
}

const TOL = 1e-5;
/** f16 storage rounds every state value (relative 2^-11); the next logits move by about that much. */
const TOL_F16 = 5e-3;

function refused(fn: () => unknown): string {
  try {
    fn();
    return '';
  } catch (e) {
    return e instanceof SnapshotError && /another model/.test(e.message) ? 'ok' : `${(e as Error).name}: ${(e as Error).message}`;
  }
}

let previous: Uint8Array | null = null;

async function snapshotChecks(name: string, model: Model, gm: GpuModel, prompt: number[], probe: number): Promise<void> {
  // WASM reference: prompt, then the probe token.
  const ref = model.newSession();
  ref.forward(prompt);
  const wasmBytes = ref.snapshot();
  const wasmF16 = ref.snapshot({ dtype: 'f16' });
  const want = ref.forward([probe]);
  ref.dispose();

  // GPU → WASM.
  const gs = gm.newSession();
  await gs.forward(prompt);
  const gpuBytes = await gs.snapshot();
  const gpuF16 = await gs.snapshot({ dtype: 'f16' });
  const gpuNext = await gs.forward([probe]);
  gs.dispose();
  const h = readSnapshotHeader(gpuBytes).header;
  check(`${name}: GPU snapshot header (model hash, pos, tokens, f32)`, h.modelHash === model.hash && h.pos === prompt.length && JSON.stringify(h.tokens) === JSON.stringify(prompt) && h.dtype === 'f32' && gpuBytes.length === wasmBytes.length,
    `${h.modelHash}/${model.hash} ${h.pos} ${h.dtype} ${gpuBytes.length}/${wasmBytes.length}`);
  const w1 = model.restore(gpuBytes);
  const l1 = w1.forward([probe]);
  w1.dispose();
  num(`${name}: GPU snapshot → WASM restore, next logits vs WASM (max rel)`, rel(l1, want), TOL);

  // WASM → GPU.
  const g1 = gm.restore(wasmBytes);
  const l2 = await g1.forward([probe]);
  check(`${name}: WASM snapshot → GPU restore holds the tokens`, g1.pos === prompt.length + 1 && g1.tokens.length === g1.pos, `${g1.pos} ${g1.tokens.length}`);
  // Keys before a wrapped ring's positions are not in the snapshot: no positional rewind below the restore point.
  const wrapped = model.layout.regions.some((r) => r.kind === 'ring' && prompt.length > r.capacity!);
  const canCut = g1.canRewind(prompt.length - 1), canKeep = g1.canRewind(prompt.length);
  check(`${name}: GPU session restored${wrapped ? ' from wrapped rings' : ''} rewinds ${wrapped ? 'no further than the restore point' : 'as any other'}`,
    canCut === (!wrapped && gm.positional) && canKeep === gm.positional, `${canCut} ${canKeep} positional ${gm.positional}`);
  g1.dispose();
  num(`${name}: WASM snapshot → GPU restore, next logits vs WASM (max rel)`, rel(l2, want), TOL);
  // A GPU snapshot restored on the GPU continues as the session it was taken from.
  const g2 = gm.restore(gpuBytes);
  const l3 = await g2.forward([probe]);
  g2.dispose();
  num(`${name}: GPU snapshot → GPU restore, next logits vs the unbroken GPU session (max rel)`, rel(l3, gpuNext), TOL);

  // f16 storage: half the payload; a WASM f16 snapshot restores to the same state on both backends;
  // a GPU f16 snapshot is the GPU state at f16 precision.
  const hf = readSnapshotHeader(gpuF16).header;
  check(`${name}: f16 GPU snapshot is f16 and the size of the WASM one`, hf.dtype === 'f16' && gpuF16.length === wasmF16.length && gpuF16.length < gpuBytes.length, `${hf.dtype} ${gpuF16.length}/${wasmF16.length}/${gpuBytes.length}`);
  const w3 = model.restore(wasmF16);
  const wantF16 = w3.forward([probe]);
  w3.dispose();
  const g3 = gm.restore(wasmF16);
  const l4 = await g3.forward([probe]);
  g3.dispose();
  num(`${name}: f16 WASM snapshot → GPU restore vs WASM restore, next logits (max rel)`, rel(l4, wantF16), TOL);
  const w4 = model.restore(gpuF16);
  const l5 = w4.forward([probe]);
  w4.dispose();
  num(`${name}: f16 GPU snapshot → WASM restore, next logits vs WASM (max rel, f16 state)`, rel(l5, want), TOL_F16);

  // Another model's snapshot.
  if (previous) {
    const why = refused(() => gm.restore(previous!));
    check(`${name}: GPU restore refuses another model's snapshot (SnapshotError)`, why === 'ok', why || 'accepted');
  }
  previous = gpuBytes;
}

try {
  const gpu = await acquireGpu();
  const fixtures = await findFixtures('test/fixtures/parity');
  let first: GpuModel | null = null;
  for (const dir of fixtures) {
    const name = dir.split(/[\\/]/).pop()!;
    const ref: FixtureReference = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
    try {
      const model = await loadFixtureModel(dir, ref, { maxChunk: 4 });
      const gm = gpuModel(model, gpu);
      first ??= gm;
      const ids = ref.input_ids;
      const n = Math.min(Math.max(24, Math.min(ids.length - 1, 32)), model.maxContext - 2);
      await snapshotChecks(name, model, gm, ids.slice(0, n), ids[n]);
    } catch (e) {
      check(`${name}: snapshot checks ran`, false, `${(e as Error).name}: ${(e as Error).message}`);
    }
  }

  const mini = await buildModel(await openCheckpoint('models/sparrow-mini'), { exact: true, maxContext: 64, maxChunk: 4 });
  const gmini = gpuModel(mini, gpu);
  const prompt = [1873, 604, 261, 536, 14, 445, 310, 261, 1873, 604, 261, 536, 14, 445, 310, 261, 12, 99, 1204, 77, 310, 261, 536, 14];
  await snapshotChecks('sparrow-mini', mini, gmini, prompt, 445);

  // A GPU model whose layer builders leave a WASM state region without GPU state is refused.
  if (first) {
    const allocs = (first as any).builder.stateAllocs as Parameters<typeof mapState>[1];
    let msg = '';
    try {
      mapState(first.model.layout, allocs.slice(1));
    } catch (e) {
      msg = (e as Error).message;
    }
    check('an unmapped WASM state region is a KernelError at GpuModel construction', /has no GPU state/.test(msg), msg);
    msg = '';
    try {
      mapState(first.model.layout, [...allocs, { ...allocs[0], region: null }]);
    } catch (e) {
      msg = (e as Error).message;
    }
    check('GPU state that is no declared region is refused', /is not one of its declared state regions/.test(msg), msg);
    msg = '';
    try {
      // A region with the right name but not the object the layer declared: names do not match state.
      const r = first.model.layout.regions[0];
      mapState(first.model.layout, [{ ...allocs[0], region: { ...r } }, ...allocs.slice(1)]);
    } catch (e) {
      msg = (e as Error).message;
    }
    check('GPU state is found by the declared region, not by its name', /no state region declared as/.test(msg), msg);
  }

  // LanguageModel sessions across backends.
  const dirM = 'models/sparrow-mini';
  const wasmLm = await loadModel(dirM, { exact: true, maxContext: 256 });
  const gpuLm = await loadModel(dirM, { backend: 'webgpu', maxContext: 256 });
  const p1 = 'Once upon a time';
  const gs = gpuLm.session();
  const a = await gpuLm.generate(p1, { maxTokens: 16, temperature: 0, session: gs }).result();
  const bytes = await gs.snapshotAsync();
  const ws = wasmLm.restore(bytes);
  check('LanguageModel: restored WASM session holds the GPU session\'s tokens', JSON.stringify(ws.tokens) === JSON.stringify(gs.tokens), `${ws.tokens.length} vs ${gs.tokens.length}`);
  // Next logits of copies of the two sessions (the sessions themselves go on generating).
  const probeNext = async (x: { fork(): { inner: { forward(ids: number[]): Float32Array | Promise<Float32Array> }; dispose(): void } }) => {
    const f = x.fork();
    const l = await f.inner.forward([261]);
    f.dispose();
    return l;
  };
  num('LanguageModel: webgpu → wasm restore, next logits vs the GPU session (max rel)', rel(await probeNext(ws), await probeNext(gs)), TOL);
  const p2 = p1 + a.text + ' Then';
  const x = await gpuLm.generate(p2, { maxTokens: 24, temperature: 0, ignoreEos: true, session: gs }).result();
  const y = await wasmLm.generate(p2, { maxTokens: 24, temperature: 0, ignoreEos: true, session: ws }).result();
  check('LanguageModel: webgpu session → snapshotAsync → wasm restore: same continuation', x.text === y.text && x.stats.cachedTokens === y.stats.cachedTokens && y.stats.cachedTokens > 0,
    `${JSON.stringify(x.text)} (${x.stats.cachedTokens}) | ${JSON.stringify(y.text)} (${y.stats.cachedTokens})`);
  const wbytes = await ws.snapshotAsync();
  check('LanguageModel: snapshotAsync on WASM equals snapshot()', JSON.stringify(Array.from(wbytes)) === JSON.stringify(Array.from(ws.snapshot())));
  const gs2 = gpuLm.restore(wbytes);
  num('LanguageModel: wasm → webgpu restore, next logits vs the WASM session (max rel)', rel(await probeNext(gs2), await probeNext(ws)), TOL);
  const p3 = p2 + y.text + ' At last';
  const u = await wasmLm.generate(p3, { maxTokens: 24, temperature: 0, ignoreEos: true, session: ws }).result();
  const v = await gpuLm.generate(p3, { maxTokens: 24, temperature: 0, ignoreEos: true, session: gs2 }).result();
  check('LanguageModel: wasm session → snapshot → webgpu restore: same continuation', u.text === v.text && u.stats.cachedTokens === v.stats.cachedTokens && v.stats.cachedTokens > 0,
    `${JSON.stringify(u.text)} (${u.stats.cachedTokens}) | ${JSON.stringify(v.text)} (${v.stats.cachedTokens})`);
  let msg = '';
  try {
    gs.snapshot();
  } catch (e) {
    msg = (e as Error).message;
  }
  check('ModelSession.snapshot() on webgpu points to snapshotAsync()', /snapshotAsync\(\)/.test(msg), msg);
  console.log(JSON.stringify({ adapter: gpu.adapterName, results: out }));
} catch (e) {
  console.log(JSON.stringify({ error: `${(e as Error).name}: ${(e as Error).message}`, results: out }));
}
