// Starting the real servers for the edge tests and benchmarks: Node (tsx), Bun and Deno as child
// processes, each in its own process group so that stopping it stops everything it started, and
// the Worker in local workerd through wrangler's unstable_startWorker. Every server listens on
// 127.0.0.1 with a port the OS picks.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'node_modules', '.bin');

export type RuntimeKind = 'node' | 'bun' | 'deno' | 'workers';

export interface Server {
  kind: RuntimeKind;
  url: string;
  pid?: number;
  /** Everything the process wrote, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

const live = new Set<Server>();

/** Stops every server still running (afterAll; also on exit, so a failed run leaves none behind). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((s) => s.stop()));
}

process.once('exit', () => {
  for (const s of live) if (s.pid) killGroup(s.pid, 'SIGKILL');
});

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    /* already gone */
  }
}

function command(kind: Exclude<RuntimeKind, 'workers'>, args: string[]): [string, string[]] {
  switch (kind) {
    case 'node':
      return [process.execPath, ['--import', 'tsx', 'edge/node.ts', ...args]];
    case 'bun':
      return [join(BIN, 'bun'), ['edge/bun.ts', ...args]];
    case 'deno':
      // The npm package's binary itself, when installed, rather than its Node launcher.
      return [existsSync(join(ROOT, 'node_modules/deno/deno')) ? join(ROOT, 'node_modules/deno/deno') : join(BIN, 'deno'), ['run', '--allow-read', '--allow-net=127.0.0.1', '--allow-env', 'edge/deno.ts', ...args]];
  }
}

export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
  /** Wait for the model to be loaded too (default true). */
  loaded?: boolean;
  timeoutMs?: number;
}

/** Starts a local server process and resolves once it listens (and, by default, has loaded the model). */
export async function startProcess(kind: Exclude<RuntimeKind, 'workers'>, opts: StartOptions = {}): Promise<Server> {
  const [cmd, args] = command(kind, ['--port', '0', ...(opts.args ?? [])]);
  return startCommand(kind, cmd, args, opts);
}

/** Any command that prints the server banner (e.g. `sparrow serve`). */
export async function startCommand(kind: Exclude<RuntimeKind, 'workers'>, cmd: string, args: string[], opts: StartOptions = {}): Promise<Server> {
  const env: Record<string, string> = { ...(process.env as Record<string, string>), NO_COLOR: '1', ...opts.env };
  delete env.NODE_OPTIONS;
  const child: ChildProcess = spawn(cmd, args, { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let exited: string | null = null;
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const done = new Promise<void>((r) => child.once('exit', (code, sig) => {
    exited = `exited with ${code ?? sig}`;
    r();
  }));
  const server: Server = {
    kind,
    url: '',
    pid: child.pid,
    output: () => out,
    async stop() {
      live.delete(server);
      if (exited) return;
      killGroup(child.pid!, 'SIGTERM');
      const t = setTimeout(() => killGroup(child.pid!, 'SIGKILL'), 3000);
      await done;
      clearTimeout(t);
    },
  };
  live.add(server);
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  const wantLoaded = opts.loaded ?? true;
  for (;;) {
    const m = /listening on (http:\/\/\S+)/.exec(out);
    if (m && (!wantLoaded || /model loaded|model is not available/.test(out))) {
      server.url = m[1];
      return server;
    }
    if (exited || Date.now() > deadline) {
      await server.stop();
      throw new Error(`${kind} server did not start (${exited ?? 'timed out'}):\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface WorkerOptions {
  /** Extra bindings (e.g. an R2 bucket), beside wrangler.jsonc's. */
  bindings?: Record<string, unknown>;
  /** Where local storage (Durable Objects, R2) lives; default: a temporary directory. */
  persist?: string;
}

/** The Worker (wrangler.jsonc) in local workerd; `vars` override wrangler.jsonc's. */
export async function startWorker(vars: Record<string, string> = {}, wo: WorkerOptions = {}): Promise<Server> {
  process.env.WRANGLER_SEND_METRICS = 'false';
  process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false';
  process.env.WRANGLER_LOG ??= 'warn';
  const { unstable_startWorker } = await import('wrangler');
  // Local storage in a fresh directory unless one is given, removed again on stop.
  const ownPersist = wo.persist ? null : mkdtempSync(join(tmpdir(), 'sparrow-workerd-'));
  const persist = wo.persist ?? ownPersist!;
  const bindings = { ...Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, { type: 'plain_text' as const, value: v }])), ...wo.bindings } as any;
  const worker = await unstable_startWorker({
    config: join(ROOT, 'wrangler.jsonc'),
    bindings,
    // As `wrangler dev` does: node: imports are left to the runtime (wrangler.jsonc sets nodejs_compat).
    build: { nodejsCompatMode: () => 'v2' } as any,
    dev: { server: { hostname: '127.0.0.1', port: 0 }, inspector: false, watch: false, logLevel: 'warn', persist } as any,
  });
  const url = String(await worker.url).replace(/\/$/, '');
  const server: Server = {
    kind: 'workers',
    url,
    output: () => '',
    async stop() {
      live.delete(server);
      await worker.dispose();
      if (ownPersist) rmSync(ownPersist, { recursive: true, force: true });
    },
  };
  live.add(server);
  return server;
}

export async function startServer(kind: RuntimeKind, opts: StartOptions = {}): Promise<Server> {
  return kind === 'workers' ? startWorker(opts.env) : startProcess(kind, opts);
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

/** The `data:` payloads of a server-sent event stream, parsed, up to [DONE]. */
export async function readSSE(res: Response): Promise<any[]> {
  const text = await res.text();
  const out: any[] = [];
  for (const block of text.split('\n\n')) {
    const line = block.split('\n').find((l) => l.startsWith('data: '));
    if (!line) continue;
    const data = line.slice(6);
    if (data === '[DONE]') break;
    out.push(JSON.parse(data));
  }
  return out;
}

/** Debian's Chromium, driven by playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';

/** Headless Chromium with the flags this machine's closed network needs (no background connections). */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
}
