// Quantized KV caches (load option kvCache) on whole models: logits close to those of the f32
// cache, cache bytes per token, snapshots that carry the cache type, and the errors for settings a
// model cannot take.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/formats/errors';
import { openCheckpoint } from '../src/formats/checkpoint';
import { loadModel } from '../src/index';
import { buildModel, type Model } from '../src/models/index';
import { readSnapshotHeader, SnapshotError } from '../src/runtime/state';
import { WASM_OPS } from '../src/graph/wasm';
import { KV_APPEND } from '../src/graph/ops';
import { dequantKvRowsRef, quantizeKvRowsRef } from '../src/kernels/kvcache.ref';
import { maxRelErr } from './helpers';
import { localApp, localConfig, SettingsError, type LocalConfig } from '../edge/local';

const MINI = 'models/sparrow-mini';
// A sequence of sparrow-mini's own text: the prompt and its greedy continuation.
const greedy = JSON.parse(readFileSync('models/sparrow-mini/expected_greedy.json', 'utf8')) as { prompt_ids: number[]; tokens: number[] };
const ref = { input_ids: [...greedy.prompt_ids, ...greedy.tokens] };

async function load(dir: string, kvCache?: 'f32' | 'q8_0' | 'q4_0', maxContext = 160, exact = false): Promise<Model> {
  return buildModel(await openCheckpoint(dir), { maxContext, build: 'simd', exact, ...(kvCache ? { kvCache } : {}) });
}

function argmaxRows(logits: Float32Array, V: number): number[] {
  const out: number[] = [];
  for (let t = 0; t < logits.length / V; t++) {
    let b = 0;
    for (let i = 1; i < V; i++) if (logits[t * V + i] > logits[t * V + b]) b = i;
    out.push(b);
  }
  return out;
}

describe('kvCache on sparrow-mini (two gated-attention layers, head_dim 64)', () => {
  // Exact products (weights dequantized in the dot product, activations not quantized), so that the
  // difference is the cache's alone: with int8 activations, the activation rounding of the two runs
  // decorrelates and adds its own ~5e-3.
  it('f32 is the default; q8_0 logits stay within 3e-3 (q4_0 within 6e-2) of the f32 cache, prefill and decode alike', async () => {
    const base = await load(MINI, undefined, 160, true), dflt = await load(MINI, 'f32', 160, true);
    const q8 = await load(MINI, 'q8_0', 160, true), q4 = await load(MINI, 'q4_0', 160, true);
    const ids = ref.input_ids, V = base.net.vocabSize;
    const run = (m: Model) => {
      const s = m.newSession();
      const all = s.forward(ids, true);
      s.dispose();
      return all;
    };
    const f = run(base);
    expect(run(dflt)).toEqual(f);
    const a8 = run(q8), a4 = run(q4);
    const e8 = maxRelErr(a8, f), e4 = maxRelErr(a4, f);
    expect(e8).toBeGreaterThan(0);
    expect(e8).toBeLessThan(3e-3);
    expect(e4).toBeLessThan(6e-2);
    // Top-1 of the teacher-forced positions: near-ties may flip.
    const top = argmaxRows(f, V), top8 = argmaxRows(a8, V);
    const agree = top.filter((t, i) => t === top8[i]).length / top.length;
    console.log(`sparrow-mini kvCache q8_0: max rel. err ${e8.toExponential(2)}, top-1 agreement ${agree}; q4_0: ${e4.toExponential(2)}`);
    expect(agree).toBeGreaterThanOrEqual(0.95);
    // Token by token, against token by token through the f32 cache.
    const decode = (m: Model) => {
      const s = m.newSession();
      const out = new Float32Array(ids.length * V);
      ids.forEach((id, t) => out.set(s.forward([id]), t * V));
      s.dispose();
      return out;
    };
    expect(maxRelErr(decode(q8), decode(base))).toBeLessThan(3e-3);
    for (const m of [base, dflt, q8, q4]) m.dispose();
  });

  it('cache bytes per token: 0.27× (q8_0) and 0.14× (q4_0) of f32', async () => {
    const per = async (kv: 'f32' | 'q8_0' | 'q4_0') => {
      const m = await load(MINI, kv);
      const i = m.info();
      m.dispose();
      expect(i.kvCache).toBe(kv);
      return i.stateBytesPerToken;
    };
    const f = await per('f32'), q8 = await per('q8_0'), q4 = await per('q4_0');
    // 2 layers × (K + V) × 2 kv heads × 64 values.
    expect(f).toBe(2 * 2 * 2 * 64 * 4);
    expect(q8 / f).toBeCloseTo(34 / 128, 6);
    expect(q4 / f).toBeCloseTo(18 / 128, 6);
  });
});

describe('kvCache snapshots', () => {
  it('round-trip (f32 and f16 payloads) and carry the type in a version 2 header', async () => {
    const m = await load(MINI, 'q8_0');
    const s = m.newSession();
    s.forward(ref.input_ids.slice(0, 40));
    const snap = s.snapshot(), half = s.snapshot({ dtype: 'f16' });
    const next = s.forward([7]);
    const { header } = readSnapshotHeader(snap);
    expect(new DataView(snap.buffer, snap.byteOffset).getUint32(8, true)).toBe(2);
    expect(header.kvCache).toBe('q8_0');
    const kv = header.regions.filter((r) => r.kv);
    expect(kv.length).toBe(4);
    expect(kv.every((r) => r.kv === 'q8_0' && r.words === 40 * (2 * 2 * 34) / 4 && r.floats === undefined)).toBe(true);
    expect(m.restore(snap).forward([7])).toEqual(next);
    // The quantized regions are stored as they are in an f16 snapshot; the recurrent state as f16.
    const h16 = readSnapshotHeader(half).header;
    expect(h16.dtype).toBe('f16');
    const r16 = m.restore(half).forward([7]);
    expect(maxRelErr(r16, next)).toBeLessThan(2e-2);
    m.dispose();
  });

  it('an attention-only model: the f16 snapshot of a quantized cache holds the same bytes and restores exactly', async () => {
    const m = await load('test/fixtures/parity/llama-llama3rope-bias', 'q4_0', 64);
    const s = m.newSession();
    s.forward([1, 5, 9, 2, 33, 4, 8]);
    const a = s.snapshot(), b = s.snapshot({ dtype: 'f16' });
    const next = s.forward([3]);
    expect(m.restore(a).forward([3])).toEqual(next);
    expect(m.restore(b).forward([3])).toEqual(next);
    const pa = readSnapshotHeader(a), pb = readSnapshotHeader(b);
    expect(a.subarray(pa.payloadOffset, a.length - 4)).toEqual(b.subarray(pb.payloadOffset, b.length - 4));
    m.dispose();
  });

  it('f32-cache snapshots keep version 1 without a kvCache field (older readers read them)', async () => {
    const m = await load('test/fixtures/parity/llama-llama3rope-bias', undefined, 64);
    const s = m.newSession();
    s.forward([1, 2, 3]);
    const snap = s.snapshot();
    expect(new DataView(snap.buffer, snap.byteOffset).getUint32(8, true)).toBe(1);
    expect('kvCache' in readSnapshotHeader(snap).header).toBe(false);
    m.dispose();
  });

  it('restores only into a model loaded with the same kvCache: a SnapshotError names both types', async () => {
    const f = await load('test/fixtures/parity/llama-llama3rope-bias', 'f32', 64);
    const q = await load('test/fixtures/parity/llama-llama3rope-bias', 'q8_0', 64);
    const q4 = await load('test/fixtures/parity/llama-llama3rope-bias', 'q4_0', 64);
    expect(f.hash).toBe(q.hash);
    const sf = f.newSession(), sq = q.newSession();
    sf.forward([1, 2, 3]);
    sq.forward([1, 2, 3]);
    const fromF = sf.snapshot(), fromQ = sq.snapshot();
    expect(() => q.restore(fromF)).toThrow(SnapshotError);
    expect(() => q.restore(fromF)).toThrow(/snapshot's KV cache is f32, this model's is q8_0 \(load option kvCache\): restore it into a model loaded with kvCache 'f32'/);
    expect(() => f.restore(fromQ)).toThrow(/snapshot's KV cache is q8_0, this model's is f32/);
    expect(() => q4.restore(fromQ)).toThrow(/snapshot's KV cache is q8_0, this model's is q4_0/);
    // A language model's restore goes through the same check.
    for (const m of [f, q, q4]) m.dispose();
  });
});

/**
 * Runs `fn` with the WASM cache append of f32 caches rounding every appended K/V row through the
 * reference quantizer (per head of the region's width / heads), as a quantized cache would hold it.
 */
async function withRoundedAppends<R>(type: 'q8_0' | 'q4_0', heads: (width: number, region: string) => number, fn: () => Promise<R>): Promise<R> {
  const append = WASM_OPS.get(KV_APPEND, 'test');
  WASM_OPS.set(KV_APPEND, (g, a) => {
    if (!g.dry && !a.cache.quant && !a.cache.name.includes('indexer')) {
      const v = g.k.arena.f32(a.x.off, a.x.rows * a.x.width), h = heads(a.x.width, a.cache.name), D = a.x.width / h;
      v.set(dequantKvRowsRef(type, quantizeKvRowsRef(type, v, a.x.rows, h, D), a.x.rows, h, D));
    }
    append(g, a);
  });
  try {
    return await fn();
  } finally {
    WASM_OPS.set(KV_APPEND, append);
  }
}

describe('kvCache across attention kinds', () => {
  it.each([
    ['llama-llama3rope-bias', 'GQA', 'q8_0'],
    ['mistral-swa', 'sliding-window ring', 'q4_0'],
    ['gemma2-softcap-swa', 'soft-capping, alternating windows', 'q8_0'],
    ['gptoss-sinks', 'learned sinks', 'q4_0'],
    ['recurrentgemma-window', 'local attention ring (hybrid)', 'q8_0'],
    ['deepseekv3-mla', 'MLA latent cache', 'q8_0'],
    ['deepseekv32-dsa', 'DSA top-k over the latent cache', 'q4_0'],
  ] as const)('%s (%s, %s): the logits of an f32 cache holding the rounded rows, bit for bit; chunked prefill = decode', async (name, _kind, type) => {
    const dir = `test/fixtures/parity/${name}`;
    const r = JSON.parse(readFileSync(`${dir}/reference.json`, 'utf8')) as { input_ids: number[] };
    const cfg = JSON.parse(readFileSync(`${dir}/config.json`, 'utf8'));
    const nKv: number = cfg.num_key_value_heads ?? cfg.num_attention_heads;
    const ids = r.input_ids;
    const opts = { maxContext: ids.length + 4, maxChunk: 5, exact: true };
    const q = await buildModel(await openCheckpoint(dir), { ...opts, kvCache: type });
    const f = await buildModel(await openCheckpoint(dir), opts);
    const V = q.net.vocabSize;
    const a = q.newSession().forward(ids, true);
    // The MLA latent cache is one head; attention caches have num_key_value_heads.
    const rounded = await withRoundedAppends(type, (_w, region) => (region.endsWith('.latent') ? 1 : nKv), async () => f.newSession().forward(ids, true));
    expect(a).toEqual(rounded);
    const s = q.newSession();
    const dec = new Float32Array(ids.length * V);
    ids.forEach((id, t) => dec.set(s.forward([id]), t * V));
    expect(maxRelErr(dec, a)).toBeLessThan(1e-5);
    expect(Number.isFinite(maxRelErr(a, f.newSession().forward(ids, true)))).toBe(true);
    f.dispose();
    q.dispose();
  });
});

describe('kvCache option errors', () => {
  it('an unknown type is a ConfigError naming options.kvCache', async () => {
    await expect(load(MINI, 'q5_0' as never)).rejects.toThrow(ConfigError);
    await expect(load(MINI, 'q5_0' as never)).rejects.toThrow(/options\.kvCache: must be one of f32, q8_0, q4_0, got "q5_0"/);
    await expect(loadModel(MINI, { kvCache: 'bf16' as never })).rejects.toThrow(/options\.kvCache/);
  });

  it('a model without attention caches refuses a quantized type, naming the option and the model type', async () => {
    await expect(load('test/fixtures/parity/mamba1', 'q8_0')).rejects.toThrow(/options\.kvCache: 'q8_0' quantizes attention KV caches, and model type mamba has none/);
    const m = await load('test/fixtures/parity/mamba1', 'f32');
    m.dispose();
  });

  it('loadModel passes kvCache through; the language model snapshots restore with the same check', async () => {
    const lm = await loadModel(MINI, { kvCache: 'q4_0', maxContext: 64, build: 'simd' });
    expect(lm.model.kvCache).toBe('q4_0');
    const s = lm.model.newSession();
    s.forward([1, 2, 3]);
    const snap = s.snapshot();
    const other = await loadModel(MINI, { maxContext: 64, build: 'simd' });
    expect(() => other.restore(snap)).toThrow(/snapshot's KV cache is q4_0, this model's is f32/);
    expect(lm.restore(snap)).toBeTruthy();
    lm.dispose();
    other.dispose();
  });
});

describe('kvCache in the server', () => {
  it('--kv-cache / SPARROW_KV_CACHE reach the model (/healthz kv_cache); sessions resume from their q8_0 snapshots', async () => {
    expect((localConfig([]) as LocalConfig).kvCache).toBe('f32');
    expect(() => localConfig(['--kv-cache', 'q4_1'])).toThrow(SettingsError);
    expect(() => localConfig(['--kv-cache', 'q4_1'])).toThrow(/--kv-cache must be f32, q8_0 or q4_0, got "q4_1"/);
    process.env.SPARROW_KV_CACHE = 'q4_0';
    try {
      expect((localConfig([]) as LocalConfig).kvCache).toBe('q4_0');
    } finally {
      delete process.env.SPARROW_KV_CACHE;
    }
    const cfg = localConfig(['--kv-cache', 'q8_0', '--allowed-hosts', '*', '--max-context', '256', '--prompt-cache', '0']) as LocalConfig;
    const app = localApp(cfg);
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      app.request(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    await app.ready();
    const health = await (await app.request('/healthz')).json();
    expect(health).toMatchObject({ status: 'ok', kv_cache: 'q8_0' });
    const sid = (await (await post('/v1/sessions', {})).json()).id;
    const turn = async (messages: { role: string; content: string }[]) => {
      const r = await post('/v1/chat/completions', { messages, max_tokens: 8, seed: 1 }, { 'x-session-id': sid });
      expect(r.status).toBe(200);
      return r.json();
    };
    const history = [{ role: 'user', content: 'Tell me a story.' }];
    const first = await turn(history);
    const info = await (await app.request(`/v1/sessions/${sid}`)).json();
    expect(info.bytes).toBeGreaterThan(0);
    const second = await turn([...history, { role: 'assistant', content: first.choices[0].message.content }, { role: 'user', content: 'Go on.' }]);
    expect(second.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    await app.close();
  });
});
