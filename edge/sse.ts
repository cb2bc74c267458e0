// Server-sent events: the response headers, and a body that tells when its client goes away.

import type { Context } from 'hono';

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
};

/** Hono's executionCtx, which only Workers have (the getter throws elsewhere). */
export function executionCtx(c: Context<any>): { waitUntil(p: Promise<unknown>): void } | undefined {
  try {
    return c.executionCtx;
  } catch {
    return undefined;
  }
}

export interface StreamBody {
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
export function streamBody(gone: () => void): StreamBody {
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
