// One Hono app for every runtime (Cloudflare Workers, Deno, Bun, Node): an OpenAI-compatible API
// (models, completions and chat completions streamed as server-sent events, embeddings), conversation
// sessions that resume from saved state instead of re-running their prefix, and a small chat page.
//
// Each runtime adapter passes its own model source (`loadModel`) and session store. The model is
// loaded on first use and shared by all requests; generations interleave token by token on the one
// thread, or advance together one pass per step when the model batches (LanguageModel.batching, on
// in the adapters), bounded by a queue (N running, M waiting, 429 beyond).
//
// Sessions are created by the server (POST /v1/sessions gives an unguessable id) and belong to the
// API key that created them: another key, or a request naming an id that does not exist, gets 404.
//
// The app is composed here: middleware (middleware.ts), route groups (routes/), and one error
// handler that turns every error into its response (errors.ts).

import { Hono } from 'hono';
import type { LanguageModel } from '../src/index';
import { errorHandler, notFound } from './errors';
import { accessLog, apiCors, apiKeyAuth, hostCheck, jsonContentType } from './middleware';
import { embeddingRoutes } from './routes/embeddings';
import { generationRoutes } from './routes/generation';
import { infoRoutes } from './routes/info';
import { pageRoutes } from './routes/page';
import { sessionRoutes } from './routes/sessions';
import { createState, type AppEnv } from './state';
import type { SessionStore } from './store';

export { BROWSER_BUNDLE_PATH } from './routes/page';
export { hostAllowed } from './middleware';
export { newSessionId } from './routes/sessions';

export interface AppOptions {
  /** Loads the model; called once, on the first request that needs it (or from `ready()`). */
  loadModel: () => Promise<LanguageModel>;
  /** The id clients name in `model` (and that /v1/models lists). */
  modelId: string;
  store: SessionStore;
  /** Generations running at once. */
  maxConcurrent: number;
  /** Generations waiting for a place; more are refused with 429. */
  maxQueue: number;
  /**
   * When set, /v1/* needs `Authorization: Bearer <key>` with one of these keys. Sessions belong to
   * the key that created them.
   */
  apiKey?: string | string[];
  /**
   * Host header values the server answers to (others get 403), read on every request: `host:port`,
   * or `host` for any port. Null or absent: any Host. Local servers set it against DNS rebinding;
   * a deployment's hostname is its own, so Workers do not.
   */
  allowedHosts?: () => readonly string[] | null;
  /** When set, one line per request (time, method, path, status, duration, bytes, tokens). */
  accessLog?: (line: string) => void;
  /** Longest a generation request may take, waiting in the queue included (504 beyond); 0 or absent: no limit. */
  requestTimeoutMs?: number;
  /** CORS for /v1/*: true for any origin, or the allowed origin(s). Off by default. */
  cors?: boolean | string | string[];
  /**
   * Sessions of finished requests kept for reuse by later prompts that begin with the same tokens
   * (default 4; 0: off). Each holds a session's state; when a new session finds every state slot
   * taken, the least recently used cached ones are freed first.
   */
  promptCache?: number;
  /** Largest request body accepted (413 beyond). */
  maxBodyBytes: number;
  /** Serves the chat page at GET / (default true). */
  page?: boolean;
  /** Name of the runtime, reported by /healthz. */
  runtime?: string;
  /** Where unexpected errors are reported (default console.error). */
  log?: (msg: string, err?: unknown) => void;
  /** The files of the chat page's in-browser mode; without them the page offers only the server. */
  browser?: BrowserFiles;
}

/**
 * What the chat page needs to run the model itself: the bundled library (build/browser/sparrow.js),
 * the kernel builds and a GGUF that holds its tokenizer and chat template.
 */
export interface BrowserFiles {
  /** URL path of the model file, e.g. /models/sparrow-mini/model.q8_0.gguf. */
  modelPath: string;
  /**
   * The response for GET `path` (BROWSER_BUNDLE_PATH, /build/simd.wasm, /build/relaxed.wasm, or
   * modelPath), honouring Range (the page reads the model in ranges); null when the file is absent.
   */
  get(path: string, req: Request): Promise<Response | null>;
}

export interface SparrowApp extends Hono {
  /** Loads the model now (adapters call it at start-up so the first request does not wait). */
  ready(): Promise<LanguageModel>;
  /** Stops new work and disposes the model once the running generations end. */
  close(): Promise<void>;
}

export function createApp(opts: AppOptions): SparrowApp {
  if (!(opts.maxBodyBytes > 0)) throw new RangeError(`maxBodyBytes must be > 0, got ${opts.maxBodyBytes}`);
  const state = createState(opts);
  const app = new Hono<AppEnv>();

  app.onError(errorHandler(state.log));
  app.notFound(notFound);

  // Middleware runs in the order installed, before the routes mounted below it.
  if (opts.accessLog) app.use('*', accessLog(opts.accessLog));
  if (opts.allowedHosts) app.use('*', hostCheck(opts.allowedHosts));
  if (opts.cors) app.use('/v1/*', apiCors(opts.cors));
  const keys = (Array.isArray(opts.apiKey) ? opts.apiKey : opts.apiKey ? [opts.apiKey] : []).filter((k) => k !== '');
  if (keys.length) app.use('/v1/*', apiKeyAuth(keys));
  app.use('/v1/*', jsonContentType);

  app.route('/', infoRoutes(state));
  app.route('/', pageRoutes(opts));
  app.route('/v1/sessions', sessionRoutes(state));
  app.route('/v1', generationRoutes(state));
  app.route('/v1', embeddingRoutes(state));

  return Object.assign(app as unknown as Hono, {
    ready: async (): Promise<LanguageModel> => (await state.model.get(false)).lm,
    close: async (): Promise<void> => {
      state.closed = true;
      while (state.queue.running > 0) await new Promise((r) => setTimeout(r, 20));
      state.promptCache.clear();
      const served = state.model.served;
      if (served) await served.lm.dispose();
    },
  });
}
