// The chat page in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): type a
// prompt, watch the reply grow token by token, send a second turn that resumes the session, and
// save a screenshot under test-results/.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, launchChromium, ROOT, startProcess, stopAll, type Server } from './edge-helpers';
import { chromiumSkipReason } from './browser-skip';

const skipReason = chromiumSkipReason(CHROMIUM);
const haveChromium = skipReason === null;
if (skipReason) console.warn(`test/edge.page.test.ts: ${skipReason}`);
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

describe.skipIf(!haveChromium)(`chat page${skipReason ? ` (${skipReason})` : ''}`, () => {
  it('streams a reply into the page, resumes the session on the next turn, and is screenshotted', async () => {
    const page = await browser!.newPage({ viewport: { width: 1000, height: 700 } });
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(server.url + '/');
    await expect(page.textContent('#model')).resolves.toBe('sparrow-mini');
    await page.fill('#max-tokens', '150');
    await page.fill('#seed', '3');
    await page.fill('#prompt', 'Tell me a story about a brave little fox.');
    await page.click('#send');

    // Sample the reply while it streams: it must be seen growing, not only appear whole.
    const reply = page.locator('.msg.assistant').last();
    const lengths = new Set<number>();
    const deadline = Date.now() + 30_000;
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
    await expect(page.textContent('#stats')).resolves.toMatch(/first token \d+ ms · \d+ tokens · [\d.]+ tok\/s · 0 of \d+ prompt tokens resumed/);

    await page.fill('#prompt', 'What happened next?');
    await page.press('#prompt', 'Enter');
    const second = page.locator('.msg.assistant').nth(1);
    await page.waitForFunction(() => document.querySelectorAll('.msg.assistant')[1]?.getAttribute('data-state') === 'done', null, { timeout: 30_000 });
    expect(((await second.textContent()) ?? '').length).toBeGreaterThan(0);
    const stats = (await page.textContent('#stats')) ?? '';
    const resumed = /· (\d+) of (\d+) prompt tokens resumed/.exec(stats);
    expect(resumed).not.toBeNull();
    expect(Number(resumed![1])).toBeGreaterThan(10);

    mkdirSync(join(ROOT, 'test-results'), { recursive: true });
    await page.screenshot({ path: join(ROOT, 'test-results', 'edge-chat-page.png'), fullPage: true });
    // The page talks only to its own server.
    expect(requests.every((u) => u.startsWith(server.url))).toBe(true);
    await page.close();
  });

  it('with an API key: the key typed in the page is used, the session is the server\'s, and no in-browser switch is offered', async () => {
    const keyed = await startProcess('node', { args: ['--api-key', 'sk-page-key'] });
    try {
      const page = await browser!.newPage({ viewport: { width: 1000, height: 700 } });
      const calls: string[] = [];
      page.on('request', (r) => calls.push(`${r.method()} ${new URL(r.url()).pathname}`));
      await page.goto(keyed.url + '/');
      // The in-browser files are not served under a key, so the page does not offer them.
      await expect(page.locator('#local').count()).resolves.toBe(0);

      // Without the key the server refuses, and the page says so.
      await page.fill('#prompt', 'Hello?');
      await page.click('#send');
      await page.waitForSelector('.msg.error');
      await expect(page.textContent('.msg.error')).resolves.toMatch(/API key/);
      calls.length = 0;

      await page.fill('#key', 'sk-page-key');
      await page.fill('#max-tokens', '40');
      await page.fill('#seed', '3');
      for (const [i, text] of ['Tell me about foxes.', 'And then?'].entries()) {
        await page.fill('#prompt', text);
        await page.click('#send');
        await page.waitForFunction((n) => document.querySelectorAll('.msg.assistant')[n]?.getAttribute('data-state') === 'done', i, { timeout: 30_000 });
      }
      const resumed = /· (\d+) of (\d+) prompt tokens resumed/.exec((await page.textContent('#stats')) ?? '');
      expect(Number(resumed![1])).toBeGreaterThan(10);
      // One session for the conversation, made by the server; "New chat" deletes it.
      expect(calls.filter((c) => c === 'POST /v1/sessions')).toHaveLength(1);
      await page.click('#new');
      await expect.poll(() => calls.filter((c) => c.startsWith('DELETE /v1/sessions/')).length).toBe(1);
      await page.close();
    } finally {
      await keyed.stop();
    }
  });
});
