// What the Deno, Bun and Node adapters share: settings from flags and environment, the model loaded
// from a local path (default: the embedded models/sparrow-mini), the session store (memory, or
// memory in front of a directory), and what happens at start: the session directory is checked,
// the model loaded, and a model that cannot load stops the server unless told otherwise.
//
// Settings: a flag, else its environment variable, else the default (SERVER_OPTIONS; USAGE lists
// them all).

import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ArgsError, optionsHelp, parseArgs, type OptionsSpec, type ParsedArgs } from '../src/args';
import { ChatTemplate, ConfigError, KV_CACHE_TYPES, loadModel, parseAttentionFlag, resolveAttention, type AttentionModeOptions, type KvCacheType, type LanguageModel } from '../src/index';
import { resolveModelSource } from '../src/formats/hub';
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
  /** The text of a chat template used instead of the model's. */
  chatTemplate?: string;
  /** States of finished requests kept for reuse by later prompts; 0: off. */
  promptCache: number;
  build: BuildChoice;
  maxContext?: number;
  memoryBudget?: number;
  /** Element type of the attention KV caches (loadModel's kvCache). */
  kvCache: KvCacheType;
  /** Attention at decode (loadModel's attention): dense, or sparse top-k pages. */
  attention: AttentionModeOptions;
  /** The chat page's in-browser files: 'auto' serves them only when no API key is set. */
  browserFiles: BrowserFilesMode;
  keepUpOnLoadFailure: boolean;
  accessLog: boolean;
  /** Seconds a generation request may take in all; 0: no limit. */
  requestTimeout: number;
  /** Seconds an idle connection is kept open (Node and Bun); 0: no limit. */
  idleTimeout: number;
  /** Batched decoding of concurrent generations (LanguageModel.batching). */
  batch: boolean;
}

export class SettingsError extends Error {}

/** The server's options, their environment variables and defaults. */
const SERVER_OPTIONS = {
  host: { type: 'string', arg: 'H', env: ['SPARROW_HOST'], desc: 'address to listen on', default: '127.0.0.1' },
  port: { type: 'int', arg: 'N', env: ['SPARROW_PORT', 'PORT'], desc: 'port; 0 picks a free one', min: 0, max: 65535, default: 8080 },
  model: { type: 'string', arg: 'M', env: ['SPARROW_MODEL'], desc: 'HF directory, .gguf or .safetensors', defaultText: 'models/sparrow-mini' },
  'model-id': { type: 'string', arg: 'ID', env: ['SPARROW_MODEL_ID'], desc: 'the name clients use', defaultText: "the model's file or directory name" },
  'api-key': {
    type: 'list', arg: 'K', env: ['SPARROW_API_KEY'], commas: true,
    desc: 'require "Authorization: Bearer K" on /v1/*; several keys: repeat the option or separate them with commas. A session belongs to the key that created it',
  },
  cors: { type: 'string', arg: 'O', env: ['SPARROW_CORS'], desc: "allow browsers from origin(s) O ('*' or a comma-separated list)" },
  'allowed-hosts': {
    type: 'list', arg: 'H', env: ['SPARROW_ALLOWED_HOSTS'], commas: true,
    desc: "Host header values answered, others get 403: host:port, or host for any port; comma-separated or repeated; '*' answers any",
    defaultText: 'bound to loopback, 127.0.0.1, localhost and [::1] with the port; bound to another address, that address with the port; bound to 0.0.0.0 or ::, any',
  },
  'max-concurrent': { type: 'int', arg: 'N', env: ['SPARROW_MAX_CONCURRENT'], desc: 'generations at once', min: 1, default: 4 },
  'max-queue': { type: 'int', arg: 'N', env: ['SPARROW_MAX_QUEUE'], desc: 'generations waiting; more get 429', min: 0, default: 16 },
  'max-body-bytes': { type: 'int', arg: 'N', env: ['SPARROW_MAX_BODY_BYTES'], desc: 'largest request body; larger get 413', min: 1, default: 1 << 20 },
  'session-dir': {
    type: 'string', arg: 'D', env: ['SPARROW_SESSION_DIR'],
    desc: 'keep session state in files under D too; D must be writable (checked at start); leftover *.tmp files of a crash are removed at start',
  },
  'session-dir-max-bytes': {
    type: 'int', arg: 'N', env: ['SPARROW_SESSION_DIR_MAX_BYTES'], min: 1, default: 1024 * 1024 * 1024, defaultText: '1073741824 (1 GiB)',
    desc: 'bytes of session files kept in D; the least recently used are removed beyond',
  },
  'max-sessions': { type: 'int', arg: 'N', env: ['SPARROW_MAX_SESSIONS'], desc: 'sessions kept in memory', min: 1, default: 256 },
  'chat-template': {
    type: 'string', arg: 'F', env: ['SPARROW_CHAT_TEMPLATE'],
    desc: "a Jinja chat template file used instead of the model's (e.g. one that renders tools)",
  },
  'prompt-cache': {
    type: 'int', arg: 'N', env: ['SPARROW_PROMPT_CACHE'], min: 0, default: 4,
    desc: 'states of finished requests kept for later prompts that begin with the same tokens (freed first when a request needs the memory); 0: off',
  },
  batch: {
    type: 'string', arg: 'on|off', env: ['SPARROW_BATCH'], choices: ['on', 'off'], default: 'on',
    desc: 'batched decoding: concurrent generations advance together, one pass over the weights per step for all of them, with new prompts fed in chunks between steps; each gets the text it gets alone',
  },
  build: { type: 'string', arg: 'B', env: ['SPARROW_WASM'], desc: 'kernel build', choices: ['simd', 'relaxed', 'auto'], default: 'simd' },
  'max-context': { type: 'int', arg: 'N', env: ['SPARROW_MAX_CONTEXT'], desc: 'positions per session', min: 1, defaultText: "the model's, at most 4096" },
  'memory-budget': { type: 'int', arg: 'N', env: ['SPARROW_MEMORY_BUDGET'], desc: 'bytes the model may take; more gives 503', min: 1 },
  'kv-cache': {
    type: 'string', arg: 'T', env: ['SPARROW_KV_CACHE'], choices: KV_CACHE_TYPES, default: 'f32',
    desc: 'attention KV cache type: q8_0 and q4_0 hold 0.27× and 0.14× the bytes of f32 per token (longer contexts, more sessions and cached prompts in the same memory), at a small logits error',
  },
  attention: {
    type: 'string', arg: 'A', env: ['SPARROW_ATTENTION'], default: 'dense',
    desc: 'attention at decode: dense, or topk[:pages=16,page=64,sinks=4,window=256] (sparse top-k KV pages for long contexts; prompts stay dense, shorter contexts are exact)',
  },
  'browser-files': {
    type: 'string', arg: 'W', env: ['SPARROW_BROWSER_FILES'], choices: ['auto', 'on', 'off'], default: 'auto',
    desc: "the chat page's in-browser mode files (/models/<id>/<file>, /build/*.wasm, /browser/sparrow.js), served without auth; auto: only when no API key is set. Not served, they answer 404 and the page offers the server only",
  },
  'keep-up-on-load-failure': {
    type: 'boolean', env: ['SPARROW_KEEP_UP_ON_LOAD_FAILURE'],
    desc: 'when the model cannot be loaded, keep serving (503, and /healthz says why) instead of exiting with status 1',
  },
  'access-log': {
    type: 'boolean', env: ['SPARROW_ACCESS_LOG'],
    desc: 'one line per request on stderr: time, method, path, status, duration, bytes sent, and tokens (prompt+completion) for generations',
  },
  'request-timeout': {
    type: 'int', arg: 'S', env: ['SPARROW_REQUEST_TIMEOUT'], min: 0, default: 0,
    desc: 'seconds a generation request may take, waiting in the queue included; beyond, it is stopped and answered 504 (streamed: an error event); 0: no limit',
  },
  'idle-timeout': {
    // Bun takes at most 255 seconds.
    type: 'int', arg: 'S', env: ['SPARROW_IDLE_TIMEOUT'], min: 0, max: 255, default: 10,
    desc: "seconds an idle connection is kept open, at most 255: Node's keep-alive timeout, Bun's idle timeout (lifted while a generation request runs); Deno does not let it be set; 0: no limit",
  },
} as const satisfies OptionsSpec;

export const USAGE = `Usage: sparrow serve [options]   (also: edge/node.ts, edge/bun.ts, edge/deno.ts)

OpenAI-compatible server for one model: /v1/models, /v1/completions, /v1/chat/completions (stream: true
for server-sent events), /v1/embeddings, /v1/sessions (POST creates one) and /v1/sessions/:id, /healthz,
and a chat page at /.
POST bodies must be sent as "Content-Type: application/json" (415 otherwise).

Options (environment variables in brackets, read when the option is not given):
${optionsHelp(SERVER_OPTIONS)}`;

function defaultModel(): string {
  return fileURLToPath(new URL('../models/sparrow-mini/', import.meta.url));
}

function idOf(path: string): string {
  const base = path.replace(/[\\/]+$/, '').split(/[\\/]/).pop() ?? 'model';
  return base.replace(/\.(gguf|safetensors)$/i, '') || 'model';
}

/** The text of --chat-template F, checked to parse; SettingsError when it cannot be read or does not parse. */
function templateFile(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new SettingsError(`--chat-template ${path} cannot be read: ${(e as Error).message}`);
  }
  try {
    new ChatTemplate(text);
  } catch (e) {
    throw new SettingsError(`--chat-template ${path}: ${(e as Error).message}`);
  }
  return text;
}

/** Settings from a command line and the environment; SettingsError on anything malformed. */
export function localConfig(args: string[]): LocalConfig | 'help' {
  let parsed: ParsedArgs<typeof SERVER_OPTIONS>;
  try {
    parsed = parseArgs(args, SERVER_OPTIONS, { helpHint: '--help' });
  } catch (e) {
    if (e instanceof ArgsError) throw new SettingsError(e.message);
    throw e;
  }
  if (parsed.help) return 'help';
  const { values: v, positionals } = parsed;
  if (positionals.length) throw new SettingsError(`unexpected argument ${JSON.stringify(positionals[0])} (see --help)`);
  const model = v.model ?? defaultModel();
  const apiKeys = v['api-key'] ?? [];
  if (v['api-key'] !== undefined && apiKeys.length === 0) throw new SettingsError('--api-key is empty');
  const hosts = v['allowed-hosts'];
  if (hosts && hosts.length === 0) throw new SettingsError(`--allowed-hosts is empty (use '*' to answer any Host)`);
  const cors = v.cors;
  return {
    host: v.host,
    port: v.port,
    model,
    modelId: v['model-id'] ?? idOf(model),
    apiKeys,
    cors: cors === undefined ? undefined : cors === '*' ? true : cors.split(',').map((s) => s.trim()).filter(Boolean),
    allowedHosts: hosts === undefined ? undefined : hosts.includes('*') ? null : hosts,
    maxConcurrent: v['max-concurrent'],
    maxQueue: v['max-queue'],
    maxBodyBytes: v['max-body-bytes'],
    sessionDir: v['session-dir'],
    sessionDirMaxBytes: v['session-dir-max-bytes'],
    maxSessions: v['max-sessions'],
    promptCache: v['prompt-cache'],
    chatTemplate: templateFile(v['chat-template']),
    build: v.build as BuildChoice,
    maxContext: v['max-context'],
    memoryBudget: v['memory-budget'],
    kvCache: v['kv-cache'] as KvCacheType,
    attention: attentionSetting(v.attention),
    browserFiles: v['browser-files'] as BrowserFilesMode,
    keepUpOnLoadFailure: v['keep-up-on-load-failure'],
    accessLog: v['access-log'],
    requestTimeout: v['request-timeout'],
    idleTimeout: v['idle-timeout'],
    batch: v.batch === 'on',
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

/**
 * What --model names, as resolveModelSource decides: a URL or an existing path as it is, a Hugging
 * Face hub name as its download in the hub cache, fetched if need be; anything else as given, for
 * loadModel to report.
 */
async function modelPath(model: string): Promise<string> {
  const path = await resolveModelSource(model, {
    progress: {
      start: (file, size, from, repo) => console.error(`sparrow: downloading ${repo}/${file}${size === undefined ? '' : ` (${size} bytes)`}${from ? `, resuming at byte ${from}` : ''}`),
      note: (m) => console.error(`sparrow: ${m}`),
    },
  });
  return path ?? model;
}

/** The --attention value, checked: a bad one is a SettingsError naming the flag. */
function attentionSetting(text: string): AttentionModeOptions {
  try {
    const o = parseAttentionFlag(text);
    resolveAttention(o);
    return o;
  } catch (e) {
    if (e instanceof ConfigError) {
      const sub = e.field.replace(/^options\.attention\.?/, '');
      throw new SettingsError(`--attention ${sub ? `${sub}: ` : ''}${e.detail}`);
    }
    throw e;
  }
}

export function localApp(cfg: LocalConfig, browser?: BrowserFiles, store: SessionStore = localStore(cfg)): SparrowApp {
  return createApp({
    loadModel: async (): Promise<LanguageModel> => loadModel(await modelPath(cfg.model), {
      build: cfg.build,
      maxContext: cfg.maxContext,
      memoryBudget: cfg.memoryBudget,
      kvCache: cfg.kvCache,
      attention: cfg.attention,
      // Sessions live in slots only while they generate; the queue bounds how many do.
      maxSessions: cfg.maxConcurrent + 1,
      chatTemplate: cfg.chatTemplate,
      batching: cfg.batch,
    }),
    modelId: cfg.modelId,
    store,
    maxConcurrent: cfg.maxConcurrent,
    maxQueue: cfg.maxQueue,
    promptCache: cfg.promptCache,
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
