// What the Deno, Bun and Node adapters share: settings from flags and environment, the model loaded
// from a local path (default: the embedded models/sparrow-mini), the session store (memory, or
// memory in front of a directory), and what happens at start: the session directory is checked,
// the model loaded, and a model that cannot load stops the server unless told otherwise.
//
// Settings: a flag, else its environment variable, else the default (USAGE lists them all).

import { existsSync, readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { loadModel, type LanguageModel } from '../src/index';
import type { BuildChoice } from '../src/kernels/runtime';
import { BROWSER_BUNDLE_PATH, createApp, type BrowserFiles, type SparrowApp } from './app';
import { DirSessionStore, MemorySessionStore, TieredSessionStore, type SessionStore } from './store';

export type BrowserFilesMode = 'auto' | 'on' | 'off';

export interface LocalConfig {
  host: string;
  /** The port asked for; once the server listens (started()), the port it listens on. */
  port: number;
  model: string;
  modelId: string;
  /** Accepted API keys; none: no auth. */
  apiKeys: string[];
  cors?: true | string[];
  /** Host header values answered (`host:port`, or `host` for any port); null: any; absent: from --host and the port. */
  allowedHosts?: string[] | null;
  maxConcurrent: number;
  maxQueue: number;
  maxBodyBytes: number;
  sessionDir?: string;
  sessionDirMaxBytes: number;
  maxSessions: number;
  build: BuildChoice;
  maxContext?: number;
  memoryBudget?: number;
  /** The chat page's in-browser files: 'auto' serves them only when no API key is set. */
  browserFiles: BrowserFilesMode;
  keepUpOnLoadFailure: boolean;
  accessLog: boolean;
  /** Seconds a generation request may take in all; 0: no limit. */
  requestTimeout: number;
  /** Seconds an idle connection is kept open (Node and Bun); 0: no limit. */
  idleTimeout: number;
}

export class SettingsError extends Error {}

type FlagKind = 'string' | 'int' | 'bool' | 'list';

/** Flags, their environment variables and kinds; a 'list' flag may be repeated or comma-separated. */
const FLAGS: Record<string, { env: string[]; kind: FlagKind }> = {
  host: { env: ['SPARROW_HOST'], kind: 'string' },
  port: { env: ['SPARROW_PORT', 'PORT'], kind: 'int' },
  model: { env: ['SPARROW_MODEL'], kind: 'string' },
  'model-id': { env: ['SPARROW_MODEL_ID'], kind: 'string' },
  'api-key': { env: ['SPARROW_API_KEY'], kind: 'list' },
  cors: { env: ['SPARROW_CORS'], kind: 'string' },
  'allowed-hosts': { env: ['SPARROW_ALLOWED_HOSTS'], kind: 'list' },
  'max-concurrent': { env: ['SPARROW_MAX_CONCURRENT'], kind: 'int' },
  'max-queue': { env: ['SPARROW_MAX_QUEUE'], kind: 'int' },
  'max-body-bytes': { env: ['SPARROW_MAX_BODY_BYTES'], kind: 'int' },
  'session-dir': { env: ['SPARROW_SESSION_DIR'], kind: 'string' },
  'session-dir-max-bytes': { env: ['SPARROW_SESSION_DIR_MAX_BYTES'], kind: 'int' },
  'max-sessions': { env: ['SPARROW_MAX_SESSIONS'], kind: 'int' },
  build: { env: ['SPARROW_WASM'], kind: 'string' },
  'max-context': { env: ['SPARROW_MAX_CONTEXT'], kind: 'int' },
  'memory-budget': { env: ['SPARROW_MEMORY_BUDGET'], kind: 'int' },
  'browser-files': { env: ['SPARROW_BROWSER_FILES'], kind: 'string' },
  'keep-up-on-load-failure': { env: ['SPARROW_KEEP_UP_ON_LOAD_FAILURE'], kind: 'bool' },
  'access-log': { env: ['SPARROW_ACCESS_LOG'], kind: 'bool' },
  'request-timeout': { env: ['SPARROW_REQUEST_TIMEOUT'], kind: 'int' },
  'idle-timeout': { env: ['SPARROW_IDLE_TIMEOUT'], kind: 'int' },
};

export const USAGE = `Usage: sparrow serve [options]   (also: edge/node.ts, edge/bun.ts, edge/deno.ts)

OpenAI-compatible server for one model: /v1/models, /v1/completions, /v1/chat/completions (stream: true
for server-sent events), /v1/sessions (POST creates one) and /v1/sessions/:id, /healthz, and a chat page at /.
POST bodies must be sent as "Content-Type: application/json" (415 otherwise).

Options (environment variable in brackets):
  --host H              [SPARROW_HOST] address to listen on (default 127.0.0.1)
  --port N              [PORT, SPARROW_PORT] port (default 8080; 0 picks a free one)
  --model M             [SPARROW_MODEL] HF directory, .gguf or .safetensors (default models/sparrow-mini)
  --model-id ID         [SPARROW_MODEL_ID] the name clients use (default: the model's file or directory name)
  --api-key K           [SPARROW_API_KEY] require "Authorization: Bearer K" on /v1/*; several keys: repeat the
                        option or separate them with commas. A session belongs to the key that created it
  --cors O              [SPARROW_CORS] allow browsers from origin(s) O ('*' or a comma-separated list)
  --allowed-hosts H     [SPARROW_ALLOWED_HOSTS] Host header values answered, others get 403: host:port, or host
                        for any port; comma-separated or repeated; '*' answers any. Default: bound to loopback,
                        127.0.0.1, localhost and [::1] with the port; bound to another address, that address
                        with the port; bound to 0.0.0.0 or ::, any
  --max-concurrent N    [SPARROW_MAX_CONCURRENT] generations at once (default 4)
  --max-queue N         [SPARROW_MAX_QUEUE] generations waiting; more get 429 (default 16)
  --max-body-bytes N    [SPARROW_MAX_BODY_BYTES] largest request body; larger get 413 (default 1048576)
  --session-dir D       [SPARROW_SESSION_DIR] keep session state in files under D too; D must be writable (checked
                        at start); leftover *.tmp files of a crash are removed at start
  --session-dir-max-bytes N   [SPARROW_SESSION_DIR_MAX_BYTES] bytes of session files kept in D; the least recently
                        used are removed beyond (default 1073741824, 1 GiB)
  --max-sessions N      [SPARROW_MAX_SESSIONS] sessions kept in memory (default 256)
  --build B             [SPARROW_WASM] kernel build: simd (default), relaxed, auto
  --max-context N       [SPARROW_MAX_CONTEXT] positions per session (default: the model's, at most 4096)
  --memory-budget N     [SPARROW_MEMORY_BUDGET] bytes the model may take; more gives 503
  --browser-files W     [SPARROW_BROWSER_FILES] the chat page's in-browser mode files (/models/<id>/<file>, /build/*.wasm,
                        /browser/sparrow.js), served without auth: auto (default: only when no API key is set), on, off.
                        Not served, they answer 404 and the page offers the server only
  --keep-up-on-load-failure   [SPARROW_KEEP_UP_ON_LOAD_FAILURE=1] when the model cannot be loaded, keep serving (503,
                        and /healthz says why) instead of exiting with status 1
  --access-log          [SPARROW_ACCESS_LOG=1] one line per request on stderr: time, method, path, status,
                        duration, bytes sent, and tokens (prompt+completion) for generations
  --request-timeout S   [SPARROW_REQUEST_TIMEOUT] seconds a generation request may take, waiting in the queue
                        included; beyond, it is stopped and answered 504 (streamed: an error event) (default 0: none)
  --idle-timeout S      [SPARROW_IDLE_TIMEOUT] seconds an idle connection is kept open: Node's keep-alive timeout,
                        Bun's idle timeout (lifted while a generation request runs); Deno does not let it be set
                        (default 10, at most 255; 0: none)
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
    const flag = FLAGS[key];
    if (!flag) throw new SettingsError(`unknown option --${key} (see --help)`);
    let v: string;
    if (eq >= 0) v = a.slice(eq + 1);
    else if (flag.kind === 'bool') v = 'true';
    else if (i + 1 < args.length) v = args[++i];
    else throw new SettingsError(`option --${key} needs a value`);
    given[key] = flag.kind === 'list' && given[key] !== undefined ? `${given[key]},${v}` : v;
  }
  const get = (k: string): string | undefined => {
    if (given[k] !== undefined) return given[k];
    for (const e of FLAGS[k].env) {
      const v = envGet(e);
      if (v !== undefined && v !== '') return v;
    }
    return undefined;
  };
  const int = (k: string, dflt: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined => {
    const v = get(k);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!/^\s*-?\d+\s*$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new SettingsError(`--${k} must be an integer ≥ ${min}${max < Number.MAX_SAFE_INTEGER ? ` and ≤ ${max}` : ''}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  const bool = (k: string): boolean => {
    const v = get(k);
    if (v === undefined) return false;
    if (/^(1|true|yes|on)$/i.test(v.trim())) return true;
    if (/^(0|false|no|off)$/i.test(v.trim())) return false;
    throw new SettingsError(`--${k} takes no value, or true or false; got ${JSON.stringify(v)}`);
  };
  const list = (k: string): string[] | undefined => {
    const v = get(k);
    return v === undefined ? undefined : v.split(',').map((x) => x.trim()).filter(Boolean);
  };
  const model = get('model') ?? defaultModel();
  const build = (get('build') ?? 'simd') as BuildChoice;
  if (!['simd', 'relaxed', 'auto'].includes(build)) throw new SettingsError(`--build must be simd, relaxed or auto, got ${JSON.stringify(build)}`);
  const browserFiles = (get('browser-files') ?? 'auto') as BrowserFilesMode;
  if (!['auto', 'on', 'off'].includes(browserFiles)) throw new SettingsError(`--browser-files must be auto, on or off, got ${JSON.stringify(browserFiles)}`);
  const corsV = get('cors');
  const apiKeys = list('api-key') ?? [];
  if (get('api-key') !== undefined && apiKeys.length === 0) throw new SettingsError('--api-key is empty');
  const hosts = list('allowed-hosts');
  if (hosts && hosts.length === 0) throw new SettingsError(`--allowed-hosts is empty (use '*' to answer any Host)`);
  return {
    host: get('host') ?? '127.0.0.1',
    port: int('port', 8080, 0, 65535)!,
    model,
    modelId: get('model-id') ?? idOf(model),
    apiKeys,
    cors: corsV === undefined ? undefined : corsV === '*' ? true : corsV.split(',').map((s) => s.trim()).filter(Boolean),
    allowedHosts: hosts === undefined ? undefined : hosts.includes('*') ? null : hosts,
    maxConcurrent: int('max-concurrent', 4, 1)!,
    maxQueue: int('max-queue', 16, 0)!,
    maxBodyBytes: int('max-body-bytes', 1 << 20, 1)!,
    sessionDir: get('session-dir'),
    sessionDirMaxBytes: int('session-dir-max-bytes', 1024 * 1024 * 1024, 1)!,
    maxSessions: int('max-sessions', 256, 1)!,
    build,
    maxContext: int('max-context', undefined, 1),
    memoryBudget: int('memory-budget', undefined, 1),
    browserFiles,
    keepUpOnLoadFailure: bool('keep-up-on-load-failure'),
    accessLog: bool('access-log'),
    requestTimeout: int('request-timeout', 0, 0)!,
    // Bun takes at most 255 seconds.
    idleTimeout: int('idle-timeout', 10, 0, 255)!,
  };
}

/**
 * The Host values a server bound to `host` answers to by default: on loopback, the loopback names;
 * on one address, that address; each with the port. Null (any Host) when bound to every address.
 */
export function defaultAllowedHosts(host: string, port: number): string[] | null {
  const h = host.trim().toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === '' || h === '0.0.0.0' || h === '::' || h === '::0') return null;
  const names = new Set<string>();
  if (h === 'localhost' || h === '::1' || /^127\./.test(h)) for (const n of ['127.0.0.1', 'localhost', '[::1]']) names.add(n);
  names.add(h.includes(':') ? `[${h}]` : h);
  return [...names].map((n) => `${n}:${port}`);
}

/** The session directory's store (unopened), or none. */
function dirStore(cfg: LocalConfig): DirSessionStore | undefined {
  return cfg.sessionDir ? new DirSessionStore(cfg.sessionDir, { maxBytes: cfg.sessionDirMaxBytes, log: (m, e) => console.error(`sparrow: ${m}`, e ?? '') }) : undefined;
}

export function localStore(cfg: LocalConfig, dir = dirStore(cfg)): SessionStore {
  const mem = new MemorySessionStore({ maxEntries: cfg.maxSessions });
  return dir ? new TieredSessionStore(mem, dir) : mem;
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

export function localApp(cfg: LocalConfig, browser?: BrowserFiles, store: SessionStore = localStore(cfg)): SparrowApp {
  return createApp({
    loadModel: (): Promise<LanguageModel> => loadModel(cfg.model, {
      build: cfg.build,
      maxContext: cfg.maxContext,
      memoryBudget: cfg.memoryBudget,
      // Sessions live in slots only while they generate; the queue bounds how many do.
      maxSessions: cfg.maxConcurrent + 1,
    }),
    modelId: cfg.modelId,
    store,
    maxConcurrent: cfg.maxConcurrent,
    maxQueue: cfg.maxQueue,
    apiKey: cfg.apiKeys,
    cors: cfg.cors,
    // Read per request: the port is known once the server listens.
    allowedHosts: () => (cfg.allowedHosts === undefined ? defaultAllowedHosts(cfg.host, cfg.port) : cfg.allowedHosts),
    accessLog: cfg.accessLog ? (line) => console.error(line) : undefined,
    requestTimeoutMs: cfg.requestTimeout * 1000,
    maxBodyBytes: cfg.maxBodyBytes,
    runtime: runtimeName(),
    browser,
  });
}

/** Whether the in-browser files are served: they carry no auth, so with an API key only when asked for. */
export function servesBrowserFiles(cfg: LocalConfig): boolean {
  return cfg.browserFiles === 'on' || (cfg.browserFiles === 'auto' && cfg.apiKeys.length === 0);
}

function exit(code: number): never {
  const g = globalThis as any;
  if (g.Deno) g.Deno.exit(code);
  else g.process.exit(code);
  throw new Error(`exit(${code}) returned`);
}

/** An error's message on one line. */
function oneLine(e: unknown): string {
  return String((e as Error)?.message ?? e).replace(/\s*\n\s*/g, ' ').trim();
}

/**
 * Settings and app for an adapter; prints usage and exits on --help, one line and exit 2 on bad
 * settings, one line and exit 1 when the session directory cannot be written.
 */
export async function setup(args: string[]): Promise<{ cfg: LocalConfig; app: SparrowApp }> {
  let cfg: LocalConfig | 'help';
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
  const dir = dirStore(cfg);
  if (dir) {
    try {
      await dir.open();
    } catch (e) {
      console.error(`sparrow serve: --session-dir ${cfg.sessionDir} cannot be used: ${oneLine(e)}`);
      return exit(1);
    }
  }
  return { cfg, app: localApp(cfg, servesBrowserFiles(cfg) ? localBrowserFiles(cfg) : undefined, localStore(cfg, dir)) };
}

/**
 * Announces the address (tests and scripts read this line) and loads the model in the background.
 * A model that cannot be loaded stops the process with status 1 and one line on stderr, unless
 * --keep-up-on-load-failure keeps it serving 503s.
 */
export function started(cfg: LocalConfig, app: SparrowApp, port: number): void {
  cfg.port = port;
  const host = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;
  console.log(`sparrow: listening on http://${host}:${port} (model ${cfg.modelId}, ${runtimeName()}${cfg.apiKeys.length ? ', API key required' : ''})`);
  const t0 = performance.now();
  app.ready().then(
    (lm) => console.log(`sparrow: model loaded in ${Math.round(performance.now() - t0)} ms (${lm.info().build} build, context ${lm.maxContext})`),
    (e) => {
      if (cfg.keepUpOnLoadFailure) {
        console.error(`sparrow: the model is not available: ${oneLine(e)} (serving 503 until it loads: --keep-up-on-load-failure)`);
        return;
      }
      console.error(`sparrow: stopping: ${oneLine(e)} (--keep-up-on-load-failure keeps the server up, answering 503)`);
      exit(1);
    },
  );
}
