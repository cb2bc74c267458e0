// Request bodies: read as UTF-8 up to a byte limit (413 beyond, whatever Content-Length says), and
// parsed as one JSON object, each failure a 4xx naming what is wrong.

import { ApiError, badRequest } from './openai';

/** Reads the body as UTF-8, refusing more than `max` bytes whether or not Content-Length says so. */
export async function readBody(req: Request, max: number): Promise<string> {
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

/** `text` as a JSON object; anything else (bad JSON, an array, a string …) is a 400. */
export function parseJsonObject(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw badRequest(`the request body is not valid JSON: ${(e as Error).message.slice(0, 200)}`, null, 'invalid_json');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('the request body must be a JSON object', null, 'invalid_body');
  return v as Record<string, unknown>;
}

/** The body as a JSON object; an empty body is a 400. */
export async function readJson(req: Request, max: number): Promise<Record<string, unknown>> {
  const text = await readBody(req, max);
  if (!text.trim()) throw badRequest('the request body is empty; send a JSON object', null, 'invalid_body');
  return parseJsonObject(text);
}
