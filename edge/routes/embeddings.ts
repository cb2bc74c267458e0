// The OpenAI embeddings endpoint: POST /v1/embeddings. Mounted at /v1.
//
// Each input's vector is the library's embed(): the mean of the model's final hidden states over the
// input's positions, L2-normalized (src/generate/embeddings.ts). Inputs are checked and text is
// encoded before the request takes a place in the generation queue; the forward passes run in that
// place, so they never run beside a generation beyond the queue's bound. A model whose family has no
// hidden-state output is refused with 400 `unsupported_model` on `model`.

import { Hono, type Context } from 'hono';
import { embed, embeddingDimensions, embeddingSupport, embeddingTokens } from '../../src/index';
import { readJson } from '../body';
import { badRequest } from '../openai';
import { QueueAbortError } from '../queue';
import { RequestAbort, checkServing } from '../request';
import type { AppEnv, AppState } from '../state';

export interface EmbeddingRequest {
  /** Texts and token id lists, one embedding each (the library checks their content). */
  input: (string | number[])[];
  model?: string;
  encodingFormat: 'float' | 'base64';
  dimensions?: number;
}

type Body = Record<string, unknown>;

const absent = (v: unknown) => v === undefined || v === null;

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : typeof v;
}

/**
 * The request's fields, each checked for its type (400 naming it): `input` a string, an array of
 * strings, an array of token ids or an array of arrays of token ids; `model` and `user` strings;
 * `encoding_format` 'float' (default) or 'base64'; `dimensions` an integer ≥ 1.
 */
export function parseEmbeddingRequest(b: Body): EmbeddingRequest {
  const x = b.input;
  if (absent(x)) throw badRequest(`'input' is required`, 'input', 'missing_required_parameter');
  const shape = `'input' must be a string, an array of strings, an array of token ids or an array of arrays of token ids`;
  let input: (string | number[])[];
  if (typeof x === 'string') input = [x];
  else if (Array.isArray(x)) {
    if (x.length > 0 && x.every((v) => typeof v === 'number')) input = [x as number[]];
    else {
      input = x.map((v, i) => {
        if (typeof v === 'string') return v;
        if (Array.isArray(v) && v.every((id) => typeof id === 'number')) return v as number[];
        throw badRequest(`${shape}; item ${i} is ${kind(v)}${Array.isArray(v) ? ' holding more than numbers' : ''}`, 'input', 'invalid_type');
      });
    }
  } else throw badRequest(`${shape}, got ${kind(x)}`, 'input', 'invalid_type');
  const model = b.model;
  if (!absent(model) && typeof model !== 'string') throw badRequest(`'model' must be a string, got ${kind(model)}`, 'model', 'invalid_type');
  const fmt = b.encoding_format;
  if (!absent(fmt) && fmt !== 'float' && fmt !== 'base64') {
    throw badRequest(`'encoding_format' must be 'float' or 'base64', got ${typeof fmt === 'string' ? JSON.stringify(fmt.slice(0, 40)) : kind(fmt)}`, 'encoding_format', 'invalid_value');
  }
  const dims = b.dimensions;
  if (!absent(dims) && (typeof dims !== 'number' || !Number.isInteger(dims))) {
    throw badRequest(`'dimensions' must be an integer, got ${typeof dims === 'number' ? dims : kind(dims)}`, 'dimensions', 'invalid_type');
  }
  if (typeof dims === 'number' && dims < 1) throw badRequest(`'dimensions' must be ≥ 1, got ${dims}`, 'dimensions', 'invalid_value');
  if (!absent(b.user) && typeof b.user !== 'string') throw badRequest(`'user' must be a string, got ${kind(b.user)}`, 'user', 'invalid_type');
  return {
    input,
    model: typeof model === 'string' ? model : undefined,
    encodingFormat: fmt === 'base64' ? 'base64' : 'float',
    dimensions: typeof dims === 'number' ? dims : undefined,
  };
}

/** The vector's float32 values as little-endian bytes, base64-encoded (OpenAI's `encoding_format: "base64"`). */
export function float32Base64(v: Float32Array): string {
  const bytes = new Uint8Array(v.length * 4);
  const dv = new DataView(bytes.buffer);
  for (let i = 0; i < v.length; i++) dv.setFloat32(i * 4, v[i], true);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export function embeddingRoutes(state: AppState): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.post('/embeddings', async (c) => embeddings(state, c, parseEmbeddingRequest(await readJson(c.req.raw, state.opts.maxBodyBytes))));
  return routes;
}

/** Answers one parsed embeddings request; its errors are thrown for the app's error handler. */
async function embeddings(state: AppState, c: Context<AppEnv>, r: EmbeddingRequest): Promise<Response> {
  const { opts, queue } = state;
  checkServing(state, r.model);
  const lm = (await state.model.get()).lm;
  const why = embeddingSupport(lm);
  if (why) throw badRequest(why, 'model', 'unsupported_model');
  const dimensions = embeddingDimensions(lm, r.dimensions);

  // The client going away or the request timeout aborts the work; the queue place is given back.
  const abort = new RequestAbort(c, opts.requestTimeoutMs);
  let release: (() => void) | null = null;
  try {
    const ids = await embeddingTokens(lm, r.input, { signal: abort.signal });
    release = await queue.acquire(abort.signal);
    // Sessions the prompt cache keeps hold state slots: when every slot is taken, it frees some.
    const res = await embed(lm, ids, { signal: abort.signal, dimensions, session: () => state.promptCache.withSlot(() => lm.session()) });
    if (opts.accessLog) c.set('note', `tokens=${res.promptTokens}`);
    return c.json({
      object: 'list',
      data: res.embeddings.map((e, index) => ({ object: 'embedding', index, embedding: r.encodingFormat === 'base64' ? float32Base64(e) : Array.from(e) })),
      model: opts.modelId,
      usage: { prompt_tokens: res.promptTokens, total_tokens: res.promptTokens },
    });
  } catch (e) {
    if (!abort.signal.aborted && !(e instanceof QueueAbortError)) throw e;
    return abort.gone();
  } finally {
    abort.release();
    release?.();
  }
}
