// The load option attention { mode: 'topk' } on whole models: with a budget that covers the context
// the logits are dense attention's, bit for bit; with a small one each decode step's attention
// output equals attention over exactly the positions a naive selection picks; bad settings and
// models without full-attention layers are refused naming the option. Gemma 4's KV-shared layers read
// their source layer's bounds; OLMo Hybrid's attention layers are the shared Attention mixer.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { ConfigError } from '../src/formats/errors';
import { ATTENTION, type AttentionArgs } from '../src/graph/ops';
import { WASM_OPS, type WasmGraph } from '../src/graph/wasm';
import { attendSelectedRef, questSelectRef } from '../src/kernels/attention.ref';
import type { KvCacheType } from '../src/kernels/kvcache';
import { isPageBounds } from '../src/layers/attention';
import { buildModel, type Model } from '../src/models/index';
import { fitAttention, parseAttentionFlag, resolveAttention, type AttentionModeOptions } from '../src/runtime/attention-mode';
import { SnapshotError } from '../src/runtime/state';
import { localApp, localConfig, SettingsError, type LocalConfig } from '../edge/local';
import { maxRelErr } from './helpers';

const fixture = (name: string) => `test/fixtures/parity/${name}`;
const idsOf = (name: string) => (JSON.parse(readFileSync(`${fixture(name)}/reference.json`, 'utf8')) as { input_ids: number[] }).input_ids;

async function load(name: string, attention?: AttentionModeOptions, kvCache: KvCacheType = 'f32', maxContext = 96): Promise<Model> {
  const ck = await openCheckpoint(fixture(name));
  try {
    return await buildModel(ck, { maxContext, maxChunk: 5, build: 'simd', kvCache, ...(attention ? { attention } : {}) });
  } catch (e) {
    await ck.close?.();
    throw e;
  }
}

/** Logits of a chunked prefill of the first `split` ids, then of each later id decoded alone. */
function run(m: Model, ids: number[], split: number): Float32Array {
  const V = m.net.vocabSize;
  const s = m.newSession();
  const out = new Float32Array(ids.length * V);
  out.set(s.forward(ids.slice(0, split), true));
  for (let t = split; t < ids.length; t++) out.set(s.forward([ids[t]]), t * V);
  s.dispose();
  return out;
}

const FAMILIES = [
  ['llama-llama3rope-bias', 'GQA, llama3 RoPE, q/k/v bias'],
  ['qwen3-mqa-headdim32', 'MQA, q/k norm'],
  ['gemma2-softcap-swa', 'soft-capping, alternating sliding windows'],
  ['gptoss-sinks', 'learned sinks, alternating sliding windows'],
  ['qwen3next-hybrid', 'gated attention in a hybrid'],
  ['qwen3moe', 'MoE'],
  ['bitnet-online', 'BitNet: ternary linears, attn_sub_norm (own attention mixer)'],
  ['bitnet-online-bias-tied', 'BitNet: MQA, q/k/v/o bias, tied embeddings'],
  ['zamba2-gqa-bias', 'Zamba2: shared attention on [x, e] in a Mamba-2 hybrid, GQA'],
  ['zamba2-shared-adapters', 'Zamba2: two shared blocks over three uses, each use its own KV cache and bounds, LoRA adapters, RoPE'],
  ['gemma4-ple-kvshare', 'Gemma 4: KV-shared layers reading their source layer\'s cache and bounds, sliding layers, per-layer inputs'],
  ['gemma4-moe', 'Gemma 4: MoE, sliding and full layers with their own caches'],
  ['olmohybrid-rope-gqa', 'OLMo Hybrid: attention layers among Gated DeltaNet layers, RoPE, GQA'],
  ['olmohybrid-nope-tied', 'OLMo Hybrid: attention without RoPE, tied embeddings'],
] as const;

describe("attention mode 'topk' with a covering budget", () => {
  it.each(FAMILIES)('%s (%s): the logits of dense attention, bit for bit (prefill and decode)', async (name) => {
    const ids = idsOf(name);
    for (const kv of ['f32', 'q8_0'] as const) {
      const dense = await load(name, undefined, kv), topk = await load(name, { mode: 'topk' }, kv);
      const a = run(dense, ids, 7), b = run(topk, ids, 7);
      expect(b).toEqual(a);
      // A budget of exactly the context length is still dense.
      const tight = await load(name, { mode: 'topk', pageSize: 4, pages: 5, sinks: 3, window: ids.length - 23 }, kv);
      expect(run(tight, ids, 7)).toEqual(a);
      for (const m of [dense, topk, tight]) m.dispose();
    }
  });
});

describe("attention mode 'topk' on every parity fixture", () => {
  it('refuses naming the option, or gives dense logits with a covering budget (bit for bit) and finite ones with a small budget', async () => {
    const names = readdirSync('test/fixtures/parity').filter((n) => existsSync(`${fixture(n)}/reference.json`));
    const took: string[] = [], refused: string[] = [];
    const refusal = /^options\.attention\.mode: 'topk' selects KV pages of full-attention layers, and model type \w+ has none/;
    for (const name of names) {
      if (existsSync(`${fixture(name)}/diffusion_logits.f32`)) {
        // A diffusion model runs its denoiser over a whole canvas: loaded at its own chunk size.
        await expect(buildModel(await openCheckpoint(fixture(name)), { attention: { mode: 'topk', pageSize: 3, pages: 2, sinks: 2, window: 5 } }), name).rejects.toThrow(refusal);
        refused.push(name);
        continue;
      }
      const ids = idsOf(name);
      let sparse: Model;
      try {
        sparse = await load(name, { mode: 'topk', pageSize: 3, pages: 2, sinks: 2, window: 5 });
      } catch (e) {
        expect((e as Error).message, name).toMatch(refusal);
        refused.push(name);
        continue;
      }
      const dense = await load(name), covering = await load(name, { mode: 'topk' });
      const d = run(dense, ids, 7);
      expect(run(covering, ids, 7), name).toEqual(d);
      const sp = run(sparse, ids, 7);
      expect(sp.every(Number.isFinite), name).toBe(true);
      for (const m of [dense, covering, sparse]) m.dispose();
      took.push(name);
    }
    console.log(`topk on ${took.length} fixtures (${took.join(', ')}); refused by ${refused.length} (${refused.join(', ')})`);
    expect(took.length).toBeGreaterThanOrEqual(20);
    // Families whose attention mixers are their own code take the mode too.
    expect(took).toEqual(expect.arrayContaining(['bitnet-online', 'bitnet-online-bias-tied', 'zamba2-gqa-bias', 'zamba2-shared-adapters', 'gemma4-ple-kvshare', 'gemma4-moe', 'olmohybrid-rope-gqa', 'olmohybrid-nope-tied']));
  }, 300_000);
});

/** Runs fn with the WASM attention op checking every sparse decode step against the naive selection. */
async function withSparseCheck<R>(fn: () => Promise<R>): Promise<{ result: R; checked: number; worst: number }> {
  const attn = WASM_OPS.get(ATTENTION, 'test');
  let checked = 0, worst = 0;
  WASM_OPS.set(ATTENTION, (g: WasmGraph, a: AttentionArgs) => {
    attn(g, a);
    const pg = a.pages;
    if (g.dry || !pg || g.T !== 1 || g.pos0 + 1 <= pg.sinks + pg.window + pg.pages * pg.pageSize) return;
    const { nHeads, nKv, headDim: D, vDim: Dv } = a, n = g.pos0 + 1, G = nHeads / nKv;
    const f = (p: number, len: number) => Float64Array.from(g.k.arena.f32(p, len));
    const q = f(a.q.off, nHeads * D), K = f(g.state(a.k), n * nKv * D), V = f(g.state(a.v), n * nKv * Dv);
    const sinks = a.sinks ? f(a.sinks, nHeads) : undefined;
    const lists = questSelectRef(q, K, g.pos0, { nHeads, nKv, headDim: D, pageSize: pg.pageSize, pages: pg.pages, sinks: pg.sinks, window: pg.window });
    const want = new Float64Array(nHeads * Dv);
    for (let h = 0; h < nKv; h++) {
      const Kg = new Float64Array(n * D), Vg = new Float64Array(n * Dv);
      for (let p = 0; p < n; p++) {
        Kg.set(K.subarray((p * nKv + h) * D, (p * nKv + h + 1) * D), p * D);
        Vg.set(V.subarray((p * nKv + h) * Dv, (p * nKv + h + 1) * Dv), p * Dv);
      }
      want.set(attendSelectedRef(q.subarray(h * G * D, (h + 1) * G * D), Kg, Vg, lists[h], lists[h].length, {
        nHeads: G, nKv: 1, headDim: D, vDim: Dv, scale: a.scale, softcap: a.softcap, sinks: sinks?.subarray(h * G, (h + 1) * G),
      }), h * G * Dv);
    }
    worst = Math.max(worst, maxRelErr(g.k.arena.f32(a.y.off, nHeads * Dv), want));
    checked++;
  });
  try {
    return { result: await fn(), checked, worst };
  } finally {
    WASM_OPS.set(ATTENTION, attn);
  }
}

describe("attention mode 'topk' with a small budget", () => {
  it.each(FAMILIES)('%s (%s): each decode step attends exactly the selected positions', async (name) => {
    const ids = idsOf(name);
    const o = { mode: 'topk', pageSize: 3, pages: 2, sinks: 2, window: 5 } as const;
    const { result, checked, worst } = await withSparseCheck(async () => {
      const m = await load(name, o);
      const dense = await load(name);
      const a = run(m, ids, 6), b = run(dense, ids, 6);
      m.dispose();
      dense.dispose();
      return { a, b };
    });
    expect(checked).toBeGreaterThan(0);
    expect(worst).toBeLessThan(2e-5);
    // Prefill rows are dense; decode rows past the budget differ from dense.
    const V = result.a.length / ids.length;
    expect(result.a.subarray(0, 6 * V)).toEqual(result.b.subarray(0, 6 * V));
    expect(maxRelErr(result.a, result.b)).toBeGreaterThan(0);
  });

  it('the page bounds live in the session state: a snapshot restored continues identically', async () => {
    const name = 'llama-llama3rope-bias', ids = idsOf(name);
    const m = await load(name, { mode: 'topk', pageSize: 4, pages: 2, sinks: 1, window: 3 });
    const s = m.newSession();
    s.forward(ids.slice(0, 30));
    const snap = s.snapshotSync();
    const a: Float32Array[] = [];
    for (const id of ids.slice(30)) a.push(s.forward([id]));
    const r = m.restore(snap);
    ids.slice(30).forEach((id, i) => expect(r.forward([id])).toEqual(a[i]));
    s.dispose();
    r.dispose();
    m.dispose();
    // Another page layout (page size, or pages held for another maxContext) or dense: refused.
    for (const o of [{ maxContext: 128, attention: { mode: 'topk', pageSize: 4, pages: 2, sinks: 1, window: 3 } }, { maxContext: 96, attention: { mode: 'topk', pageSize: 8, pages: 2, sinks: 1, window: 3 } }, { maxContext: 96 }] as const) {
      const other = await buildModel(await openCheckpoint(fixture(name)), { maxChunk: 5, build: 'simd', ...o });
      expect(() => other.restore(snap)).toThrow(SnapshotError);
      other.dispose();
    }
  });

  it('a prompt is prefill in every chunk, a last chunk of one token included (dense logits)', async () => {
    const name = 'llama-llama3rope-bias', ids = idsOf(name).slice(0, 11);
    const o = { mode: 'topk', pageSize: 2, pages: 1, sinks: 1, window: 2 } as const;
    const m = await load(name, o), dense = await load(name);
    // maxChunk 5: chunks of 5, 5 and 1 tokens.
    const a = m.newSession(), b = dense.newSession();
    expect(a.forward(ids, true)).toEqual(b.forward(ids, true));
    // In a batched pass too: a prompt of several tokens beside a decode step.
    const c = m.newSession(), d = dense.newSession(), e = m.newSession();
    e.forward(ids.slice(0, 9));
    const [pc] = m.forwardBatch([{ session: c, ids }, { session: e, ids: [ids[9]] }], true);
    expect(pc).toEqual(d.forward(ids, true));
    for (const s of [a, b, c, d, e]) s.dispose();
    m.dispose();
    dense.dispose();
  });

  it('batched decoding of several sessions gives each session its own sparse steps', async () => {
    const name = 'llama-llama3rope-bias', ids = idsOf(name);
    const m = await load(name, { mode: 'topk', pageSize: 4, pages: 2, sinks: 1, window: 3 });
    const a = m.newSession(), b = m.newSession(), a1 = m.newSession(), b1 = m.newSession();
    a.forward(ids.slice(0, 20));
    a1.forward(ids.slice(0, 20));
    b.forward(ids.slice(5, 30));
    b1.forward(ids.slice(5, 30));
    for (let t = 0; t < 12; t++) {
      const [la, lb] = m.forwardBatch([{ session: a, ids: [ids[20 + t]] }, { session: b, ids: [ids[30 + t]] }]);
      expect(la).toEqual(a1.forward([ids[20 + t]]));
      expect(lb).toEqual(b1.forward([ids[30 + t]]));
    }
    for (const s of [a, b, a1, b1]) s.dispose();
    m.dispose();
  });

  it('works with q4_0 caches (selection from the f32 keys, attention over the quantized rows)', async () => {
    const name = 'qwen3-mqa-headdim32', ids = idsOf(name);
    const dense = await load(name, undefined, 'q4_0'), sparse = await load(name, { mode: 'topk', pageSize: 4, pages: 3, sinks: 2, window: 6 }, 'q4_0');
    const a = run(dense, ids, 10), b = run(sparse, ids, 10);
    const V = dense.net.vocabSize;
    expect(b.subarray(0, 10 * V)).toEqual(a.subarray(0, 10 * V));
    expect(b.every(Number.isFinite)).toBe(true);
    dense.dispose();
    sparse.dispose();
  });

  it.each([
    ['bitnet-online', 2],
    ['zamba2-gqa-bias', 2],
    ['zamba2-shared-adapters', 3],
  ] as const)('%s (attention mixers of its own): a bounds region per KV cache, snapshots, q4_0 caches', async (name, uses) => {
    const ids = idsOf(name), o = { mode: 'topk', pageSize: 4, pages: 2, sinks: 1, window: 3 } as const;
    const m = await load(name, o);
    // Each attention use (Zamba2: each hybrid layer, shared block or not) has its own bounds next to its own key cache.
    const bounds = m.layout.regions.filter((r) => isPageBounds(r.name)).map((r) => r.name.replace(/\.kpages\.\d+x\d+$/, ''));
    const keys = m.layout.regions.filter((r) => r.kind === 'kv' && r.name.endsWith('.k')).map((r) => r.name.slice(0, -2));
    expect(bounds).toHaveLength(uses);
    expect(bounds).toEqual(keys);
    // The snapshot carries the bounds: a restored session continues identically; another layout is refused.
    const s = m.newSession();
    s.forward(ids.slice(0, 30));
    const snap = s.snapshotSync();
    const a = ids.slice(30).map((id) => s.forward([id]));
    const r = m.restore(snap);
    ids.slice(30).forEach((id, i) => expect(r.forward([id]), `${name} step ${i}`).toEqual(a[i]));
    s.dispose();
    r.dispose();
    m.dispose();
    for (const other of [await load(name), await load(name, { ...o, pageSize: 8 })]) {
      expect(() => other.restore(snap)).toThrow(SnapshotError);
      other.dispose();
    }
    // q4_0 caches: prompt rows dense, sparse decode finite.
    const dense = await load(name, undefined, 'q4_0'), sparse = await load(name, { mode: 'topk', pageSize: 4, pages: 3, sinks: 2, window: 6 }, 'q4_0');
    const da = run(dense, ids, 10), sb = run(sparse, ids, 10);
    const V = dense.net.vocabSize;
    expect(sb.subarray(0, 10 * V)).toEqual(da.subarray(0, 10 * V));
    expect(sb.every(Number.isFinite)).toBe(true);
    expect(maxRelErr(sb, da)).toBeGreaterThan(0);
    dense.dispose();
    sparse.dispose();
  });
});

describe("attention mode 'topk' on Gemma 4 (KV shared across layers)", () => {
  it.each([
    ['gemma4-ple-kvshare', ['model.layers.2.self_attn']],
    ['gemma4-moe', ['model.layers.1.self_attn', 'model.layers.3.self_attn']],
  ] as const)('%s: bounds for each full layer with its own cache only, snapshots, q4_0 caches', async (name, owners) => {
    const ids = idsOf(name), o = { mode: 'topk', pageSize: 4, pages: 2, sinks: 1, window: 3 } as const;
    const m = await load(name, o);
    // Sliding layers keep their window; a KV-shared layer uses its source layer's bounds and declares none.
    const bounds = m.layout.regions.filter((r) => isPageBounds(r.name)).map((r) => r.name.replace(/\.kpages\.\d+x\d+$/, ''));
    expect(bounds).toEqual(owners);
    const s = m.newSession();
    s.forward(ids.slice(0, 30));
    const snap = s.snapshotSync();
    const a = ids.slice(30).map((id) => s.forward([id]));
    const r = m.restore(snap);
    ids.slice(30).forEach((id, i) => expect(r.forward([id]), `${name} step ${i}`).toEqual(a[i]));
    s.dispose();
    r.dispose();
    m.dispose();
    for (const other of [await load(name), await load(name, { ...o, pageSize: 8 })]) {
      expect(() => other.restore(snap)).toThrow(SnapshotError);
      other.dispose();
    }
    const dense = await load(name, undefined, 'q4_0'), sparse = await load(name, { mode: 'topk', pageSize: 4, pages: 3, sinks: 2, window: 6 }, 'q4_0');
    const da = run(dense, ids, 10), sb = run(sparse, ids, 10);
    const V = dense.net.vocabSize;
    expect(sb.subarray(0, 10 * V)).toEqual(da.subarray(0, 10 * V));
    expect(sb.every(Number.isFinite)).toBe(true);
    expect(maxRelErr(sb, da)).toBeGreaterThan(0);
    dense.dispose();
    sparse.dispose();
  });

  it('gemma4-ple-kvshare: the KV-shared full layer attends sparsely over its source layer\'s cache', async () => {
    const name = 'gemma4-ple-kvshare', ids = idsOf(name);
    const layers = new Set<string>();
    const attn = WASM_OPS.get(ATTENTION, 'test');
    WASM_OPS.set(ATTENTION, (g: WasmGraph, a: AttentionArgs) => {
      if (!g.dry && a.pages && g.T === 1) layers.add(`${g.label} ${a.k.name}`);
      attn(g, a);
    });
    try {
      const m = await load(name, { mode: 'topk', pageSize: 3, pages: 2, sinks: 2, window: 5 });
      run(m, ids, 6);
      m.dispose();
    } finally {
      WASM_OPS.set(ATTENTION, attn);
    }
    expect([...layers].sort()).toEqual(['layer 2 model.layers.2.self_attn.k', 'layer 4 model.layers.2.self_attn.k']);
  });
});

describe('attention settings', () => {
  it('are checked, naming the option', async () => {
    const bad: [AttentionModeOptions, RegExp][] = [
      [{ mode: 'topk', pageSize: 0 }, /options\.attention\.pageSize: must be an integer ≥ 1, got 0/],
      [{ mode: 'topk', pageSize: 1.5 }, /options\.attention\.pageSize/],
      [{ mode: 'topk', pages: 0 }, /options\.attention\.pages: must be an integer ≥ 1/],
      [{ mode: 'topk', window: 0 }, /options\.attention\.window/],
      [{ mode: 'topk', sinks: -1 }, /options\.attention\.sinks/],
      [{ mode: 'sparse' as 'topk' }, /options\.attention\.mode: must be one of dense, topk, got "sparse"/],
      [{ mode: 'dense', pages: 4 }, /options\.attention\.pages: applies to mode 'topk' only/],
      [{ mode: 'topk', page: 4 } as unknown as AttentionModeOptions, /options\.attention\.page: is not an attention setting/],
    ];
    for (const [o, re] of bad) expect(() => resolveAttention(o)).toThrow(re);
    const o = { mode: 'topk', pages: 65 } as const;
    expect(() => fitAttention(resolveAttention(o), o, 4096)).toThrow(/options\.attention\.pages: 65 pages of 64 positions is more than a context of 4096 positions holds \(64 pages\)/);
    // The default page count is lowered to what a short context holds.
    expect(fitAttention(resolveAttention({ mode: 'topk' }), { mode: 'topk' }, 300)).toEqual({ mode: 'topk', pageSize: 64, pages: 5, sinks: 4, window: 256 });
    await expect(load('llama-llama3rope-bias', { mode: 'topk', pages: 30, pageSize: 4 })).rejects.toThrow(/options\.attention\.pages: 30 pages of 4/);
    expect(resolveAttention({ mode: 'topk' })).toEqual({ mode: 'topk', pageSize: 64, pages: 16, sinks: 4, window: 256 });
    expect(resolveAttention(undefined)).toEqual({ mode: 'dense' });
  });

  it('models without full-attention layers refuse topk, naming the option', async () => {
    for (const name of ['mamba1', 'mistral-swa', 'deepseekv3-mla', 'deepseekv32-dsa']) {
      const e = await load(name, { mode: 'topk' }).then(() => null, (x: unknown) => x);
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).message).toMatch(/options\.attention\.mode: 'topk' selects KV pages of full-attention layers, and model type \w+ has none/);
    }
  });

  it('the flag form: --attention / SPARROW_ATTENTION / ATTENTION', () => {
    expect(parseAttentionFlag('topk:pages=16,page=64,sinks=4,window=256')).toEqual({ mode: 'topk', pages: 16, pageSize: 64, sinks: 4, window: 256 });
    expect(parseAttentionFlag('topk')).toEqual({ mode: 'topk' });
    expect(parseAttentionFlag(' dense ')).toEqual({ mode: 'dense' });
    expect(() => parseAttentionFlag('topk:pages=x')).toThrow(/options\.attention: pages must be an integer, got "x"/);
    expect(() => parseAttentionFlag('topk:size=3')).toThrow(/unknown setting "size"/);
    expect(() => parseAttentionFlag('quest', 'ATTENTION')).toThrow(/ATTENTION: mode must be dense or topk/);
    expect(() => resolveAttention(parseAttentionFlag('topk:page=0'))).toThrow(/options\.attention\.pageSize/);
    const cfg = localConfig(['--attention', 'topk:pages=8']);
    expect(cfg).not.toBe('help');
    if (cfg !== 'help') expect(cfg.attention).toEqual({ mode: 'topk', pages: 8 });
    expect(() => localConfig(['--attention', 'topk:pages=0'])).toThrow(SettingsError);
    expect(() => localConfig(['--attention', 'sparse'])).toThrow(/--attention mode must be dense or topk/);
    process.env.SPARROW_ATTENTION = 'topk:page=0';
    try {
      expect(() => localConfig([])).toThrow(/--attention pageSize: must be an integer ≥ 1/);
    } finally {
      delete process.env.SPARROW_ATTENTION;
    }
  });
});

describe('attention in the server', () => {
  it('--attention reaches the model (/healthz attention) and generation works', async () => {
    const cfg = localConfig(['--attention', 'topk:pages=2,page=16,sinks=4,window=32', '--allowed-hosts', '*', '--max-context', '512', '--prompt-cache', '0']) as LocalConfig;
    const app = localApp(cfg);
    await app.ready();
    const health = await (await app.request('/healthz')).json();
    expect(health).toMatchObject({ status: 'ok', attention: 'topk:pages=2,page=16,sinks=4,window=32' });
    const r = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 80, temperature: 0 }) });
    expect(r.status).toBe(200);
    const body = await r.json();
    expect(body.choices[0].text.length).toBeGreaterThan(0);
    await app.close();
  });
});
