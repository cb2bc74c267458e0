// What the Deno, Bun and Node adapters share: settings from flags and environment, the model loaded
// from a local path (default: the embedded models/sparrow-mini), and the session store (memory, or
// memory in front of a directory).
//
// Settings (flag, then environment variable, then default):
//   --host / SPARROW_HOST                 127.0.0.1
//   --port / PORT, SPARROW_PORT           8080 (0 picks a free port; the banner names it)
//   --model / SPARROW_MODEL               models/sparrow-mini
//   --model-id / SPARROW_MODEL_ID         the model directory's or file's name
//   --api-key / SPARROW_API_KEY           none (no auth)
//   --cors / SPARROW_CORS                 off; '*' or a comma-separated list of origins
//   --max-concurrent / SPARROW_MAX_CONCURRENT   4
//   --max-queue / SPARROW_MAX_QUEUE       16
//   --max-body-bytes / SPARROW_MAX_BODY_BYTES   1048576
//   --session-dir / SPARROW_SESSION_DIR   none (sessions live in memory only)
//   --max-sessions / SPARROW_MAX_SESSIONS       256 kept in memory
//   --build / SPARROW_WASM                simd (the build Workers run, so a seed gives the same text everywhere)
//   --max-context / SPARROW_MAX_CONTEXT   the model's, at most 4096
//   --memory-budget / SPARROW_MEMORY_BUDGET     none (bytes; 503 with the numbers when the model needs more)

import { existsSync, readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { loadModel, type LanguageModel } from '../src/index';
import type { BuildChoice } from '../src/kernels/runtime';
import { BROWSER_BUNDLE_PATH, createApp, type BrowserFiles, type SparrowApp } from './app';
import { DirSessionStore, MemorySessionStore, TieredSessionStore, type SessionStore } from './store';

export interface LocalConfig {
  host: string;
  port: number;
  model: string;
  modelId: string;
  apiKey?: string;
  cors?: true | string[];
  maxConcurrent: number;
  maxQueue: number;
  maxBodyBytes: number;
  sessionDir?: string;
  maxSessions: number;
  build: BuildChoice;
  maxContext?: number;
  memoryBudget?: number;
}

export class SettingsError extends Error {}

const FLAGS: Record<string, { env: string[]; kind: 'string' | 'int' }> = {
  host: { env: ['SPARROW_HOST'], kind: 'string' },
  port: { env: ['SPARROW_PORT', 'PORT'], kind: 'int' },
  model: { env: ['SPARROW_MODEL'], kind: 'string' },
  'model-id': { env: ['SPARROW_MODEL_ID'], kind: 'string' },
  'api-key': { env: ['SPARROW_API_KEY'], kind: 'string' },
  cors: { env: ['SPARROW_CORS'], kind: 'string' },
  'max-concurrent': { env: ['SPARROW_MAX_CONCURRENT'], kind: 'int' },
  'max-queue': { env: ['SPARROW_MAX_QUEUE'], kind: 'int' },
  'max-body-bytes': { env: ['SPARROW_MAX_BODY_BYTES'], kind: 'int' },
  'session-dir': { env: ['SPARROW_SESSION_DIR'], kind: 'string' },
  'max-sessions': { env: ['SPARROW_MAX_SESSIONS'], kind: 'int' },
  build: { env: ['SPARROW_WASM'], kind: 'string' },
  'max-context': { env: ['SPARROW_MAX_CONTEXT'], kind: 'int' },
  'memory-budget': { env: ['SPARROW_MEMORY_BUDGET'], kind: 'int' },
};

export const USAGE = `Usage: sparrow serve [options]   (also: edge/node.ts, edge/bun.ts, edge/deno.ts)

OpenAI-compatible server for one model: /v1/models, /v1/completions, /v1/chat/completions (stream: true
for server-sent events), /v1/sessions/:id, /healthz, and a chat page at /.

Options (environment variable in brackets):
  --host H              [SPARROW_HOST] address to listen on (default 127.0.0.1)
  --port N              [PORT, SPARROW_PORT] port (default 8080; 0 picks a free one)
  --model M             [SPARROW_MODEL] HF directory, .gguf or .safetensors (default models/sparrow-mini)
  --model-id ID         [SPARROW_MODEL_ID] the name clients use (default: the model's file or directory name)
  --api-key K           [SPARROW_API_KEY] require "Authorization: Bearer K" on /v1/*
  --cors O              [SPARROW_CORS] allow browsers from origin(s) O ('*' or a comma-separated list)
  --max-concurrent N    [SPARROW_MAX_CONCURRENT] generations at once (default 4)
  --max-queue N         [SPARROW_MAX_QUEUE] generations waiting; more get 429 (default 16)
  --max-body-bytes N    [SPARROW_MAX_BODY_BYTES] largest request body; larger get 413 (default 1048576)
  --session-dir D       [SPARROW_SESSION_DIR] keep session state in files under D too
  --max-sessions N      [SPARROW_MAX_SESSIONS] sessions kept in memory (default 256)
  --build B             [SPARROW_WASM] kernel build: simd (default), relaxed, auto
  --max-context N       [SPARROW_MAX_CONTEXT] positions per session (default: the model's, at most 4096)
  --memory-budget N     [SPARROW_MEMORY_BUDGET] bytes the model may take; more gives 503
  --help                this text
`;

function envGet(name: string): string | undefined {
  const g = globalThis as any;
  try {
    if (g.Deno?.env?.get) return g.Deno.env.get(name) ?? undefined;
  } catch {
    return undefined; // no --allow-env: flags and defaults only
  }
  return g.process?.env?.[name];
}

function defaultModel(): string {
  return fileURLToPath(new URL('../models/sparrow-mini/', import.meta.url));
}

function idOf(path: string): string {
  const base = path.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? 'model';
  return base.replace(/\.(gguf|safetensors)$/i, '') || 'model';
}

/** Settings from a command line and the environment; SettingsError on anything malformed. */
export function localConfig(args: string[]): LocalConfig | 'help' {
  const given: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--help' || a === '-h') return 'help';
    if (!a.startsWith('--')) throw new SettingsError(`unexpected argument ${JSON.stringify(a)} (see --help)`);
    const eq = a.indexOf('=');
    const key = a.slice(2, eq < 0 ? undefined : eq);
    if (!FLAGS[key]) throw new SettingsError(`unknown option --${key} (see --help)`);
    if (eq >= 0) given[key] = a.slice(eq + 1);
    else if (i + 1 < args.length) given[key] = args[++i];
    else throw new SettingsError(`option --${key} needs a value`);
  }
  const get = (k: string): string | undefined => {
    if (given[k] !== undefined) return given[k];
    for (const e of FLAGS[k].env) {
      const v = envGet(e);
      if (v !== undefined && v !== '') return v;
    }
    return undefined;
  };
  const int = (k: string, dflt: number | undefined, min: number): number | undefined => {
    const v = get(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min) throw new SettingsError(`--${k} must be an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const model = get('model') ?? defaultModel();
  const build = (get('build') ?? 'simd') as BuildChoice;
  if (!['simd', 'relaxed', 'auto'].includes(build)) throw new SettingsError(`--build must be simd, relaxed or auto, got ${JSON.stringify(build)}`);
  const corsV = get('cors');
  return {
    host: get('host') ?? '127.0.0.1',
    port: int('port', 8080, 0)!,
    model,
    modelId: get('model-id') ?? idOf(model),
    apiKey: get('api-key'),
    cors: corsV === undefined ? undefined : corsV === '*' ? true : corsV.split(',').map((s) => s.trim()).filter(Boolean),
    maxConcurrent: int('max-concurrent', 4, 1)!,
    maxQueue: int('max-queue', 16, 0)!,
    maxBodyBytes: int('max-body-bytes', 1 << 20, 1)!,
    sessionDir: get('session-dir'),
    maxSessions: int('max-sessions', 256, 1)!,
    build,
    maxContext: int('max-context', undefined, 1),
    memoryBudget: int('memory-budget', undefined, 1),
  };
}

export function localStore(cfg: LocalConfig): SessionStore {
  const mem = new MemorySessionStore({ maxEntries: cfg.maxSessions });
  return cfg.sessionDir ? new TieredSessionStore(mem, new DirSessionStore(cfg.sessionDir)) : mem;
}

export function runtimeName(): string {
  const g = globalThis as any;
  if (g.Bun) return `bun ${g.Bun.version}`;
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  return `node ${g.process?.versions?.node}`;
}

/** A file as an HTTP response: whole, or one byte range (206) when the request asks for one. */
export async function fileResponse(path: string, type: string, req: Request): Promise<Response | null> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, 'r');
  } catch {
    return null;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return null;
    const size = st.size;
    const headers: Record<string, string> = { 'content-type': type, 'accept-ranges': 'bytes', 'cache-control': 'no-cache' };
    let start = 0, end = size - 1, status = 200;
    const range = req.headers.get('range');
    if (range !== null) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      if (m && m[1] === '' && m[2] !== '') start = Math.max(0, size - Number(m[2]));
      else if (m && m[1] !== '') {
        start = Number(m[1]);
        if (m[2] !== '') end = Math.min(Number(m[2]), size - 1);
      }
      if (!m || (m[1] === '' && m[2] === '') || start > end || start >= size) {
        return new Response(null, { status: 416, headers: { 'content-range': `bytes */${size}` } });
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
    const body = new Uint8Array(Math.max(0, end - start + 1));
    headers['content-length'] = String(body.length);
    if (req.method === 'HEAD') return new Response(null, { status, headers });
    for (let done = 0; done < body.length;) {
      const { bytesRead } = await fh.read(body, done, body.length - done, start + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return new Response(body, { status, headers });
  } finally {
    await fh.close().catch(() => {});
  }
}

/**
 * The chat page's in-browser mode on a local server: the bundle and kernels from build/, and the
 * model when it is one GGUF (the file itself, or the only .gguf of the model directory), since the
 * page loads a single file that carries its tokenizer and chat template. Undefined otherwise.
 */
export function localBrowserFiles(cfg: LocalConfig): BrowserFiles | undefined {
  const build = (name: string) => fileURLToPath(new URL(`../build/${name}`, import.meta.url));
  // Without the bundle (tools/browser-build.mjs not run) the page offers the server only.
  if (!existsSync(build('browser/sparrow.js'))) return undefined;
  let gguf: string | undefined;
  try {
    if (statSync(cfg.model).isDirectory()) {
      const found = readdirSync(cfg.model).filter((f) => /\.gguf$/i.test(f)).sort();
      if (found.length === 1) gguf = cfg.model.replace(/[\\/]+$/, '') + '/' + found[0];
    } else if (/\.gguf$/i.test(cfg.model)) gguf = cfg.model;
  } catch {
    return undefined;
  }
  if (!gguf) return undefined;
  const modelFile = gguf;
  // Path segments kept to characters a route matches literally.
  const segment = (x: string) => x.replace(/[^\w.-]/g, '_');
  const modelPath = `/models/${segment(cfg.modelId)}/${segment(modelFile.split(/[\\/]/).pop()!)}`;
  const files: Record<string, [string, string]> = {
    [BROWSER_BUNDLE_PATH]: [build('browser/sparrow.js'), 'text/javascript; charset=utf-8'],
    '/build/simd.wasm': [build('simd.wasm'), 'application/wasm'],
    '/build/relaxed.wasm': [build('relaxed.wasm'), 'application/wasm'],
    [modelPath]: [modelFile, 'application/octet-stream'],
  };
  return {
    modelPath,
    get: async (path, req) => (files[path] ? fileResponse(files[path][0], files[path][1], req) : null),
  };
}

export function localApp(cfg: LocalConfig, browser?: BrowserFiles): SparrowApp {
  return createApp({
    loadModel: (): Promise<LanguageModel> => loadModel(cfg.model, {
      build: cfg.build,
      maxContext: cfg.maxContext,
      memoryBudget: cfg.memoryBudget,
      // Sessions live in slots only while they generate; the queue bounds how many do.
      maxSessions: cfg.maxConcurrent + 1,
    }),
    modelId: cfg.modelId,
    store: localStore(cfg),
    maxConcurrent: cfg.maxConcurrent,
    maxQueue: cfg.maxQueue,
    apiKey: cfg.apiKey,
    cors: cfg.cors,
    maxBodyBytes: cfg.maxBodyBytes,
    runtime: runtimeName(),
    browser,
  });
}

/** Settings and app for an adapter; prints usage and exits on --help, one line and exit 2 on bad settings. */
export function setup(args: string[]): { cfg: LocalConfig; app: SparrowApp } {
  let cfg: LocalConfig | 'help';
  const g = globalThis as any;
  const exit = (code: number) => (g.Deno ? g.Deno.exit(code) : g.process.exit(code));
  try {
    cfg = localConfig(args);
  } catch (e) {
    if (!(e instanceof SettingsError)) throw e;
    console.error(`sparrow serve: ${e.message}`);
    return exit(2);
  }
  if (cfg === 'help') {
    console.log(USAGE);
    return exit(0);
  }
  return { cfg, app: localApp(cfg, localBrowserFiles(cfg)) };
}

/** Announces the address (tests and scripts read this line) and loads the model in the background. */
export function started(cfg: LocalConfig, app: SparrowApp, port: number): void {
  const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
  console.log(`sparrow: listening on http://${host}:${port} (model ${cfg.modelId}, ${runtimeName()}${cfg.apiKey ? ', API key required' : ''})`);
  const t0 = performance.now();
  app.ready().then(
    (lm) => console.log(`sparrow: model loaded in ${Math.round(performance.now() - t0)} ms (${lm.info().build} build, context ${lm.maxContext})`),
    (e) => console.error(`sparrow: the model is not available: ${(e as Error)?.message ?? e}`),
  );
}
