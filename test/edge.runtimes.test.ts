// The one app on four real runtimes: Node (@hono/node-server through tsx), Bun (Bun.serve), Deno
// (Deno.serve) as processes, and the Worker in local workerd (wrangler.jsonc, Durable Object
// sessions, static-asset model). Each is driven with the official `openai` client, streamed and
// not, and with raw fetch for the error cases; the same seed gives the same text on all four.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { postJson, ROOT, startCommand, startProcess, startWorker, stopAll, type RuntimeKind, type Server } from './edge-helpers';
import { PET_SCHEMA, petProblem } from './structured-helpers';

const KINDS: RuntimeKind[] = ['node', 'bun', 'deno', 'workers'];
const API_KEY = 'sk-edge-test';
const servers = {} as Record<RuntimeKind, Server>;
const sessionDir = mkdtempSync(join(tmpdir(), 'sparrow-edge-sessions-'));

/** A ChatML template that also renders tools (hermes-style calls), given to every server in place of the model's. */
const TOOL_TEMPLATE = join(ROOT, 'test/fixtures/chat-templates/hermes-tools.jinja');

beforeAll(async () => {
  // Bun requires a key; Node keeps sessions on disk too; Deno and the Worker run with the defaults.
  // All four take the chat template with tools (an option, an environment variable, a Worker var).
  const started = await Promise.all([
    startProcess('node', { args: ['--session-dir', sessionDir, '--chat-template', TOOL_TEMPLATE] }),
    startProcess('bun', { env: { SPARROW_API_KEY: API_KEY, SPARROW_CHAT_TEMPLATE: TOOL_TEMPLATE } }),
    startProcess('deno', { env: { SPARROW_CHAT_TEMPLATE: TOOL_TEMPLATE } }),
    startWorker({ CHAT_TEMPLATE: readFileSync(TOOL_TEMPLATE, 'utf8') }),
  ]);
  for (const s of started) servers[s.kind] = s;
}, 120_000);

afterAll(async () => {
  await stopAll();
  rmSync(sessionDir, { recursive: true, force: true });
});

const client = (k: RuntimeKind) => new OpenAI({ baseURL: `${servers[k].url}/v1`, apiKey: k === 'bun' ? API_KEY : 'unused', maxRetries: 0, timeout: 60_000 });
const auth = (k: RuntimeKind): Record<string, string> => (k === 'bun' ? { authorization: `Bearer ${API_KEY}` } : {});

const CHAT = { model: 'sparrow-mini', messages: [{ role: 'user' as const, content: 'Tell me a story about a fox.' }], max_tokens: 24, seed: 11, temperature: 0.9 };
const COMPLETION = { model: 'sparrow-mini', prompt: 'Once upon a time, a little fox', max_tokens: 24, seed: 7, temperature: 0.8, top_p: 0.95 };

const results: Record<string, Record<string, string>> = {};

/** A step that names itself when it hangs, instead of a bare test timeout. */
function step<T>(label: string, p: Promise<T>, ms = 20_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${label}: no answer in ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

describe.each(KINDS)('%s', (kind) => {
  it('lists the model and answers non-streamed and streamed requests through the openai client', async () => {
    const c = client(kind);
    const models = await c.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['sparrow-mini']);

    const done = await c.completions.create(COMPLETION);
    expect(done.object).toBe('text_completion');
    expect(done.choices[0].finish_reason).toBe('length');
    expect(done.usage?.completion_tokens).toBe(24);

    const chat = await c.chat.completions.create(CHAT);
    expect(chat.object).toBe('chat.completion');
    expect(chat.choices[0].message.role).toBe('assistant');

    const stream = await c.chat.completions.create({ ...CHAT, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let chunks = 0;
    let usage: any = null;
    for await (const ch of stream) {
      chunks++;
      text += ch.choices[0]?.delta?.content ?? '';
      if (ch.usage) usage = ch.usage;
    }
    expect(chunks).toBeGreaterThan(5);
    expect(text).toBe(chat.choices[0].message.content);
    expect(usage).toMatchObject({ completion_tokens: chat.usage!.completion_tokens });

    // The chosen tokens' logprobs and the 3 likeliest at each step, most likely first (the model's
    // generation_config repetition penalty can make the greedy choice another than the likeliest).
    const lp = await c.chat.completions.create({ ...CHAT, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = lp.choices[0].logprobs!.content!;
    expect(content).toHaveLength(lp.usage!.completion_tokens);
    for (const t of content) {
      expect(t.top_logprobs).toHaveLength(3);
      expect(t.top_logprobs[0].logprob).toBeGreaterThanOrEqual(t.logprob);
      expect(t.top_logprobs[2].logprob).toBeLessThanOrEqual(t.top_logprobs[1].logprob);
      expect(t.top_logprobs[1].logprob).toBeLessThanOrEqual(t.top_logprobs[0].logprob);
      const same = t.top_logprobs.find((a) => a.token === t.token);
      if (same) expect(same.logprob).toBe(t.logprob);
    }

    const cstream = await c.completions.create({ ...COMPLETION, stream: true });
    let ctext = '';
    for await (const ch of cstream) ctext += ch.choices[0]?.text ?? '';
    expect(ctext).toBe(done.choices[0].text);

    results[kind] = { chat: chat.choices[0].message.content ?? '', completion: done.choices[0].text };
  });

  it('structured outputs, tool calls, n choices and batch prompts through the openai client', async () => {
    const c = client(kind);
    // A JSON schema: every reply parses and validates, streamed and not.
    for (let seed = 0; seed < 4; seed++) {
      const body = {
        ...CHAT, seed, max_tokens: 400, temperature: 1,
        response_format: { type: 'json_schema' as const, json_schema: { name: 'pet', schema: PET_SCHEMA as any, strict: true } },
      };
      const r = await c.chat.completions.create(body);
      const text = r.choices[0].message.content!;
      expect(petProblem(JSON.parse(text)), text).toBeNull();
      let streamed = '';
      for await (const ch of await c.chat.completions.create({ ...body, stream: true })) streamed += ch.choices[0]?.delta?.content ?? '';
      expect(streamed).toBe(text);
      results[kind] ??= {};
      results[kind][`json ${seed}`] = text;
    }
    const obj = await c.chat.completions.create({ ...CHAT, max_tokens: 200, response_format: { type: 'json_object' } });
    const objText = obj.choices[0].message.content!;
    expect(objText.startsWith('{')).toBe(true);
    if (obj.choices[0].finish_reason === 'stop') expect(typeof JSON.parse(objText)).toBe('object');
    // A forced tool call, then its result rendered back for the reply.
    const tools = [{
      type: 'function' as const,
      function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 16 } }, required: ['city'] } },
    }];
    const ask = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];
    const called = await c.chat.completions.create({ model: 'sparrow-mini', messages: ask, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, parallel_tool_calls: false, temperature: 0, max_tokens: 100 });
    const call = called.choices[0].message.tool_calls![0];
    expect(called.choices[0].finish_reason).toBe('tool_calls');
    expect(call.type === 'function' && call.function.name).toBe('get_weather');
    const args = JSON.parse(call.type === 'function' ? call.function.arguments : '');
    expect(typeof args.city).toBe('string');
    const deltas: any[] = [];
    for await (const ch of await c.chat.completions.create({ model: 'sparrow-mini', messages: ask, tools, tool_choice: 'required', parallel_tool_calls: false, temperature: 0, max_tokens: 100, stream: true })) {
      deltas.push(...(ch.choices[0]?.delta?.tool_calls ?? []));
    }
    expect(deltas).toHaveLength(1);
    expect(deltas[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather' } });
    const reply = await c.chat.completions.create({
      model: 'sparrow-mini', tools, temperature: 0, max_tokens: 8,
      messages: [...ask, called.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"sky": "clear"}' }],
    });
    expect(reply.usage!.prompt_tokens).toBeGreaterThan(called.usage!.prompt_tokens);
    // The prompt cache: the same prompt again reuses the earlier request's state.
    const cacheBody = { model: 'sparrow-mini', messages: [{ role: 'user' as const, content: `A story for ${kind}, please.` }], max_tokens: 4, temperature: 0 };
    const cold = await c.chat.completions.create(cacheBody);
    const warm = await c.chat.completions.create(cacheBody);
    expect(cold.usage!.prompt_tokens_details!.cached_tokens).toBe(0);
    expect(warm.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThanOrEqual(cold.usage!.prompt_tokens - 1);
    expect(warm.choices[0].message.content).toBe(cold.choices[0].message.content);
    // n choices and a batch of prompts.
    const nc = await c.completions.create({ ...COMPLETION, n: 2, max_tokens: 6 });
    expect(nc.choices.map((x) => x.index)).toEqual([0, 1]);
    const second = await c.completions.create({ ...COMPLETION, seed: COMPLETION.seed + 1, max_tokens: 6 });
    expect(nc.choices[1].text).toBe(second.choices[0].text);
    const batch = await c.completions.create({ ...COMPLETION, prompt: ['Once upon a time', 'The fox'], max_tokens: 6, temperature: 0 });
    expect(batch.choices.map((x) => x.index)).toEqual([0, 1]);
    const alone = await c.completions.create({ ...COMPLETION, prompt: 'The fox', max_tokens: 6, temperature: 0 });
    expect(batch.choices[1].text).toBe(alone.choices[0].text);
  }, 120_000);

  it('errors come back in the OpenAI shape, never as a 5xx', async () => {
    const url = servers[kind].url;
    const cases: [string, number, string | null][] = [
      ['{"prompt": "x", ', 400, 'invalid_json'],
      [JSON.stringify({ model: 'nope', prompt: 'x' }), 404, 'model_not_found'],
      [JSON.stringify({ prompt: 'x', temperature: -1 }), 400, 'invalid_value'],
      [JSON.stringify({ prompt: 'x', stop: { a: 1 } }), 400, 'invalid_type'],
      [JSON.stringify({ prompt: 'x'.repeat(2 << 20) }), 413, 'request_too_large'],
    ];
    for (const [body, status, code] of cases) {
      const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth(kind) }, body });
      expect(res.status, body.slice(0, 60)).toBe(status);
      const b = await res.json();
      expect(Object.keys(b.error).slice(0, 4)).toEqual(['message', 'type', 'param', 'code']);
      expect(b.error.code).toBe(code);
    }
    // JSON routes take JSON only: a text/plain POST (one a browser sends cross-site without asking) is refused.
    for (const path of ['/v1/completions', '/v1/chat/completions', '/v1/sessions']) {
      const plain = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'text/plain', ...auth(kind) }, body: JSON.stringify({ prompt: 'x' }) });
      expect(plain.status, path).toBe(415);
      expect((await plain.json()).error).toMatchObject({ type: 'invalid_request_error', param: null, code: 'unsupported_media_type' });
    }
    const nf = await fetch(`${url}/v1/nothing`, { headers: auth(kind) });
    expect(nf.status).toBe(404);
    await expect(client(kind).chat.completions.create({ ...CHAT, model: 'gpt-4o' })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
  });

  it('a session resumes its saved state; GET and DELETE /v1/sessions/:id', async () => {
    const url = servers[kind].url;
    // An id the server never issued is not taken: 404, and nothing is stored under it.
    const made = await postJson(`${url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }, { ...auth(kind), 'x-session-id': `sess-${kind}-made-up` });
    expect(made.status).toBe(404);
    expect((await made.json()).error).toMatchObject({ param: 'session', code: 'session_not_found' });
    expect((await fetch(`${url}/v1/sessions/sess-${kind}-made-up`, { headers: auth(kind) })).status).toBe(404);
    const created = await postJson(`${url}/v1/sessions`, {}, auth(kind));
    expect(created.status).toBe(200);
    const id: string = (await created.json()).id;
    expect(id).toMatch(/^sess-[A-Za-z0-9]{32}$/);
    const h = { ...auth(kind), 'x-session-id': id };
    const m1 = [{ role: 'user', content: 'Hello, who are you?' }];
    const r1 = await (await postJson(`${url}/v1/chat/completions`, { messages: m1, max_tokens: 12, seed: 1 }, h)).json();
    const meta = await (await fetch(`${url}/v1/sessions/${id}`, { headers: auth(kind) })).json();
    expect(meta).toMatchObject({ id, object: 'session', model: 'sparrow-mini', tokens: r1.usage.total_tokens });
    expect(meta.bytes).toBeGreaterThan(200_000);
    const m2 = [...m1, { role: 'assistant', content: r1.choices[0].message.content }, { role: 'user', content: 'Tell me more.' }];
    const r2 = await (await postJson(`${url}/v1/chat/completions`, { messages: m2, max_tokens: 12, seed: 1, stream: true, stream_options: { include_usage: true } }, h)).text();
    const usage = JSON.parse(r2.split('\n\n').filter((e) => e.includes('"usage":{')).pop()!.slice(6)).usage;
    expect(usage.prompt_tokens_details.cached_tokens).toBe(meta.tokens);
    expect((await fetch(`${url}/v1/sessions/${id}`, { method: 'DELETE', headers: auth(kind) })).status).toBe(200);
    expect((await fetch(`${url}/v1/sessions/${id}`, { headers: auth(kind) })).status).toBe(404);
  });

  // The Worker case is the hard one: workerd does not cancel a JavaScript stream body when the client
  // goes away, and a request whose client left runs no more timers unless it is kept alive (see
  // streamBody in edge/sse.ts).
  it('a client that goes away mid-stream frees its place', async () => {
    const url = servers[kind].url;
    const health = async () => (await step('healthz', fetch(`${url}/healthz`))).json();
    const res = await step('streamed request', postJson(`${url}/v1/completions`, { prompt: 'Once', max_tokens: 1500, ignore_eos: true, stream: true }, auth(kind)));
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    expect((await step('first chunk', reader.read())).done).toBe(false);
    // Mid-way: 1500 tokens take seconds, so the generation still holds its place.
    const during = await health();
    expect(during.queue.running).toBe(1);
    expect(during.sessions_in_use).toBe(1);
    await reader.cancel();
    // Generous under a loaded CI machine (workerd shares two cores with the other test files).
    const deadline = Date.now() + 30_000;
    let h: any;
    do {
      await new Promise((r) => setTimeout(r, 50));
      h = await health();
    } while (h.queue.running > 0 && Date.now() < deadline);
    expect(h.queue.running).toBe(0);
    expect(h.sessions_in_use).toBe(0);
    // The server carries on: the next request gets the place.
    const next = await step('next request', postJson(`${url}/v1/completions`, { prompt: 'Once', max_tokens: 4 }, auth(kind)));
    expect(next.status).toBe(200);
    expect((await next.json()).usage.completion_tokens).toBe(4);
    expect((await health()).queue.running).toBe(0);
  }, 45_000);
});

describe('across runtimes', () => {
  it('the same seed gives the same text on all four', () => {
    expect(Object.keys(results).sort()).toEqual([...KINDS].sort());
    for (const k of KINDS) {
      expect(results[k].chat.length).toBeGreaterThan(0);
      expect(results[k]).toEqual(results.node);
    }
  });

  it('Bun refuses requests without the key (401) and the openai client maps it', async () => {
    const res = await fetch(`${servers.bun.url}/v1/models`);
    expect(res.status).toBe(401);
    expect((await res.json()).error.code).toBe('invalid_api_key');
    const bad = new OpenAI({ baseURL: `${servers.bun.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401 });
  });

  it('Node keeps sessions on disk: they survive a restart', async () => {
    const id: string = (await (await postJson(`${servers.node.url}/v1/sessions`, {})).json()).id;
    const m1 = [{ role: 'user', content: 'Remember me.' }];
    const r1 = await (await postJson(`${servers.node.url}/v1/chat/completions`, { messages: m1, max_tokens: 8, seed: 4 }, { 'x-session-id': id })).json();
    await servers.node.stop();
    servers.node = await startProcess('node', { args: ['--session-dir', sessionDir] });
    const meta = await (await fetch(`${servers.node.url}/v1/sessions/${id}`)).json();
    expect(meta.tokens).toBe(r1.usage.total_tokens);
    const m2 = [...m1, { role: 'assistant', content: r1.choices[0].message.content }, { role: 'user', content: 'Again.' }];
    const r2 = await (await postJson(`${servers.node.url}/v1/chat/completions`, { messages: m2, max_tokens: 8, seed: 4 }, { 'x-session-id': id })).json();
    expect(r2.usage.prompt_tokens_details.cached_tokens).toBe(meta.tokens);
  });

  it('the Worker answers 503 with the numbers when the model does not fit its memory limit', async () => {
    const small = await step('start a second Worker', startWorker({ MEMORY_LIMIT_MB: '32' }));
    try {
      const res = await step('request to it', postJson(`${small.url}/v1/chat/completions`, CHAT));
      expect(res.status).toBe(503);
      const b = await res.json();
      expect(b.error).toMatchObject({ type: 'server_error', code: 'model_over_memory_budget', budget_bytes: 32 * 1048576 });
      expect(b.error.need_bytes).toBeGreaterThan(32 * 1048576);
      expect(b.error.message).toMatch(/needs \d+ bytes \(\d+\.\d MiB\) but the memory budget is 33554432 bytes \(32\.0 MiB\)/);
      // The default 128 MB fits, and the budget is reported.
      await step('request to the first Worker', postJson(`${servers.workers.url}/v1/completions`, { prompt: 'x', max_tokens: 1 }));
      const h = await (await step('its healthz', fetch(`${servers.workers.url}/healthz`))).json();
      expect(h).toMatchObject({ status: 'ok', loaded: true, build: 'simd' });
      expect(h.memory.wasm_bytes).toBeLessThan(64 * 1048576);
    } finally {
      await step('stop the second Worker', small.stop());
    }
  });

  it('`sparrow serve` starts the same server; bad options exit 2 with one line', async () => {
    const s = await startCommand('node', process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--max-queue', '0']);
    try {
      const h = await (await fetch(`${s.url}/healthz`)).json();
      expect(h).toMatchObject({ status: 'ok', model: 'sparrow-mini', queue: { max_waiting: 0 } });
    } finally {
      await s.stop();
    }
    const bad = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--max-queue', 'many'], { cwd: ROOT, encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe('sparrow serve: --max-queue must be an integer ≥ 0, got "many"\n');
    const help = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--help'], { cwd: ROOT, encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: sparrow serve/);
  });

  it('the Worker serves a GGUF from an R2 bucket when MODEL_KEY is set', async () => {
    const persist = mkdtempSync(join(tmpdir(), 'sparrow-r2-'));
    try {
      const put = spawnSync(join(ROOT, 'node_modules/.bin/wrangler'),
        ['r2', 'object', 'put', 'sparrow-models/tiny.gguf', '--file', 'models/sparrow-mini/model.q8_0.gguf', '--local', '--persist-to', persist],
        { cwd: ROOT, encoding: 'utf8', env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false' } });
      expect(put.status, put.stderr).toBe(0);
      const w = await step('start a Worker bound to R2', startWorker({ MODEL_KEY: 'tiny.gguf' }, { bindings: { MODELS: { type: 'r2_bucket', bucket_name: 'sparrow-models' } }, persist }));
      try {
        const c = new OpenAI({ baseURL: `${w.url}/v1`, apiKey: 'x', maxRetries: 0 });
        expect((await c.models.list()).data.map((m) => m.id)).toEqual(['sparrow-mini']);
        const r = await c.completions.create({ ...COMPLETION, model: 'sparrow-mini' });
        expect(r.choices[0].text).toBe(results.node.completion);
      } finally {
        await w.stop();
      }
    } finally {
      rmSync(persist, { recursive: true, force: true });
    }
  });
});
