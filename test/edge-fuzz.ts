// Seeded malformed request bodies for the edge servers: valid requests with one field made wrong
// (type, range, size, nesting), truncated and random bytes, invalid UTF-8, lone surrogates, deep
// nesting, prototype keys, oversize bodies. Requests that happen to be valid stay short (max_tokens
// is only ever made invalid, never large).

import { rng } from './helpers';

export interface FuzzRequest {
  path: string;
  headers: Record<string, string>;
  body: string | Uint8Array;
}

const WEIRD: unknown[] = [
  null, true, false, 0, -1, 1.5, -0.0001, 1e308, -1e308, 2 ** 53 + 2, '', ' ', 'x', '1', 'NaN', '\u0000', '\ud800', '😀'.repeat(50),
  [], [null], [1, 'a'], [[[]]], {}, { a: 1 }, { __proto__: { x: 1 } }, 'a'.repeat(3000), Array(300).fill(7), { type: 'text' },
];

const FIELDS = ['model', 'prompt', 'messages', 'temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'max_completion_tokens', 'stop', 'seed',
  'presence_penalty', 'frequency_penalty', 'repetition_penalty', 'logit_bias', 'n', 'stream', 'stream_options', 'echo', 'logprobs',
  'top_logprobs', 'suffix', 'best_of', 'session', 'user', 'tools', 'response_format', '__proto__', 'constructor', 'ignore_eos'];

const INVALID_MAX_TOKENS: unknown[] = [0, -5, 1.5, '10', null, [], {}, 2 ** 30, true];

export function fuzzBodies(count: number, seed: number): FuzzRequest[] {
  const r = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const out: FuzzRequest[] = [];
  const json = { 'content-type': 'application/json' };
  for (let i = 0; i < count; i++) {
    const chat = r() < 0.5;
    const path = chat ? '/v1/chat/completions' : '/v1/completions';
    const base: Record<string, unknown> = chat
      ? { model: 'sparrow-mini', messages: [{ role: 'user', content: 'Hi there' }], max_tokens: 3, seed: i }
      : { model: 'sparrow-mini', prompt: 'Once upon', max_tokens: 3, seed: i };
    if (r() < 0.3) base.stream = true;
    const kind = Math.floor(r() * 12);
    let body: string | Uint8Array;
    switch (kind) {
      case 0: { // truncated JSON
        const s = JSON.stringify(base);
        body = s.slice(0, Math.floor(r() * (s.length - 1)));
        break;
      }
      case 1: { // random bytes
        const b = new Uint8Array(1 + Math.floor(r() * 200));
        for (let j = 0; j < b.length; j++) b[j] = Math.floor(r() * 256);
        body = b;
        break;
      }
      case 2: // deep nesting
        body = '{"prompt":' + '['.repeat(2000 + Math.floor(r() * 50000)) + ']'.repeat(10) + '}';
        break;
      case 3: // a top-level value that is not an object
        body = JSON.stringify(pick([[base], 'prompt', 42, null, true, []]));
        break;
      case 4: { // messages made strange
        const m = pick<unknown>([
          [{ role: 'user' }], [{ content: 'x' }], [{ role: 'user', content: null }], [{ role: 'user', content: [null] }],
          [{ role: 'user', content: [{ type: 'text', text: 5 }] }], [{ role: 'assistant', content: null }, { role: 'user', content: '\ud83d' }],
          [{ role: 'user', content: '<|im_start|>system\n<|im_end|>' }], Array(50).fill({ role: 'tool', content: 'r' }), [[]], ['hi'],
        ]);
        body = JSON.stringify({ ...base, messages: m, prompt: undefined });
        break;
      }
      case 5: { // prompt made strange
        const p = pick<unknown>([[-1], [1.5], [8192], [2 ** 40], [[1, 2]], [['a']], ['a', 'b'], [], '', '\ud800\udc00\ud800', [0, 0, 0], ' ', [[]]]);
        body = JSON.stringify({ ...base, prompt: p, messages: chat ? base.messages : undefined });
        break;
      }
      case 6: // invalid UTF-8 inside a string
        body = new Uint8Array([...new TextEncoder().encode('{"prompt":"'), 0xc3, 0x28, 0xa0, 0xa1, ...new TextEncoder().encode('","max_tokens":2}')]);
        break;
      case 7: // oversize
        body = JSON.stringify({ ...base, prompt: 'z'.repeat(20_000 + Math.floor(r() * 50_000)) });
        break;
      case 8: { // several fields wrong at once
        const b: Record<string, unknown> = { ...base };
        for (let k = 0; k < 3; k++) {
          const f = pick(FIELDS);
          b[f] = f === 'max_tokens' || f === 'max_completion_tokens' ? pick(INVALID_MAX_TOKENS) : pick(WEIRD);
        }
        body = JSON.stringify(b);
        break;
      }
      case 9: // prototype keys and odd JSON
        body = pick([
          '{"__proto__":{"max_tokens":99999},"prompt":"x","max_tokens":2}', '{"constructor":{"prototype":{}},"prompt":"x","max_tokens":2}',
          '{"prompt":"x","max_tokens":2,"max_tokens":"3"}', '{"prompt":"x","temperature":1e999}', '{"prompt":"x","seed":-1e999}',
          '{"prompt":"\\ud800","max_tokens":2}', '{"logit_bias":{"0":-100,"1":"-100"},"prompt":"x"}', '{"stop":["", "", ""],"prompt":"x","max_tokens":2}',
          '{"session":"' + 'a'.repeat(500) + '","prompt":"x"}', '{"stream_options":[],"prompt":"x"}', '{"prompt":"x","max_tokens":2}garbage',
        ]);
        break;
      default: { // one field made wrong
        const f = pick(FIELDS);
        const b: Record<string, unknown> = { ...base };
        b[f] = f === 'max_tokens' || f === 'max_completion_tokens' ? pick(INVALID_MAX_TOKENS) : pick(WEIRD);
        body = JSON.stringify(b);
      }
    }
    const headers: Record<string, string> = r() < 0.1 ? { 'content-type': pick(['text/plain', 'application/x-www-form-urlencoded', '']) } : { ...json };
    if (r() < 0.05) headers['x-session-id'] = pick(['..', 'a/b', '', ' ', 'ok-id', '\u00e9t\u00e9']);
    // Header values must be ISO-8859-1 for fetch; keep them plain.
    for (const k of Object.keys(headers)) if (!/^[\x20-\x7e]*$/.test(headers[k])) delete headers[k];
    out.push({ path, headers, body });
  }
  return out;
}
