import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ChatTemplate } from '../src/generate/chat-template';
import { RequestError } from '../src/generate/errors';
import { Grammar, GrammarMatcher } from '../src/generate/grammar/index';
import {
  detectToolFormat,
  type ToolCall,
  ToolCallParser,
  ToolError,
  type ToolFormat,
  templateMessages,
  templateTools,
  toolCallGbnf,
  toolFunctions,
} from '../src/generate/tool-calls';

const FORMATS: ToolFormat[] = ['hermes', 'llama3', 'mistral'];
const MARKERS: Record<ToolFormat, string> = { hermes: '<tool_call>', llama3: '<|python_tag|>', mistral: '[TOOL_CALLS]' };
const templateSource = (format: ToolFormat) => readFileSync(new URL(`./fixtures/chat-templates/${format}-tools.jinja`, import.meta.url), 'utf8');

/** Ids call_0, call_1, … in the order calls are made. */
function counter(): () => string {
  let n = 0;
  return () => String(n++);
}

/** The parser's whole result for `pieces` pushed in order, content joined. */
function parse(format: ToolFormat, pieces: Iterable<string>): { content: string; calls: ToolCall[] } {
  const p = new ToolCallParser(format, { random: counter() });
  let content = '';
  const calls: ToolCall[] = [];
  for (const piece of pieces) {
    const r = p.push(piece);
    content += r.content;
    calls.push(...r.calls);
  }
  const r = p.finish();
  return { content: content + r.content, calls: [...calls, ...r.calls] };
}

/** The text as a byte-level decoder streams it: a piece per UTF-8 byte ('' inside a character). */
function bytePieces(text: string): string[] {
  const dec = new TextDecoder();
  return [...new TextEncoder().encode(text)].map((b) => dec.decode(new Uint8Array([b]), { stream: true }));
}

/** A deterministic generator of numbers in [0, 1). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** Every way of splitting `text` the tests use: whole, at each index in two, per code unit, per byte, and random cuts. */
function* splits(text: string): Generator<string[]> {
  yield [text];
  for (let i = 0; i <= text.length; i++) yield [text.slice(0, i), text.slice(i)];
  yield [...text];
  yield text.split('');
  yield bytePieces(text);
  const rnd = lcg(text.length);
  for (let k = 0; k < 20; k++) {
    const pieces: string[] = [];
    for (let i = 0; i < text.length; ) {
      const n = 1 + Math.floor(rnd() * 6);
      pieces.push(text.slice(i, i + n));
      i += n;
    }
    yield pieces;
  }
}

const call = (n: number, name: string, args: unknown): ToolCall => ({ id: `call_${n}`, name, arguments: JSON.stringify(args) });

interface Case {
  format: ToolFormat;
  text: string;
  content: string;
  calls: ToolCall[];
}

const CASES: Case[] = [
  // hermes
  { format: 'hermes', text: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', content: '', calls: [call(0, 'get_weather', { city: 'Paris' })] },
  {
    format: 'hermes',
    text: 'Let me look that up.\n\n<tool_call>\n{"name": "a", "arguments": {"x": [1, 2, {"y": "}]"}]}}\n</tool_call>\n<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>',
    content: 'Let me look that up.',
    calls: [call(0, 'a', { x: [1, 2, { y: '}]' }] }), call(1, 'b', {})],
  },
  { format: 'hermes', text: '<tool_call>{"name": "f", "arguments": "{\\"q\\": \\"é 😀\\"}"}</tool_call>', content: '', calls: [call(0, 'f', { q: 'é 😀' })] },
  { format: 'hermes', text: '<tool_call>\n{"name": "f"}\n</tool_call>', content: '', calls: [call(0, 'f', {})] },
  { format: 'hermes', text: '<tool_call>\n{"name": "code", "arguments": {"src": "a\nb\tc"}}\n</tool_call>', content: '', calls: [call(0, 'code', { src: 'a\nb\tc' })] },
  // A call missing its closing tag at the end still counts; text after a call is content.
  { format: 'hermes', text: '<tool_call>\n{"name": "f", "arguments": {}}\n</tool', content: '', calls: [call(0, 'f', {})] },
  { format: 'hermes', text: '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\nDone.', content: '\nDone.', calls: [call(0, 'f', {})] },
  // Malformed calls are content, exactly as generated; the next call still counts.
  { format: 'hermes', text: 'x <tool_call>\n{"name": oops}\n</tool_call> y', content: 'x <tool_call>\n{"name": oops}\n</tool_call> y', calls: [] },
  { format: 'hermes', text: '<tool_call>\nnot json\n</tool_call>\n<tool_call>{"name": "g", "arguments": {"k": true}}</tool_call>', content: '<tool_call>\nnot json\n</tool_call>', calls: [call(0, 'g', { k: true })] },
  { format: 'hermes', text: '<tool_call>{"arguments": {}}</tool_call>', content: '<tool_call>{"arguments": {}}</tool_call>', calls: [] },
  { format: 'hermes', text: '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', content: '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', calls: [] },
  { format: 'hermes', text: 'a <tool_call>\n{"name": "f", "arguments": {"x": 1', content: 'a <tool_call>\n{"name": "f", "arguments": {"x": 1', calls: [] },
  { format: 'hermes', text: '<tool_call>{"name": "f"]</tool_call>', content: '<tool_call>{"name": "f"]</tool_call>', calls: [] },
  // Near-markers are content.
  { format: 'hermes', text: 'a <b> <tool> <tool_call <tool_cal>x</tool_call> <', content: 'a <b> <tool> <tool_call <tool_cal>x</tool_call> <', calls: [] },
  { format: 'hermes', text: '  spaces  \n', content: '  spaces  \n', calls: [] },

  // llama3
  { format: 'llama3', text: '{"name": "get_weather", "parameters": {"city": "Paris"}}', content: '', calls: [call(0, 'get_weather', { city: 'Paris' })] },
  { format: 'llama3', text: '<|python_tag|>{"name": "f", "parameters": {"a": 1}}; {"name": "g", "arguments": {"b": "2"}}', content: '', calls: [call(0, 'f', { a: 1 }), call(1, 'g', { b: '2' })] },
  { format: 'llama3', text: '\n {"name": "f", "parameters": {}} ', content: '', calls: [call(0, 'f', {})] },
  { format: 'llama3', text: 'Calling it. <|python_tag|>{"name": "f", "parameters": {"s": "x;y"}}', content: 'Calling it.', calls: [call(0, 'f', { s: 'x;y' })] },
  // JSON that is not a call is content; so is text not starting with a call.
  { format: 'llama3', text: '{"answer": 42}', content: '{"answer": 42}', calls: [] },
  { format: 'llama3', text: ' {"name": "Bob"} is a name', content: ' {"name": "Bob"} is a name', calls: [] },
  { format: 'llama3', text: 'The JSON {"name": "f", "parameters": {}} is a call.', content: 'The JSON {"name": "f", "parameters": {}} is a call.', calls: [] },
  { format: 'llama3', text: '<|python_tag|>brave_search.call(query="x")', content: '<|python_tag|>brave_search.call(query="x")', calls: [] },
  { format: 'llama3', text: '{"name": "f", "parameters": {}}; oops', content: '; oops', calls: [call(0, 'f', {})] },
  { format: 'llama3', text: '{"name": "f", "parameters": {"a": ', content: '{"name": "f", "parameters": {"a": ', calls: [] },
  { format: 'llama3', text: '<|python', content: '<|python', calls: [] },

  // mistral
  {
    format: 'mistral',
    text: '[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {"b": [true, null]}, "id": "abcdefghi"}]',
    content: '',
    calls: [call(0, 'f', { a: 1 }), call(1, 'g', { b: [true, null] })],
  },
  { format: 'mistral', text: 'Sure. [TOOL_CALLS] [{"name": "f", "arguments": {}}]', content: 'Sure.', calls: [call(0, 'f', {})] },
  { format: 'mistral', text: '[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g_2[CALL_ID]a1b2c3d4e[ARGS] {"b": "}"}', content: '', calls: [call(0, 'f', { a: 1 }), call(1, 'g_2', { b: '}' })] },
  // Without the control token (decoded with special tokens skipped): a bare list at the start.
  { format: 'mistral', text: ' [{"name": "f", "arguments": {"a": "x"}}]', content: '', calls: [call(0, 'f', { a: 'x' })] },
  { format: 'mistral', text: '[ \n {"name": "f", "arguments": {}}]\n', content: '', calls: [call(0, 'f', {})] },
  { format: 'mistral', text: '[ \n x]', content: '[ \n x]', calls: [] },
  { format: 'mistral', text: '[1, 2, 3]', content: '[1, 2, 3]', calls: [] },
  { format: 'mistral', text: '[TOOL_CALLS][{"name": "f", "arguments": {}}, {"nom": "g"}]', content: '[TOOL_CALLS][{"name": "f", "arguments": {}}, {"nom": "g"}]', calls: [] },
  { format: 'mistral', text: '[TOOL_CALLS]f[ARG]{}', content: '[TOOL_CALLS]f[ARG]{}', calls: [] },
  { format: 'mistral', text: '[TOOL_CALLS]f[ARGS]', content: '[TOOL_CALLS]f[ARGS]', calls: [] },
  { format: 'mistral', text: 'see [TOOL', content: 'see [TOOL', calls: [] },
  { format: 'mistral', text: '[x] [TOOL_CALL] [', content: '[x] [TOOL_CALL] [', calls: [] },
];

describe('ToolCallParser', () => {
  for (const c of CASES) {
    it(`${c.format}: ${JSON.stringify(c.text).slice(0, 70)}`, () => {
      for (const pieces of splits(c.text)) {
        const r = parse(c.format, pieces);
        expect(r, JSON.stringify(pieces)).toEqual({ content: c.content, calls: c.calls });
      }
    });
  }

  it('passes text without calls through unchanged, however it is split', () => {
    const texts = ['Plain answer, with a < b and [brackets] and {"json": 1}.', 'Ünïcödé 😀 text\n\n  ', '<tool', '[TOOL_CALLS', '<|python_ta', '', ' \n ', 'a\u00a0<'];
    for (const format of FORMATS) {
      for (const text of texts) {
        if (format === 'llama3' && text.trimStart().startsWith('{')) continue;
        for (const pieces of splits(text)) expect(parse(format, pieces), `${format} ${JSON.stringify(pieces)}`).toEqual({ content: text, calls: [] });
      }
    }
  });

  it('holds back what may begin a marker, and releases it when it does not', () => {
    const p = new ToolCallParser('hermes');
    expect(p.push('Hello <tool')).toEqual({ content: 'Hello', calls: [] });
    expect(p.push('_ca')).toEqual({ content: '', calls: [] });
    expect(p.push('r is here')).toEqual({ content: ' <tool_car is here', calls: [] });
    expect(p.push(' <')).toEqual({ content: '', calls: [] });
    expect(p.finish()).toEqual({ content: ' <', calls: [] });

    const m = new ToolCallParser('mistral');
    expect(m.push('[')).toEqual({ content: '', calls: [] });
    expect(m.push('note] [TOOL_')).toEqual({ content: '[note]', calls: [] });
    expect(m.push('CALLS]')).toEqual({ content: '', calls: [] });
    expect(m.finish()).toEqual({ content: ' [TOOL_CALLS]', calls: [] });

    const l = new ToolCallParser('llama3');
    expect(l.push('  ')).toEqual({ content: '', calls: [] });
    expect(l.push('Hi <|py')).toEqual({ content: '  Hi', calls: [] });
    expect(l.push('!')).toEqual({ content: ' <|py!', calls: [] });
  });

  it('returns a call as soon as its JSON is complete, before the closing tag', () => {
    const p = new ToolCallParser('hermes', { random: counter() });
    expect(p.push('<tool_call>\n{"name": "f", "arguments": {"a": 1}')).toEqual({ content: '', calls: [] });
    expect(p.push('}')).toEqual({ content: '', calls: [call(0, 'f', { a: 1 })] });
    expect(p.push('\n</tool_call>')).toEqual({ content: '', calls: [] });
    expect(p.finish()).toEqual({ content: '', calls: [] });
  });

  it('gives each call its own id once', () => {
    const text = '<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g", "arguments": {}}</tool_call>';
    const r = parse('hermes', [text]);
    expect(r.calls.map((c) => c.id)).toEqual(['call_0', 'call_1']);
    const p = new ToolCallParser('hermes');
    const calls = [...p.push(text).calls, ...p.finish().calls];
    expect(calls).toHaveLength(2);
    for (const c of calls) expect(c.id).toMatch(/^call_[A-Za-z0-9]{24}$/);
    expect(calls[0].id).not.toBe(calls[1].id);
    const q = new ToolCallParser('llama3', { idPrefix: 'tc-', random: () => 'x' });
    expect(q.push('{"name": "f", "parameters": {}}').calls).toEqual([{ id: 'tc-x', name: 'f', arguments: '{}' }]);
  });

  it('reads long calls and long runs of whitespace in time linear in their length', () => {
    const t0 = performance.now();
    for (const format of FORMATS) {
      const big = 'x'.repeat(200_000);
      const text = { hermes: `<tool_call>{"name": "f", "arguments": {"s": "${big}"}}</tool_call>`, llama3: `{"name": "f", "parameters": {"s": "${big}"}}`, mistral: `[TOOL_CALLS][{"name": "f", "arguments": {"s": "${big}"}}]` }[format];
      const pieces: string[] = [];
      for (let i = 0; i < text.length; i += 3) pieces.push(text.slice(i, i + 3));
      expect(parse(format, pieces).calls).toEqual([call(0, 'f', { s: big })]);
      const spaces = Array.from({ length: 20_000 }, (_, i) => (i % 7 ? '\n\n' : ' '));
      expect(parse(format, ['Hi', ...spaces]).content).toBe(`Hi${spaces.join('')}`);
      expect(parse(format, [MARKERS[format], ...spaces]).content).toBe(`${MARKERS[format]}${spaces.join('')}`);
    }
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('rejects an unknown format', () => {
    expect(() => new ToolCallParser('json' as ToolFormat)).toThrow(ToolError);
  });
});

describe('detectToolFormat', () => {
  it('recognizes the fixture templates', () => {
    for (const format of FORMATS) expect(detectToolFormat(templateSource(format))).toBe(format);
  });

  it('recognizes templates by their call markers', () => {
    // Shapes of widely used templates (Qwen/Hermes, Llama 3.1/3.2, Mistral), reduced to their tool parts.
    expect(detectToolFormat("{%- if tools %}{{- '<tools>' }}{% for t in tools %}{{ t | tojson }}{% endfor %}{{- '</tools>' }}{% endif %}{% for m in messages %}{% if m.tool_calls %}{{ '<tool_call>\\n' }}{% endif %}{% endfor %}")).toBe('hermes');
    expect(detectToolFormat("{%- if tools is not none %}{{- 'Environment: ipython\\n' }}{%- endif %}{% for m in messages %}{% if m.role == 'ipython' %}{{ m.content }}{% endif %}{% endfor %}")).toBe('llama3');
    expect(detectToolFormat("{% if custom_tools %}{% set tools = custom_tools %}{% endif %}{{ '<|python_tag|>' }}")).toBe('llama3');
    expect(detectToolFormat("{%- if tools is not none and loop.last %}{{- '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{%- endif %}{{- '[TOOL_CALLS]' }}")).toBe('mistral');
  });

  it('is null for a template that does not render tools, or in no known format', () => {
    expect(detectToolFormat("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}")).toBeNull();
    expect(detectToolFormat("{# tools are not supported; <tool_call> #}{% for m in messages %}{{ m.content }}{% endfor %}")).toBeNull();
    expect(detectToolFormat("{% if tools %}{{ '<|tool▁calls▁begin|>' }}{% endif %}")).toBeNull();
    // XML calls inside <tool_call> (Qwen3-Coder) are not the hermes JSON format.
    expect(detectToolFormat("{% if tools %}{{ '<tool_call>\\n<function=' + name + '>\\n<parameter=' }}{% endif %}")).toBeNull();
    expect(detectToolFormat('')).toBeNull();
  });
});

describe('templateTools', () => {
  const weather = { type: 'function', function: { name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } };

  it('copies valid tools', () => {
    const input = [weather, { type: 'function', function: { name: 'now-2', description: null, parameters: null } }];
    const before = JSON.stringify(input);
    const out = templateTools(input);
    expect(out).toEqual([weather, { type: 'function', function: { name: 'now-2' } }]);
    expect(out[0]).not.toBe(weather);
    expect(JSON.stringify(input)).toBe(before);
    expect(toolFunctions(out)).toEqual([{ name: 'get_weather', description: 'Weather of a city', parameters: weather.function.parameters }, { name: 'now-2' }]);
    expect(templateTools([])).toEqual([]);
  });

  it('names the parameter at fault', () => {
    const cases: [unknown, string][] = [
      [{ type: 'function' }, 'tools'],
      [[null], 'tools[0]'],
      [[weather, { function: { name: 'x' } }], 'tools[1].type'],
      [[{ type: 'function', function: 'f' }], 'tools[0].function'],
      [[weather, weather, { type: 'function', function: { name: 'bad name' } }], 'tools[1].function.name'],
      [[weather, { type: 'function', function: { name: 'ok' } }, { type: 'function', function: { name: 'bad name' } }], 'tools[2].function.name'],
      [[{ type: 'function', function: { name: 'x'.repeat(65) } }], 'tools[0].function.name'],
      [[{ type: 'function', function: { name: '' } }], 'tools[0].function.name'],
      [[{ type: 'function', function: {} }], 'tools[0].function.name'],
      [[{ type: 'function', function: { name: 'f', description: 3 } }], 'tools[0].function.description'],
      [[{ type: 'function', function: { name: 'f', parameters: [] } }], 'tools[0].function.parameters'],
    ];
    for (const [tools, param] of cases) {
      let err: unknown;
      try {
        templateTools(tools);
      } catch (e) {
        err = e;
      }
      expect(err, param).toBeInstanceOf(ToolError);
      expect(err).toBeInstanceOf(RequestError);
      expect((err as ToolError).param).toBe(param);
      expect((err as ToolError).field).toBe(param);
      expect((err as ToolError).message).toContain(param);
    }
    expect(() => templateTools([weather, weather])).toThrow(/tools\[1\]\.function\.name: repeats the name "get_weather" of tools\[0\]/);
  });
});

const CONVERSATION = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Weather and time in Paris?' },
  {
    role: 'assistant',
    content: null,
    tool_calls: [
      { id: 'call_abc', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
      { id: 'call_def', type: 'function', function: { name: 'get_time', arguments: '{"zone": "CET"}' } },
    ],
  },
  { role: 'tool', tool_call_id: 'call_abc', content: '{"temp_c": 21}' },
  { role: 'tool', tool_call_id: 'call_def', content: '12:05' },
  { role: 'assistant', content: 'It is 21 °C and 12:05.' },
  { role: 'user', content: 'Thanks!' },
];

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Current weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } },
  { type: 'function', function: { name: 'get_time', description: 'Local time', parameters: { type: 'object', properties: { zone: { type: 'string' } } } } },
];

describe('templateMessages', () => {
  it('parses call arguments, fills tool names and empty contents, without mutating its input', () => {
    const input = structuredClone(CONVERSATION);
    const out = templateMessages(input);
    expect(input).toEqual(CONVERSATION);
    expect(out[2]).toEqual({
      role: 'assistant',
      content: '',
      tool_calls: [
        { id: 'call_abc', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } },
        { id: 'call_def', type: 'function', function: { name: 'get_time', arguments: { zone: 'CET' } } },
      ],
    });
    expect(out[3]).toEqual({ role: 'tool', tool_call_id: 'call_abc', name: 'get_weather', content: '{"temp_c": 21}' });
    expect(out[0]).toEqual(CONVERSATION[0]);
    expect(out[0]).not.toBe(input[0]);
  });

  it('leaves arguments that are not a JSON object as they are', () => {
    const out = templateMessages([
      { role: 'assistant', tool_calls: [{ id: '1', function: { name: 'f', arguments: 'not json' } }, { id: '2', function: { name: 'g', arguments: '[1]' } }, { id: '3', function: { name: 'h' } }] },
      { role: 'tool', tool_call_id: '1', name: 'explicit', content: null },
      { role: 'assistant', content: 'x', tool_calls: [] },
    ]);
    const calls = out[0].tool_calls as { function: { arguments: unknown } }[];
    expect(calls.map((c) => c.function.arguments)).toEqual(['not json', '[1]', {}]);
    expect(out[0].content).toBe('');
    expect(out[1]).toEqual({ role: 'tool', tool_call_id: '1', name: 'explicit', content: '' });
    expect(out[2]).toEqual({ role: 'assistant', content: 'x' });
  });

  it('gives mistral templates 9-character ids, the same in a call and its result', () => {
    const out = templateMessages(CONVERSATION, { format: 'mistral' });
    const ids = (out[2].tool_calls as { id: string }[]).map((c) => c.id);
    for (const id of ids) expect(id).toMatch(/^[a-zA-Z0-9]{9}$/);
    expect(new Set(ids).size).toBe(2);
    expect([out[3].tool_call_id, out[4].tool_call_id]).toEqual(ids);
    expect(templateMessages(CONVERSATION, { format: 'mistral' })).toEqual(out);
    const kept = templateMessages([{ role: 'assistant', tool_calls: [{ id: 'abcdefghi', function: { name: 'f', arguments: '{}' } }] }], { format: 'mistral' });
    expect((kept[0].tool_calls as { id: string }[])[0].id).toBe('abcdefghi');
  });

  it('names the message at fault', () => {
    expect(() => templateMessages([{ role: 'user', content: 'x' }, { role: 'assistant', tool_calls: {} }])).toThrow(expect.objectContaining({ param: 'messages[1].tool_calls' }));
    expect(() => templateMessages([{ role: 'assistant', tool_calls: [{ id: 'a', function: { arguments: '{}' } }] }])).toThrow(expect.objectContaining({ param: 'messages[0].tool_calls[0].function.name' }));
    expect(() => templateMessages([{ role: 'assistant', tool_calls: [{ id: 'a' }] }])).toThrow(expect.objectContaining({ param: 'messages[0].tool_calls[0].function' }));
  });
});

describe('tool templates round trip', () => {
  const specials = { bos_token: '<s>', eos_token: '</s>' };
  /** The end of the rendered assistant turn that holds the calls, by format. */
  const callTurn: Record<ToolFormat, (text: string) => string> = {
    hermes: (t) => t.slice(t.lastIndexOf('<|im_start|>assistant\n') + 22, t.lastIndexOf('<|im_end|>')),
    llama3: (t) => t.slice(t.lastIndexOf('<|end_header_id|>\n\n') + 19, t.lastIndexOf('<|eom_id|>')),
    mistral: (t) => t.slice(t.lastIndexOf('[/INST]') + 7, t.lastIndexOf('</s>')),
  };

  for (const format of FORMATS) {
    it(`${format}: renders tools, calls and results, and the calls parse back`, () => {
      const template = new ChatTemplate(templateSource(format), specials);
      const tools = templateTools(TOOLS);
      const messages = templateMessages(CONVERSATION, { format: detectToolFormat(template.source) });
      const text = template.render(messages as any, { tools });
      for (const t of TOOLS) {
        expect(text).toContain(t.function.name);
        expect(text).toContain(t.function.description);
      }
      expect(text).toContain('Be brief.');
      expect(text).toContain('Weather and time in Paris?');
      expect(text).toContain('"city": "Paris"');
      expect(text).toContain('"zone": "CET"');
      expect(text).toContain('{"temp_c": 21}'.replace(/"/g, format === 'mistral' ? '\\"' : '"'));
      expect(text).toContain('12:05');
      expect(text).toContain('It is 21 °C and 12:05.');
      expect(text).toContain('Thanks!');
      expect(text).toContain({ hermes: '<tool_response>', llama3: '<|start_header_id|>ipython', mistral: '[TOOL_RESULTS]' }[format]);

      // The calls as the template writes them are what the parser reads back.
      const upToCalls = template.render(messages.slice(0, 3) as any, { tools, addGenerationPrompt: false });
      const r = parse(format, [callTurn[format](upToCalls)]);
      expect(r.content).toBe('');
      expect(r.calls.map((c) => [c.name, JSON.parse(c.arguments)])).toEqual([['get_weather', { city: 'Paris' }], ['get_time', { zone: 'CET' }]]);
    });

    it(`${format}: renders a conversation without tools`, () => {
      const template = new ChatTemplate(templateSource(format), specials);
      const text = template.render(templateMessages([{ role: 'user', content: 'Hi' }]) as any);
      expect(text).toContain('Hi');
      expect(text).not.toContain('get_weather');
    });
  }
});

describe('toolCallGbnf', () => {
  const functions = toolFunctions(templateTools([
    ...TOOLS,
    { type: 'function', function: { name: 'now' } },
    { type: 'function', function: { name: 'book', parameters: { type: 'object', properties: { nights: { type: 'integer', minimum: 1, maximum: 30 }, on: { type: 'string', format: 'date' }, site: { type: 'string', format: 'uri' } }, required: ['nights'] } } },
  ]));
  const valid: Record<ToolFormat, { one: string; two: string; now: string; wrongName: string; missingArg: string; extraArg: string }> = {
    hermes: {
      one: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
      two: '<tool_call>\n{"name": "book", "arguments": {"nights": 40, "on": "2025-01-31", "site": "x"}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
      now: '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
      wrongName: '<tool_call>\n{"name": "get_wether", "arguments": {"city": "Paris"}}\n</tool_call>',
      missingArg: '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>',
      extraArg: '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "country": "FR"}}\n</tool_call>',
    },
    llama3: {
      one: '{"name": "get_weather", "parameters": {"city": "Paris"}}',
      two: '{"name": "book", "parameters": {"nights": 40, "on": "2025-01-31", "site": "x"}}; {"name": "now", "parameters": {}}',
      now: '{"name": "now", "parameters": {}}',
      wrongName: '{"name": "get_wether", "parameters": {"city": "Paris"}}',
      missingArg: '{"name": "get_weather", "parameters": {}}',
      extraArg: '{"name": "get_weather", "parameters": {"city": "Paris", "country": "FR"}}',
    },
    mistral: {
      one: '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
      two: '[{"name": "book", "arguments": {"nights": 40, "on": "2025-01-31", "site": "x"}}, {"name": "now", "arguments": {}}]',
      now: '[{"name": "now", "arguments": {}}]',
      wrongName: '[{"name": "get_wether", "arguments": {"city": "Paris"}}]',
      missingArg: '[{"name": "get_weather", "arguments": {}}]',
      extraArg: '[{"name": "get_weather", "arguments": {"city": "Paris", "country": "FR"}}]',
    },
  };

  /** Whether the grammar takes all of `text` byte by byte, ending complete; and where it stops. */
  function accepts(gbnf: string, text: string): { ok: boolean; at: number } {
    const m = new GrammarMatcher(Grammar.fromGbnf(gbnf));
    const bytes = new TextEncoder().encode(text);
    for (let i = 0; i < bytes.length; i++) {
      if (!m.acceptBytes(bytes.subarray(i, i + 1))) return { ok: false, at: i };
    }
    return { ok: m.canEnd, at: bytes.length };
  }

  for (const format of FORMATS) {
    it(`${format}: takes calls of the tools, byte by byte, and what it takes parses back`, () => {
      const v = valid[format];
      const parallel = toolCallGbnf(format, functions, { parallel: true });
      const single = toolCallGbnf(format, functions, { parallel: false });
      expect(accepts(parallel, v.one)).toEqual({ ok: true, at: new TextEncoder().encode(v.one).length });
      expect(accepts(parallel, v.two).ok).toBe(true);
      expect(accepts(single, v.one).ok).toBe(true);
      expect(accepts(single, v.two).ok).toBe(false);
      for (const text of [v.one, v.two]) {
        const r = parse(format, [text]);
        expect(r.content).toBe('');
        expect(r.calls.length).toBe(text === v.one ? 1 : 2);
      }
      expect(parse(format, [v.two]).calls.map((c) => c.name)).toEqual(['book', 'now']);
    });

    it(`${format}: refuses a wrong name, a missing or unknown argument, other text`, () => {
      const v = valid[format];
      const g = toolCallGbnf(format, functions, { parallel: true });
      const prefix = v.one.slice(0, v.one.indexOf('get_'));
      expect(accepts(g, v.wrongName)).toEqual({ ok: false, at: prefix.length + 'get_we'.length });
      expect(accepts(g, v.missingArg).ok).toBe(false);
      expect(accepts(g, v.extraArg).ok).toBe(false);
      expect(accepts(g, `Sure. ${v.one}`).ok).toBe(false);
      expect(accepts(g, '').ok).toBe(false);
      // Kept: the date format; dropped: minimum/maximum and the uri format (see `two`).
      expect(accepts(g, v.two.replace('2025-01-31', '31/01/2025')).ok).toBe(false);
      // Only the named function.
      const named = toolCallGbnf(format, functions, { name: 'now', parallel: false });
      expect(accepts(named, v.one).ok).toBe(false);
      expect(accepts(named, v.now).ok).toBe(true);
    });
  }

  it('names the parameter at fault', () => {
    expect(() => toolCallGbnf('hermes', functions, { name: 'nope', parallel: false })).toThrow(expect.objectContaining({ param: 'tool_choice.function.name' }));
    expect(() => toolCallGbnf('hermes', [], { parallel: false })).toThrow(expect.objectContaining({ param: 'tools' }));
    const bad = [...functions, { name: 'odd', parameters: { type: 'object', properties: { a: { not: { type: 'string' } } } } }];
    expect(() => toolCallGbnf('llama3', bad, { parallel: true })).toThrow(expect.objectContaining({ param: `tools[${functions.length}].function.parameters` }));
    expect(() => toolCallGbnf('llama3', [{ name: 'a b' }], { parallel: true })).toThrow(expect.objectContaining({ param: 'tools[0].function.name' }));
  });
});
