// Quantized KV caches (loadModel's kvCache): what they save, what they cost, what they change.
//   1. KV cache bytes per token of f32, q8_0 and q4_0 caches, for the shapes measured here and a
//      few common ones (kernels/kvcache.ts kvRowBytes: K and V of every attention layer).
//   2. Decode speed at 512, 2048 and 8192 positions of context on a synthetic llama in the shape of
//      SmolLM-135M (30 attention layers, 3 kv heads of 64; Q8_0 weights; context raised to 8192),
//      one WASM thread. The cache is filled with synthetic rows (quantized as the append quantizes
//      them) instead of by a prefill: decode speed does not depend on the values, and an 8k-token
//      prefill would take minutes. Best of --rounds rounds of --gen tokens each.
//   3. The attention kernel alone: decode over 4096 and 32768 keys.
//   4. Logits error against the f32 cache on the parity fixtures (test/fixtures/parity/*,
//      models/sparrow-mini/parity when present, and sparrow-mini on its own text), with exact dot
//      products so that the difference is the cache's alone: max |Δlogit| / max |logit| over the
//      full-sequence forward, top-1 agreement of every position, and the greedy continuation of the
//      fixture's prompt against the f32 cache's (tokens equal before the first difference).
//
// Run: npm run bench:kv [-- --rounds 3 --gen 32 --contexts 512,2048,8192 --skip-speed --skip-error]

import { rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../src/formats/checkpoint';
import { attention } from '../src/kernels/attention';
import { KV_CACHE_TYPES, kvRowBytes, quantizeKvRows, type KvCacheType } from '../src/kernels/kvcache';
import { instantiate } from '../src/kernels/runtime';
import { buildModel, type Model } from '../src/models/index';
import { findFixtures, loadFixtureModel, relMaxErr, type FixtureReference } from '../tools/parity-lib';
import { randn, rng } from '../test/helpers';
import { smol135, writeSyntheticGguf } from './synthetic';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const rounds = Number(arg('rounds') ?? 3);
const gen = Number(arg('gen') ?? 32);
const contexts = (arg('contexts') ?? '512,2048,8192').split(',').map(Number);
const skipSpeed = process.argv.includes('--skip-speed');
const skipError = process.argv.includes('--skip-error');
const TYPES = KV_CACHE_TYPES;

const fmt = (x: number, d = 1) => x.toFixed(d);
const kib = (n: number) => (n >= 1024 * 1024 ? `${fmt(n / 1048576)} MiB` : `${fmt(n / 1024, 2)} KiB`);

// ---- 1. bytes per token ----------------------------------------------------------------------
{
  const shapes: [string, number, number, number][] = [
    // name, attention layers, kv heads, head dim
    ['SmolLM-135M shape (synthetic below)', 30, 3, 64],
    ['sparrow-mini (2 attention layers of 8)', 2, 2, 64],
    ['Llama-3.2-1B', 16, 8, 64],
    ['Qwen3-0.6B', 28, 8, 128],
    ['Llama-3-8B', 32, 8, 128],
    ['a parity fixture (head_dim 16, padded to 32)', 3, 2, 16],
  ];
  console.log('### KV cache bytes per token\n');
  console.log('| model shape | f32 | q8_0 | q4_0 | q8_0 ÷ f32 | q4_0 ÷ f32 |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [name, L, kv, d] of shapes) {
    const per = (t: KvCacheType) => L * 2 * kvRowBytes(t, kv, d);
    const f = per('f32');
    console.log(`| ${name} | ${kib(f)} | ${kib(per('q8_0'))} | ${kib(per('q4_0'))} | ${fmt(per('q8_0') / f, 3)} | ${fmt(per('q4_0') / f, 3)} |`);
  }
  console.log();
}

// ---- 2. decode speed at long context ---------------------------------------------------------
if (!skipSpeed) {
  const maxCtx = Math.max(...contexts) + gen + 8;
  const rows: string[] = [];
  const speed = new Map<string, number>();
  const ck = smol135();
  (ck.config as Record<string, unknown>).max_position_embeddings = maxCtx;
  const file = await writeSyntheticGguf(ck, 'smol135', 'q8_0');
  for (const kvCache of TYPES) {
    const t0 = performance.now();
    const model = await buildModel(await openCheckpoint(file.path), { maxContext: maxCtx, maxSessions: 1, kvCache });
    console.error(`loaded smol135 (q8_0 weights, ${kvCache} cache) in ${fmt((performance.now() - t0) / 1000)} s`);
    const s = model.newSession();
    fillCache(model, s.state.base, maxCtx);
    const V = model.net.vocabSize, r = rng(5);
    for (const ctx of contexts) {
      let best = Infinity;
      for (let round = 0; round < rounds; round++) {
        s.tokens = Array.from({ length: ctx }, () => 1);
        s.forward([Math.floor(r() * V)]);
        const t = performance.now();
        for (let i = 1; i < gen; i++) s.forward([Math.floor(r() * V)]);
        best = Math.min(best, (performance.now() - t) / (gen - 1));
      }
      speed.set(`${kvCache}:${ctx}`, 1000 / best);
      const f = speed.get(`f32:${ctx}`)!;
      rows.push(`| ${kvCache} | ${ctx} | ${fmt(1000 / best)} | ${fmt(best, 2)} | ${fmt(1000 / best / f, 2)} | ${kib(model.info().stateBytesPerToken * ctx)} |`);
    }
    s.dispose();
    model.dispose();
  }
  rmSync(file.dir, { recursive: true, force: true });
  console.log(`### Decode speed at long context (synthetic SmolLM-135M shape, Q8_0 weights, ${process.version}, 1 thread, ${rounds} rounds of ${gen} tokens)\n`);
  console.log('| KV cache | context | decode tok/s | ms/token | × f32 | KV cache of a session |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const x of rows) console.log(x);
  console.log();
}

/** Writes rows of random keys and values (as the cache type holds them) into every cache region of the slot, for `n` positions. */
function fillCache(model: Model, base: number, n: number): void {
  const k = model.k, r = rng(11);
  for (const reg of model.layout.regions) {
    if (reg.kind !== 'kv') continue;
    const dst = base + reg.offset;
    if (!reg.quant) {
      model.k.arena.f32(dst, n * reg.perToken!).set(randn(n * reg.perToken!, r));
      continue;
    }
    const { heads, dim, type } = reg.quant;
    const mark = k.arena.mark();
    const src = k.arena.putF32(randn(n * heads * dim, r));
    quantizeKvRows(k, type, dst, src.ptr, n, heads, dim, { dstStride: reg.perToken! * 4 });
    k.arena.release(mark);
  }
}

// ---- 3. the attention kernel -----------------------------------------------------------------
if (!skipSpeed) {
  const k = await instantiate({ build: 'relaxed' });
  const r = rng(7);
  const best = (fn: () => void) => {
    for (let i = 0; i < 3; i++) fn();
    let b = Infinity;
    for (let i = 0; i < 15; i++) {
      const t = performance.now();
      fn();
      b = Math.min(b, performance.now() - t);
    }
    return b;
  };
  console.log(`### Attention kernel, one query over the cache (relaxed build, ${process.version})\n`);
  console.log('| shape | keys | f32 ms | q8_0 ms | q4_0 ms | q8_0 ÷ f32 | q4_0 ÷ f32 |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const [Hq, Hkv, D, n] of [[9, 3, 64, 4096], [32, 8, 128, 4096], [16, 16, 64, 4096], [14, 2, 64, 32768]]) {
    const mark = k.arena.mark();
    const kf = k.arena.putF32(randn(n * Hkv * D, r)), vf = k.arena.putF32(randn(n * Hkv * D, r));
    const q = k.arena.putF32(randn(Hq * D, r)), out = k.arena.f32buf(Hq * D);
    const o = { T: 1, qPos0: n - 1, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 1 / Math.sqrt(D) };
    const ms: Record<string, number> = { f32: best(() => attention(k, out.ptr, q.ptr, kf.ptr, vf.ptr, o)) };
    for (const t of ['q8_0', 'q4_0'] as const) {
      const rb = kvRowBytes(t, Hkv, D);
      const kc = k.arena.alloc(n * rb), vc = k.arena.alloc(n * rb);
      quantizeKvRows(k, t, kc, kf.ptr, n, Hkv, D);
      quantizeKvRows(k, t, vc, vf.ptr, n, Hkv, D);
      ms[t] = best(() => attention(k, out.ptr, q.ptr, kc, vc, { ...o, cache: t }));
    }
    k.arena.release(mark);
    console.log(`| Hq ${Hq} Hkv ${Hkv} D ${D} | ${n} | ${fmt(ms.f32, 3)} | ${fmt(ms.q8_0, 3)} | ${fmt(ms.q4_0, 3)} | ${fmt(ms.q8_0 / ms.f32, 2)} | ${fmt(ms.q4_0 / ms.f32, 2)} |`);
  }
  console.log();
}

// ---- 4. logits error against the f32 cache ---------------------------------------------------
if (!skipError) {
  function argmax(a: Float32Array, skip: number[] = []): number {
    let b = -1;
    for (let i = 0; i < a.length; i++) if (!skip.includes(i) && (b < 0 || a[i] > a[b])) b = i;
    return b;
  }
  const eosOf = (m: Model) => [m.config.eos_token_id].flat().filter((x): x is number => Number.isInteger(x));
  interface Run { logits: Float32Array; top: number[]; greedy: number[] }
  async function measure(model: Model, ids: number[], prompt: number[], steps: number): Promise<Run> {
    const V = model.net.vocabSize;
    const s = model.newSession();
    const logits = s.forward(ids, true);
    s.dispose();
    const top = Array.from({ length: ids.length }, (_, t) => argmax(logits.subarray(t * V, (t + 1) * V)));
    const g = model.newSession();
    const eos = eosOf(model);
    let l = g.forward(prompt);
    const greedy: number[] = [];
    for (let i = 0; i < steps; i++) {
      const tok = argmax(l, eos);
      greedy.push(tok);
      if (i + 1 < steps) l = g.forward([tok]);
    }
    g.dispose();
    model.dispose();
    return { logits, top, greedy };
  }
  const lead = (a: number[], b: number[]) => {
    let i = 0;
    while (i < a.length && a[i] === b[i]) i++;
    return i;
  };
  const cases: { name: string; family: string; load: (kv: KvCacheType) => Promise<Model>; ids: number[]; prompt: number[]; steps: number }[] = [];
  const dirs = [...(await findFixtures('test/fixtures/parity')), ...(await findFixtures('models/sparrow-mini'))];
  for (const dir of dirs) {
    const ref: FixtureReference = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
    const name = dir.split(/[\\/]/).slice(-1)[0] === 'parity' ? 'sparrow-mini/parity' : dir.split(/[\\/]/).pop()!;
    cases.push({
      name, family: ref.model_type, ids: ref.input_ids, prompt: ref.greedy_prompt, steps: ref.greedy_tokens.length,
      load: (kvCache) => loadFixtureModel(dir, ref, { kvCache }),
    });
  }
  const g = JSON.parse(await readFile('models/sparrow-mini/expected_greedy.json', 'utf8')) as { prompt_ids: number[]; tokens: number[] };
  for (const exact of [true, false]) {
    cases.push({
      name: `sparrow-mini, its own text${exact ? '' : ' (int8 activations)'}`, family: 'qwen3_next', ids: [...g.prompt_ids, ...g.tokens], prompt: g.prompt_ids, steps: g.tokens.length,
      load: async (kvCache) => buildModel(await openCheckpoint('models/sparrow-mini'), { exact, maxContext: 160, kvCache }),
    });
  }
  console.log('### Logits against the f32 cache (exact dot products; max |Δlogit| / max |logit| of the full-sequence forward)\n');
  console.log('| fixture | family | q8_0 max rel | q4_0 max rel | q8_0 top-1 | q4_0 top-1 | q8_0 greedy | q4_0 greedy |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const c of cases) {
    let base: Run;
    try {
      base = await measure(await c.load('f32'), c.ids, c.prompt, c.steps);
    } catch (e) {
      console.error(`${c.name}: ${(e as Error).message}`);
      continue;
    }
    const cells: string[][] = [];
    for (const kv of ['q8_0', 'q4_0'] as const) {
      try {
        const q = await measure(await c.load(kv), c.ids, c.prompt, c.steps);
        const agree = q.top.filter((t, i) => t === base.top[i]).length;
        cells.push([relMaxErr(q.logits, base.logits).toExponential(1), `${agree}/${c.ids.length}`, `${lead(q.greedy, base.greedy)}/${c.steps}`]);
      } catch (e) {
        // Models without attention caches refuse a quantized type.
        cells.push(['—', '—', '—']);
        if (kv === 'q8_0') console.error(`${c.name}: ${(e as Error).message.split(':').slice(0, 2).join(':')}`);
      }
    }
    if (cells.every((x) => x[0] === '—')) continue;
    console.log(`| ${c.name} | ${c.family} | ${cells[0][0]} | ${cells[1][0]} | ${cells[0][1]} | ${cells[1][1]} | ${cells[0][2]} | ${cells[1][2]} |`);
  }
}
