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

import { fileURLToPath } from 'node:url';
import { loadModel, type LanguageModel } from '../src/index';
import type { BuildChoice } from '../src/kernels/runtime';
import { createApp, type SparrowApp } from './app';
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

export function localApp(cfg: LocalConfig): SparrowApp {
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
  return { cfg, app: localApp(cfg) };
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
