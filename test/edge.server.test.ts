// The local servers' guards and settings against real processes (Node, Bun, Deno) and the Worker in
// local workerd: the in-browser files under an API key, start-up when the model cannot load and
// /healthz until it has, the session directory's byte bound and crash leftovers, sessions issued by
// the server and bound to their key, JSON-only POSTs and the Host check, Deno's write permission,
// the access log and the request and idle timeouts, and the README's curl examples.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, describe, expect, it } from 'vitest';
import { postJson, ROOT, startCommand, startProcess, startWorker, stopAll } from './edge-helpers';

const dirs: string[] = [];
const tempDir = (name: string) => {
  const d = mkdtempSync(join(tmpdir(), `sparrow-${name}-`));
  dirs.push(d);
  return d;
};

afterAll(async () => {
  await stopAll();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const DENO = existsSync(join(ROOT, 'node_modules/deno/deno')) ? join(ROOT, 'node_modules/deno/deno') : join(ROOT, 'node_modules/.bin/deno');
const COMMANDS = {
  node: [process.execPath, '--import', 'tsx', 'edge/node.ts'],
  bun: [join(ROOT, 'node_modules/.bin/bun'), 'edge/bun.ts'],
  deno: [DENO, 'run', '--allow-read', '--allow-net=127.0.0.1', '--allow-env', 'edge/deno.ts'],
} as const;

/** Runs a server command that is expected to exit by itself; null status when it was still running at `ms`. */
function runToExit(cmd: readonly string[], args: string[], ms = 30_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: '1' };
    delete env.NODE_OPTIONS;
    const child = spawn(cmd[0], [...cmd.slice(1), ...args], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
      resolve({ status: null, stdout, stderr });
    }, ms);
    child.once('exit', (code) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ status: code, stdout, stderr });
    });
  });
}

/** A GET with whatever Host header is given (fetch would send the URL's). */
function getWithHost(url: string, path: string, host: string): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET', headers: { host }, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Milliseconds until the server closes a kept-alive connection after one request, or null if still open after `ms`. */
function idleClose(url: string, ms: number): Promise<number | null> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname);
    let t0 = 0;
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(null);
    }, ms);
    s.on('data', (d) => {
      got += d;
      if (!t0 && got.includes('\r\n\r\n')) t0 = Date.now();
    });
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      if (!/^HTTP\/1\.1 200/.test(got)) reject(new Error(`unexpected answer: ${got.slice(0, 200)}`));
      else resolve(Date.now() - t0);
    });
    s.write(`GET /healthz HTTP/1.1\r\nHost: ${u.host}\r\n\r\n`);
  });
}

const sessionFiles = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.session'));
const dirBytes = (dir: string) => sessionFiles(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);

describe('the in-browser files under an API key', () => {
  it('are not served with a key (404; the page offers the server only) unless --browser-files on', async () => {
    const [keyed, on] = await Promise.all([
      startProcess('node', { args: ['--api-key', 'sk-files'] }),
      startProcess('node', { args: ['--api-key', 'sk-files', '--browser-files', 'on'] }),
    ]);
    try {
      for (const path of ['/models/sparrow-mini/model.q8_0.gguf', '/build/simd.wasm', '/build/relaxed.wasm', '/browser/sparrow.js']) {
        expect((await fetch(keyed.url + path)).status, path).toBe(404);
        expect((await fetch(keyed.url + path, { headers: { authorization: 'Bearer sk-files' } })).status, path).toBe(404);
      }
      const page = await (await fetch(keyed.url + '/')).text();
      expect(page).toMatch(/<textarea id="prompt"/);
      expect(page).not.toMatch(/id="local"/);
      expect(page).toMatch(/const BROWSER = null;/);

      const part = await fetch(on.url + '/models/sparrow-mini/model.q8_0.gguf', { headers: { range: 'bytes=0-3' } });
      expect(part.status).toBe(206);
      expect(new TextDecoder().decode(await part.arrayBuffer())).toBe('GGUF');
      expect((await fetch(on.url + '/build/simd.wasm')).status).toBe(200);
      expect(await (await fetch(on.url + '/')).text()).toMatch(/id="local"/);
    } finally {
      await Promise.all([keyed.stop(), on.stop()]);
    }
  });
});

describe('a model that cannot be loaded', () => {
  it('stops Node, Bun and Deno at start with status 1 and one line on stderr', async () => {
    const runs = await Promise.all((['node', 'bun', 'deno'] as const).map((k) => runToExit(COMMANDS[k], ['--port', '0', '--model', '/nonexistent/model.gguf'])));
    for (const r of runs) {
      expect(r.status, r.stdout + r.stderr).toBe(1);
      expect(r.stdout).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+/);
      const lines = r.stderr.split('\n').filter(Boolean);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^sparrow: .*\/nonexistent\/model\.gguf.*not found.*--keep-up-on-load-failure/);
    }
  });

  it('/healthz answers 503 "loading" while the model loads', async () => {
    // A named pipe that nothing writes to holds the load for as long as the test needs.
    const dir = tempDir('fifo');
    const fifo = join(dir, 'model.gguf');
    execFileSync('mkfifo', [fifo]);
    const s = await startProcess('node', { args: ['--model', fifo], loaded: false });
    try {
      for (let i = 0; i < 3; i++) {
        const h = await fetch(`${s.url}/healthz`);
        expect(h.status).toBe(503);
        expect(await h.json()).toMatchObject({ status: 'loading', loaded: false, error: { type: 'server_error', code: 'model_loading' } });
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await s.stop();
    }
  });

  it('with --keep-up-on-load-failure the server stays up: 503 from /healthz, saying why, and from generations', async () => {
    const s = await startProcess('node', { args: ['--model', '/nonexistent/model.gguf', '--keep-up-on-load-failure'] });
    try {
      expect(s.output()).toMatch(/sparrow: the model is not available: .*\/nonexistent\/model\.gguf/);
      const res = await fetch(`${s.url}/healthz`);
      expect(res.status).toBe(503);
      const h = await res.json();
      expect(h).toMatchObject({ status: 'unavailable', loaded: false, error: { type: 'server_error', code: 'model_unavailable' } });
      expect(h.error.message).toMatch(/\/nonexistent\/model\.gguf.*not found/);
      const gen = await postJson(`${s.url}/v1/completions`, { prompt: 'x', max_tokens: 1 });
      expect(gen.status).toBe(503);
      expect((await gen.json()).error.code).toBe('model_unavailable');
      expect((await fetch(`${s.url}/healthz`)).status).toBe(503);
    } finally {
      await s.stop();
    }
  });
});

describe('the session directory', () => {
  it('removes the temporary files a crash left, and stays under --session-dir-max-bytes by evicting the least recently used', async () => {
    const dir = tempDir('sessions-cap');
    // What a server killed while writing leaves behind, and a file that is none of the store's.
    writeFileSync(join(dir, 'sess-crashed.session.lx2abc9.tmp'), 'half a session');
    writeFileSync(join(dir, 'notes.txt'), 'kept');
    let s = await startProcess('node', { args: ['--session-dir', dir] });
    const url = () => s.url;
    const c = () => new OpenAI({ baseURL: `${url()}/v1`, apiKey: 'x', maxRetries: 0 });
    try {
      expect(readdirSync(dir).sort()).toEqual(['notes.txt']);
      await s.stop();

      // About 265 kB per short session: three fit in 1 MB, four do not.
      const cap = 1_000_000;
      s = await startProcess('node', { args: ['--session-dir', dir, '--session-dir-max-bytes', String(cap)] });
      const turn = async (id: string, text: string) => {
        const r = await c().chat.completions.create({ model: 'sparrow-mini', messages: [{ role: 'user', content: text }], max_tokens: 2, seed: 1 }, { headers: { 'x-session-id': id } });
        expect(r.choices[0].message.role).toBe('assistant');
      };
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        ids.push((await (await postJson(`${url()}/v1/sessions`, {})).json()).id);
        await turn(ids[i], `Session number ${i}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(sessionFiles(dir).sort()).toEqual(ids.map((id) => `${id}.session`).sort());
      // The first is used again, so the second is now the least recently used.
      await turn(ids[0], 'Session number 0');
      for (let i = 3; i < 10; i++) {
        ids.push((await (await postJson(`${url()}/v1/sessions`, {})).json()).id);
        await turn(ids[i], `Session number ${i}`);
        expect(dirBytes(dir), `after session ${i}`).toBeLessThanOrEqual(cap);
        if (i === 3) {
          expect(existsSync(join(dir, `${ids[1]}.session`))).toBe(false);
          expect(existsSync(join(dir, `${ids[0]}.session`))).toBe(true);
        }
      }
      expect(sessionFiles(dir)).toContain(`${ids[9]}.session`);
      expect(sessionFiles(dir).length).toBe(3);
      await s.stop();

      // After a restart with a smaller bound the directory is measured and trimmed at start, oldest first.
      const mtimes = sessionFiles(dir).map((f) => [f, statSync(join(dir, f)).mtimeMs] as const).sort((a, b) => a[1] - b[1]);
      writeFileSync(join(dir, `${ids[9]}.session.k3j4h5.tmp`), 'another leftover');
      s = await startProcess('node', { args: ['--session-dir', dir, '--session-dir-max-bytes', '600000'] });
      expect(dirBytes(dir)).toBeLessThanOrEqual(600_000);
      expect(sessionFiles(dir).sort()).toEqual(mtimes.slice(1).map(([f]) => f).sort());
      expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
      expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('kept');
    } finally {
      await s.stop();
    }
  }, 90_000);

  it('`npm run serve:deno -- --session-dir D` writes sessions to D', async () => {
    const dir = tempDir('deno-sessions');
    const s = await startCommand('deno', 'npm', ['run', '--silent', 'serve:deno', '--', '--port', '0', '--session-dir', dir]);
    try {
      const id = (await (await postJson(`${s.url}/v1/sessions`, {})).json()).id;
      const r = await postJson(`${s.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 3 }, { 'x-session-id': id });
      expect(r.status).toBe(200);
      expect(sessionFiles(dir)).toEqual([`${id}.session`]);
      expect((await (await fetch(`${s.url}/v1/sessions/${id}`)).json()).tokens).toBeGreaterThan(3);
    } finally {
      await s.stop();
    }
  });

  it('a session directory that cannot be written stops the server at start with one line (Deno without --allow-write, Node and Bun on a path under a file)', async () => {
    const dir = tempDir('unwritable');
    writeFileSync(join(dir, 'file'), '');
    const [deno, node, bun] = await Promise.all([
      runToExit(COMMANDS.deno, ['--port', '0', '--session-dir', join(dir, 'sessions')]),
      runToExit(COMMANDS.node, ['--port', '0', '--session-dir', join(dir, 'file', 'sessions')]),
      runToExit(COMMANDS.bun, ['--port', '0', '--session-dir', join(dir, 'file', 'sessions')]),
    ]);
    for (const r of [deno, node, bun]) {
      expect(r.status, r.stdout + r.stderr).toBe(1);
      expect(r.stdout).not.toMatch(/listening/);
      expect(r.stderr.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr).toMatch(/^sparrow serve: --session-dir \S+ cannot be used: /);
    }
    expect(deno.stderr).toMatch(/--allow-write/);
    expect(node.stderr).toMatch(/ENOTDIR/);
  });
});

describe('sessions belong to the key that created them', () => {
  // Node with the keys as repeated options, Bun with them comma-separated in the environment.
  for (const kind of ['node', 'bun'] as const) {
    it(`${kind}: another key gets 404 to read, use or delete a session; an id never issued is 404, not created`, async () => {
      const s = await startProcess(kind, kind === 'node' ? { args: ['--api-key', 'sk-alice', '--api-key', 'sk-bob'] } : { env: { SPARROW_API_KEY: 'sk-alice,sk-bob' } });
      try {
        const alice = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-alice', maxRetries: 0 });
        const bob = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-bob', maxRetries: 0 });
        const as = (key: string) => ({ authorization: `Bearer ${key}` });
        const created = await postJson(`${s.url}/v1/sessions`, {}, as('sk-alice'));
        expect(created.status).toBe(200);
        const id: string = (await created.json()).id;
        expect(id).toMatch(/^sess-[A-Za-z0-9]{32}$/);
        const ask = { model: 'sparrow-mini', messages: [{ role: 'user' as const, content: 'Hello there.' }], max_tokens: 6, seed: 2 };
        const first = await alice.chat.completions.create(ask, { headers: { 'x-session-id': id } });
        const tokens = first.usage!.total_tokens;

        // Bob: the session does not exist for him, whatever he does.
        const read = await fetch(`${s.url}/v1/sessions/${id}`, { headers: as('sk-bob') });
        expect(read.status).toBe(404);
        expect((await read.json()).error.code).toBe('session_not_found');
        expect((await fetch(`${s.url}/v1/sessions/${id}`, { method: 'DELETE', headers: as('sk-bob') })).status).toBe(404);
        await expect(bob.chat.completions.create({ ...ask, messages: [{ role: 'user', content: 'Overwrite it.' }] }, { headers: { 'x-session-id': id } }))
          .rejects.toMatchObject({ status: 404, code: 'session_not_found' });
        await expect(bob.completions.create({ model: 'sparrow-mini', prompt: 'x', max_tokens: 1, session: id } as any)).rejects.toMatchObject({ status: 404 });

        // Alice's session is as she left it.
        const meta = await (await fetch(`${s.url}/v1/sessions/${id}`, { headers: as('sk-alice') })).json();
        expect(meta).toMatchObject({ id, tokens });
        const second = await alice.chat.completions.create({ ...ask, messages: [...ask.messages, first.choices[0].message as any, { role: 'user', content: 'More.' }] }, { headers: { 'x-session-id': id } });
        expect((second.usage as any).prompt_tokens_details.cached_tokens).toBe(tokens);

        // An id nobody was given is refused and not created.
        await expect(alice.chat.completions.create(ask, { headers: { 'x-session-id': 'my-own-id' } })).rejects.toMatchObject({ status: 404, code: 'session_not_found' });
        expect((await fetch(`${s.url}/v1/sessions/my-own-id`, { headers: as('sk-alice') })).status).toBe(404);

        expect((await fetch(`${s.url}/v1/sessions/${id}`, { method: 'DELETE', headers: as('sk-alice') })).status).toBe(200);
        expect((await fetch(`${s.url}/v1/sessions/${id}`, { headers: as('sk-alice') })).status).toBe(404);
      } finally {
        await s.stop();
      }
    });
  }
});

describe('cross-site requests', () => {
  it('Node, Bun and Deno answer only to their own Host (403 otherwise) and take JSON bodies only (415)', async () => {
    const started = await Promise.all([startProcess('node'), startProcess('bun'), startProcess('deno')]);
    try {
      for (const s of started) {
        const port = new URL(s.url).port;
        for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`]) {
          expect((await getWithHost(s.url, '/healthz', host)).status, `${s.kind} ${host}`).toBe(200);
        }
        for (const host of [`attacker.example:${port}`, 'attacker.example', `127.0.0.1:${Number(port) + 1}`, `localhost.attacker.example:${port}`]) {
          const r = await getWithHost(s.url, '/v1/models', host);
          expect(r.status, `${s.kind} ${host}`).toBe(403);
          expect(JSON.parse(r.body).error).toMatchObject({ type: 'invalid_request_error', code: 'host_not_allowed' });
        }
        for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', null]) {
          const headers: Record<string, string> = type ? { 'content-type': type } : {};
          const body = type === null ? new Blob([JSON.stringify({ prompt: 'x', max_tokens: 1 })]) : JSON.stringify({ prompt: 'x', max_tokens: 1 });
          const r = await fetch(`${s.url}/v1/completions`, { method: 'POST', headers, body });
          expect(r.status, `${s.kind} ${type}`).toBe(415);
          expect((await r.json()).error).toMatchObject({ type: 'invalid_request_error', param: null, code: 'unsupported_media_type' });
        }
        const ok = await postJson(`${s.url}/v1/completions`, { prompt: 'x', max_tokens: 1 }, { 'content-type': 'application/json; charset=utf-8' });
        expect(ok.status).toBe(200);
      }
    } finally {
      await Promise.all(started.map((s) => s.stop()));
    }
  });

  it('--allowed-hosts replaces the list; * answers any Host', async () => {
    const [listed, any] = await Promise.all([
      startProcess('node', { args: ['--allowed-hosts', 'chat.example,api.example:9999'] }),
      startProcess('node', { args: ['--allowed-hosts', '*'] }),
    ]);
    try {
      const port = new URL(listed.url).port;
      expect((await getWithHost(listed.url, '/healthz', 'chat.example:1234')).status).toBe(200);
      expect((await getWithHost(listed.url, '/healthz', 'chat.example')).status).toBe(200);
      expect((await getWithHost(listed.url, '/healthz', 'api.example:9999')).status).toBe(200);
      expect((await getWithHost(listed.url, '/healthz', 'api.example:9998')).status).toBe(403);
      expect((await getWithHost(listed.url, '/healthz', `127.0.0.1:${port}`)).status).toBe(403);
      expect((await getWithHost(any.url, '/healthz', 'anything.example:1')).status).toBe(200);
    } finally {
      await Promise.all([listed.stop(), any.stop()]);
    }
  });
});

describe('access log and timeouts', () => {
  it('--request-timeout: a generation past it gets 504 (streamed: an error event) and gives back its queue place and session slot', async () => {
    const s = await startProcess('node', { args: ['--request-timeout', '1', '--max-concurrent', '1'] });
    try {
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'x', maxRetries: 0 });
      // ignore_eos is this server's own parameter, not in the client's types.
      const extra: object = { ignore_eos: true };
      const long = { model: 'sparrow-mini', prompt: 'Once', max_tokens: 2000, ...extra };
      const t0 = Date.now();
      await expect(c.completions.create(long)).rejects.toMatchObject({ status: 504, code: 'request_timeout' });
      expect(Date.now() - t0).toBeLessThan(4000);

      // Streamed, in a session, with a second request waiting behind it in the queue.
      const id = (await (await postJson(`${s.url}/v1/sessions`, {})).json()).id;
      const waiting = c.completions.create({ model: 'sparrow-mini', prompt: 'Hello', max_tokens: 2 });
      const stream = await c.completions.create({ ...long, stream: true }, { headers: { 'x-session-id': id } });
      let text = '';
      await expect((async () => {
        for await (const ch of stream) text += ch.choices[0]?.text ?? '';
      })()).rejects.toThrow(/longer than 1 s/);
      expect(text.length).toBeGreaterThan(0);
      // The queued request either ran once the place was free or timed out waiting; nothing is left holding a place.
      await waiting.catch((e) => expect(e).toMatchObject({ status: 504 }));
      const h = await (await fetch(`${s.url}/healthz`)).json();
      expect(h.queue).toMatchObject({ running: 0, waiting: 0 });
      expect(h.sessions_in_use).toBe(0);
      // The session is not left busy: it answers at once.
      expect(await (await fetch(`${s.url}/v1/sessions/${id}`)).json()).toMatchObject({ id, busy: false });
      const next = await postJson(`${s.url}/v1/completions`, { prompt: 'Once upon a time', max_tokens: 3 }, { 'x-session-id': id });
      expect(next.status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  it('--access-log writes one line per request with status, duration, bytes and tokens, and never the key or a body', async () => {
    const s = await startProcess('node', { args: ['--access-log', '--api-key', 'sk-secret-in-log'] });
    try {
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-secret-in-log', maxRetries: 0 });
      await c.chat.completions.create({ model: 'sparrow-mini', messages: [{ role: 'user', content: 'The purple walrus sings' }], max_tokens: 5 });
      const stream = await c.completions.create({ model: 'sparrow-mini', prompt: 'A quiet green lighthouse', max_tokens: 4, stream: true });
      for await (const _ of stream) { /* drain */ }
      expect((await fetch(`${s.url}/v1/models`)).status).toBe(401);
      await new Promise((r) => setTimeout(r, 200));
      const lines = s.output().split('\n').filter((l) => /^\d{4}-\d\d-\d\dT[\d:.]+Z /.test(l));
      expect(lines).toHaveLength(3);
      expect(lines[0]).toMatch(/^\S+ POST \/v1\/chat\/completions 200 \d+ms \d+B tokens=\d+\+\d+$/);
      expect(lines[1]).toMatch(/^\S+ POST \/v1\/completions 200 \d+ms \d+B tokens=\d+\+\d+$/);
      expect(lines[2]).toMatch(/^\S+ GET \/v1\/models 401 \d+ms \d+B$/);
      expect(Number(/ (\d+)B/.exec(lines[1])![1])).toBeGreaterThan(500);
      expect(s.output()).not.toMatch(/sk-secret-in-log|walrus|lighthouse/);
    } finally {
      await s.stop();
    }
  });

  it('--idle-timeout closes an idle kept-alive connection on Node and Bun', async () => {
    const [node, bun, nodeDefault] = await Promise.all([
      startProcess('node', { args: ['--idle-timeout', '1'] }),
      startProcess('bun', { args: ['--idle-timeout', '1'] }),
      startProcess('node'),
    ]);
    try {
      const [n, b, d] = await Promise.all([idleClose(node.url, 9000), idleClose(bun.url, 9000), idleClose(nodeDefault.url, 6000)]);
      expect(n).not.toBeNull();
      expect(n!).toBeLessThan(3000);
      // Bun counts idle time in coarse steps.
      expect(b).not.toBeNull();
      expect(b!).toBeLessThan(8000);
      // The default (10 s) keeps it longer.
      expect(d).toBeNull();
    } finally {
      await Promise.all([node.stop(), bun.stop(), nodeDefault.stop()]);
    }
  });
});

describe('README', () => {
  it('the curl examples of the Edge section work as written against a server', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const m = /<!-- test\/edge\.server\.test\.ts runs this block against a real server -->\n```sh\n([\s\S]*?)\n```/.exec(readme);
    expect(m, 'the marked curl block in README.md').not.toBeNull();
    const s = await startProcess('node');
    try {
      const script = m![1].replaceAll('http://127.0.0.1:8080', s.url);
      expect(script).not.toContain('8080');
      const r = spawnSync('sh', ['-e', '-c', script], { encoding: 'utf8', timeout: 60_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      const out = r.stdout;
      expect(out).toContain('"status":"ok"');
      expect(out).toContain('"object":"list"');
      expect(out).toMatch(/"object":"text_completion".*"completion_tokens":24/);
      expect(out).toContain('"object":"chat.completion.chunk"');
      expect(out).toContain('data: [DONE]');
      expect(out).toMatch(/"object":"chat\.completion"/);
      expect(out).toMatch(/"object":"session","model":"sparrow-mini","tokens":[1-9]\d*/);
      expect(out).toMatch(/"object":"session\.deleted","deleted":true/);
      expect(out).not.toContain('"error"');
    } finally {
      await s.stop();
    }
  });
});

describe('the Worker', () => {
  it('/healthz is 503 until the model loads (here: never, the R2 object is missing), saying why; sessions are bound to their key', async () => {
    const persist = tempDir('r2-empty');
    const w = await startWorker({ MODEL_KEY: 'missing.gguf', SPARROW_API_KEY: 'wk-alice, wk-bob' }, { bindings: { MODELS: { type: 'r2_bucket', bucket_name: 'sparrow-models' } }, persist });
    try {
      const first = await fetch(`${w.url}/healthz`);
      expect(first.status).toBe(503);
      let h: any = await first.json();
      expect(['loading', 'unavailable']).toContain(h.status);
      const deadline = Date.now() + 20_000;
      while (h.status === 'loading' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        h = await (await fetch(`${w.url}/healthz`)).json();
      }
      expect(h).toMatchObject({ status: 'unavailable', loaded: false, runtime: 'workerd', error: { code: 'model_unavailable' } });
      expect(h.error.message).toMatch(/missing\.gguf not found/);

      const as = (key: string) => ({ authorization: `Bearer ${key}` });
      const created = await postJson(`${w.url}/v1/sessions`, {}, as('wk-alice'));
      expect(created.status).toBe(200);
      const id: string = (await created.json()).id;
      expect((await fetch(`${w.url}/v1/sessions/${id}`, { headers: as('wk-alice') })).status).toBe(200);
      expect((await fetch(`${w.url}/v1/sessions/${id}`, { headers: as('wk-bob') })).status).toBe(404);
      expect((await fetch(`${w.url}/v1/sessions/${id}`, { method: 'DELETE', headers: as('wk-bob') })).status).toBe(404);
      const overwrite = await postJson(`${w.url}/v1/completions`, { prompt: 'x', session: id }, as('wk-bob'));
      expect(overwrite.status).toBe(404);
      expect((await overwrite.json()).error.code).toBe('session_not_found');
      const madeUp = await postJson(`${w.url}/v1/completions`, { prompt: 'x' }, { ...as('wk-alice'), 'x-session-id': 'made-up' });
      expect(madeUp.status).toBe(404);
      // Alice gets past the session check to the model, which is not there.
      expect((await postJson(`${w.url}/v1/completions`, { prompt: 'x' }, { ...as('wk-alice'), 'x-session-id': id })).status).toBe(503);
      const plain = await fetch(`${w.url}/v1/sessions`, { method: 'POST', headers: { ...as('wk-alice'), 'content-type': 'text/plain' }, body: '{}' });
      expect(plain.status).toBe(415);
      expect((await fetch(`${w.url}/v1/sessions/${id}`, { method: 'DELETE', headers: as('wk-alice') })).status).toBe(200);
      expect((await fetch(`${w.url}/v1/sessions/${id}`, { headers: as('wk-alice') })).status).toBe(404);
    } finally {
      await w.stop();
    }
  }, 90_000);
});
