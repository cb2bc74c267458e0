// The edge app in-process (app.request, no sockets): OpenAI request and response shapes, SSE,
// sampling parameters, sessions resumed from stored snapshots, errors in the OpenAI shape, auth,
// CORS, body limit, the bounded queue, cancellation, the memory-budget 503, the session stores, and
// a fuzz of malformed bodies that must never produce a 5xx.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type LanguageModel } from '../src/index';
import type { AppOptions, SparrowApp } from '../edge/app';
import { DirSessionStore, MemorySessionStore, TieredSessionStore, decodeSessionFile, encodeSessionFile, type StoredSession } from '../edge/store';
import { post, sse, testApp } from './app-helpers';
import { ROOT } from './edge-helpers';
import { fuzzBodies } from './edge-fuzz';

const MODEL_DIR = join(ROOT, 'models/sparrow-mini');
let lm: LanguageModel;
const tmp: string[] = [];

beforeAll(async () => {
  lm = await loadModel(MODEL_DIR, { build: 'simd', maxContext: 512 });
});
afterAll(async () => {
  await lm?.dispose();
  for (const d of tmp) rmSync(d, { recursive: true, force: true });
});

/**
 * An app of the shared model. Without a prompt cache unless asked: the apps of this file share one
 * model, whose slot count (sessions_in_use) would otherwise include every app's cached sessions.
 */
function makeApp(o: Partial<AppOptions> = {}): SparrowApp {
  return testApp(() => lm, { promptCache: 0, ...o });
}

/** A new session, as the server issues them. */
async function newSession(app: SparrowApp, headers: Record<string, string> = {}): Promise<string> {
  const res = await post(app, '/v1/sessions', {}, headers);
  expect(res.status).toBe(200);
  const b = await res.json();
  expect(b).toMatchObject({ object: 'session', tokens: 0, bytes: 0, busy: false });
  expect(res.headers.get('x-session-id')).toBe(b.id);
  return b.id;
}

function expectError(body: any, status: number, res: Response, param?: string | null, code?: string) {
  expect(res.status).toBe(status);
  expect(Object.keys(body)).toEqual(['error']);
  expect(typeof body.error.message).toBe('string');
  expect(typeof body.error.type).toBe('string');
  expect('param' in body.error && 'code' in body.error).toBe(true);
  if (param !== undefined) expect(body.error.param).toBe(param);
  if (code !== undefined) expect(body.error.code).toBe(code);
}

describe('routes and shapes', () => {
  const app = makeApp();

  it('lists the model', async () => {
    const res = await app.request('/v1/models');
    const body = await res.json();
    expect(body).toEqual({ object: 'list', data: [{ id: 'sparrow-mini', object: 'model', created: expect.any(Number), owned_by: 'sparrow' }] });
    expect((await (await app.request('/v1/models/sparrow-mini')).json()).id).toBe('sparrow-mini');
    const miss = await app.request('/v1/models/gpt-4');
    expectError(await miss.json(), 404, miss, 'model', 'model_not_found');
  });

  it('a completion has the OpenAI shape and honours max_tokens, seed and stop', async () => {
    const res = await post(app, '/v1/completions', { model: 'sparrow-mini', prompt: 'Once upon a time', max_tokens: 12, seed: 5, temperature: 0.7 });
    expect(res.status).toBe(200);
    const b = await res.json();
    expect(b).toMatchObject({ object: 'text_completion', model: 'sparrow-mini', choices: [{ index: 0, logprobs: null, finish_reason: 'length' }] });
    expect(b.id).toMatch(/^cmpl-/);
    expect(Number.isInteger(b.created)).toBe(true);
    expect(b.usage).toMatchObject({ prompt_tokens: 4, completion_tokens: 12, total_tokens: 16 });
    const again = await (await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 12, seed: 5, temperature: 0.7 })).json();
    expect(again.choices[0].text).toBe(b.choices[0].text);
    // A stop string taken from the text itself ends the completion before it.
    const text: string = b.choices[0].text;
    const word = text.trim().split(/\s+/)[2];
    const stopped = await (await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 12, seed: 5, temperature: 0.7, stop: [word, 'zzzz'] })).json();
    expect(stopped.choices[0].finish_reason).toBe('stop');
    expect(text.startsWith(stopped.choices[0].text)).toBe(true);
    expect(stopped.choices[0].text).not.toContain(word);
  });

  it('greedy is deterministic; logit_bias bans a token; penalties, top_k and min_p are accepted', async () => {
    const a = await (await post(app, '/v1/completions', { prompt: 'The cat', max_tokens: 8, temperature: 0 })).json();
    const b = await (await post(app, '/v1/completions', { prompt: 'The cat', max_tokens: 8, temperature: 0, seed: 99 })).json();
    expect(a.choices[0].text).toBe(b.choices[0].text);
    const first = lm.encode('The cat' + a.choices[0].text).slice(lm.encode('The cat').length)[0];
    const banned = await (await post(app, '/v1/completions', { prompt: 'The cat', max_tokens: 8, temperature: 0, logit_bias: { [first]: -100 } })).json();
    expect(banned.choices[0].text).not.toBe(a.choices[0].text);
    const res = await post(app, '/v1/completions', { prompt: 'The cat', max_tokens: 4, top_k: 5, min_p: 0.05, top_p: 0.9, presence_penalty: 1, frequency_penalty: 0.5, repetition_penalty: 1.2, seed: 1 });
    expect(res.status).toBe(200);
  });

  it('top_logprobs for chat (streamed and not) and legacy logprobs k for completions', async () => {
    // No repetition penalty: the greedy choice is then the likeliest token.
    const body = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, temperature: 0, repetition_penalty: 1, logprobs: true, top_logprobs: 4 };
    const b = await (await post(app, '/v1/chat/completions', body)).json();
    const content = b.choices[0].logprobs.content;
    expect(content).toHaveLength(b.usage.completion_tokens);
    for (const t of content) {
      expect(t.top_logprobs).toHaveLength(4);
      expect(t.top_logprobs[0]).toEqual({ token: t.token, logprob: t.logprob, bytes: t.bytes });
    }
    const sse = await (await post(app, '/v1/chat/completions', { ...body, stream: true })).text();
    const streamed = sse.split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6))).flatMap((e) => e.choices[0].logprobs?.content ?? []);
    expect(streamed).toEqual(content);
    const c = await (await post(app, '/v1/completions', { prompt: 'Once', max_tokens: 3, temperature: 0, repetition_penalty: 1, logprobs: 2 })).json();
    const lp = c.choices[0].logprobs;
    expect(lp.top_logprobs).toHaveLength(3);
    lp.top_logprobs.forEach((o: Record<string, number>, i: number) => {
      expect(Object.keys(o).length).toBeGreaterThanOrEqual(1);
      expect(Object.keys(o).length).toBeLessThanOrEqual(2);
      expect(o[lp.tokens[i]]).toBe(lp.token_logprobs[i]);
    });
    const no = await post(app, '/v1/chat/completions', { ...body, logprobs: false });
    expectError(await no.json(), 400, no, 'top_logprobs', 'invalid_value');
    const big = await post(app, '/v1/chat/completions', { ...body, top_logprobs: 21 });
    expect(big.status).toBe(400);
  });

  it('echo and logprobs for completions, token-id prompts', async () => {
    const b = await (await post(app, '/v1/completions', { prompt: 'Once', max_tokens: 3, temperature: 0, echo: true, logprobs: 0 })).json();
    expect(b.choices[0].text.startsWith('Once')).toBe(true);
    expect(b.choices[0].logprobs.token_logprobs).toHaveLength(3);
    for (const lp of b.choices[0].logprobs.token_logprobs) expect(lp).toBeLessThanOrEqual(0);
    const ids = lm.encode('Once upon a time');
    const t = await (await post(app, '/v1/completions', { prompt: ids, max_tokens: 5, temperature: 0 })).json();
    const s = await (await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 5, temperature: 0 })).json();
    expect(t.choices[0].text).toBe(s.choices[0].text);
  });

  it('a chat completion, streamed and not, gives the same text', async () => {
    const body = { model: 'sparrow-mini', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Tell me a story.' }] }], max_tokens: 16, seed: 3 };
    const plain = await post(app, '/v1/chat/completions', body);
    const p = await plain.json();
    expect(p).toMatchObject({ object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant' }, finish_reason: expect.stringMatching(/^(stop|length)$/) }] });
    expect(p.id).toMatch(/^chatcmpl-/);
    const streamed = await post(app, '/v1/chat/completions', { ...body, stream: true, stream_options: { include_usage: true } });
    expect(streamed.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const chunks = await sse(streamed);
    expect(chunks[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    for (const c of chunks) expect(c.object).toBe('chat.completion.chunk');
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(text).toBe(p.choices[0].message.content);
    const fin = chunks[chunks.length - 2];
    expect(fin.choices[0]).toMatchObject({ delta: {}, finish_reason: p.choices[0].finish_reason });
    const usage = chunks[chunks.length - 1];
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual(p.usage);
  });

  it('n choices: choice j is the single completion with seed + j, streamed and not, chat and completions', async () => {
    const body = { prompt: 'Once upon a time', max_tokens: 8, temperature: 0.9, seed: 11 };
    const b = await (await post(app, '/v1/completions', { ...body, n: 3 })).json();
    expect(b.choices.map((c: any) => c.index)).toEqual([0, 1, 2]);
    for (let j = 0; j < 3; j++) {
      const one = await (await post(app, '/v1/completions', { ...body, seed: 11 + j })).json();
      expect(b.choices[j].text).toBe(one.choices[0].text);
    }
    expect(new Set(b.choices.map((c: any) => c.text)).size).toBeGreaterThan(1);
    expect(b.usage.prompt_tokens).toBe(4);
    expect(b.usage.completion_tokens).toBe(24);
    const chunks = await sse(await post(app, '/v1/completions', { ...body, n: 3, stream: true }));
    for (let j = 0; j < 3; j++) {
      const mine = chunks.filter((c) => c.choices[0].index === j);
      expect(mine.map((c) => c.choices[0].text).join('')).toBe(b.choices[j].text);
      expect(mine[mine.length - 1].choices[0].finish_reason).toBe('length');
    }
    const chat = { messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 8, temperature: 0.9, seed: 4 };
    const cb = await (await post(app, '/v1/chat/completions', { ...chat, n: 2 })).json();
    expect(cb.choices).toHaveLength(2);
    const c1 = await (await post(app, '/v1/chat/completions', { ...chat, seed: 5 })).json();
    expect(cb.choices[1].message.content).toBe(c1.choices[0].message.content);
    const cs = await sse(await post(app, '/v1/chat/completions', { ...chat, n: 2, stream: true }));
    expect(cs.filter((c) => c.choices[0].index === 1).map((c) => c.choices[0].delta.content ?? '').join('')).toBe(c1.choices[0].message.content);
  });

  it('a batch of prompts: choices numbered prompt by prompt, each the completion of its prompt alone', async () => {
    const prompts = ['Once upon a time', 'The cat', lm.encode('Hello there')];
    const b = await (await post(app, '/v1/completions', { prompt: prompts, n: 2, max_tokens: 6, temperature: 0, echo: true })).json();
    expect(b.choices.map((c: any) => c.index)).toEqual([0, 1, 2, 3, 4, 5]);
    for (let p = 0; p < 3; p++) {
      const one = await (await post(app, '/v1/completions', { prompt: prompts[p], max_tokens: 6, temperature: 0, echo: true })).json();
      expect(b.choices[2 * p].text).toBe(one.choices[0].text);
      expect(b.choices[2 * p + 1].text).toBe(one.choices[0].text);
    }
    expect(b.usage.prompt_tokens).toBe(lm.encode('Once upon a time').length + lm.encode('The cat').length + (prompts[2] as number[]).length);
    expect(b.usage.completion_tokens).toBe(36);
  });

  it('the prompt cache: a repeated prompt and the next turn of a chat reuse the state of earlier requests, with the same text', async () => {
    // A model of its own: its apps' cached sessions are theirs alone.
    const own = await loadModel(MODEL_DIR, { build: 'simd', maxContext: 512 });
    const cached = makeApp({ loadModel: async () => own, promptCache: 4 });
    const uncached = makeApp({ loadModel: async () => own });
    const turn1 = [{ role: 'system', content: 'You tell short stories.' }, { role: 'user', content: 'A story about a fox.' }];
    const body = { messages: turn1, max_tokens: 10, temperature: 0 };
    const a = await (await post(cached, '/v1/chat/completions', body)).json();
    expect(a.usage.prompt_tokens_details.cached_tokens).toBe(0);
    const again = await (await post(cached, '/v1/chat/completions', body)).json();
    expect(again.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(a.usage.prompt_tokens - 1);
    expect(again.choices[0].message.content).toBe(a.choices[0].message.content);
    const turn2 = { messages: [...turn1, { role: 'assistant', content: a.choices[0].message.content }, { role: 'user', content: 'Another one.' }], max_tokens: 10, temperature: 0 };
    const b = await (await post(cached, '/v1/chat/completions', turn2)).json();
    const plain = await (await post(uncached, '/v1/chat/completions', turn2)).json();
    expect(plain.usage.prompt_tokens_details.cached_tokens).toBe(0);
    expect(b.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(a.usage.prompt_tokens);
    expect(b.choices[0].message.content).toBe(plain.choices[0].message.content);
    // Another API key never gets these entries.
    const keyed = makeApp({ loadModel: async () => own, apiKey: ['k1', 'k2'], promptCache: 4 });
    const h1 = { authorization: 'Bearer k1' };
    await post(keyed, '/v1/chat/completions', body, h1);
    const same = await (await post(keyed, '/v1/chat/completions', body, h1)).json();
    const other = await (await post(keyed, '/v1/chat/completions', body, { authorization: 'Bearer k2' })).json();
    expect(same.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    expect(other.usage.prompt_tokens_details.cached_tokens).toBe(0);
    const h = await (await keyed.request('/healthz')).json();
    expect(h.prompt_cache).toEqual({ sessions: 2, max_sessions: 4 });
    // The other apps' cached sessions hold slots of this model too; none is held by a request.
    expect(own.status().sessionsInUse).toBe(2 + (await (await cached.request('/healthz')).json()).prompt_cache.sessions);
    await own.dispose();
  });

  it('streamed completions carry text chunks and a finish chunk', async () => {
    const res = await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 10, seed: 5, temperature: 0.7, stream: true });
    const chunks = await sse(res);
    const plain = await (await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 10, seed: 5, temperature: 0.7 })).json();
    expect(chunks.map((c) => c.choices[0].text).join('')).toBe(plain.choices[0].text);
    expect(chunks[chunks.length - 1].choices[0].finish_reason).toBe('length');
    expect(chunks.length).toBeGreaterThan(3);
  });

  it('healthz, the chat page, unknown URLs', async () => {
    const h = await (await app.request('/healthz')).json();
    expect(h).toMatchObject({ status: 'ok', model: 'sparrow-mini', loaded: true, build: 'simd' });
    const page = await app.request('/');
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toMatch(/<textarea id="prompt"[\s\S]*\/v1\/chat\/completions/);
    const nf = await app.request('/v2/nothing');
    expectError(await nf.json(), 404, nf);
  });
});

describe('errors in the OpenAI shape', () => {
  const app = makeApp({ maxBodyBytes: 2048 });
  const cases: [string, unknown, string | null, string?][] = [
    ['malformed JSON', '{"prompt": ', null, 'invalid_json'],
    ['not an object', '[1,2]', null, 'invalid_body'],
    ['empty body', '', null, 'invalid_body'],
    ['missing prompt', { max_tokens: 3 }, 'prompt'],
    ['temperature out of range', { prompt: 'x', temperature: 7 }, 'temperature'],
    ['temperature as a string', { prompt: 'x', temperature: 'hot' }, 'temperature'],
    ['top_p of 0', { prompt: 'x', top_p: 0 }, 'top_p'],
    ['max_tokens 0', { prompt: 'x', max_tokens: 0 }, 'max_tokens'],
    ['max_tokens fractional', { prompt: 'x', max_tokens: 1.5 }, 'max_tokens'],
    ['stop of the wrong type', { prompt: 'x', stop: 5 }, 'stop'],
    ['logit_bias with a bad key', { prompt: 'x', logit_bias: { abc: 1 } }, 'logit_bias'],
    ['logit_bias outside the vocabulary', { prompt: 'x', logit_bias: { 999999: 1 } }, 'logit_bias'],
    ['n = 0', { prompt: 'x', n: 0 }, 'n'],
    ['n over the choice limit', { prompt: 'x', n: 129 }, 'n'],
    ['a batch over the choice limit', { prompt: ['a', 'b', 'c'], n: 50 }, 'prompt'],
    ['an empty prompt in a batch', { prompt: ['a', ''] }, 'prompt[1]'],
    ['a bad prompt in a batch', { prompt: ['a', [1, -2]] }, 'prompt[1]'],
    ['n = 2 with a session', { prompt: 'x', n: 2, session: 'abc' }, 'n'],
    ['seed fractional', { prompt: 'x', seed: 0.5 }, 'seed'],
    ['token id outside the vocabulary', { prompt: [1, 2, 99999] }, 'prompt'],
    ['a bad session id', { prompt: 'x', session: '../etc/passwd' }, 'session'],
  ];
  for (const [name, body, param, code] of cases) {
    it(`400 for ${name}`, async () => {
      const res = await post(app, '/v1/completions', body);
      expectError(await res.json(), 400, res, param, code);
    });
  }

  it('404 model_not_found for a model the server does not serve, as OpenAI answers', async () => {
    for (const path of ['/v1/completions', '/v1/chat/completions']) {
      const res = await post(app, path, { model: 'gpt-9', prompt: 'x', messages: [{ role: 'user', content: 'x' }] });
      expectError(await res.json(), 404, res, 'model', 'model_not_found');
    }
  });

  it('400 for chat messages that are missing, empty, or malformed', async () => {
    for (const [body, param] of [
      [{}, 'messages'], [{ messages: [] }, 'messages'], [{ messages: 'hi' }, 'messages'],
      [{ messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }] }, 'messages[0].content[0].type'],
      [{ messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function' }] }, 'tools[0].function'],
    ] as const) {
      const res = await post(app, '/v1/chat/completions', body);
      expectError(await res.json(), 400, res, param);
    }
  });

  it('400 when the prompt does not fit the context', async () => {
    const res = await post(app, '/v1/completions', { prompt: Array(600).fill(5) });
    expectError(await res.json(), 400, res, 'prompt', 'context_length_exceeded');
  });

  it('413 for a body over the limit, with or without Content-Length', async () => {
    const big = JSON.stringify({ prompt: 'x'.repeat(5000) });
    const res = await post(app, '/v1/completions', big);
    expectError(await res.json(), 413, res, null, 'request_too_large');
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode(big)); c.close(); } });
    const res2 = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: stream, duplex: 'half' } as any);
    expect(res2.status).toBe(413);
  });

  it('400 for a body that is not UTF-8', async () => {
    const res = await app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) });
    expectError(await res.json(), 400, res, null, 'invalid_body');
  });
});

describe('auth and CORS', () => {
  const app = makeApp({ apiKey: 'sk-test-123', cors: ['https://chat.example'] });

  it('401 without or with a wrong key; 200 with the right one; the page and healthz stay open', async () => {
    const none = await app.request('/v1/models');
    expectError(await none.json(), 401, none, null, 'invalid_api_key');
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    const wrong = await app.request('/v1/models', { headers: { authorization: 'Bearer sk-test-124' } });
    expect(wrong.status).toBe(401);
    const ok = await app.request('/v1/models', { headers: { authorization: 'Bearer sk-test-123' } });
    expect(ok.status).toBe(200);
    await app.ready();
    expect((await app.request('/healthz')).status).toBe(200);
    expect((await app.request('/')).status).toBe(200);
  });

  it('answers preflights for allowed origins without a key', async () => {
    const res = await app.request('/v1/chat/completions', {
      method: 'OPTIONS',
      headers: { origin: 'https://chat.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get('access-control-allow-origin')).toBe('https://chat.example');
    expect(res.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    const other = await app.request('/v1/models', { headers: { origin: 'https://evil.example', authorization: 'Bearer sk-test-123' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('sessions', () => {
  it('a second turn resumes the stored state: only the new tokens run, and the text is that of a session kept alive', async () => {
    const store = new MemorySessionStore();
    const app = makeApp({ store });
    const conv = await newSession(app);
    expect(conv).toMatch(/^sess-[A-Za-z0-9]{32}$/);
    const turn1 = [{ role: 'user', content: 'Tell me about the sea.' }];
    const r1 = await post(app, '/v1/chat/completions', { messages: turn1, max_tokens: 10, seed: 1 }, { 'x-session-id': conv });
    expect(r1.headers.get('x-session-id')).toBe(conv);
    const b1 = await r1.json();
    expect(b1.usage.prompt_tokens_details.cached_tokens).toBe(0);
    const meta = await (await app.request(`/v1/sessions/${conv}`)).json();
    expect(meta).toMatchObject({ id: conv, object: 'session', model: 'sparrow-mini' });
    expect(meta.tokens).toBe(b1.usage.total_tokens);
    expect(meta.bytes).toBeGreaterThan(1000);

    const turn2 = [...turn1, { role: 'assistant', content: b1.choices[0].message.content }, { role: 'user', content: 'And the sky?' }];
    const r2 = await (await post(app, '/v1/chat/completions', { messages: turn2, max_tokens: 10, seed: 2, session: conv })).json();
    expect(r2.usage.prompt_tokens_details.cached_tokens).toBe(meta.tokens);
    const fresh = await (await post(app, '/v1/chat/completions', { messages: turn2, max_tokens: 10, seed: 2 })).json();
    expect(fresh.usage.prompt_tokens_details.cached_tokens).toBe(0);
    expect(fresh.usage.prompt_tokens).toBe(r2.usage.prompt_tokens);

    // The same two turns through one live session: restored bytes continue exactly as the state would have.
    const stopTokenIds = ['<|im_end|>', '<|endoftext|>'].map((t) => lm.tokenizer!.tokenToId(t)!);
    const live = lm.session();
    const g1 = lm.generate(lm.encode(lm.applyChatTemplate(turn1 as any), false), { maxTokens: 10, seed: 1, session: live, stopTokenIds });
    expect((await g1.result()).text).toBe(b1.choices[0].message.content);
    const last = g1.tokens[g1.tokens.length - 1];
    if (!lm.eosTokenIds.has(last)) await live.feed([last]);
    const g2 = lm.generate(lm.encode(lm.applyChatTemplate(turn2 as any), false), { maxTokens: 10, seed: 2, session: live, stopTokenIds });
    expect((await g2.result()).text).toBe(r2.choices[0].message.content);
    live.dispose();

    // A prompt that does not extend the stored tokens starts over (and replaces them).
    const other = await (await post(app, '/v1/chat/completions', { messages: [{ role: 'user', content: 'Something else' }], max_tokens: 4, seed: 2, session: conv })).json();
    expect(other.usage.prompt_tokens_details.cached_tokens).toBe(0);

    const del = await app.request(`/v1/sessions/${conv}`, { method: 'DELETE' });
    expect(await del.json()).toEqual({ id: conv, object: 'session.deleted', deleted: true });
    const gone = await app.request(`/v1/sessions/${conv}`);
    expectError(await gone.json(), 404, gone, 'id', 'session_not_found');
    expect((await app.request(`/v1/sessions/${conv}`, { method: 'DELETE' })).status).toBe(404);
    // A deleted session is not brought back by naming it.
    const again = await post(app, '/v1/chat/completions', { messages: turn1, max_tokens: 2 }, { 'x-session-id': conv });
    expectError(await again.json(), 404, again, 'session', 'session_not_found');
  });

  it('a completion session continues a text', async () => {
    const app = makeApp();
    const story = await newSession(app);
    const a = await (await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 6, temperature: 0, session: story })).json();
    const b = await (await post(app, '/v1/completions', { prompt: 'Once upon a time' + a.choices[0].text + ' and then', max_tokens: 6, temperature: 0, session: story })).json();
    expect(b.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
  });

  it('a corrupt stored snapshot is ignored, not a 5xx', async () => {
    const store = new MemorySessionStore();
    const app = makeApp({ store });
    const ids = lm.encode('Once upon a time');
    await store.put({ id: 'bad', model: 'sparrow-mini', tokens: ids.slice(0, 2), bytes: new Uint8Array(100).fill(7), createdAt: 0, updatedAt: 0 });
    const res = await post(app, '/v1/completions', { prompt: 'Once upon a time', max_tokens: 3, session: 'bad' });
    expect(res.status).toBe(200);
    expect((await res.json()).usage.prompt_tokens_details.cached_tokens).toBe(0);
  });
});

describe('queue, cancellation, memory budget', () => {
  it('N running + M waiting, then 429 with Retry-After; a cancelled stream frees its place and its slot', async () => {
    const app = makeApp({ maxConcurrent: 1, maxQueue: 1 });
    const long = { prompt: 'Once upon a time', max_tokens: 400, ignore_eos: true, stream: true, seed: 1 };
    const first = await post(app, '/v1/completions', long);
    expect(first.status).toBe(200);
    const reader = first.body!.getReader();
    await reader.read();
    const second = post(app, '/v1/completions', { prompt: 'Hello', max_tokens: 3, seed: 1 });
    await new Promise((r) => setTimeout(r, 20));
    const third = await post(app, '/v1/completions', { prompt: 'Hello', max_tokens: 3 });
    expectError(await third.json(), 429, third, null, 'rate_limit_exceeded');
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    await reader.cancel();
    const s = await second;
    expect(s.status).toBe(200);
    expect((await s.json()).choices[0].text.length).toBeGreaterThan(0);
    const h = await (await app.request('/healthz')).json();
    expect(h.queue).toMatchObject({ running: 0, waiting: 0 });
    expect(h.sessions_in_use).toBe(0);
  });

  it('an aborted request signal stops a non-streamed generation', async () => {
    const app = makeApp({ maxConcurrent: 1, maxQueue: 0 });
    const ac = new AbortController();
    const p = Promise.resolve(app.request('/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'Once', max_tokens: 1500, ignore_eos: true }), signal: ac.signal }));
    await new Promise((r) => setTimeout(r, 50));
    ac.abort();
    await p.catch(() => {});
    await new Promise((r) => setTimeout(r, 20));
    const next = await post(app, '/v1/completions', { prompt: 'Once', max_tokens: 2 });
    expect(next.status).toBe(200);
  });

  it('503 with the numbers when the model is over the memory budget', async () => {
    const app = makeApp({ loadModel: () => loadModel(MODEL_DIR, { memoryBudget: 4_000_000 }) });
    const res = await post(app, '/v1/completions', { prompt: 'x' });
    const b = await res.json();
    expectError(b, 503, res, null, 'model_over_memory_budget');
    expect(b.error.budget_bytes).toBe(4_000_000);
    expect(b.error.need_bytes).toBeGreaterThan(4_000_000);
    expect(b.error.message).toMatch(/needs \d+ bytes .* budget is 4000000 bytes/);
    const h = await app.request('/healthz');
    expect(h.status).toBe(503);
    // Bad input still gets its 400 first.
    expect((await post(app, '/v1/completions', '{')).status).toBe(400);
  });
});

describe('session stores', () => {
  const mk = (id: string, n: number): StoredSession => ({ id, model: 'm', tokens: [1, 2, 3], bytes: new Uint8Array(n).fill(id.length), createdAt: 1, updatedAt: 2 });

  it('the memory store evicts the least recently used by count and by bytes', async () => {
    const evicted: string[] = [];
    const s = new MemorySessionStore({ maxEntries: 3, maxBytes: 1000, onEvict: (x) => evicted.push(x.id) });
    await s.put(mk('a', 100));
    await s.put(mk('b', 100));
    await s.put(mk('c', 100));
    await s.get('a');
    await s.put(mk('d', 100));
    expect(evicted).toEqual(['b']);
    await s.put(mk('e', 800));
    expect(evicted).toEqual(['b', 'c']);
    expect(s.bytes).toBe(1000);
    await s.put(mk('f', 1));
    expect(evicted).toEqual(['b', 'c', 'a']);
    await s.put(mk('huge', 5000));
    expect(await s.get('huge')).toBeNull();
    expect(await s.meta('e')).toMatchObject({ id: 'e', tokens: 3, bytes: 800 });
  });

  it('the directory store round-trips, survives a reopen, and sits behind the memory store', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sparrow-sessions-'));
    tmp.push(dir);
    const d = new DirSessionStore(dir);
    await d.put(mk('x1', 300));
    const back = await new DirSessionStore(dir).get('x1');
    expect(back?.bytes).toEqual(mk('x1', 300).bytes);
    expect(back?.tokens).toEqual([1, 2, 3]);
    expect(await d.get('nope')).toBeNull();
    const t = new TieredSessionStore(new MemorySessionStore({ maxEntries: 1 }), d);
    await t.put(mk('x2', 10));
    await t.put(mk('x3', 10));
    expect((await t.get('x2'))?.id).toBe('x2');
    expect(await t.delete('x2')).toBe(true);
    expect(await t.get('x2')).toBeNull();
    expect(decodeSessionFile(encodeSessionFile(mk('q', 5)).slice(0, 20))).toBeNull();
  });

  it('session files keep their owner (version 2), and version 1 files, written before owners, read as owned by no key', async () => {
    const s2 = decodeSessionFile(encodeSessionFile({ ...mk('o', 7), owner: 'ab12' }));
    expect(s2).toMatchObject({ id: 'o', owner: 'ab12', tokens: [1, 2, 3] });
    // A version 1 file as earlier servers wrote it.
    const json = new TextEncoder().encode(JSON.stringify({ id: 'old', model: 'm', tokens: [4, 5], createdAt: 1, updatedAt: 2 }));
    const v1 = new Uint8Array(16 + json.length + 3);
    v1.set(new TextEncoder().encode('SPRWSESS'));
    new DataView(v1.buffer).setUint32(8, 1, true);
    new DataView(v1.buffer).setUint32(12, json.length, true);
    v1.set(json, 16);
    v1.set([9, 9, 9], 16 + json.length);
    expect(decodeSessionFile(v1)).toEqual({ id: 'old', model: 'm', owner: '', tokens: [4, 5], bytes: new Uint8Array([9, 9, 9]), createdAt: 1, updatedAt: 2 });
    const dir = mkdtempSync(join(tmpdir(), 'sparrow-sessions-'));
    tmp.push(dir);
    writeFileSync(join(dir, 'old.session'), v1);
    expect(await new DirSessionStore(dir).meta('old')).toMatchObject({ id: 'old', owner: '', tokens: 2, bytes: 3 });
  });
});

describe('fuzzed bodies', () => {
  it('250 malformed bodies never give a 5xx', async () => {
    const app = makeApp({ maxConcurrent: 2, maxQueue: 64, maxBodyBytes: 16 * 1024 });
    const statuses = new Map<number, number>();
    for (const f of fuzzBodies(250, 1234)) {
      const res = await app.request(f.path, { method: 'POST', headers: f.headers, body: f.body as BodyInit });
      const text = await res.text();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status >= 500) throw new Error(`${res.status} for ${f.path} ${String(f.body).slice(0, 300)}: ${text}`);
      if (res.status >= 400) expect(JSON.parse(text).error.message).toBeTruthy();
    }
    expect([...statuses.keys()].some((s) => s >= 400)).toBe(true);
  });
});
