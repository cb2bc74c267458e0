// The app's middleware, in the order createApp installs it: the access log (every request), the
// Host check (every request), CORS, API-key auth and JSON bodies (/v1/*). A refusal is thrown as an
// ApiError and answered by the app's error handler.

import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import { ApiError } from './openai';
import type { AppEnv } from './state';

/**
 * One line per request (time, method, path, status, duration, bytes, and the `note` a generation
 * leaves), written when the body has been sent or the client went away.
 */
export function accessLog(write: (line: string) => void): MiddlewareHandler<AppEnv> {
  return async function accessLogMiddleware(c, next) {
    const at = new Date().toISOString();
    const t0 = performance.now();
    await next();
    const res = c.res;
    const line = (bytes: number, end = '') => {
      const note = c.get('note');
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
  };
}

/** Whether a Host header value is in the list (`host:port` exactly, or `host` for any port). */
export function hostAllowed(host: string, allowed: readonly string[]): boolean {
  const h = host.trim().toLowerCase();
  const m = /^(\[[^\]]*\]|[^:[\]]*)(?::(\d+))?$/.exec(h);
  if (!m || !m[1]) return false;
  const name = m[1], port = m[2] ?? '80';
  return allowed.some((a) => {
    const e = a.trim().toLowerCase();
    return e === `${name}:${port}` || e === name;
  });
}

/** 403 for a Host header outside the list `allowed()` gives (read on every request; null: any Host). */
export function hostCheck(allowed: () => readonly string[] | null): MiddlewareHandler<AppEnv> {
  return async function hostCheckMiddleware(c, next) {
    const list = allowed();
    const host = c.req.header('host') ?? new URL(c.req.url).host;
    if (list && !hostAllowed(host, list)) {
      throw new ApiError(403, `this server does not answer to the Host ${JSON.stringify(host.slice(0, 200))} (see --allowed-hosts)`,
        'invalid_request_error', null, 'host_not_allowed');
    }
    await next();
  };
}

/** CORS for the API: `true` for any origin, or the allowed origin(s). */
export function apiCors(setting: true | string | string[]): MiddlewareHandler<AppEnv> {
  return cors({
    origin: setting === true ? '*' : setting,
    allowMethods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
    allowHeaders: ['authorization', 'content-type', 'x-session-id', 'openai-organization', 'openai-project', 'x-stainless-os', 'x-stainless-lang',
      'x-stainless-package-version', 'x-stainless-runtime', 'x-stainless-runtime-version', 'x-stainless-arch', 'x-stainless-retry-count',
      'x-stainless-timeout'],
    exposeHeaders: ['x-session-id', 'retry-after', 'x-request-id'],
    maxAge: 600,
  });
}

/** Hex SHA-256 of an API key: what a session stores as its owner (the key itself is never stored). */
async function keyOwner(key: string): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`sparrow-session-owner\n${key}`));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Constant-time comparison, so the key cannot be found byte by byte from response times. */
function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let d = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) d |= (x[i % (x.length || 1)] ?? 0) ^ (y[i % (y.length || 1)] ?? 0);
  return d === 0 && x.length === y.length;
}

/**
 * `Authorization: Bearer <key>` with one of `keys` (preflights pass without one); 401 otherwise.
 * Sets the request's `owner` to the hash of the key it matched.
 */
export function apiKeyAuth(keys: readonly string[]): MiddlewareHandler<AppEnv> {
  const owners = Promise.all(keys.map(keyOwner));
  return async function apiKeyAuthMiddleware(c, next) {
    if (c.req.method === 'OPTIONS') return next();
    const h = c.req.header('authorization') ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h.trim());
    // Every key is compared, so the time taken does not tell which one matched.
    let found = -1;
    if (m) keys.forEach((k, i) => {
      if (sameSecret(m[1], k)) found = i;
    });
    if (found < 0) {
      throw new ApiError(401, m ? 'incorrect API key provided' : 'missing API key: send "Authorization: Bearer <key>"',
        'invalid_request_error', null, 'invalid_api_key', {}, { 'www-authenticate': 'Bearer' });
    }
    c.set('owner', (await owners)[found]);
    await next();
  };
}

/**
 * 415 for a POST whose body is not declared JSON: a browser sends a cross-site text/plain or form
 * POST without asking (no CORS preflight), never one that says application/json.
 */
export const jsonContentType: MiddlewareHandler<AppEnv> = async function jsonContentTypeMiddleware(c, next) {
  if (c.req.method !== 'POST') return next();
  const type = (c.req.header('content-type') ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') {
    throw new ApiError(415, `the request body must be JSON sent with "Content-Type: application/json"${type ? `, got ${JSON.stringify(type.slice(0, 100))}` : ''}`,
      'invalid_request_error', null, 'unsupported_media_type');
  }
  await next();
};
