// Structured outputs and tool calling, in-process (app.request): `response_format` json_object and
// json_schema enforced while decoding (the text always parses and validates), the library's grammar,
// jsonSchema and regex options, and tool calls rendered by a chat template with tools and read back
// from the reply (`tool_calls`, streamed as `delta.tool_calls`), free or forced by `tool_choice`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Grammar, loadModel, templateMessages, type LanguageModel } from '../src/index';
import { post, sse, testApp } from './app-helpers';
import { ROOT } from './edge-helpers';
import { PET_SCHEMA, petProblem } from './structured-helpers';

const MODEL_DIR = join(ROOT, 'models/sparrow-mini');
const HERMES = readFileSync(join(ROOT, 'test/fixtures/chat-templates/hermes-tools.jinja'), 'utf8');
let lm: LanguageModel;
let toolLm: LanguageModel;

beforeAll(async () => {
  lm = await loadModel(MODEL_DIR, { build: 'simd', maxContext: 1024 });
  toolLm = await loadModel(MODEL_DIR, { build: 'simd', maxContext: 1024, chatTemplate: HERMES });
});
afterAll(async () => {
  await lm?.dispose();
  await toolLm?.dispose();
});

describe('structured outputs', () => {
  const app = testApp(() => lm);
  const rf = { type: 'json_schema', json_schema: { name: 'pet', schema: PET_SCHEMA, strict: true } };

  it('a JSON schema with nested objects, arrays, enums and required fields gives valid JSON over 50 seeds', async () => {
    const seen = new Set<string>();
    for (let seed = 0; seed < 50; seed++) {
      const b = await (await post(app, '/v1/chat/completions', {
        messages: [{ role: 'user', content: 'Describe a pet.' }], response_format: rf, temperature: 1, seed, max_tokens: 400,
      })).json();
      const text = b.choices[0].message.content;
      expect(b.choices[0].finish_reason, text).toBe('stop');
      const v = JSON.parse(text);
      expect(petProblem(v), text).toBeNull();
      seen.add(text);
    }
    // Sampling still samples: the replies differ.
    expect(seen.size).toBeGreaterThan(25);
  }, 120_000);

  it('json_object gives a JSON object; streamed and not alike; completions too', async () => {
    const body = { messages: [{ role: 'user', content: 'Tell me a story.' }], response_format: { type: 'json_object' }, temperature: 0.8, seed: 3, max_tokens: 120 };
    const b = await (await post(app, '/v1/chat/completions', body)).json();
    const text = b.choices[0].message.content;
    if (b.choices[0].finish_reason === 'stop') expect(typeof JSON.parse(text)).toBe('object');
    expect(text.startsWith('{')).toBe(true);
    const chunks = await sse(await post(app, '/v1/chat/completions', { ...body, stream: true }));
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toBe(text);
    const c = await (await post(app, '/v1/completions', { prompt: 'A pet:', response_format: rf, temperature: 0.7, seed: 9, max_tokens: 400 })).json();
    expect(petProblem(JSON.parse(c.choices[0].text))).toBeNull();
  });

  it('greedy under a schema is the unconstrained greedy text wherever that one fits the schema', async () => {
    // The constraint only removes tokens: when the model's own choice is allowed it is kept.
    const g = Grammar.fromRegex('[A-Za-z ,.]+');
    const free = await lm.generate('Once upon a time', { temperature: 0, maxTokens: 12 }).result();
    const held = await lm.generate('Once upon a time', { temperature: 0, maxTokens: 12, grammar: g }).result();
    if (/^[A-Za-z ,.]+$/.test(free.text)) expect(held.text).toBe(free.text);
    expect(held.text).toMatch(/^[A-Za-z ,.]*$/);
  });

  it('the library: GBNF text, a regex and a JSON schema constrain generate()', async () => {
    const yes = await lm.generate('The answer is', { grammar: 'root ::= " yes" | " no" | " maybe"', temperature: 1, seed: 4 }).result();
    expect([' yes', ' no', ' maybe']).toContain(yes.text);
    expect(yes.finishReason).toBe('stop');
    for (let seed = 0; seed < 5; seed++) {
      const r = await lm.generate('Code:', { regex: '[a-z]{3,5}-[0-9]{2}', temperature: 1, seed }).result();
      expect(r.text).toMatch(/^[a-z]{3,5}-[0-9]{2}$/);
    }
    const j = await lm.generate('A pet:', { jsonSchema: PET_SCHEMA as any, temperature: 0.9, seed: 2, maxTokens: 400 }).result();
    expect(petProblem(JSON.parse(j.text))).toBeNull();
    expect(() => lm.generate('x', { regex: '(a)\\1' })).toThrow(/regex/);
    expect(() => lm.generate('x', { regex: 'a', jsonSchema: true })).toThrow(/one of grammar, jsonSchema and regex/);
  });

  it('specialTokens writes special tokens into the text (a tool-call marker); by default they are left out', async () => {
    const id = lm.tokenizer!.tokenToId('<|im_start|>')!;
    expect(lm.tokenizer!.isSpecial(id)).toBe(true);
    const forced = { temperature: 0, maxTokens: 1, logitBias: { [id]: 100 } };
    expect((await lm.generate('Hello', { ...forced, specialTokens: true }).result()).text).toBe('<|im_start|>');
    expect((await lm.generate('Hello', forced).result()).text).toBe('');
  });

  it('schemas the grammar cannot express are refused naming the keyword; bad response_format values name the field', async () => {
    const bad = await post(app, '/v1/chat/completions', {
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { not: { type: 'string' } } } } } },
    });
    expect(bad.status).toBe(400);
    const e = (await bad.json()).error;
    expect(e.param).toBe('response_format.json_schema.schema');
    expect(e.message).toMatch(/'not'/);
    for (const [format, param] of [
      [{ type: 'xml' }, 'response_format.type'],
      ['json', 'response_format'],
      [{ type: 'json_schema' }, 'response_format.json_schema'],
      [{ type: 'json_schema', json_schema: { name: 'a b', schema: {} } }, 'response_format.json_schema.name'],
    ] as const) {
      const res = await post(app, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x' }], response_format: format });
      expect(res.status).toBe(400);
      expect((await res.json()).error.param).toBe(param);
    }
  });
});

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 16 }, unit: { enum: ['c', 'f'] } }, required: ['city'] },
  },
};
const TIME = { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string', maxLength: 8 } }, required: ['zone'] } } };

describe('tool calling', () => {
  const app = testApp(() => toolLm);
  const ask = { messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [WEATHER, TIME], max_tokens: 200 };

  it('tool_choice required: the reply is tool calls whose arguments follow the schema, streamed and not alike', async () => {
    for (let seed = 0; seed < 8; seed++) {
      const body = { ...ask, tool_choice: 'required', temperature: 1, seed };
      const b = await (await post(app, '/v1/chat/completions', body)).json();
      const ch = b.choices[0];
      // Parallel calls: the grammar lets the reply end after any complete call, or go on with another.
      expect(['tool_calls', 'length']).toContain(ch.finish_reason);
      expect(ch.message.tool_calls.length).toBeGreaterThanOrEqual(1);
      for (const call of ch.message.tool_calls) {
        expect(call.id).toMatch(/^call_/);
        expect(call.type).toBe('function');
        expect(['get_weather', 'get_time']).toContain(call.function.name);
        const args = JSON.parse(call.function.arguments);
        if (call.function.name === 'get_weather') {
          expect(typeof args.city).toBe('string');
          if ('unit' in args) expect(['c', 'f']).toContain(args.unit);
        } else expect(typeof args.zone).toBe('string');
      }
      const chunks = await sse(await post(app, '/v1/chat/completions', { ...body, stream: true }));
      const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
      expect(deltas.map((d: any) => ({ index: d.index, name: d.function.name, arguments: d.function.arguments })))
        .toEqual(ch.message.tool_calls.map((c: any, i: number) => ({ index: i, name: c.function.name, arguments: c.function.arguments })));
      expect(chunks[chunks.length - 1].choices[0].finish_reason).toBe(ch.finish_reason);
    }
  }, 60_000);

  it('a named tool_choice calls that function; parallel_tool_calls false gives one call', async () => {
    for (let seed = 0; seed < 4; seed++) {
      const b = await (await post(app, '/v1/chat/completions', {
        ...ask, tool_choice: { type: 'function', function: { name: 'get_time' } }, parallel_tool_calls: false, temperature: 1, seed,
      })).json();
      const calls = b.choices[0].message.tool_calls;
      expect(calls).toHaveLength(1);
      expect(calls[0].function.name).toBe('get_time');
      expect(typeof JSON.parse(calls[0].function.arguments).zone).toBe('string');
    }
  });

  it('a round trip: the call and its result are rendered into the next prompt, and the reply is text', async () => {
    const first = await (await post(app, '/v1/chat/completions', { ...ask, tool_choice: 'required', temperature: 0 })).json();
    const call = first.choices[0].message.tool_calls[0];
    const history = [
      ...ask.messages,
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21, "sky": "clear"}' },
    ];
    const rendered = toolLm.applyChatTemplate(templateMessages(history) as any, { tools: [WEATHER, TIME] });
    expect(rendered).toContain(call.function.name);
    expect(rendered).toContain('"sky": "clear"');
    const b = await (await post(app, '/v1/chat/completions', { messages: history, tools: [WEATHER, TIME], tool_choice: 'none', temperature: 0, max_tokens: 16 })).json();
    expect(b.choices[0].finish_reason).not.toBe('tool_calls');
    expect(typeof b.choices[0].message.content).toBe('string');
    // The history's call and result took tokens: the prompt is longer than the question alone.
    const plain = await (await post(app, '/v1/chat/completions', { messages: ask.messages, max_tokens: 1 })).json();
    expect(b.usage.prompt_tokens).toBeGreaterThan(plain.usage.prompt_tokens + 20);
  });

  it('tools for a model whose template renders none, bad tools and tool_choice are 400s naming the field', async () => {
    const plainApp = testApp(() => lm);
    const res = await post(plainApp, '/v1/chat/completions', { ...ask, tool_choice: 'required' });
    expect(res.status).toBe(400);
    expect((await res.json()).error.param).toBe('tools');
    for (const [body, param] of [
      [{ ...ask, tools: [{ type: 'function', function: { name: 'bad name!' } }] }, 'tools[0].function.name'],
      [{ ...ask, tools: [WEATHER, WEATHER] }, 'tools[1].function.name'],
      [{ ...ask, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice'],
      [{ ...ask, tool_choice: 'sometimes' }, 'tool_choice'],
      [{ messages: ask.messages, tool_choice: 'required' }, 'tool_choice'],
      [{ ...ask, tool_choice: 'required', response_format: { type: 'json_object' } }, 'response_format'],
      [{ messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'x', type: 'function', function: { arguments: '{}' } }] }] }, 'messages[0].tool_calls[0].function.name'],
    ] as const) {
      const r = await post(app, '/v1/chat/completions', body);
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect((await r.json()).error.param).toBe(param);
    }
    const comp = await post(app, '/v1/completions', { prompt: 'x', tools: [WEATHER] });
    expect((await comp.json()).error.param).toBe('tools');
  });
});
