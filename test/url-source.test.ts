// Loading over HTTP from a real server on 127.0.0.1: a GGUF file by URL (with and without Range
// support) and an HF-style directory by its base URL give the same logits as loading from disk, and
// progress is reported. A directory URL holding only a GGUF fails with a message naming what was
// looked for and the GGUF's own URL.
import { createServer, type Server } from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index';

const MODEL = 'models/sparrow-mini';
const FIXTURE = 'test/fixtures/parity/llama-mqa-yarn-tied';
// Directories that hold only the default model's GGUF: gguf-only/ answers 404 for anything else,
// gguf-listed/ also serves an HTML listing of itself, as nginx autoindex or `python -m http.server` do.
const GGUF_DIRS = ['gguf-only/', 'gguf-listed/'];
let server: Server;
let base = '';
let rangeRequests = 0;
let ranges = true;

beforeAll(async () => {
  server = createServer((req, res) => {
    let rel = decodeURIComponent(new URL(req.url!, 'http://x').pathname).replace(/^\/+/, '');
    const ggufDir = GGUF_DIRS.find((d) => rel.startsWith(d));
    if (ggufDir === 'gguf-listed/' && rel === ggufDir) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!DOCTYPE html><html><body><ul><li><a href="../">../</a></li><li><a href="model.q8_0.gguf">model.q8_0.gguf</a></li></ul></body></html>');
      return;
    }
    if (ggufDir) rel = rel === `${ggufDir}model.q8_0.gguf` ? `${MODEL}/model.q8_0.gguf` : '';
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

  it('a directory URL with only a GGUF names what was looked for and the URL to load instead', async () => {
    ranges = true;
    const err = (await loadModel(`${base}gguf-only/`).then(() => null, (e) => e)) as Error;
    expect(err).toMatchObject({ code: 'FORMAT', field: 'weights' });
    expect(err.message).toContain(`${base}gguf-only/: weights: found neither model.safetensors.index.json nor model.safetensors at this URL (nor config.json)`);
    expect(err.message).toContain('a directory URL cannot be listed');
    expect(err.message).toContain(`${base}gguf-only/model.gguf`);
    expect(err.message).not.toMatch(/\n/);
    // Where the server lists the directory, the message names the GGUF it links to, and that URL loads.
    const listed = (await loadModel(`${base}gguf-listed/`).then(() => null, (e) => e)) as Error;
    expect(listed.message).toContain(`load a GGUF by its file URL: ${base}gguf-listed/model.q8_0.gguf (named in the directory's listing)`);
    const lm = await loadModel(`${base}gguf-listed/model.q8_0.gguf`, { build: 'simd' });
    expect(lm.info().modelType).toBeTruthy();
    await lm.dispose();
  });
});
