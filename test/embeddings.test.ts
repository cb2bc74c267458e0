// Embeddings (src/generate/embeddings.ts) on tiny random models. The hidden states the net returns
// are checked through an independent path: multiplied by the checkpoint's lm_head matrix (read from
// the safetensors file here, in plain JS) they must give the logits of the model's own all-position
// forward pass; the vocabulary is larger than the hidden size, so only the right rows can do that.
// Pooling and normalization are then recomputed by hand, and the error cases checked.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContextLengthError, RequestError, embed, loadModel, type LanguageModel, type ModelSession } from '../src/index';
import type { Model } from '../src/models/model';
import { logitsOnly } from './app-helpers';
import { maxRelErr } from './helpers';
import { tinyModelDir } from './tiny-models';

/** A tensor of a safetensors file, read without the library: 8-byte header length, JSON header, data. */
function readTensor(file: string, name: string): { shape: number[]; data: Float32Array } {
  const b = readFileSync(file);
  const len = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + len).toString('utf8'));
  const t = header[name];
  if (!t || t.dtype !== 'F32') throw new Error(`no f32 tensor ${name}`);
  const [from, to] = t.data_offsets as [number, number];
  const bytes = b.subarray(8 + len + from, 8 + len + to);
  return { shape: t.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
}

/** The mean of the rows of x ([n·H]), its first `dims` components scaled to unit length, in float64. */
function pooled(x: Float32Array, H: number, dims = H): number[] {
  const n = x.length / H;
  const m = new Array<number>(dims).fill(0);
  for (let t = 0; t < n; t++) for (let j = 0; j < dims; j++) m[j] += x[t * H + j] / n;
  const len = Math.hypot(...m);
  return m.map((v) => v / len);
}

const ids = (n: number, seed: number, V: number) => Array.from({ length: n }, (_, i) => (seed * 31 + i * 17 + ((i * i) % 7)) % V);

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe.each(['llama', 'mamba'] as const)('%s', (arch) => {
  let lm: LanguageModel;
  let dir: string;
  beforeAll(async () => {
    dir = tinyModelDir({ arch, seed: 5 });
    dirs.push(dir);
    lm = await loadModel(dir, { build: 'simd', maxContext: 160 });
  });
  afterAll(() => lm?.dispose());

  it('the hidden states are the LM head input: lm_head · hidden = the logits of every position, across prefill chunks', () => {
    const model: Model = lm.model;
    const V = model.net.vocabSize, H = model.net.hidden;
    expect(V).toBeGreaterThan(H);
    // 80 tokens: more than one prefill chunk (64).
    const toks = ids(80, 1, V);
    const a = model.newSession(), b = model.newSession();
    const logits = a.forward(toks, true);
    const hid = b.hidden(toks);
    a.dispose();
    b.dispose();
    expect(hid.length).toBe(toks.length * H);
    const head = readTensor(join(dir, 'model.safetensors'), 'lm_head.weight');
    expect(head.shape).toEqual([V, H]);
    const mine = new Float64Array(toks.length * V);
    for (let t = 0; t < toks.length; t++) {
      for (let v = 0; v < V; v++) {
        let s = 0;
        for (let j = 0; j < H; j++) s += head.data[v * H + j] * hid[t * H + j];
        mine[t * V + v] = s;
      }
    }
    expect(maxRelErr(mine, logits)).toBeLessThan(1e-4);
    // The session holds the tokens it ran, as after forward().
    const c = model.newSession();
    c.hidden(toks.slice(0, 5));
    expect(c.tokens).toEqual(toks.slice(0, 5));
    c.dispose();
  });

  it('embed() is the unit-length mean of the hidden states; dimensions cuts and normalizes again', async () => {
    const H = lm.model.net.hidden, V = lm.vocabSize;
    const toks = ids(70, 2, V);
    const s = lm.model.newSession();
    const hid = s.hidden(toks);
    s.dispose();
    const r = await embed(lm, [toks]);
    expect(r.promptTokens).toBe(70);
    expect(r.embeddings).toHaveLength(1);
    const e = r.embeddings[0];
    expect(e).toBeInstanceOf(Float32Array);
    expect(e.length).toBe(H);
    expect(maxRelErr(e, pooled(hid, H))).toBeLessThan(1e-6);
    expect(Math.hypot(...e)).toBeCloseTo(1, 6);
    const short = (await embed(lm, [toks], { dimensions: 16 })).embeddings[0];
    expect(short.length).toBe(16);
    expect(maxRelErr(short, pooled(hid, H, 16))).toBeLessThan(1e-6);
    expect(Math.hypot(...short)).toBeCloseTo(1, 6);
    for (const d of [0, H + 1, 1.5, Number.NaN]) {
      await expect(embed(lm, [toks], { dimensions: d })).rejects.toMatchObject({ name: 'RequestError', field: 'dimensions' });
    }
    expect((await embed(lm, [toks], { dimensions: H })).embeddings[0]).toEqual(e);
  });

  it('several inputs give what each gives alone; text is encoded as encode() does; no session is left', async () => {
    const V = lm.vocabSize;
    const inputs: (string | number[])[] = ['The quick brown fox', ids(9, 3, V), 'jumps over the lazy dog.', ids(1, 4, V)];
    const all = await embed(lm, inputs);
    expect(all.embeddings).toHaveLength(4);
    let tokens = 0;
    for (let i = 0; i < inputs.length; i++) {
      const one = await embed(lm, [inputs[i]]);
      expect(all.embeddings[i]).toEqual(one.embeddings[0]);
      tokens += one.promptTokens;
    }
    expect(all.promptTokens).toBe(tokens);
    const text = inputs[0] as string;
    const encoded = lm.encode(text);
    expect((await embed(lm, [encoded])).embeddings[0]).toEqual(all.embeddings[0]);
    expect(all.embeddings[0]).not.toEqual(all.embeddings[2]);
    expect(lm.status().sessionsInUse).toBe(0);
  });

  it('refuses empty, malformed and too long inputs, naming input', async () => {
    const V = lm.vocabSize;
    const field = async (inputs: unknown, cls: abstract new (...args: never[]) => RequestError = RequestError) => {
      const e = await embed(lm, inputs as (string | number[])[]).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(cls);
      expect((e as RequestError).field).toBe('input');
      return (e as RequestError).message;
    };
    expect(await field([])).toMatch(/at least one/);
    expect(await field(['a', ''])).toMatch(/empty string \(item 1\)/);
    expect(await field([[]])).toMatch(/empty token id list/);
    expect(await field([[V]])).toMatch(new RegExp(`token id ${V}.*vocabulary`));
    expect(await field([[1.5]])).toMatch(/token id 1.5/);
    expect(await field([[-1]])).toMatch(/token id -1/);
    expect(await field([{ text: 'x' }])).toMatch(/texts or token id lists/);
    expect(await field(new Array(2049).fill('x'))).toMatch(/2049.*at most 2048/);
    expect(await field([ids(161, 5, V)], ContextLengthError)).toMatch(/161 tokens; the context holds 160/);
    expect(await field(['word '.repeat(400)], ContextLengthError)).toMatch(/at most 160/);
    expect(lm.status().sessionsInUse).toBe(0);
  });

  it('the session option opens each input\'s session, which is disposed after it; a used one is refused', async () => {
    const opened: ModelSession[] = [];
    const open = () => {
      const s = lm.session();
      opened.push(s);
      return s;
    };
    const inputs = [ids(3, 8, lm.vocabSize), ids(4, 9, lm.vocabSize)];
    const r = await embed(lm, inputs, { session: open });
    expect(opened).toHaveLength(2);
    expect(r.embeddings).toEqual((await embed(lm, inputs)).embeddings);
    expect(lm.status().sessionsInUse).toBe(0);
    const used = lm.session();
    await used.feed([1, 2]);
    await expect(embed(lm, [[1]], { session: () => used })).rejects.toMatchObject({ name: 'RequestError', field: 'session' });
    expect(lm.status().sessionsInUse).toBe(0);
  });

  it('an aborted signal rejects, and gives back the session', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(embed(lm, [ids(5, 6, lm.vocabSize)], { signal: ac.signal })).rejects.toMatchObject({ name: 'AbortError' });
    // Aborted between the prefill chunks of a long input.
    const ac2 = new AbortController();
    const p = embed(lm, [ids(150, 7, lm.vocabSize)], { signal: ac2.signal });
    ac2.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(lm.status().sessionsInUse).toBe(0);
  });
});

it('a family whose net has no hidden-state output is refused with a RequestError naming it', async () => {
  const dir = tinyModelDir({ seed: 9 });
  dirs.push(dir);
  const lm = await loadModel(dir, { build: 'simd', maxContext: 32 });
  try {
    // The same net without the output, as a family with a forward of its own that ends in logits.
    const other = logitsOnly(lm, null);
    const model = other.model;
    const e = await embed(other, ['hello']).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RequestError);
    expect((e as RequestError).field).toBe('model');
    expect((e as RequestError).message).toMatch(/model family 'logits_only' has no final hidden-state output/);
    // A session of it refuses the output too.
    const s = model.newSession();
    expect(() => s.hidden([1, 2])).toThrow(/logits_only has no hidden-state output/);
    s.dispose();
  } finally {
    await lm.dispose();
  }
});
