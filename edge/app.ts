// One Hono app for every runtime (Cloudflare Workers, Deno, Bun, Node): an OpenAI-compatible API
// (models, completions, chat completions, streamed as server-sent events), conversation sessions
// that resume from saved state instead of re-running their prefix, and a small chat page.
//
// Each runtime adapter passes its own model source (`loadModel`) and session store. The model is
// loaded on first use and shared by all requests; generations interleave token by token on the one
// thread, bounded by a queue (N running, M waiting, 429 beyond).
//
// Sessions are created by the server (POST /v1/sessions gives an unguessable id) and belong to the
// API key that created them: another key, or a request naming an id that does not exist, gets 404.

import { Hono, type Context } from 'hono';
import { cors as corsMiddleware } from 'hono/cors';
import {
  BudgetError, ContextLengthError, RequestError, SnapshotError, resolveSampling,
  type ChatMessage, type GenerateParams, type GeneratedToken, type Generation, type LanguageModel, type ModelSession,
} from '../src/index';
import { ApiError, apiParamName, badRequest, parseChatRequest, parseCompletionRequest, randomId, type ParsedRequest } from './openai';
import { GenerationQueue, QueueAbortError, QueueFullError } from './queue';
import { SESSION_ID, metaOf, type SessionMeta, type SessionStore, type StoredSession } from './store';
import { chatPage } from './page';
import { chatStopIds } from './chat-stops';

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

export const BROWSER_BUNDLE_PATH = '/browser/sparrow.js';

export interface SparrowApp extends Hono {
  /** Loads the model now (adapters call it at start-up so the first request does not wait). */
  ready(): Promise<LanguageModel>;
  /** Stops new work and disposes the model once the running generations end. */
  close(): Promise<void>;
}


const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
};

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json; charset=utf-8', ...headers } });
}

function errorResponse(e: ApiError): Response {
  return json(e.status, e.body(), e.headers);
}

/** Hex SHA-256 of an API key: what a session stores as its owner (the key itself is never stored). */
async function keyOwner(key: string): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`sparrow-session-owner\n${key}`));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Whether a Host header value is in the list (`host:port` exactly, or `host` for any port). */
export function hostAllowed(host: string, allowed: readonly string[]): boolean {
  const h = host.trim().toLowerCase();
  const m = /^(\[[^\]]*\]|[^:\[\]]*)(?::(\d+))?$/.exec(h);
  if (!m || !m[1]) return false;
  const name = m[1], port = m[2] ?? '80';
  return allowed.some((a) => {
    const e = a.trim().toLowerCase();
    return e === `${name}:${port}` || e === name;
  });
}

/** A session id as the server issues it: unguessable, and within SESSION_ID. */
export function newSessionId(): string {
  return randomId('sess', 32);
}

/** Reads the body as UTF-8, refusing more than `max` bytes whether or not Content-Length says so. */
async function readBody(req: Request, max: number): Promise<string> {
  const tooLarge = () => new ApiError(413, `request body is larger than ${max} bytes`, 'invalid_request_error', null, 'request_too_large', { max_bytes: max });
  const len = req.headers.get('content-length');
  if (len !== null && /^\d+$/.test(len) && Number(len) > max) throw tooLarge();
  if (!req.body) return '';
  const reader = req.body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    let r: { done: boolean; value?: Uint8Array };
    try {
      r = await reader.read();
    } catch {
      throw badRequest('the request body could not be read', null, 'invalid_body');
    }
    if (r.done || !r.value) break;
    n += r.value.byteLength;
    if (n > max) {
      void reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(r.value);
  }
  const all = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.byteLength;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(all);
  } catch {
    throw badRequest('the request body is not valid UTF-8', null, 'invalid_body');
  }
}

async function readJson(req: Request, max: number): Promise<Record<string, unknown>> {
  const text = await readBody(req, max);
  if (!text.trim()) throw badRequest('the request body is empty; send a JSON object', null, 'invalid_body');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw badRequest(`the request body is not valid JSON: ${(e as Error).message.slice(0, 200)}`, null, 'invalid_json');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('the request body must be a JSON object', null, 'invalid_body');
  return v as Record<string, unknown>;
}

/** Constant-time comparison, so the key cannot be found byte by byte from response times. */
function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let d = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) d |= (x[i % (x.length || 1)] ?? 0) ^ (y[i % (y.length || 1)] ?? 0);
  return d === 0 && x.length === y.length;
}

function budgetError(need: number, budget: number): ApiError {
  const mib = (n: number) => (n / 1048576).toFixed(1);
  return new ApiError(503,
    `the model needs ${need} bytes (${mib(need)} MiB) but the memory budget is ${budget} bytes (${mib(budget)} MiB)`,
    'server_error', null, 'model_over_memory_budget', { need_bytes: need, budget_bytes: budget });
}

/** Errors from the library or the runtime as API errors; anything unknown is a 500 (a bug, logged). */
function toApiError(e: unknown): ApiError | null {
  if (e instanceof ApiError) return e;
  if (e instanceof RequestError) {
    const param = apiParamName(e.field);
    const code = e.field === 'prompt' && /context holds/.test(e.detail) ? 'context_length_exceeded' : 'invalid_value';
    return badRequest(`'${param}' ${e.detail}`, param, code);
  }
  if (e instanceof BudgetError) return budgetError(e.need, e.budget);
  // The arena refuses growth past its budget (a session slot) with the sizes attached.
  const any = e as any;
  if (any && typeof any.need === 'number' && typeof any.budget === 'number') return budgetError(any.need, any.budget);
  if (any?.code === 'KERNEL' && /session slots are in use/.test(String(any.message))) {
    return new ApiError(429, String(any.message), 'rate_limit_error', null, 'rate_limit_exceeded', {}, { 'retry-after': '1' });
  }
  if (e instanceof QueueFullError) {
    return new ApiError(429, `${e.message}; retry after ${e.retryAfterS} s`, 'rate_limit_error', null, 'rate_limit_exceeded', {}, { 'retry-after': String(e.retryAfterS) });
  }
  return null;
}

interface Served {
  lm: LanguageModel;
  created: number;
  chatStopIds: number[];
  fingerprint: string;
}

export function createApp(opts: AppOptions): SparrowApp {
  if (!(opts.maxBodyBytes > 0)) throw new RangeError(`maxBodyBytes must be > 0, got ${opts.maxBodyBytes}`);
  const queue = new GenerationQueue(opts.maxConcurrent, opts.maxQueue);
  const log = opts.log ?? ((m: string, e?: unknown) => console.error(`sparrow: ${m}`, e ?? ''));
  const created = Math.floor(Date.now() / 1000);
  const busySessions = new Set<string>();
  let closed = false;

  // ---- the model, loaded once ---------------------------------------------------------------------
  let loading: Promise<Served> | null = null;
  let served: Served | null = null;
  /** A failure that stays (a model over budget stays over budget): every later use gets it at once. */
  let loadFailure: ApiError | null = null;
  /** The last failure of any kind, until a load succeeds (/healthz reports it). */
  let lastLoadError: ApiError | null = null;
  let loadRunning = false;

  /** The model; `report` logs a failure of the load this call starts (ready()'s caller reports its own). */
  function model(report = true): Promise<Served> {
    if (loadFailure) return Promise.reject(loadFailure);
    if (!loading) {
      loadRunning = true;
      loading = opts.loadModel().then((lm) => {
        loadRunning = false;
        lastLoadError = null;
        served = { lm, created, chatStopIds: chatStopIds(lm), fingerprint: `fp_${lm.model.hash.slice(0, 10)}` };
        return served;
      }, (e) => {
        loadRunning = false;
        const api = toApiError(e);
        // A model over budget stays over budget: remember it. Other failures are retried next time.
        if (api?.status === 503) loadFailure = api;
        else loading = null;
        if (report) log('the model failed to load', e);
        lastLoadError = api ?? new ApiError(503, `the model could not be loaded: ${(e as Error)?.message ?? e}`, 'server_error', null, 'model_unavailable');
        throw lastLoadError;
      });
    }
    return loading;
  }

  const app = new Hono() as unknown as SparrowApp;

  // Filled by generate() for the access log: tokens of each request, by request.
  const notes = new WeakMap<Request, string>();
  if (opts.accessLog) {
    const write = opts.accessLog;
    app.use('*', async (c, next) => {
      const at = new Date().toISOString();
      const t0 = performance.now();
      await next();
      const res = c.res;
      const line = (bytes: number, end = '') => {
        const note = notes.get(c.req.raw);
        write(`${at} ${c.req.method} ${c.req.path} ${res.status} ${Math.round(performance.now() - t0)}ms ${bytes}B${note ? ` ${note}` : ''}${end}`);
      };
      if (!res.body) return line(0);
      // The line is written when the body has been sent (or the client went away), counting its bytes.
      const reader = res.body.getReader();
      let bytes = 0;
      const counted = new ReadableStream<Uint8Array>({
        async pull(ctrl) {
          let r: { done: boolean; value?: Uint8Array };
          try {
            r = await reader.read();
          } catch (e) {
            line(bytes, ' failed');
            throw e;
          }
          if (r.done || !r.value) {
            line(bytes);
            ctrl.close();
          } else {
            bytes += r.value.byteLength;
            ctrl.enqueue(r.value);
          }
        },
        cancel(reason) {
          line(bytes, ' client-gone');
          return reader.cancel(reason);
        },
      });
      c.res = new Response(counted, { status: res.status, statusText: res.statusText, headers: res.headers });
    });
  }

  if (opts.allowedHosts) {
    const allowed = opts.allowedHosts;
    app.use('*', async (c, next) => {
      const list = allowed();
      const host = c.req.header('host') ?? new URL(c.req.url).host;
      if (list && !hostAllowed(host, list)) {
        return errorResponse(new ApiError(403, `this server does not answer to the Host ${JSON.stringify(host.slice(0, 200))} (see --allowed-hosts)`,
          'invalid_request_error', null, 'host_not_allowed'));
      }
      return next();
    });
  }

  app.onError((e, c) => {
    const api = toApiError(e);
    if (api) return errorResponse(api);
    log(`${c.req.method} ${c.req.path} failed`, e);
    return errorResponse(new ApiError(500, 'internal error', 'server_error', null, 'internal_error'));
  });
  app.notFound((c) => errorResponse(new ApiError(404, `unknown request URL: ${c.req.method} ${c.req.path}`, 'invalid_request_error', null, 'unknown_url')));

  // Requests that reached the generation endpoints, whatever became of them (/healthz reports it).
  let generationRequests = 0;

  if (opts.cors) {
    const origin = opts.cors === true ? '*' : opts.cors;
    app.use('/v1/*', corsMiddleware({
      origin,
      allowMethods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
      allowHeaders: ['authorization', 'content-type', 'x-session-id', 'openai-organization', 'openai-project', 'x-stainless-os', 'x-stainless-lang',
        'x-stainless-package-version', 'x-stainless-runtime', 'x-stainless-runtime-version', 'x-stainless-arch', 'x-stainless-retry-count',
        'x-stainless-timeout'],
      exposeHeaders: ['x-session-id', 'retry-after', 'x-request-id'],
      maxAge: 600,
    }));
  }

  // The owner of each authenticated request: a hash of its key ('' without keys).
  const owners = new WeakMap<Request, string>();
  const ownerOf = (c: Context) => owners.get(c.req.raw) ?? '';
  const keys = (Array.isArray(opts.apiKey) ? opts.apiKey : opts.apiKey ? [opts.apiKey] : []).filter((k) => k !== '');
  if (keys.length) {
    const keyOwners = Promise.all(keys.map(keyOwner));
    app.use('/v1/*', async (c, next) => {
      if (c.req.method === 'OPTIONS') return next();
      const h = c.req.header('authorization') ?? '';
      const m = /^Bearer\s+(.+)$/i.exec(h.trim());
      // Every key is compared, so the time taken does not tell which one matched.
      let found = -1;
      if (m) keys.forEach((k, i) => {
        if (sameSecret(m[1], k)) found = i;
      });
      if (found < 0) {
        return errorResponse(new ApiError(401, m ? 'incorrect API key provided' : 'missing API key: send "Authorization: Bearer <key>"',
          'invalid_request_error', null, 'invalid_api_key', {}, { 'www-authenticate': 'Bearer' }));
      }
      owners.set(c.req.raw, (await keyOwners)[found]);
      return next();
    });
  }

  // JSON bodies only: a browser sends a cross-site text/plain or form POST without asking (no CORS
  // preflight), never one that says application/json.
  app.use('/v1/*', async (c, next) => {
    if (c.req.method !== 'POST') return next();
    const type = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/json') {
      return errorResponse(new ApiError(415, `the request body must be JSON sent with "Content-Type: application/json"${type ? `, got ${JSON.stringify(type.slice(0, 100))}` : ''}`,
        'invalid_request_error', null, 'unsupported_media_type'));
    }
    return next();
  });

  // ---- informational routes -----------------------------------------------------------------------

  // 200 once the model is loaded; 503 before, saying whether it is still loading or why it failed.
  app.get('/healthz', (c) => {
    const lm = served?.lm;
    const failure = loadFailure ?? (loadRunning ? null : lastLoadError);
    const status = lm ? 'ok' : failure ? 'unavailable' : 'loading';
    const body: Record<string, unknown> = {
      status,
      model: opts.modelId,
      loaded: !!lm,
      runtime: opts.runtime ?? null,
      queue: { running: queue.running, waiting: queue.waiting, max_running: queue.maxRunning, max_waiting: queue.maxWaiting },
      generation_requests: generationRequests,
    };
    if (failure && !lm) body.error = failure.body().error;
    else if (!lm) body.error = { message: 'the model is loading', type: 'server_error', param: null, code: 'model_loading' };
    if (lm) {
      body.build = lm.model.k.build;
      body.memory = { wasm_bytes: lm.model.k.memory.buffer.byteLength, arena_bytes: lm.model.k.arena.top, arena_peak_bytes: lm.model.k.arena.peak };
      body.sessions_in_use = lm.model.slots.inUse;
      body.max_context = lm.maxContext;
    }
    return c.json(body, lm ? 200 : 503);
  });

  const modelObject = () => ({ id: opts.modelId, object: 'model', created, owned_by: 'sparrow' });
  app.get('/v1/models', (c) => c.json({ object: 'list', data: [modelObject()] }));
  app.get('/v1/models/:id{.+}', (c) => {
    if (c.req.param('id') !== opts.modelId) throw new ApiError(404, `the model '${c.req.param('id')}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    return c.json(modelObject());
  });

  const browser = opts.page !== false ? opts.browser : undefined;
  if (opts.page !== false) {
    app.get('/', (c) => c.html(chatPage(opts.modelId, browser ? { bundle: BROWSER_BUNDLE_PATH, model: browser.modelPath } : undefined)));
  }
  if (browser) {
    const file = async (c: Context) => {
      const res = await browser.get(c.req.path, c.req.raw);
      if (!res) throw new ApiError(404, `${c.req.path} is not available on this server`, 'invalid_request_error', null, 'unknown_url');
      return res;
    };
    for (const p of [BROWSER_BUNDLE_PATH, '/build/simd.wasm', '/build/relaxed.wasm', browser.modelPath]) app.get(p, file);
  }

  // ---- sessions -----------------------------------------------------------------------------------

  function sessionId(c: Context, r?: ParsedRequest): string | undefined {
    const h = c.req.header('x-session-id');
    const id = r?.session ?? (h === undefined || h === '' ? undefined : h);
    if (id !== undefined && !SESSION_ID.test(id)) {
      throw badRequest(`session id must be 1–128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`, 'session', 'invalid_value');
    }
    return id;
  }

  function pathSession(c: Context): string {
    const id = c.req.param('id') ?? '';
    if (!SESSION_ID.test(id)) throw badRequest(`session id must be 1–128 characters of letters, digits, '.', '_' or '-'`, 'id', 'invalid_value');
    return id;
  }

  /** The session's metadata when it exists and belongs to the request's key; else 404. */
  async function ownedSession(c: Context, id: string, param: string): Promise<SessionMeta> {
    const m = await opts.store.meta(id);
    // Someone else's session is reported exactly as one that does not exist.
    if (!m || m.owner !== ownerOf(c)) {
      throw new ApiError(404, `no session '${id}'; create one with POST /v1/sessions`, 'invalid_request_error', param, 'session_not_found');
    }
    return m;
  }

  const sessionObject = (id: string, m: SessionMeta) => ({
    id, object: 'session', model: m.model, tokens: m.tokens, bytes: m.bytes, created: Math.floor(m.createdAt / 1000), updated: Math.floor(m.updatedAt / 1000), busy: busySessions.has(id),
  });

  app.post('/v1/sessions', async (c) => {
    // The body is optional; when there is one it must be a JSON object (no fields are read yet).
    const text = await readBody(c.req.raw, opts.maxBodyBytes);
    if (text.trim()) {
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch (e) {
        throw badRequest(`the request body is not valid JSON: ${(e as Error).message.slice(0, 200)}`, null, 'invalid_json');
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('the request body must be a JSON object', null, 'invalid_body');
    }
    const now = Date.now();
    const s: StoredSession = { id: newSessionId(), model: opts.modelId, tokens: [], bytes: new Uint8Array(0), owner: ownerOf(c), createdAt: now, updatedAt: now };
    await opts.store.put(s);
    return c.json(sessionObject(s.id, metaOf(s)), 200, { 'x-session-id': s.id });
  });

  app.get('/v1/sessions/:id', async (c) => {
    const id = pathSession(c);
    return c.json(sessionObject(id, await ownedSession(c, id, 'id')));
  });

  app.delete('/v1/sessions/:id', async (c) => {
    const id = pathSession(c);
    await ownedSession(c, id, 'id');
    if (busySessions.has(id)) throw new ApiError(409, `session '${id}' is generating; delete it when the request ends`, 'invalid_request_error', 'id', 'session_busy');
    if (!(await opts.store.delete(id))) throw new ApiError(404, `no session '${id}'`, 'invalid_request_error', 'id', 'session_not_found');
    return c.json({ id, object: 'session.deleted', deleted: true });
  });

  // ---- generation ---------------------------------------------------------------------------------

  app.post('/v1/completions', async (c) => {
    generationRequests++;
    return generate(c, parseCompletionRequest(await readJson(c.req.raw, opts.maxBodyBytes)));
  });
  app.post('/v1/chat/completions', async (c) => {
    generationRequests++;
    return generate(c, parseChatRequest(await readJson(c.req.raw, opts.maxBodyBytes)));
  });

  async function generate(c: Context, r: ParsedRequest): Promise<Response> {
    if (closed) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
    if (r.model !== undefined && r.model !== opts.modelId) {
      throw badRequest(`the model '${r.model}' does not exist; this server serves '${opts.modelId}'`, 'model', 'model_not_found');
    }
    const sid = sessionId(c, r);
    const owner = ownerOf(c);
    if (sid !== undefined) await ownedSession(c, sid, 'session');
    const m = await model();
    const lm = m.lm;

    // Prompt tokens, and every check the library would make, before taking a place in the queue.
    // Text is encoded in steps that yield, and no further than the context: a prompt that cannot fit
    // is refused as soon as that is certain (by its byte count alone when it is far too long).
    let ids: number[];
    let echoText = '';
    const limit = lm.maxContext - 1;
    const tooLong = (e: unknown, param: string): never => {
      if (e instanceof ContextLengthError) {
        throw badRequest(`the prompt has at least ${e.atLeast} tokens; this model's context holds ${lm.maxContext} (prompt and completion)`, param, 'context_length_exceeded');
      }
      throw e;
    };
    const reqAbort = c.req.raw.signal;
    try {
      if (r.kind === 'chat') {
        if (!lm.chatTemplate) throw badRequest('this model has no chat template; use /v1/completions', 'messages', 'unsupported_model');
        ids = await lm.encodeChatAsync(r.messages as ChatMessage[], { limit, signal: reqAbort }).catch((e) => tooLong(e, 'messages'));
        r.params.stopTokenIds = m.chatStopIds;
      } else if (typeof r.prompt === 'string') {
        if (r.prompt === '') throw badRequest(`'prompt' is empty`, 'prompt', 'invalid_value');
        ids = await lm.encodeAsync(r.prompt, { limit, signal: reqAbort }).catch((e) => tooLong(e, 'prompt'));
        echoText = r.echo ? r.prompt : '';
      } else {
        ids = r.prompt as number[];
        if (r.echo) echoText = lm.tokenizer ? lm.decode(ids) : '';
      }
    } catch (e) {
      if (reqAbort?.aborted) return new Response(null, { status: 499 });
      throw e;
    }
    const V = lm.model.net.vocabSize;
    if (!ids.length) throw badRequest(`the prompt encodes to no tokens`, r.kind === 'chat' ? 'messages' : 'prompt', 'invalid_value');
    const bad = ids.find((id) => id >= V);
    if (bad !== undefined) throw badRequest(`token id ${bad} is outside the vocabulary [0, ${V})`, 'prompt', 'invalid_value');
    if (ids.length >= lm.maxContext) {
      throw badRequest(`the prompt has ${ids.length} tokens; this model's context holds ${lm.maxContext} (prompt and completion)`, r.kind === 'chat' ? 'messages' : 'prompt', 'context_length_exceeded');
    }
    for (const k of Object.keys(r.params.logitBias ?? {})) {
      if (Number(k) >= V) throw badRequest(`'logit_bias' token id ${k} is outside the vocabulary [0, ${V})`, 'logit_bias', 'invalid_value');
    }
    resolveSampling({ ...r.params, seed: r.params.seed ?? 0 });

    if (sid !== undefined && busySessions.has(sid)) {
      throw new ApiError(409, `session '${sid}' is already generating`, 'invalid_request_error', 'session', 'session_busy');
    }
    if (sid !== undefined) busySessions.add(sid);

    // Cancelled by the client going away (request signal, or the streamed body failing or being
    // cancelled). Everything the request holds is given back the moment that happens, not when the
    // generation next looks at the signal: on Workers a request whose client left runs no more timers
    // unless something keeps it alive, so a generation waiting between tokens could otherwise keep its
    // place and its slot for good. A generation that does resume sees the aborted signal before it
    // touches its session again.
    const ac = new AbortController();
    const reqSignal = c.req.raw.signal;
    const onReqAbort = () => ac.abort();
    reqSignal?.addEventListener?.('abort', onReqAbort, { once: true });
    if (reqSignal?.aborted) ac.abort();

    // The request timeout aborts the generation as a client going away would, so it gives back the
    // same things at once; the client then gets a 504 (or, streamed, an error event).
    let timedOut = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopTimer = () => clearTimeout(timer);
    if (opts.requestTimeoutMs && opts.requestTimeoutMs > 0) {
      timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, opts.requestTimeoutMs);
    }
    const timeoutError = () => new ApiError(504, `the request took longer than ${opts.requestTimeoutMs! / 1000} s (the server's request timeout)`,
      'server_error', null, 'request_timeout');

    let release: (() => void) | null = null;
    let ms: ModelSession | null = null;
    let prev: StoredSession | null = null;
    let cleaned = false;
    const cleanup = () => {
      if (cleaned) return;
      cleaned = true;
      stopTimer();
      reqSignal?.removeEventListener?.('abort', onReqAbort);
      ms?.dispose();
      ms = null;
      if (sid !== undefined) busySessions.delete(sid);
      release?.();
      release = null;
    };
    ac.signal.addEventListener('abort', cleanup, { once: true });
    const gone = () => {
      if (timedOut) {
        if (!notes.has(c.req.raw)) notes.set(c.req.raw, 'timeout');
        return errorResponse(timeoutError());
      }
      return new Response(null, { status: 499 });
    };

    let gen: Generation;
    try {
      release = await queue.acquire(ac.signal);
      if (cleaned) {
        release();
        return gone();
      }
      if (sid !== undefined) {
        prev = await opts.store.get(sid);
        if (cleaned) return gone();
        if (prev && (prev.owner ?? '') !== owner) throw new ApiError(404, `no session '${sid}'`, 'invalid_request_error', 'session', 'session_not_found');
        ms = resume(lm, prev, ids, opts.modelId, log);
      }
      ms ??= lm.session();
      gen = lm.generate(ids, { ...r.params, session: ms, signal: ac.signal });
    } catch (e) {
      cleanup();
      if (e instanceof QueueAbortError) return gone();
      throw e;
    }

    const id = randomId(r.kind === 'chat' ? 'chatcmpl' : 'cmpl');
    const createdAt = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = sid !== undefined ? { 'x-session-id': sid } : {};

    /** After a finished generation: the state covers every generated token, then it is stored. */
    const save = async () => {
      if (sid === undefined || !ms || gen.finishReason === 'abort' || gen.finishReason === null) return;
      const last = gen.tokens[gen.tokens.length - 1];
      // The last token was sampled but not fed. An end-of-turn token is part of the next chat prompt,
      // so it is fed; EOS never is.
      if (last !== undefined && !lm.eosTokenIds.has(last) && ms.pos < lm.maxContext) {
        await ms.feed([last]);
      }
      const now = Date.now();
      try {
        await opts.store.put({ id: sid, model: opts.modelId, tokens: [...ms.tokens], bytes: await ms.snapshotAsync(), owner, createdAt: prev?.createdAt ?? now, updatedAt: now });
      } catch (e) {
        log(`session '${sid}' could not be stored`, e);
      }
    };

    const noteTokens = () => {
      if (opts.accessLog) notes.set(c.req.raw, `tokens=${gen.stats.promptTokens}+${gen.stats.generatedTokens}${timedOut ? ' timeout' : ''}`);
    };
    const usage = () => ({
      prompt_tokens: gen.stats.promptTokens,
      completion_tokens: gen.stats.generatedTokens,
      total_tokens: gen.stats.promptTokens + gen.stats.generatedTokens,
      prompt_tokens_details: { cached_tokens: gen.stats.cachedTokens },
    });
    const finish = () => (gen.finishReason === 'length' ? 'length' : 'stop');
    const tokenText = (t: GeneratedToken) => (lm.tokenizer ? lm.decode([t.token], false) : '');
    const chatLogprobs = (ts: GeneratedToken[]) => ({
      content: ts.map((t) => {
        const s = tokenText(t);
        return { token: s, logprob: t.logprob ?? 0, bytes: Array.from(new TextEncoder().encode(s)), top_logprobs: [] };
      }),
      refusal: null,
    });

    if (!r.stream) {
      try {
        const toks: GeneratedToken[] = [];
        for await (const t of gen) toks.push(t);
        noteTokens();
        if (gen.finishReason === 'abort') return gone();
        // Finished: the timeout no longer applies to storing the session.
        stopTimer();
        await save();
        if (r.kind === 'chat') {
          return json(200, {
            id, object: 'chat.completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint,
            choices: [{ index: 0, message: { role: 'assistant', content: gen.text, refusal: null }, logprobs: r.logprobs ? chatLogprobs(toks) : null, finish_reason: finish() }],
            usage: usage(),
          }, headers);
        }
        let logprobs: Record<string, unknown> | null = null;
        if (r.logprobs) {
          let off = echoText.length;
          const offsets: number[] = [];
          for (const t of toks) {
            offsets.push(off);
            off += t.text.length;
          }
          logprobs = { tokens: toks.map(tokenText), token_logprobs: toks.map((t) => t.logprob ?? 0), top_logprobs: null, text_offset: offsets };
        }
        return json(200, {
          id, object: 'text_completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint,
          choices: [{ index: 0, text: echoText + gen.text, logprobs, finish_reason: finish() }],
          usage: usage(),
        }, headers);
      } finally {
        cleanup();
      }
    }

    // Streaming: one `data:` event per token that completes text, then the finish, usage and [DONE].
    // A client that goes away (the body's write fails or it is cancelled) aborts the request.
    const enc = new TextEncoder();
    const out = streamBody(() => ac.abort());
    // After a timeout the client is still there to be told, so writes no longer follow the aborted signal.
    const stillThere = new AbortController().signal;
    const send = (obj: unknown) => out.write(enc.encode(`data: ${typeof obj === 'string' ? obj : JSON.stringify(obj)}\n\n`), timedOut ? stillThere : ac.signal);
    const base = r.kind === 'chat'
      ? { id, object: 'chat.completion.chunk', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint }
      : { id, object: 'text_completion', created: createdAt, model: opts.modelId, system_fingerprint: m.fingerprint };
    const chunk = (text: string, finishReason: string | null, t?: GeneratedToken) => {
      if (r.kind === 'chat') {
        const delta = finishReason ? {} : { content: text };
        return { ...base, choices: [{ index: 0, delta, logprobs: r.logprobs && t ? chatLogprobs([t]) : null, finish_reason: finishReason }], ...(r.includeUsage ? { usage: null } : {}) };
      }
      const lp = r.logprobs && t ? { tokens: [tokenText(t)], token_logprobs: [t.logprob ?? 0], top_logprobs: null, text_offset: [0] } : null;
      return { ...base, choices: [{ index: 0, text, logprobs: lp, finish_reason: finishReason }], ...(r.includeUsage ? { usage: null } : {}) };
    };

    const run = async () => {
      try {
        if (r.kind === 'chat') await send({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...(r.includeUsage ? { usage: null } : {}) });
        else if (echoText) await send(chunk(echoText, null));
        for await (const t of gen) {
          if (!out.open) break;
          // A token that completes no text yet (half a character, a possible stop string) is sent
          // only when its logprob was asked for.
          if (t.text || r.logprobs) await send(chunk(t.text, null, t));
        }
        noteTokens();
        if (timedOut && out.open) {
          await send(timeoutError().body());
          await send('[DONE]');
          return;
        }
        if (!out.open || gen.finishReason === 'abort') return;
        stopTimer();
        await save();
        await send(chunk('', finish()));
        if (r.includeUsage) await send({ ...base, choices: [], usage: usage() });
        await send('[DONE]');
      } catch (e) {
        const api = toApiError(e);
        if (!api) log(`streamed ${r.kind} failed`, e);
        await send((api ?? new ApiError(500, 'internal error', 'server_error', null, 'internal_error')).body());
        await send('[DONE]');
      } finally {
        cleanup();
        out.close();
      }
    };
    const running = run();
    // Workers: the request stays alive until the generation has ended, also after its client left
    // (otherwise its timers stop and the generation never gets to see that).
    executionCtx(c)?.waitUntil(running);
    return new Response(out.body, { status: 200, headers: { ...SSE_HEADERS, ...headers } });
  }

  app.ready = async () => (await model(false)).lm;
  app.close = async () => {
    closed = true;
    while (queue.running > 0) await new Promise((r) => setTimeout(r, 20));
    if (served) await served.lm.dispose();
  };
  return app;
}

/** Hono's executionCtx, which only Workers have (the getter throws elsewhere). */
function executionCtx(c: Context): { waitUntil(p: Promise<unknown>): void } | undefined {
  try {
    return c.executionCtx;
  } catch {
    return undefined;
  }
}

interface StreamBody {
  body: ReadableStream<Uint8Array>;
  /** False once the client has gone away (or the body was closed). */
  readonly open: boolean;
  /** Resolves when the chunk is queued (or taken, on Workers), with false when the client is gone. */
  write(bytes: Uint8Array, signal: AbortSignal): Promise<boolean>;
  close(): void;
}

/**
 * A streamed response body that calls `gone` once when its client goes away.
 *
 * On Workers it is the readable end of an IdentityTransformStream: workerd never cancels a
 * JavaScript ReadableStream body when the client disconnects, and request.signal fires only when
 * the disconnect cancels the request rather than fails a write of its body, so a write to the
 * native stream, which fails ("Network connection lost"), is what tells. Elsewhere (Node, Bun,
 * Deno) a ReadableStream whose cancel() is the client going away.
 */
function streamBody(gone: () => void): StreamBody {
  let open = true;
  const fail = () => {
    if (!open) return;
    open = false;
    gone();
  };
  const Identity = (globalThis as { IdentityTransformStream?: new () => TransformStream<Uint8Array, Uint8Array> }).IdentityTransformStream;
  if (Identity) {
    const { readable, writable } = new Identity();
    const w = writable.getWriter();
    return {
      body: readable,
      get open() {
        return open;
      },
      async write(bytes, signal) {
        if (!open || signal.aborted) return false;
        // The write resolves once the bytes are taken; an abort (request.signal) does not wait for it.
        let onAbort!: () => void;
        const aborted = new Promise<void>((r) => signal.addEventListener('abort', (onAbort = () => r()), { once: true }));
        try {
          await Promise.race([w.write(bytes), aborted]);
        } catch {
          fail();
        } finally {
          signal.removeEventListener('abort', onAbort);
        }
        return open && !signal.aborted;
      },
      close() {
        if (!open) return;
        open = false;
        w.close().catch(() => {});
      },
    };
  }
  let ctrl!: ReadableStreamDefaultController<Uint8Array>;
  return {
    body: new ReadableStream<Uint8Array>({
      start(controller) {
        ctrl = controller;
      },
      cancel: fail,
    }),
    get open() {
      return open;
    },
    async write(bytes) {
      if (!open) return false;
      try {
        ctrl.enqueue(bytes);
      } catch {
        fail();
      }
      return open;
    },
    close() {
      if (!open) return;
      open = false;
      try {
        ctrl.close();
      } catch {
        /* already cancelled */
      }
    },
  };
}

/**
 * A session for `ids`: the stored state when its tokens begin the prompt (only the rest is then
 * run), else a fresh one. A snapshot that fails its checks (another model, corrupt bytes) counts as
 * no snapshot.
 */
function resume(lm: LanguageModel, prev: StoredSession | null, ids: number[], modelId: string, log: (m: string, e?: unknown) => void): ModelSession | null {
  if (!prev || prev.model !== modelId || prev.tokens.length === 0 || prev.tokens.length >= ids.length) return null;
  for (let i = 0; i < prev.tokens.length; i++) if (prev.tokens[i] !== ids[i]) return null;
  try {
    return lm.restore(prev.bytes);
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw e;
    log(`session '${prev.id}' has an unusable snapshot; starting over`, e);
    return null;
  }
}
