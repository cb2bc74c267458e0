// Loading over HTTP from a real server on 127.0.0.1: a GGUF file by URL (with and without Range
// support) and an HF-style directory by its base URL give the same logits as loading from disk, and
// progress is reported.
import { createServer, type Server } from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index';

const MODEL = 'models/sparrow-mini';
const FIXTURE = 'test/fixtures/parity/llama-mqa-yarn-tied';
let server: Server;
let base = '';
let rangeRequests = 0;
let ranges = true;

beforeAll(async () => {
  server = createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url!, 'http://x').pathname).replace(/^\/+/, '');
    if (rel.includes('..') || !(rel.startsWith(MODEL) || rel.startsWith(FIXTURE))) {
      res.writeHead(404).end();
      return;
    }
    const path = rel;
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      res.writeHead(404).end();
      return;
    }
    const m = ranges ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '') : null;
    if (m) {
      rangeRequests++;
      const start = Number(m[1]), end = Math.min(size - 1, m[2] ? Number(m[2]) : size - 1);
      const fd = readFileSync(path).subarray(start, end + 1);
      res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': fd.length, 'accept-ranges': 'bytes' });
      res.end(fd);
      return;
    }
    res.writeHead(200, { 'content-length': size });
    res.end(readFileSync(path));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as any).port}/`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

async function nextLogits(src: string, opts: any = {}): Promise<Float32Array> {
  const lm = await loadModel(src, { build: 'simd', ...opts });
  const s = lm.model.newSession();
  const out = s.forward(lm.encode('A fox ran into the wood', false));
  await lm.dispose();
  return out;
}

describe('loading by URL from a real HTTP server', () => {
  it('a GGUF by URL, with ranged reads and without Range support, matches the local file', async () => {
    const local = await nextLogits(MODEL);
    const progress: number[] = [];
    ranges = true;
    rangeRequests = 0;
    const viaRange = await nextLogits(`${base}${MODEL}/model.q8_0.gguf`, { onProgress: (d: number) => progress.push(d) });
    expect(rangeRequests).toBeGreaterThan(1);
    expect(viaRange).toEqual(local);
    ranges = false;
    const whole = await nextLogits(`${base}${MODEL}/model.q8_0.gguf`);
    expect(whole).toEqual(local);
    expect(progress.length).toBeGreaterThan(0);
  }, 60_000);

  it('an HF-style directory by base URL (config.json + model.safetensors) matches the local directory', async () => {
    ranges = true;
    const ids = [5, 17, 42, 3, 9];
    const run = async (src: string) => {
      const lm = await loadModel(src, { build: 'simd' });
      const out = lm.model.newSession().forward(ids);
      await lm.dispose();
      return out;
    };
    expect(await run(`${base}${FIXTURE}/`)).toEqual(await run(FIXTURE));
  });

  it('a missing URL is a one-line FormatError, not a crash', async () => {
    await expect(loadModel(`${base}${MODEL}/no-such.gguf`)).rejects.toMatchObject({ code: 'FORMAT' });
  });
});
