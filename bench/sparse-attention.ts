// Sparse top-k attention at decode (loadModel's attention { mode: 'topk' }): what it saves, what it costs.
//   1. Decode speed, dense against topk, at 2k / 8k / 32k positions of context, on a synthetic llama
//      small enough for a 32k context (8 layers, hidden 512, 8 query / 2 kv heads of 64, FFN 1408,
//      vocab 8192, Q8_0 weights), one WASM thread. The caches are filled with random rows and the page
//      bounds computed from them (questAppendKeys, as the appends keep them) instead of by a prefill:
//      decode speed does not depend on the values, and a 32k-token prefill would take many minutes.
//      Best of --rounds rounds of --gen tokens. Then the kernels alone: one query, dense attention
//      against questAttend (scores, selection, attention) over the same cache.
//   2. Quality on a trained model (models/sparrow-mini: max context 2048, trained on 512-token
//      sequences; its 2 attention layers of 8 are the ones topk changes): long documents of the
//      corpus' validation split, at 2048 positions (--prefill tokens as a dense prompt) and as
//      512-token windows (64-token prompt), every later token decoded one at a time (teacher forcing)
//      with dense and with three topk settings each: bits per byte of the decoded tokens and top-1
//      agreement with dense.
//
// Run: npm run bench:sparse [-- --rounds 5 --gen 16 --contexts 2048,8192,32768 --docs 3 --tokens 2048
//      --prefill 128 --skip-speed --skip-quality]

import { existsSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { openCheckpoint } from '../src/formats/checkpoint';
import { attention, questAppendKeys, questAttend, questScratchBytes } from '../src/kernels/attention';
import { instantiate } from '../src/kernels/runtime';
import { loadModel, type AttentionModeOptions } from '../src/index';
import { buildModel, type Model, type Session } from '../src/models/index';
import { formatAttention } from '../src/runtime/attention-mode';
import { randn, rng } from '../test/helpers';
import { syntheticCheckpoint, writeSyntheticGguf } from './synthetic';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const rounds = Number(arg('rounds') ?? 5);
const gen = Number(arg('gen') ?? 16);
const contexts = (arg('contexts') ?? '2048,8192,32768').split(',').map(Number);
const nDocs = Number(arg('docs') ?? 3);
const docTokens = Number(arg('tokens') ?? 2048);
const prefill = Number(arg('prefill') ?? 128);
const fmt = (x: number, d = 1) => x.toFixed(d);

const TOPK: AttentionModeOptions = { mode: 'topk' };

/** Random weights in a small llama shape whose KV cache holds 32k positions in 256 MiB (f32). */
function smallLlama(maxContext: number) {
  const D = 512, L = 8, H = 8, KV = 2, hd = 64, F = 1408, V = 8192;
  const config = {
    model_type: 'llama', hidden_size: D, num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: KV, head_dim: hd,
    intermediate_size: F, vocab_size: V, max_position_embeddings: maxContext, rms_norm_eps: 1e-5, rope_theta: 500000, hidden_act: 'silu',
    tie_word_embeddings: true, attention_bias: false, mlp_bias: false,
  };
  const s: Record<string, [number[], number, number]> = { 'model.embed_tokens.weight': [[V, D], 0.5, 0], 'model.norm.weight': [[D], 0.1, 1] };
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    Object.assign(s, {
      [`${p}.input_layernorm.weight`]: [[D], 0.1, 1], [`${p}.post_attention_layernorm.weight`]: [[D], 0.1, 1],
      [`${p}.self_attn.q_proj.weight`]: [[H * hd, D], 0.05, 0], [`${p}.self_attn.k_proj.weight`]: [[KV * hd, D], 0.05, 0],
      [`${p}.self_attn.v_proj.weight`]: [[KV * hd, D], 0.05, 0], [`${p}.self_attn.o_proj.weight`]: [[D, H * hd], 0.05, 0],
      [`${p}.mlp.gate_proj.weight`]: [[F, D], 0.05, 0], [`${p}.mlp.up_proj.weight`]: [[F, D], 0.05, 0], [`${p}.mlp.down_proj.weight`]: [[D, F], 0.03, 0],
    });
  }
  return { ck: syntheticCheckpoint(config, s), nKv: KV, hd };
}

/** Random f32 rows in every linear cache region for n positions, and the page bounds of the keys. */
function fillCache(model: Model, base: number, n: number, nKv: number, hd: number): void {
  const k = model.k, r = rng(11), a = model.attention;
  for (const reg of model.layout.regions) {
    if (reg.kind !== 'kv') continue;
    if (reg.quant) throw new Error('bench fills f32 caches only');
    k.arena.f32(base + reg.offset, n * reg.perToken!).set(randn(n * reg.perToken!, r));
    if (a.mode !== 'topk' || !reg.name.endsWith('.k')) continue;
    const maxPages = Math.ceil(model.maxContext / a.pageSize), W = nKv * hd;
    const pages = model.layout.byName.get(`${reg.name.slice(0, -2)}.kpages.${a.pageSize}x${maxPages}`);
    if (!pages) throw new Error(`no page bounds for ${reg.name}`);
    const kMin = base + pages.offset;
    questAppendKeys(k, kMin, kMin + 4 * maxPages * W, base + reg.offset, n, 0, a.pageSize, maxPages, nKv, hd);
  }
}

// ---- 1. decode speed --------------------------------------------------------------------------
// Both models stay loaded and are timed in turn (dense, topk, dense, …), so that load from other
// jobs on the machine falls on both alike; each keeps its best round.
if (!process.argv.includes('--skip-speed')) {
  const maxCtx = Math.max(...contexts) + gen + 8;
  const { ck, nKv, hd } = smallLlama(maxCtx);
  const file = await writeSyntheticGguf(ck, 'llama-small', 'q8_0');
  const runs: { name: string; model: Model; s: Session }[] = [];
  for (const attention of [undefined, TOPK]) {
    const model = await buildModel(await openCheckpoint(file.path), { maxContext: maxCtx, maxSessions: 1, build: 'relaxed', ...(attention ? { attention } : {}) });
    const s = model.newSession();
    fillCache(model, s.state.base, maxCtx, nKv, hd);
    runs.push({ name: formatAttention(model.attention), model, s });
  }
  const r = rng(5), V = runs[0].model.net.vocabSize;
  const rows: string[] = [];
  for (const ctx of contexts) {
    const best = runs.map(() => Infinity);
    for (let round = 0; round < rounds; round++) {
      runs.forEach(({ s }, i) => {
        s.tokens = Array.from({ length: ctx }, () => 1);
        s.forward([Math.floor(r() * V)]);
        const t = performance.now();
        for (let j = 1; j < gen; j++) s.forward([Math.floor(r() * V)]);
        best[i] = Math.min(best[i], (performance.now() - t) / (gen - 1));
      });
    }
    runs.forEach(({ name }, i) => {
      rows.push(`| ${name} | ${ctx} | ${fmt(1000 / best[i])} | ${fmt(best[i], 2)} | ${fmt(best[0] / best[i], 2)} |`);
      console.error(rows[rows.length - 1]);
    });
  }
  for (const { model, s } of runs) {
    s.dispose();
    model.dispose();
  }
  rmSync(file.dir, { recursive: true, force: true });
  console.log(`### Decode speed (synthetic llama: 8 layers, 512 wide, 8/2 heads of 64, Q8_0 weights; ${process.version}, 1 thread, best of ${rounds} × ${gen} tokens, the two timed in turn)\n`);
  console.log('| attention | context | decode tok/s | ms/token | × dense |');
  console.log('|---|---:|---:|---:|---:|');
  for (const x of rows) console.log(x);
  console.log();
}

// ---- 1b. the attention kernels alone: one query, dense attention against questAttend -------------
if (!process.argv.includes('--skip-speed')) {
  const k = await instantiate({ build: 'relaxed' });
  const Hq = 8, Hkv = 2, D = 64, P = 64;
  const rows: string[] = [];
  for (const n of contexts) {
    const mark = k.arena.mark();
    const r = rng(n);
    const Kc = k.arena.putF32(randn(n * Hkv * D, r)), Vc = k.arena.putF32(randn(n * Hkv * D, r)), q = k.arena.putF32(randn(Hq * D, r));
    const out = k.arena.f32buf(Hq * D), maxPages = Math.ceil(n / P);
    const mn = k.arena.f32buf(maxPages * Hkv * D), mx = k.arena.f32buf(maxPages * Hkv * D);
    questAppendKeys(k, mn.ptr, mx.ptr, Kc.ptr, n, 0, P, maxPages, Hkv, D);
    const o = { pos: n - 1, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.125, pageSize: P, pages: 16, sinkPositions: 4, window: 256, maxPages };
    const scratch = k.arena.alloc(questScratchBytes(o));
    const time = (f: () => void) => {
      let best = Infinity;
      for (let i = 0; i < 30; i++) {
        const t = performance.now();
        f();
        best = Math.min(best, performance.now() - t);
      }
      return best;
    };
    const td = time(() => attention(k, out.ptr, q.ptr, Kc.ptr, Vc.ptr, { T: 1, qPos0: n - 1, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.125 }));
    const ts = time(() => questAttend(k, out.ptr, q.ptr, Kc.ptr, Vc.ptr, mn.ptr, mx.ptr, scratch, o));
    rows.push(`| ${n} | ${fmt(td, 3)} | ${fmt(ts, 3)} | ${fmt(td / ts, 2)} |`);
    k.arena.release(mark);
  }
  console.log(`### The kernels alone (Hq ${Hq}, Hkv ${Hkv}, D ${D}, f32 cache; topk:pages=16,page=${P},sinks=4,window=256; best of 30 calls)\n`);
  console.log('| keys | dense attention ms | questAttend ms | × dense |');
  console.log('|---:|---:|---:|---:|');
  for (const x of rows) console.log(x);
  console.log();
}

// ---- 2. quality on sparrow-mini --------------------------------------------------------------
/**
 * Teacher-forced decoding of `seqs` (each: `prefill` tokens as a dense prompt, then one token per
 * step) with dense attention and with each setting: bits per byte of the decoded tokens and top-1
 * agreement with dense. Prints a table.
 */
async function quality(title: string, seqs: number[][], ctx: number, pre: number, settings: AttentionModeOptions[]): Promise<void> {
  const modelDir = 'models/sparrow-mini';
  const dense = await loadModel(modelDir, { exact: true, maxContext: ctx });
  const tok = dense.tokenizer!;
  const bytesOf = (id: number) => (tok.isSpecial(id) ? 0 : [...(tok.idToToken(id) ?? '')].length);
  const V = dense.model.net.vocabSize;
  /** Per decoded position: argmax and −log p(next) in nats. */
  const score = (m: Model, ids: number[]) => {
    const s = m.newSession();
    s.forward(ids.slice(0, pre));
    const top: number[] = [], nll: number[] = [];
    for (let t = pre; t + 1 < ids.length; t++) {
      const row = s.forward([ids[t]]);
      let b = 0, mx = -Infinity;
      for (let i = 0; i < V; i++) if (row[i] > mx) { mx = row[i]; b = i; }
      let z = 0;
      for (let i = 0; i < V; i++) z += Math.exp(row[i] - mx);
      top.push(b);
      nll.push(-(row[ids[t + 1]] - mx - Math.log(z)));
    }
    s.dispose();
    return { top, nll };
  };
  const t0 = performance.now();
  const base = seqs.map((ids) => score(dense.model, ids));
  const bytes = seqs.reduce((a, ids) => a + ids.slice(pre + 1).reduce((x, id) => x + bytesOf(id), 0), 0);
  const bpb = (r: { nll: number[] }[]) => r.reduce((a, x) => a + x.nll.reduce((p, q) => p + q, 0), 0) / Math.LN2 / bytes;
  const rows = [`| dense | — | ${fmt(bpb(base), 4)} | — | 1.000 | — |`];
  console.error(`dense scored in ${fmt((performance.now() - t0) / 1000)} s`);
  for (const o of settings) {
    const lm = await loadModel(modelDir, { exact: true, maxContext: ctx, attention: o });
    const res = seqs.map((ids) => score(lm.model, ids));
    const a = lm.model.attention;
    const budget = a.mode === 'topk' ? a.sinks + a.window + a.pages * a.pageSize : ctx;
    let same = 0, n = 0, sparseSame = 0, sparseN = 0;
    res.forEach((r, d) => r.top.forEach((t, i) => {
      n++;
      if (t === base[d].top[i]) same++;
      // Positions past the budget: the steps topk makes sparse.
      if (pre + i + 1 > budget) {
        sparseN++;
        if (t === base[d].top[i]) sparseSame++;
      }
    }));
    const b = bpb(res), d = b - bpb(base);
    rows.push(`| ${formatAttention(a)} | ${budget} | ${fmt(b, 4)} | ${d >= 0 ? '+' : ''}${fmt(d, 4)} | ${fmt(same / n, 3)} | ${fmt(sparseSame / Math.max(sparseN, 1), 3)} (${sparseN}) |`);
    console.error(rows[rows.length - 1]);
    await lm.dispose();
  }
  await dense.dispose();
  const decoded = seqs.reduce((a, ids) => a + ids.length - pre - 1, 0);
  console.log(`### ${title} (${seqs.length} sequences × ${seqs[0].length} tokens, ${pre}-token dense prompt, ${decoded} decoded positions, ${bytes} bytes; exact products)\n`);
  console.log('| attention | budget (positions) | bits per byte | Δ bpb | top-1 = dense | top-1 = dense past the budget (steps) |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const x of rows) console.log(x);
  console.log();
}

if (!process.argv.includes('--skip-quality')) {
  const textPath = '/work/shared/corpus/valid.txt';
  if (!existsSync(textPath)) throw new Error(`${textPath} not found`);
  const text = await readFile(textPath, 'utf8');
  const docs = text.split('\n<|endoftext|>\n').filter((d) => d.length > 50000).slice(0, nDocs);
  const tk = await loadModel('models/sparrow-mini');
  // From each document, tokens starting 20 000 characters in (past front matter).
  const stream = docs.map((d) => tk.tokenizer!.encode(d.slice(20000, 20000 + 4 * docTokens * 8), { addSpecialTokens: false }));
  await tk.dispose();
  await quality(`Quality on sparrow-mini at ${docTokens} positions (its max_position_embeddings; it was trained on 512-token sequences)`,
    stream.map((ids) => ids.slice(0, docTokens)), docTokens, prefill, [
      { mode: 'topk', pages: 4, pageSize: 16, sinks: 4, window: 64 },
      { mode: 'topk', pages: 8, pageSize: 32, sinks: 4, window: 128 },
      { mode: 'topk' },
    ]);
  // Within the trained length: 512-token windows, four per document.
  const windows = stream.flatMap((ids) => [0, 1, 2, 3].map((w) => ids.slice(w * 512, (w + 1) * 512))).filter((w) => w.length === 512);
  await quality('Quality on sparrow-mini at 512 positions (its training length)', windows, 512, 64, [
    { mode: 'topk', pages: 2, pageSize: 16, sinks: 4, window: 32 },
    { mode: 'topk', pages: 4, pageSize: 16, sinks: 4, window: 64 },
    { mode: 'topk', pages: 8, pageSize: 16, sinks: 4, window: 128 },
  ]);
}
