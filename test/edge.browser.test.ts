// The chat page's in-browser mode in headless Chromium (GPU off, so the page finds no WebGPU adapter
// and runs the WASM kernels): switch it on, watch the model load in the page, and see a reply
// stream in while the server receives no generation request, neither in the page's request log
// nor in the server's own count (/healthz generation_requests). Screenshot under test-results/.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, launchChromium, ROOT, startProcess, stopAll, type Server } from './edge-helpers';
import { chromiumSkipReason } from './browser-skip';

const skipReason = chromiumSkipReason(CHROMIUM);
const haveChromium = skipReason === null;
if (skipReason) console.warn(`test/edge.browser.test.ts: ${skipReason}`);
let server: Server;
let browser: Browser | null = null;

beforeAll(async () => {
  if (!haveChromium) return;
  [server, browser] = await Promise.all([
    startProcess('node'),
    launchChromium(),
  ]);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await stopAll();
});

async function generationRequests(): Promise<number> {
  const h = await (await fetch(server.url + '/healthz')).json();
  return h.generation_requests;
}

describe.skipIf(!haveChromium)(`chat page, in-browser mode${skipReason ? ` (${skipReason})` : ''}`, () => {
  it('serves the bundle, the kernels and the model file with byte ranges', async () => {
    const js = await fetch(server.url + '/browser/sparrow.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    expect((await js.text()).length).toBeGreaterThan(10_000);
    const wasm = await fetch(server.url + '/build/simd.wasm');
    expect(wasm.headers.get('content-type')).toBe('application/wasm');
    expect(WebAssembly.validate(new Uint8Array(await wasm.arrayBuffer()))).toBe(true);
    const part = await fetch(server.url + '/models/sparrow-mini/model.q8_0.gguf', { headers: { range: 'bytes=0-3' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toMatch(/^bytes 0-3\/\d+$/);
    expect(new TextDecoder().decode(await part.arrayBuffer())).toBe('GGUF');
    const bad = await fetch(server.url + '/models/sparrow-mini/model.q8_0.gguf', { headers: { range: 'bytes=999999999-' } });
    expect(bad.status).toBe(416);
  });

  it('loads the model into the page and streams a reply with no /v1 generation request', async () => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 700 } });
    const requests: string[] = [];
    page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(server.url + '/');
    const before = await generationRequests();

    await page.check('#local');
    // Progress is shown while the model loads, then the backend in use.
    await page.waitForFunction(() => document.getElementById('backend')?.dataset.state !== undefined);
    await page.waitForFunction(() => document.getElementById('backend')?.dataset.state === 'ready', null, { timeout: 60_000 })
      .catch(async (e) => {
        throw new Error(`${e}\nbackend: ${await page.textContent('#backend')}\npage errors: ${errors.join('\n')}`);
      });
    const backend = (await page.textContent('#backend')) ?? '';
    expect(backend).toMatch(/running in this browser · WASM \((simd|relaxed) build\)/);
    // Chromium without a GPU has no WebGPU adapter, so the page says it is on WASM alone.
    expect(backend).toMatch(/WebGPU not used: .*requestAdapter\(\) returned null|WebGPU not used: .*no navigator.gpu/);
    await expect(page.getAttribute('#backend', 'data-backend')).resolves.toBe('wasm');

    await page.fill('#max-tokens', '120');
    await page.fill('#seed', '3');
    await page.fill('#prompt', 'Tell me a story about a brave little fox.');
    await page.click('#send');

    // Sampled while it streams: the reply must be seen growing, not only appear whole.
    const reply = page.locator('.msg.assistant').last();
    const lengths = new Set<number>();
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const [text, state] = await Promise.all([reply.textContent(), reply.getAttribute('data-state')]);
      lengths.add(text?.length ?? 0);
      if (state !== 'streaming') break;
      await page.waitForTimeout(5);
    }
    await expect(reply.getAttribute('data-state')).resolves.toBe('done');
    const first = (await reply.textContent()) ?? '';
    expect(first.length).toBeGreaterThan(20);
    expect([...lengths].filter((n) => n > 0 && n < first.length).length).toBeGreaterThanOrEqual(2);
    await expect(page.textContent('#stats')).resolves.toMatch(/first token \d+ ms · \d+ tokens · [\d.]+ tok\/s · 0 of \d+ prompt tokens resumed · in this browser/);

    // A second turn resumes the page's own session.
    await page.fill('#prompt', 'What happened next?');
    await page.press('#prompt', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('.msg.assistant')[1]?.getAttribute('data-state') === 'done', null, { timeout: 60_000 });
    expect(((await page.locator('.msg.assistant').nth(1).textContent()) ?? '').length).toBeGreaterThan(0);
    const resumed = /· (\d+) of (\d+) prompt tokens resumed · in this browser/.exec((await page.textContent('#stats')) ?? '');
    expect(resumed).not.toBeNull();
    expect(Number(resumed![1])).toBeGreaterThan(10);

    mkdirSync(join(ROOT, 'test-results'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'test-results', 'edge-chat-in-browser.png'), fullPage: true });

    // The page fetched the bundle, kernels and model, and asked the API for nothing.
    expect(requests).toContain('GET /browser/sparrow.js');
    expect(requests).toContain('GET /build/simd.wasm');
    expect(requests.some((r) => r === 'GET /models/sparrow-mini/model.q8_0.gguf')).toBe(true);
    expect(requests.filter((r) => r.includes(' /v1/'))).toEqual([]);
    await expect(generationRequests()).resolves.toBe(before);
    expect(errors).toEqual([]);
    await page.close();
  });
});
