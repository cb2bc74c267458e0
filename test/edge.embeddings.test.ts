// POST /v1/embeddings: through the official `openai` client against the Node server and the Worker
// in local workerd (the embedded models/sparrow-mini, simd build on both), whose vectors must equal
// the library's embed() of the same inputs, in float and in base64; and in-process (app.request) for
// the errors, each naming its parameter, the unsupported-family refusal and the queue.
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppOptions, SparrowApp } from '../edge/app';
import { embed, type LanguageModel, loadModel } from '../src/index';
import { logitsOnly, testApp } from './app-helpers';
import { postJson, ROOT, startProcess, startWorker, stopAll, type RuntimeKind, type Server } from './edge-helpers';

const MODEL_DIR = join(ROOT, 'models/sparrow-mini');
/** The servers' context (the default of both: min(config's 2048, 4096), Workers' MAX_CONTEXT 2048). */
const CONTEXT = 2048;
let lm: LanguageModel;
const servers = {} as Record<'node' | 'workers', Server>;

beforeAll(async () => {
  const [model, node, worker] = await Promise.all([loadModel(MODEL_DIR, { build: 'simd', maxContext: CONTEXT }), startProcess('node'), startWorker()]);
  lm = model;
  servers.node = node;
  servers.workers = worker;
}, 120_000);

afterAll(async () => {
  await stopAll();
  await lm?.dispose();
});

const TEXTS = ['The quick brown fox jumps over the lazy dog.', 'Once upon a time, a little fox', 'hello'];

/** The library's vectors as plain arrays. */
async function expected(inputs: (string | number[])[], dimensions?: number): Promise<{ vectors: number[][]; tokens: number }> {
  const r = await embed(lm, inputs, { dimensions });
  return { vectors: r.embeddings.map((e) => Array.from(e)), tokens: r.promptTokens };
}

describe.each(['node', 'workers'] as const)('%s', (kind: Extract<RuntimeKind, 'node' | 'workers'>) => {
  const client = () => new OpenAI({ baseURL: `${servers[kind].url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });

  it('float and base64 embeddings through the openai client equal the library embed()', async () => {
    const c = client();
    const want = await expected(TEXTS);
    const asFloat = await c.embeddings.create({ model: 'sparrow-mini', input: TEXTS, encoding_format: 'float' });
    expect(asFloat.object).toBe('list');
    expect(asFloat.model).toBe('sparrow-mini');
    expect(asFloat.usage).toEqual({ prompt_tokens: want.tokens, total_tokens: want.tokens });
    expect(asFloat.data.map((d) => d.index)).toEqual([0, 1, 2]);
    expect(asFloat.data.every((d) => d.object === 'embedding')).toBe(true);
    expect(asFloat.data.map((d) => d.embedding)).toEqual(want.vectors);
    expect(want.vectors[0]).toHaveLength(lm.model.net.hidden);
    // Without encoding_format the client asks for base64 and decodes the little-endian float32 bytes.
    const decoded = await c.embeddings.create({ model: 'sparrow-mini', input: TEXTS });
    expect(decoded.data.map((d) => d.embedding)).toEqual(want.vectors);
    // base64 asked for explicitly comes back as the string.
    const b64 = await c.embeddings.create({ model: 'sparrow-mini', input: TEXTS[2], encoding_format: 'base64' });
    const raw = b64.data[0].embedding as unknown as string;
    expect(typeof raw).toBe('string');
    expect(Array.from(new Float32Array(new Uint8Array(Buffer.from(raw, 'base64')).buffer))).toEqual(want.vectors[2]);
  });

  it('token ids, lists of token ids and dimensions', async () => {
    const c = client();
    const ids = lm.encode(TEXTS[1]);
    const one = await c.embeddings.create({ model: 'sparrow-mini', input: ids, encoding_format: 'float' });
    expect(one.data).toHaveLength(1);
    expect(one.data[0].embedding).toEqual((await expected([TEXTS[1]])).vectors[0]);
    expect(one.usage.prompt_tokens).toBe(ids.length);
    const lists = [ids, [5, 6, 7]];
    const many = await c.embeddings.create({ model: 'sparrow-mini', input: lists, dimensions: 32 });
    const want = await expected(lists, 32);
    expect(many.data.map((d) => d.embedding)).toEqual(want.vectors);
    expect(many.data[1].embedding).toHaveLength(32);
  });

  it('bad bodies are 400s naming the parameter; an unknown model is 404', async () => {
    const url = `${servers[kind].url}/v1/embeddings`;
    const cases: [unknown, string, string][] = [
      [{ model: 'sparrow-mini' }, 'input', 'missing_required_parameter'],
      [{ input: '' }, 'input', 'invalid_value'],
      [{ input: ['a', ''] }, 'input', 'invalid_value'],
      [{ input: [[1, 2], []] }, 'input', 'invalid_value'],
      [{ input: { text: 'x' } }, 'input', 'invalid_type'],
      [{ input: ['a', 3] }, 'input', 'invalid_type'],
      [{ input: [1 << 30] }, 'input', 'invalid_value'],
      [{ input: 'x', encoding_format: 'hex' }, 'encoding_format', 'invalid_value'],
      [{ input: 'x', dimensions: 0 }, 'dimensions', 'invalid_value'],
      [{ input: 'x', dimensions: 1.5 }, 'dimensions', 'invalid_type'],
      [{ input: 'x', dimensions: 100_000 }, 'dimensions', 'invalid_value'],
      [{ input: 'x', model: 7 }, 'model', 'invalid_type'],
    ];
    for (const [body, param, code] of cases) {
      const res = await postJson(url, body);
      const b = await res.json();
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(b.error, JSON.stringify(body)).toMatchObject({ type: 'invalid_request_error', param, code });
      expect(b.error.message).toContain(`'${param}'`);
    }
    await expect(client().embeddings.create({ model: 'text-embedding-3-small', input: 'x' })).rejects.toMatchObject({ status: 404, code: 'model_not_found', param: 'model' });
  });
});

describe('in-process', () => {
  const makeApp = (model: () => LanguageModel, o: Partial<AppOptions> = {}): SparrowApp =>
    testApp(model, { maxConcurrent: 1, maxQueue: 0, maxBodyBytes: 1 << 20, ...o });
  const post = (app: SparrowApp, body: unknown) => app.request('/v1/embeddings', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('inputs longer than the context, and more than 2048 inputs, are refused on input', async () => {
    const app = makeApp(() => lm);
    const long = await post(app, { input: new Array(CONTEXT + 1).fill(5) });
    expect(long.status).toBe(400);
    expect((await long.json()).error).toMatchObject({ param: 'input', code: 'context_length_exceeded', message: `'input' has ${CONTEXT + 1} tokens; the context holds ${CONTEXT}` });
    const many = await post(app, { input: new Array(2049).fill('x') });
    expect(many.status).toBe(400);
    expect((await many.json()).error).toMatchObject({ param: 'input', code: 'invalid_value' });
    expect(lm.status().sessionsInUse).toBe(0);
  });

  it('a family without hidden-state output is a 400 unsupported_model naming the family', async () => {
    const app = makeApp(() => logitsOnly(lm));
    const res = await post(app, { input: 'hello' });
    expect(res.status).toBe(400);
    const e = (await res.json()).error;
    expect(e).toMatchObject({ type: 'invalid_request_error', param: 'model', code: 'unsupported_model' });
    expect(e.message).toMatch(/model family 'logits_only' has no final hidden-state output/);
  });

  it('malformed fields never give a 5xx, and every refusal says why', async () => {
    const app = makeApp(() => lm, { maxQueue: 8 });
    const weird: unknown[] = [null, true, 0, -1, 1.5, 1e308, '', 'x', '\ud800', '😀', [], [null], [1, 'a'], [[[]]], {}, { a: 1 }, [-3], [[0.5]], ['x', ['y']], [['x']], Array(40).fill(7)];
    const statuses = new Set<number>();
    for (const field of ['input', 'model', 'encoding_format', 'dimensions', 'user', '__proto__']) {
      for (const v of weird) {
        const body = JSON.stringify({ input: 'hello', [field]: v });
        const res = await app.request('/v1/embeddings', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        const b = await res.json();
        statuses.add(res.status);
        expect(res.status, body).toBeLessThan(500);
        if (res.status >= 400) expect(b.error.message, body).toBeTruthy();
        else expect(b.object, body).toBe('list');
      }
    }
    expect([...statuses].sort()).toEqual([200, 400, 404]);
  });

  it('sessions kept by the prompt cache do not starve it: they are freed when every state slot is taken', async () => {
    const small = await loadModel(MODEL_DIR, { build: 'simd', maxContext: 256, maxSessions: 2 });
    try {
      const app = makeApp(() => small, { maxQueue: 4 });
      for (const prompt of ['Once upon a time', 'The little fox']) {
        const res = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 2 }) });
        expect(res.status).toBe(200);
      }
      // Both slots are held by cached sessions now.
      expect(small.status().sessionsInUse).toBe(2);
      const res = await post(app, { input: ['hello', 'world'] });
      expect(res.status).toBe(200);
      expect((await res.json()).data).toHaveLength(2);
    } finally {
      await small.dispose();
    }
  });

  it('the request timeout stops the work between prefill chunks: 504, and the session is given back', async () => {
    const app = makeApp(() => lm, { requestTimeoutMs: 5 });
    const res = await post(app, { input: new Array(1500).fill(0).map((_, i) => (i * 7) % 1000) });
    expect(res.status).toBe(504);
    expect((await res.json()).error.code).toBe('request_timeout');
    expect(lm.status().sessionsInUse).toBe(0);
  });

  it('takes a place in the generation queue: 429 while a generation holds the only one', async () => {
    const app = makeApp(() => lm);
    const gen = await app.request('/v1/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 400, stream: true, ignore_eos: true }),
    });
    const reader = gen.body!.getReader();
    await reader.read();
    const busy = await post(app, { input: 'hello' });
    expect(busy.status).toBe(429);
    expect((await busy.json()).error.code).toBe('rate_limit_exceeded');
    await reader.cancel();
    // The generation gives its place back once it sees the cancellation.
    let ok: Response | null = null;
    for (let i = 0; i < 100 && ok?.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, 20));
      ok = await post(app, { input: 'hello' });
    }
    expect(ok!.status).toBe(200);
    expect((await ok!.json()).data[0].embedding).toEqual((await expected(['hello'])).vectors[0]);
  });
});
