// What every model request shares: the checks before any work (the server still serving, the model
// the one served) and its cancellation, by the client going away or by the request timeout.

import type { Context } from 'hono';
import { errorResponse } from './errors';
import { ApiError } from './openai';
import type { AppEnv, AppState } from './state';

/** Refuses a request while the server shuts down (503) or when it names another model (404 model_not_found, as OpenAI answers). */
export function checkServing(state: AppState, model: string | undefined): void {
  if (state.closed) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
  if (model !== undefined && model !== state.opts.modelId) {
    throw new ApiError(404, `the model '${model}' does not exist; this server serves '${state.opts.modelId}'`, 'invalid_request_error', 'model', 'model_not_found');
  }
}

/**
 * The cancellation of one request: `signal` aborts when the client goes away (the request's own
 * signal) or when the server's request timeout passes (then `timedOut` is set). release() stops
 * listening to both.
 */
export class RequestAbort {
  private readonly ac = new AbortController();
  private readonly reqSignal: AbortSignal | undefined;
  private readonly onReqAbort = () => this.ac.abort();
  private timer: ReturnType<typeof setTimeout> | undefined;
  timedOut = false;

  constructor(private readonly c: Context<AppEnv>, private readonly timeoutMs: number | undefined) {
    this.reqSignal = c.req.raw.signal;
    this.reqSignal?.addEventListener?.('abort', this.onReqAbort, { once: true });
    if (this.reqSignal?.aborted) this.ac.abort();
    if (timeoutMs && timeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.ac.abort();
      }, timeoutMs);
    }
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  abort(): void {
    this.ac.abort();
  }

  /** The timeout no longer applies (the work is done; storing its results may take longer). */
  stopTimer(): void {
    clearTimeout(this.timer);
  }

  release(): void {
    this.stopTimer();
    this.reqSignal?.removeEventListener?.('abort', this.onReqAbort);
  }

  /** The 504 of a request that ran past the timeout. */
  timeoutError(): ApiError {
    return new ApiError(504, `the request took longer than ${this.timeoutMs! / 1000} s (the server's request timeout)`, 'server_error', null, 'request_timeout');
  }

  /** The answer to an aborted request: 504 after the timeout, else 499 (the client has gone). */
  gone(): Response {
    if (this.timedOut) {
      if (this.c.get('note') === undefined) this.c.set('note', 'timeout');
      return errorResponse(this.timeoutError());
    }
    return new Response(null, { status: 499 });
  }
}
