// Load and faults against real server processes on loopback: 16 concurrent streams that all finish
// with the text each gives alone, 429 beyond the queue bound, a client process killed mid-stream
// that gives its place back, and 250 fuzzed malformed bodies over HTTP with no 5xx and no crash.
import { spawn } from 'node:child_process';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuzzBodies } from './edge-fuzz';
import { postJson, startProcess, stopAll, type Server } from './edge-helpers';

let wide: Server; // 8 running + 8 waiting
let narrow: Server; // 1 running, none waiting

beforeAll(async () => {
  [wide, narrow] = await Promise.all([
    startProcess('node', { args: ['--max-concurrent', '8', '--max-queue', '8', '--max-body-bytes', '65536'] }),
    startProcess('bun', { args: ['--max-concurrent', '1', '--max-queue', '0'] }),
  ]);
}, 60_000);
afterAll(stopAll);

const health = async (s: Server) => (await fetch(`${s.url}/healthz`)).json();

async function waitIdle(s: Server, ms = 10_000): Promise<any> {
  const deadline = Date.now() + ms;
  let h = await health(s);
  while ((h.queue.running > 0 || h.queue.waiting > 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    h = await health(s);
  }
  return h;
}

describe('load', () => {
  it('16 concurrent streams all complete with the text each gives alone', async () => {
    const c = new OpenAI({ baseURL: `${wide.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const req = (i: number) => ({ model: 'sparrow-mini', prompt: `Story number ${i}: once upon a time`, max_tokens: 20, seed: 100 + i, temperature: 0.9 });
    const alone: string[] = [];
    for (let i = 0; i < 16; i++) alone.push((await c.completions.create(req(i))).choices[0].text);
    const t0 = performance.now();
    const together = await Promise.all(Array.from({ length: 16 }, async (_, i) => {
      let text = '';
      let chunks = 0;
      for await (const ch of await c.completions.create({ ...req(i), stream: true })) {
        text += ch.choices[0]?.text ?? '';
        chunks++;
      }
      return { text, chunks };
    }));
    const ms = performance.now() - t0;
    together.forEach((t, i) => {
      expect(t.text, `stream ${i}`).toBe(alone[i]);
      expect(t.chunks).toBeGreaterThan(5);
    });
    expect(ms).toBeLessThan(30_000);
    expect((await waitIdle(wide)).sessions_in_use).toBe(0);
  });

  it('beyond N running + M waiting, requests get 429 with Retry-After', async () => {
    const ac = new AbortController();
    const long = fetch(`${narrow.url}/v1/completions`, {
      method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'Once', max_tokens: 1500, ignore_eos: true, stream: true }),
    });
    const res = await long;
    const reader = res.body!.getReader();
    await reader.read();
    const over = await postJson(`${narrow.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
    expect(over.status).toBe(429);
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await over.json()).error).toMatchObject({ code: 'rate_limit_exceeded', param: null });
    ac.abort();
    await reader.cancel().catch(() => {});
    expect((await waitIdle(narrow)).queue.running).toBe(0);
  });

  it('a client process killed mid-stream frees its place: the next request is served', async () => {
    const script = `
      const res = await fetch(${JSON.stringify(narrow.url + '/v1/completions')}, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once', max_tokens: 1500, ignore_eos: true, stream: true }) });
      const r = res.body.getReader();
      await r.read(); await r.read();
      console.log('streaming');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d) => String(d).includes('streaming') && resolve());
        child.once('exit', (code) => reject(new Error(`client exited early (${code})`)));
      });
      expect((await health(narrow)).queue.running).toBe(1);
    } finally {
      child.kill('SIGKILL');
    }
    const h = await waitIdle(narrow);
    expect(h.queue.running).toBe(0);
    expect(h.sessions_in_use).toBe(0);
    const next = await postJson(`${narrow.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 4 });
    expect(next.status).toBe(200);
  });

  it('250 fuzzed malformed bodies: no 5xx, no crash', async () => {
    const counts: Record<number, number> = {};
    const bodies = fuzzBodies(250, 42);
    // A few at a time, as clients would send them.
    for (let i = 0; i < bodies.length; i += 5) {
      await Promise.all(bodies.slice(i, i + 5).map(async (f) => {
        const res = await fetch(wide.url + f.path, { method: 'POST', headers: f.headers, body: f.body as any });
        const text = await res.text();
        counts[res.status] = (counts[res.status] ?? 0) + 1;
        if (res.status >= 500) throw new Error(`${res.status} for ${String(f.body).slice(0, 200)}: ${text}`);
        if (res.status >= 400) expect(JSON.parse(text).error.message).toBeTruthy();
      }));
    }
    expect(Object.keys(counts).every((s) => Number(s) < 500)).toBe(true);
    expect(counts[400]).toBeGreaterThan(100);
    const h = await waitIdle(wide);
    expect(h).toMatchObject({ status: 'ok', loaded: true });
    expect(h.sessions_in_use).toBe(0);
    expect(wide.output()).not.toMatch(/internal error|failed\b/);
  });
});
