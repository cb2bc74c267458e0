// Batched decoding (src/generate/batcher.ts): requests made in one turn share a pass, prompts are
// fed in the chunks feeding them alone uses and take turns with decode passes, a failing request
// fails alone, and concurrent generations with batching on write the same text, token for token,
// as each one alone without batching (sparrow-mini in Q8_0, a tiny Llama and a tiny Mamba; greedy
// and sampled; some joining while others decode, one prompt longer than a chunk). The
// batch-invariant matrix products it relies on are checked here too, and one test goes through the
// server app: concurrent streamed requests get the texts sequential ones get.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../edge/app';
import { MemorySessionStore } from '../edge/store';
import { isBatchInvariant, matmul, reserveMatmulScratch, setBatchInvariant } from '../src/kernels/matmul';
import type { Weight } from '../src/kernels/types';
import { StepBatcher } from '../src/generate/batcher';
import { batcherOf, loadModel, type GenerateParams, type LanguageModel } from '../src/index';
import { ROOT } from './edge-helpers';
import { BUILDS, kernels, randn, rng } from './helpers';
import { tinyModelDir } from './tiny-models';

const MINI = join(ROOT, 'models/sparrow-mini');

/** Deterministic token ids below V. */
function tokens(n: number, seed: number, V: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return (s >>> 8) % V;
  });
}

const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

describe.each(BUILDS)('batch-invariant Q8_0/Q4_0 products (%s build)', (build) => {
  it('give every row the bits it gets alone, at any batch size and place, on the integer and exact paths', async () => {
    const k = await kernels(build);
    const rows = 37, cols = 96, B = 11;
    reserveMatmulScratch(k, 64, cols);
    const r = rng(5);
    for (const dtype of ['q8_0', 'q4_0'] as const) {
      const bs = dtype === 'q8_0' ? 34 : 18;
      const bytes = new Uint8Array(rows * (cols / 32) * bs);
      const dv = new DataView(bytes.buffer);
      for (let b = 0; b < rows * (cols / 32); b++) {
        dv.setUint16(b * bs, 0x2000 + Math.floor(r() * 0x800), true);
        for (let j = 2; j < bs; j++) bytes[b * bs + j] = Math.floor(r() * 255) & (dtype === 'q8_0' ? 0x7f : 0xff);
      }
      const w: Weight = { ptr: k.arena.put(bytes), dtype, rows, cols };
      const X = k.arena.putF32(randn(B * cols, r));
      const Y = k.arena.f32buf(B * rows);
      for (const exact of [false, true]) {
        const alone: Float32Array[] = [];
        for (let b = 0; b < B; b++) {
          matmul(k, Y.ptr, X.ptr + b * cols * 4, w, 1, { exact });
          alone.push(Y.v.slice(0, rows));
        }
        setBatchInvariant(k, true);
        expect(isBatchInvariant(k)).toBe(true);
        for (const [first, n] of [[0, B], [0, 8], [3, 4], [2, 5]]) {
          matmul(k, Y.ptr, X.ptr + first * cols * 4, w, n, { exact });
          for (let b = 0; b < n; b++) expect(sameBits(Y.v.slice(b * rows, (b + 1) * rows), alone[first + b])).toBe(true);
        }
        setBatchInvariant(k, false);
        expect(isBatchInvariant(k)).toBe(false);
      }
    }
  });
});

describe('StepBatcher', () => {
  let lm: LanguageModel;
  let mamba: LanguageModel;
  beforeAll(async () => {
    lm = await loadModel(tinyModelDir({ arch: 'llama' }), { maxContext: 256 });
    mamba = await loadModel(tinyModelDir({ arch: 'mamba' }), { maxContext: 256 });
  });
  afterAll(async () => {
    await lm?.dispose();
    await mamba?.dispose();
  });

  const sessions = (m: LanguageModel, n: number) => Array.from({ length: n }, () => m.model.newSession());

  it('runs the requests of one turn in one pass, each getting its own forward()\'s logits', async () => {
    const V = lm.vocabSize;
    const b = new StepBatcher(lm.model);
    const together = sessions(lm, 5), alone = sessions(lm, 5);
    const prompts = together.map((_, i) => tokens(3 + i, i + 1, V));
    prompts.forEach((p, i) => {
      together[i].forward(p);
      alone[i].forward(p);
    });
    for (let step = 0; step < 3; step++) {
      const ids = tokens(5, 40 + step, V);
      const got = await Promise.all(together.map((s, i) => b.forward(s, [ids[i]])));
      ids.forEach((id, i) => expect(sameBits(got[i], alone[i].forward([id]))).toBe(true));
    }
    expect(b.stats).toMatchObject({ decodePasses: 3, decodeTokens: 15, widest: 5, prefillChunks: 0 });
    together.forEach((s, i) => expect(s.tokens).toEqual(alone[i].tokens));
    for (const s of [...together, ...alone]) s.dispose();
  });

  it('feeds a prompt in the chunks feed() cuts, taking turns with decode steps; all logits on request', async () => {
    const V = lm.vocabSize;
    const b = new StepBatcher(lm.model);
    const [p, q, r] = sessions(lm, 3);
    const [pa, qa, ra] = sessions(lm, 3);
    q.forward([1, 2, 3]);
    qa.forward([1, 2, 3]);
    const prompt = tokens(150, 9, V);
    const log: string[] = [];
    const decoding = (async () => {
      for (let i = 0; i < 4; i++) {
        const l = await b.forward(q, [10 + i]);
        log.push('d');
        expect(sameBits(l, qa.forward([10 + i]))).toBe(true);
      }
    })();
    const chunks: number[] = [];
    const filled = b.run(p, prompt, { onChunk: () => chunks.push(p.pos) }).then((l) => {
      log.push('p');
      return l;
    });
    const allRows = b.run(r, prompt.slice(0, 70), { all: true });
    const [l] = await Promise.all([filled, decoding]);
    // Chunks of the session's prefill chunk (maxChunk 64) from the first token, as feed() cuts them.
    expect(chunks).toEqual([64, 128, 150]);
    expect(sameBits(l!, pa.forward(prompt))).toBe(true);
    // Decode steps ran between the prompt's chunks instead of waiting for the whole prompt.
    expect(log.indexOf('d')).toBeLessThan(log.indexOf('p'));
    const all = await allRows;
    expect(all!.length).toBe(70 * V);
    expect(sameBits(all!, ra.forward(prompt.slice(0, 70), true))).toBe(true);
    for (const s of [p, q, r, pa, qa, ra]) s.dispose();
  });

  it('fails a bad request alone: ids outside the vocabulary, past the context, a disposed session, no tokens', async () => {
    const V = lm.vocabSize;
    const b = new StepBatcher(lm.model);
    const [good, bad, full, gone, other] = sessions(lm, 5);
    const [goodAlone] = sessions(lm, 1);
    full.forward(tokens(255, 3, V));
    gone.dispose();
    const results = await Promise.allSettled([
      b.forward(good, [5]), b.forward(bad, [V + 3]), b.forward(full, [1, 2]), b.forward(gone, [1]), b.forward(other, []),
      b.forward(bad, tokens(300, 1, V)),
    ]);
    expect(results[0].status).toBe('fulfilled');
    expect(sameBits((results[0] as PromiseFulfilledResult<Float32Array>).value, goodAlone.forward([5]))).toBe(true);
    expect(results.slice(1, 6).map((x) => x.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected', 'rejected']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/outside the vocabulary/);
    expect(String((results[2] as PromiseRejectedResult).reason)).toMatch(/context full/);
    expect(String((results[3] as PromiseRejectedResult).reason)).toMatch(/disposed/);
    expect(String((results[4] as PromiseRejectedResult).reason)).toMatch(/at least one token/);
    // Nothing of the refused requests was fed.
    expect([bad.pos, full.pos]).toEqual([0, 255]);
    await expect(b.forward(mamba.model.newSession(), [1])).rejects.toThrow(/not a WASM session of this model/);
    for (const s of [good, bad, full, other, goodAlone]) s.dispose();
  });

  it('after a pass that throws, reruns sessions of positional caches one by one; recurrent ones get the error', async () => {
    for (const [m, rerun] of [[lm, true], [mamba, false]] as const) {
      const b = new StepBatcher(m.model);
      const ss = sessions(m, 3), alone = sessions(m, 3);
      ss.forEach((s, i) => s.forward([i + 1, i + 2]));
      alone.forEach((s, i) => s.forward([i + 1, i + 2]));
      const model = m.model as { forwardBatch: typeof m.model.forwardBatch };
      const real = model.forwardBatch;
      model.forwardBatch = () => {
        throw new Error('the pass broke');
      };
      try {
        const results = await Promise.allSettled(ss.map((s, i) => b.forward(s, [7 + i])));
        if (rerun) {
          results.forEach((x, i) => {
            expect(x.status).toBe('fulfilled');
            expect(sameBits((x as PromiseFulfilledResult<Float32Array>).value, alone[i].forward([7 + i]))).toBe(true);
          });
        } else results.forEach((x) => expect(String((x as PromiseRejectedResult).reason)).toMatch(/the pass broke/));
      } finally {
        model.forwardBatch = real;
      }
      for (const s of [...ss, ...alone]) s.dispose();
    }
  });

  it('stops a prompt between chunks when its signal fires (null; the chunks fed stay fed); keeps a session\'s requests in order', async () => {
    const V = lm.vocabSize;
    const b = new StepBatcher(lm.model);
    const [s, t] = sessions(lm, 2);
    const ac = new AbortController();
    const got = await b.run(s, tokens(200, 4, V), { signal: ac.signal, onChunk: () => ac.abort() });
    expect(got).toBeNull();
    expect(s.pos).toBe(64);
    const order: number[] = [];
    await Promise.all([0, 1, 2].map((i) => b.forward(t, i === 1 ? [5, 6, 7] : [i + 1]).then(() => order.push(t.pos))));
    expect(order).toEqual([1, 4, 5]);
    expect(t.tokens).toEqual([1, 5, 6, 7, 3]);
    s.dispose();
    t.dispose();
  });
});

interface Run {
  prompt: string;
  params: GenerateParams;
  /** Milliseconds after the first ones start. */
  delay: number;
}

/** Eight generations: greedy and sampled, two joining later, one prompt longer than a prefill chunk. */
function runs(long: string): Run[] {
  const prompts = ['Once upon a time', 'The old king said', long, 'A dog', 'In the morning the sun', 'Tom had a red ball. He', 'She looked at the sky and', 'Far away'];
  return prompts.map((prompt, i) => ({
    prompt,
    params: { maxTokens: 24 + 3 * i, temperature: i % 2 ? 0.9 : 0, topP: i % 4 === 3 ? 0.9 : undefined, seed: 100 + i, ignoreEos: true },
    delay: i >= 6 ? 15 : 0,
  }));
}

async function generateAll(lm: LanguageModel, rs: Run[], together: boolean): Promise<{ text: string; tokens: number[] }[]> {
  const one = async (r: Run) => {
    const res = await lm.generate(r.prompt, r.params).result();
    return { text: res.text, tokens: res.tokens };
  };
  if (!together) {
    const out = [];
    for (const r of rs) out.push(await one(r));
    return out;
  }
  return Promise.all(rs.map(async (r) => {
    if (r.delay) await new Promise((res) => setTimeout(res, r.delay));
    return one(r);
  }));
}

describe.each([
  ['sparrow-mini (Q8_0)', () => MINI],
  ['tiny Llama', () => tinyModelDir({ arch: 'llama' })],
  ['tiny Mamba', () => tinyModelDir({ arch: 'mamba' })],
])('concurrent generations with batching on: %s', (_name, dir) => {
  let lm: LanguageModel;
  beforeAll(async () => {
    lm = await loadModel(dir(), { maxContext: 512, build: 'simd' });
  });
  afterAll(async () => {
    await lm?.dispose();
  });

  it('write the text and tokens each writes alone without batching (greedy and sampled)', async () => {
    const long = 'Lily and Ben went to the park to play with the big red ball. '.repeat(8) + 'Then';
    if (lm.tokenizer) expect(lm.encode(long).length).toBeGreaterThan(64);
    const rs = runs(long);
    lm.batching = false;
    const alone = await generateAll(lm, rs, false);
    lm.batching = true;
    expect(lm.batching).toBe(true);
    try {
      const together = await generateAll(lm, rs, true);
      const stats = batcherOf(lm.model)!.stats;
      expect(stats.widest).toBeGreaterThanOrEqual(4);
      expect(stats.prefillChunks).toBeGreaterThanOrEqual(2);
      expect(together).toEqual(alone);
      // And alone with batching on.
      expect(await generateAll(lm, rs.slice(0, 3), false)).toEqual(alone.slice(0, 3));
    } finally {
      lm.batching = false;
    }
    expect(batcherOf(lm.model)).toBeUndefined();
  }, 120_000);
});

describe('the server with batching on', () => {
  let lm: LanguageModel;
  beforeAll(async () => {
    lm = await loadModel(MINI, { build: 'simd', maxContext: 512, batching: true });
  });
  afterAll(async () => {
    await lm?.dispose();
  });

  it('streams concurrent requests the texts sequential ones get', async () => {
    expect(lm.batching).toBe(true);
    const app = createApp({
      loadModel: async () => lm, modelId: 'sparrow-mini', store: new MemorySessionStore(), maxConcurrent: 6, maxQueue: 6,
      maxBodyBytes: 64 * 1024, log: () => {}, promptCache: 0,
    });
    const bodies = ['Once upon a time', 'The little bird', 'Tom and Sue', 'One day a cat', 'The sun was hot', 'Mia had a box'].map((prompt, i) => ({
      model: 'sparrow-mini', prompt, max_tokens: 20 + i, seed: 7 + i, temperature: i % 2 ? 0.8 : 0, stream: true, ignore_eos: true,
    }));
    const ask = async (body: object): Promise<string> => {
      const res = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      expect(res.status).toBe(200);
      const events = (await res.text()).split('\n\n').filter(Boolean);
      expect(events.pop()).toBe('data: [DONE]');
      return events.map((e) => JSON.parse(e.slice(6)).choices?.[0]?.text ?? '').join('');
    };
    const sequential: string[] = [];
    for (const b of bodies) sequential.push(await ask(b));
    const before = batcherOf(lm.model)!.stats.widest;
    expect(before).toBe(1);
    const concurrent = await Promise.all(bodies.map(ask));
    expect(concurrent).toEqual(sequential);
    expect(sequential.every((t) => t.length > 0)).toBe(true);
    expect(batcherOf(lm.model)!.stats.widest).toBeGreaterThanOrEqual(3);
  }, 120_000);
});
