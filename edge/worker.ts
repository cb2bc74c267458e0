// Cloudflare Workers entry: the shared app with the single-thread SIMD kernels (imported as a
// precompiled WebAssembly.Module), the default model read from the Worker's static assets (or a
// bigger GGUF from an R2 bucket), and session state in a Durable Object, one per session id.
//
// A Workers isolate has 128 MB, and local workerd does not enforce it: the budget is checked here.
// While the model loads, the file's bytes and the arena the weights are copied into coexist (the
// bytes are dropped once loading ends), and the tokenizer and runtime take their share, so the
// WebAssembly arena gets what remains; a model that does not fit answers 503 with the numbers.

import { DurableObject } from 'cloudflare:workers';
import simd from '../build/simd.wasm';
import { BudgetError, loadModel, parseAttentionFlag, type KvCacheType, type LanguageModel } from '../src/index';
import { provideModule } from '../src/kernels/runtime';
import { createApp, type SparrowApp } from './app';
import type { SessionMeta, SessionStore, StoredSession } from './store';

provideModule('simd', simd);

export interface Env {
  /** Static assets: the default model directory (wrangler.jsonc "assets"). */
  ASSETS: Fetcher;
  SESSIONS: DurableObjectNamespace<SessionObject>;
  /** Optional R2 bucket holding a GGUF (with its tokenizer in the metadata, as `sparrow convert` writes). */
  MODELS?: R2Bucket;
  /** Key of that GGUF in MODELS; when set, it is served instead of the bundled model. */
  MODEL_KEY?: string;
  MODEL_ID?: string;
  /** One key, or several separated by commas; sessions belong to the key that created them. */
  SPARROW_API_KEY?: string;
  /** '*' or a comma-separated list of origins. */
  CORS?: string;
  MAX_CONCURRENT?: string;
  MAX_QUEUE?: string;
  /** A Jinja chat template (its text) used instead of the model's, e.g. one that renders tools. */
  CHAT_TEMPLATE?: string;
  /** States of finished requests kept for later prompts that begin the same way (default 2; 0: off). */
  PROMPT_CACHE?: string;
  MAX_CONTEXT?: string;
  /** Attention KV cache type: f32 (default), q8_0 or q4_0 (loadModel's kvCache). */
  KV_CACHE?: string;
  /** Attention at decode: dense (default) or topk[:pages=16,page=64,sinks=4,window=256] (loadModel's attention). */
  ATTENTION?: string;
  MAX_BODY_BYTES?: string;
  /** Batched decoding of concurrent generations: 'off' (or 0, false) turns it off; default on. */
  BATCH?: string;
  /** Isolate memory limit in MiB (128 on Workers). */
  MEMORY_LIMIT_MB?: string;
  /** MiB kept for the JS heap besides the model file: runtime, tokenizer, requests. */
  JS_RESERVE_MB?: string;
}

const MiB = 1024 * 1024;

function int(v: string | undefined, dflt: number, min = 0): number {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isSafeInteger(n) && n >= min ? n : dflt;
}

/** The bundled model directory, from static assets. */
const ASSET_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'];
const ASSET_WEIGHTS = 'model.q8_0.gguf';

async function asset(env: Env, name: string): Promise<Response | null> {
  const res = await env.ASSETS.fetch(new Request(`https://assets.local/${name}`));
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`asset ${name}: status ${res.status}`);
  return res;
}

/** What JS holds besides the arena at the peak of loading: the model file's bytes and a reserve for everything else. */
interface Plan {
  fileBytes: number;
  limit: number;
  reserve: number;
}

/**
 * Throws a BudgetError (needed bytes against the isolate limit) when the file, the reserve and the
 * arena need more than the limit; returns the bytes left for the arena.
 */
function checkPlan(p: Plan, arenaNeed = 0): number {
  const need = p.fileBytes + p.reserve + arenaNeed;
  if (need > p.limit) throw new BudgetError(need, p.limit, 'model');
  return p.limit - p.fileBytes - p.reserve;
}

async function workerModel(env: Env): Promise<LanguageModel> {
  const limit = int(env.MEMORY_LIMIT_MB, 128, 1) * MiB;
  const reserve = int(env.JS_RESERVE_MB, 24) * MiB;
  const maxConcurrent = int(env.MAX_CONCURRENT, 2, 1);
  const maxContext = int(env.MAX_CONTEXT, 2048, 16);
  let source: ArrayBuffer | { files: Record<string, ArrayBuffer | string> };
  let plan: Plan;
  if (env.MODELS && env.MODEL_KEY) {
    const head = await env.MODELS.head(env.MODEL_KEY);
    if (!head) throw new Error(`R2 object ${env.MODEL_KEY} not found in the MODELS bucket`);
    plan = { fileBytes: head.size, limit, reserve };
    // Before downloading: the weights take about the file's size again inside the arena.
    checkPlan(plan, head.size);
    const obj = await env.MODELS.get(env.MODEL_KEY);
    if (!obj) throw new Error(`R2 object ${env.MODEL_KEY} not found in the MODELS bucket`);
    source = await obj.arrayBuffer();
  } else {
    const weights = await asset(env, ASSET_WEIGHTS);
    if (!weights) throw new Error(`the bundled model (${ASSET_WEIGHTS}) is missing from the static assets`);
    plan = { fileBytes: Number(weights.headers.get('content-length')) || 0, limit, reserve };
    checkPlan(plan, plan.fileBytes);
    const files: Record<string, ArrayBuffer | string> = { [ASSET_WEIGHTS]: await weights.arrayBuffer() };
    plan.fileBytes = (files[ASSET_WEIGHTS] as ArrayBuffer).byteLength;
    checkPlan(plan, plan.fileBytes);
    for (const name of ASSET_FILES) {
      const r = await asset(env, name);
      if (r) files[name] = await r.text();
    }
    source = { files };
  }
  const budget = checkPlan(plan);
  let lm: LanguageModel;
  try {
    lm = await loadModel(source, { build: 'simd', memoryBudget: budget, maxContext, maxSessions: maxConcurrent + 1, chatTemplate: env.CHAT_TEMPLATE || undefined, kvCache: (env.KV_CACHE || undefined) as KvCacheType | undefined, attention: env.ATTENTION ? parseAttentionFlag(env.ATTENTION, 'ATTENTION') : undefined, batching: !/^(off|0|false|no)$/i.test(env.BATCH ?? '') });
  } catch (e) {
    if (e instanceof BudgetError) throw new BudgetError(plan.fileBytes + plan.reserve + e.need, limit, 'model');
    throw e;
  }
  // Every running generation holds a state slot (plus one spare, as the model allows): they must
  // fit too, or the server would fail under load instead of at start.
  const status = lm.status();
  const arenaNeed = status.arenaBytes + (maxConcurrent + 1) * status.sessionBytes;
  try {
    checkPlan(plan, arenaNeed);
  } catch (e) {
    await lm.dispose();
    throw e;
  }
  return lm;
}

// ---- sessions: one Durable Object per id -----------------------------------------------------------

/** Storage values are kept under 128 KiB each (the limit of key-value storage), so snapshots are chunked. */
const CHUNK = 128 * 1024 - 64;

interface StoredMeta {
  id: string;
  model: string;
  /** Hash of the creating key ('' without keys); absent in objects written before owners existed. */
  owner?: string;
  tokens: number[];
  bytes: number;
  chunks: number;
  createdAt: number;
  updatedAt: number;
}

export class SessionObject extends DurableObject<Env> {
  async load(): Promise<StoredSession | null> {
    const meta = await this.ctx.storage.get<StoredMeta>('meta');
    if (!meta) return null;
    const keys = Array.from({ length: meta.chunks }, (_, i) => `chunk:${i}`);
    const parts = new Map<string, ArrayBuffer | Uint8Array>();
    for (let i = 0; i < keys.length; i += 128) {
      for (const [k, v] of await this.ctx.storage.get<ArrayBuffer | Uint8Array>(keys.slice(i, i + 128))) parts.set(k, v);
    }
    const bytes = new Uint8Array(meta.bytes);
    let o = 0;
    for (const k of keys) {
      const p = parts.get(k);
      if (!p) return null;
      const u = p instanceof Uint8Array ? p : new Uint8Array(p);
      bytes.set(u, o);
      o += u.byteLength;
    }
    if (o !== meta.bytes) return null;
    return { id: meta.id, model: meta.model, owner: meta.owner ?? '', tokens: meta.tokens, bytes, createdAt: meta.createdAt, updatedAt: meta.updatedAt };
  }

  async info(): Promise<SessionMeta | null> {
    const m = await this.ctx.storage.get<StoredMeta>('meta');
    return m ? { id: m.id, model: m.model, owner: m.owner ?? '', tokens: m.tokens.length, bytes: m.bytes, createdAt: m.createdAt, updatedAt: m.updatedAt } : null;
  }

  async save(s: StoredSession): Promise<void> {
    const chunks = Math.ceil(s.bytes.byteLength / CHUNK);
    const entries: Record<string, unknown> = {};
    for (let i = 0; i < chunks; i++) entries[`chunk:${i}`] = s.bytes.slice(i * CHUNK, (i + 1) * CHUNK);
    const meta: StoredMeta = { id: s.id, model: s.model, owner: s.owner ?? '', tokens: s.tokens, bytes: s.bytes.byteLength, chunks, createdAt: s.createdAt, updatedAt: s.updatedAt };
    // One transaction: a reader sees the old state or the new one, never a mix.
    await this.ctx.storage.transaction(async (tx) => {
      const old = await tx.get<StoredMeta>('meta');
      const stale = old ? Array.from({ length: Math.max(0, old.chunks - chunks) }, (_, i) => `chunk:${chunks + i}`) : [];
      for (let i = 0; i < stale.length; i += 128) await tx.delete(stale.slice(i, i + 128));
      const keys = Object.keys(entries);
      for (let i = 0; i < keys.length; i += 128) {
        const batch: Record<string, unknown> = {};
        for (const k of keys.slice(i, i + 128)) batch[k] = entries[k];
        await tx.put(batch);
      }
      await tx.put('meta', meta);
    });
  }

  async remove(): Promise<boolean> {
    const had = (await this.ctx.storage.get('meta')) !== undefined;
    await this.ctx.storage.deleteAll();
    return had;
  }
}

class DurableSessionStore implements SessionStore {
  constructor(private readonly ns: DurableObjectNamespace<SessionObject>) {}
  private stub(id: string) {
    return this.ns.get(this.ns.idFromName(id));
  }
  get(id: string) {
    return this.stub(id).load() as Promise<StoredSession | null>;
  }
  meta(id: string) {
    return this.stub(id).info() as Promise<SessionMeta | null>;
  }
  put(s: StoredSession) {
    return this.stub(s.id).save(s) as Promise<void>;
  }
  delete(id: string) {
    return this.stub(id).remove() as Promise<boolean>;
  }
}

// ---- the Worker --------------------------------------------------------------------------------------

/** One app per isolate: the model loads on the first request and serves every later one. */
let app: SparrowApp | null = null;

function appFor(env: Env): SparrowApp {
  if (app) return app;
  const cors = env.CORS ? (env.CORS === '*' ? true : env.CORS.split(',').map((s) => s.trim()).filter(Boolean)) : undefined;
  app = createApp({
    loadModel: () => workerModel(env),
    modelId: env.MODEL_ID || (env.MODEL_KEY ? env.MODEL_KEY.replace(/^.*\//, '').replace(/\.gguf$/i, '') : 'sparrow-mini'),
    store: new DurableSessionStore(env.SESSIONS),
    maxConcurrent: int(env.MAX_CONCURRENT, 2, 1),
    maxQueue: int(env.MAX_QUEUE, 8),
    promptCache: int(env.PROMPT_CACHE, 2),
    apiKey: env.SPARROW_API_KEY ? env.SPARROW_API_KEY.split(',').map((k) => k.trim()).filter(Boolean) : undefined,
    cors,
    maxBodyBytes: int(env.MAX_BODY_BYTES, 1 << 20, 1),
    runtime: 'workerd',
  });
  return app;
}

let loadStarted = false;

export default {
  fetch(req: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> {
    const a = appFor(env);
    // The model loads inside the first request. waitUntil keeps that load going when its client
    // leaves early, so the requests waiting on the same load are not left hanging.
    if (!loadStarted) {
      loadStarted = true;
      ctx.waitUntil(a.ready().catch((e) => console.error(`sparrow: the model failed to load: ${(e as Error)?.message ?? e}`)));
    }
    return a.fetch(req, env, ctx as unknown as Parameters<SparrowApp['fetch']>[2]);
  },
};
