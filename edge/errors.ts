// How errors become responses. Every error class the library, the queue or the app throws has one
// rule here giving its API error (status, type, param, code); an error no rule covers is a bug,
// answered with a 500 and logged. Streamed generations send the same errors as their last event.

import type { ErrorHandler, NotFoundHandler } from 'hono';
import { ArenaBudgetError, BudgetError, ContextLengthError, RequestError, SlotsBusyError } from '../src/index';
import { ApiError, apiParamName, badRequest } from './openai';
import { QueueFullError } from './queue';

export function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json; charset=utf-8', ...headers } });
}

export function errorResponse(e: ApiError): Response {
  return json(e.status, e.body(), e.headers);
}

/** What the client gets for an error no rule covers (the error itself is logged, never sent). */
export function internalError(): ApiError {
  return new ApiError(500, 'internal error', 'server_error', null, 'internal_error');
}

function budgetError(need: number, budget: number): ApiError {
  const mib = (n: number) => (n / 1048576).toFixed(1);
  return new ApiError(503,
    `the model needs ${need} bytes (${mib(need)} MiB) but the memory budget is ${budget} bytes (${mib(budget)} MiB)`,
    'server_error', null, 'model_over_memory_budget', { need_bytes: need, budget_bytes: budget });
}

function rateLimited(message: string, retryAfterS: number): ApiError {
  return new ApiError(429, message, 'rate_limit_error', null, 'rate_limit_exceeded', {}, { 'retry-after': String(retryAfterS) });
}

type Rule = (e: unknown) => ApiError | null;

/** A rule for instances of `type`. */
function rule<T>(type: new (...args: any[]) => T, toApi: (e: T) => ApiError): Rule {
  return (e) => (e instanceof type ? toApi(e) : null);
}

/** Error classes and their API errors; the first rule that matches applies, so subclasses come first. */
const RULES: Rule[] = [
  rule(ApiError, (e) => e),
  // 400: the prompt does not fit the model's context (a RequestError too).
  rule(ContextLengthError, (e) => {
    const param = apiParamName(e.field);
    return badRequest(`'${param}' ${e.detail}`, param, 'context_length_exceeded');
  }),
  // 400: any other bad request value, naming the parameter.
  rule(RequestError, (e) => {
    const param = apiParamName(e.field);
    return badRequest(`'${param}' ${e.detail}`, param, 'invalid_value');
  }),
  // 503: the model (weights, scratch or session state) does not fit the memory budget.
  rule(BudgetError, (e) => budgetError(e.need, e.budget)),
  rule(ArenaBudgetError, (e) => budgetError(e.need, e.budget)),
  // 429: every session slot is taken, or the generation queue is full.
  rule(SlotsBusyError, (e) => rateLimited(e.message, 1)),
  rule(QueueFullError, (e) => rateLimited(`${e.message}; retry after ${e.retryAfterS} s`, e.retryAfterS)),
];

/** The API error for `e`, or null when no rule covers it (a bug). */
export function toApiError(e: unknown): ApiError | null {
  for (const r of RULES) {
    const api = r(e);
    if (api) return api;
  }
  return null;
}

/** The app's one error handler: mapped errors are answered as such; anything else is logged and a 500. */
export function errorHandler(log: (msg: string, err?: unknown) => void): ErrorHandler<any> {
  return (e, c) => {
    const api = toApiError(e);
    if (api) return errorResponse(api);
    log(`${c.req.method} ${c.req.path} failed`, e);
    return errorResponse(internalError());
  };
}

export const notFound: NotFoundHandler<any> = (c) =>
  errorResponse(new ApiError(404, `unknown request URL: ${c.req.method} ${c.req.path}`, 'invalid_request_error', null, 'unknown_url'));
