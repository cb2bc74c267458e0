// The OpenAI request surface: body checks that name the parameter at fault, the mapping of OpenAI
// sampling fields onto the library's GenerateParams, and the error shape
// `{ error: { message, type, param, code } }`. Nothing here needs the model.

import type { ChatMessage, GenerateParams } from '../src/index';
import { SESSION_ID } from './store';

/** An HTTP error in the OpenAI shape. Extra fields (e.g. byte counts) go into the error object. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly extra: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: Record<string, unknown> } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code, ...this.extra } };
  }
}

export function badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

/** Library parameter names (RequestError.field) → the API's names. */
const API_NAMES: Record<string, string> = {
  temperature: 'temperature',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty',
  frequencyPenalty: 'frequency_penalty',
  logitBias: 'logit_bias',
  seed: 'seed',
  maxTokens: 'max_tokens',
  stop: 'stop',
  prompt: 'prompt',
  messages: 'messages',
  session: 'session',
};

export function apiParamName(field: string): string {
  const base = field.replace(/\[.*$/, '');
  return API_NAMES[base] ? API_NAMES[base] + field.slice(base.length) : field;
}

// ---- field readers -------------------------------------------------------------------------------

type Body = Record<string, unknown>;

const absent = (v: unknown) => v === undefined || v === null;

function num(b: Body, key: string, lo: number, hi: number, opts: { int?: boolean; loOpen?: boolean } = {}): number | undefined {
  const v = b[key];
  if (absent(v)) return undefined;
  const kind = opts.int ? 'an integer' : 'a number';
  if (typeof v !== 'number' || !Number.isFinite(v) || (opts.int && !Number.isInteger(v))) {
    throw badRequest(`'${key}' must be ${kind}, got ${describe(v)}`, key, 'invalid_type');
  }
  if (v < lo || v > hi || (opts.loOpen && v === lo)) {
    throw badRequest(`'${key}' must be ${opts.loOpen ? '>' : '≥'} ${lo} and ≤ ${hi}, got ${v}`, key, 'invalid_value');
  }
  return v;
}

function bool(b: Body, key: string): boolean | undefined {
  const v = b[key];
  if (absent(v)) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`'${key}' must be a boolean, got ${describe(v)}`, key, 'invalid_type');
  return v;
}

function str(b: Body, key: string, max = 1 << 20): string | undefined {
  const v = b[key];
  if (absent(v)) return undefined;
  if (typeof v !== 'string') throw badRequest(`'${key}' must be a string, got ${describe(v)}`, key, 'invalid_type');
  if (v.length > max) throw badRequest(`'${key}' is longer than ${max} characters`, key, 'invalid_value');
  return v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return v.length > 40 ? `a string` : JSON.stringify(v);
  if (typeof v === 'number') return String(v);
  return typeof v === 'object' ? 'an object' : typeof v;
}

const MAX_STOPS = 16;

function stops(b: Body): string[] | undefined {
  const v = b.stop;
  if (absent(v)) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) {
    throw badRequest(`'stop' must be a string or an array of strings, got ${describe(v)}`, 'stop', 'invalid_type');
  }
  if (list.length > MAX_STOPS) throw badRequest(`'stop' holds at most ${MAX_STOPS} strings, got ${list.length}`, 'stop', 'invalid_value');
  if (list.some((s: string) => s.length > 512)) throw badRequest(`'stop' strings are at most 512 characters`, 'stop', 'invalid_value');
  return (list as string[]).filter((s) => s.length > 0);
}

function logitBias(b: Body): Record<number, number> | undefined {
  const v = b.logit_bias;
  if (absent(v)) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw badRequest(`'logit_bias' must be an object of token id → bias, got ${describe(v)}`, 'logit_bias', 'invalid_type');
  const out: Record<number, number> = {};
  const entries = Object.entries(v as object);
  if (entries.length > 1024) throw badRequest(`'logit_bias' holds at most 1024 entries`, 'logit_bias', 'invalid_value');
  for (const [k, bias] of entries) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(k)) throw badRequest(`'logit_bias' key ${JSON.stringify(k.slice(0, 40))} is not a token id`, 'logit_bias', 'invalid_value');
    if (typeof bias !== 'number' || !Number.isFinite(bias) || bias < -100 || bias > 100) {
      throw badRequest(`'logit_bias[${k}]' must be a number in [-100, 100], got ${describe(bias)}`, 'logit_bias', 'invalid_value');
    }
    out[Number(k)] = bias;
  }
  return out;
}

// ---- requests ------------------------------------------------------------------------------------

export interface ParsedRequest {
  kind: 'chat' | 'completion';
  model?: string;
  stream: boolean;
  includeUsage: boolean;
  /** A session id given in the body (the x-session-id header is read by the app). */
  session?: string;
  params: GenerateParams;
  /** Per-token logprobs requested (chat: `logprobs: true`; completions: `logprobs` given, 0–5). */
  logprobs: boolean;
  /** How many of the most likely tokens each step reports (chat `top_logprobs`, completions `logprobs`). */
  topLogprobs: number;
  messages?: ChatMessage[];
  /** Completions: text, or token ids. */
  prompt?: string | number[];
  echo: boolean;
}

/** Fields every generation request shares. */
function common(b: Body, kind: ParsedRequest['kind']): ParsedRequest {
  const model = str(b, 'model', 256);
  const n = num(b, 'n', 1, 128, { int: true });
  if (n !== undefined && n !== 1) throw badRequest(`only n = 1 is supported, got ${n}`, 'n', 'unsupported_value');
  const stream = bool(b, 'stream') ?? false;
  let includeUsage = false;
  if (!absent(b.stream_options)) {
    const so = b.stream_options;
    if (typeof so !== 'object' || Array.isArray(so)) throw badRequest(`'stream_options' must be an object`, 'stream_options', 'invalid_type');
    includeUsage = bool(so as Body, 'include_usage') ?? false;
  }
  const session = str(b, 'session', 1024);
  if (session !== undefined && !SESSION_ID.test(session)) {
    throw badRequest(`'session' must be 1–128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`, 'session', 'invalid_value');
  }
  const maxCompletion = num(b, 'max_completion_tokens', 1, 1 << 24, { int: true });
  const maxTokens = num(b, 'max_tokens', 1, 1 << 24, { int: true });
  const params: GenerateParams = {
    maxTokens: maxCompletion ?? maxTokens ?? (kind === 'completion' ? 16 : undefined),
    temperature: num(b, 'temperature', 0, 2),
    topP: num(b, 'top_p', 0, 1, { loOpen: true }),
    topK: num(b, 'top_k', 0, 1 << 20, { int: true }),
    minP: num(b, 'min_p', 0, 1),
    repetitionPenalty: num(b, 'repetition_penalty', 0, 10, { loOpen: true }),
    presencePenalty: num(b, 'presence_penalty', -2, 2),
    frequencyPenalty: num(b, 'frequency_penalty', -2, 2),
    seed: num(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, { int: true }),
    stop: stops(b),
    logitBias: logitBias(b),
    ignoreEos: bool(b, 'ignore_eos'),
  };
  str(b, 'user', 4096);
  for (const k of ['tools', 'functions'] as const) {
    const v = b[k];
    if (!absent(v) && !(Array.isArray(v) && v.length === 0)) throw badRequest(`'${k}' (tool calling) is not supported by this server`, k, 'unsupported_parameter');
  }
  if (!absent(b.response_format)) {
    const rf = b.response_format as Body;
    if (typeof rf !== 'object' || Array.isArray(rf) || rf.type !== 'text') {
      throw badRequest(`only response_format {"type": "text"} is supported`, 'response_format', 'unsupported_value');
    }
  }
  return { kind, model, stream, includeUsage, session, params, logprobs: false, topLogprobs: 0, echo: false };
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);
const MAX_MESSAGES = 4096;

function messageContent(m: Body, i: number): string {
  const c = m.content;
  const param = `messages[${i}].content`;
  if (typeof c === 'string') return c;
  if (c === null || c === undefined) {
    if (m.role === 'assistant') return '';
    throw badRequest(`'${param}' is required`, param, 'invalid_value');
  }
  if (!Array.isArray(c)) throw badRequest(`'${param}' must be a string or an array of text parts`, param, 'invalid_type');
  let text = '';
  c.forEach((part, j) => {
    const p = part as Body;
    if (typeof p !== 'object' || p === null || Array.isArray(p)) throw badRequest(`'${param}[${j}]' must be an object`, `${param}[${j}]`, 'invalid_type');
    if (p.type !== 'text') throw badRequest(`'${param}[${j}].type' ${JSON.stringify(String(p.type).slice(0, 40))} is not supported (text only)`, `${param}[${j}].type`, 'unsupported_value');
    if (typeof p.text !== 'string') throw badRequest(`'${param}[${j}].text' must be a string`, `${param}[${j}].text`, 'invalid_type');
    text += p.text;
  });
  return text;
}

export function parseChatRequest(b: Body): ParsedRequest {
  const r = common(b, 'chat');
  const msgs = b.messages;
  if (absent(msgs)) throw badRequest(`'messages' is required`, 'messages', 'missing_required_parameter');
  if (!Array.isArray(msgs)) throw badRequest(`'messages' must be an array, got ${describe(msgs)}`, 'messages', 'invalid_type');
  if (msgs.length === 0) throw badRequest(`'messages' must hold at least one message`, 'messages', 'invalid_value');
  if (msgs.length > MAX_MESSAGES) throw badRequest(`'messages' holds at most ${MAX_MESSAGES} messages`, 'messages', 'invalid_value');
  r.messages = msgs.map((m, i) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badRequest(`'messages[${i}]' must be an object`, `messages[${i}]`, 'invalid_type');
    const role = (m as Body).role;
    if (typeof role !== 'string' || !ROLES.has(role)) {
      throw badRequest(`'messages[${i}].role' must be one of system, developer, user, assistant, tool`, `messages[${i}].role`, 'invalid_value');
    }
    return { role: role === 'developer' ? 'system' : role, content: messageContent(m as Body, i) } as ChatMessage;
  });
  const lp = bool(b, 'logprobs') ?? false;
  const top = num(b, 'top_logprobs', 0, 20, { int: true });
  if (top !== undefined && !lp) throw badRequest(`'top_logprobs' needs 'logprobs': true`, 'top_logprobs', 'invalid_value');
  r.logprobs = lp;
  r.params.logprobs = lp;
  r.topLogprobs = top ?? 0;
  r.params.topLogprobs = top ?? 0;
  return r;
}

export function parseCompletionRequest(b: Body): ParsedRequest {
  const r = common(b, 'completion');
  let p = b.prompt;
  if (absent(p)) throw badRequest(`'prompt' is required`, 'prompt', 'missing_required_parameter');
  // A batch of one is the same as its single prompt; larger batches are not served.
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') r.prompt = p;
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'number')) {
    if (!p.every((x) => Number.isInteger(x) && x >= 0)) throw badRequest(`'prompt' token ids must be integers ≥ 0`, 'prompt', 'invalid_value');
    r.prompt = p as number[];
  } else if (Array.isArray(p) && p.length > 1 && p.every((x) => typeof x === 'string' || Array.isArray(x))) {
    throw badRequest(`only one prompt per request is supported, got ${p.length}`, 'prompt', 'unsupported_value');
  } else throw badRequest(`'prompt' must be a string or an array of token ids`, 'prompt', 'invalid_type');
  r.echo = bool(b, 'echo') ?? false;
  const suffix = str(b, 'suffix');
  if (suffix) throw badRequest(`'suffix' is not supported`, 'suffix', 'unsupported_parameter');
  const bestOf = num(b, 'best_of', 1, 128, { int: true });
  if (bestOf !== undefined && bestOf !== 1) throw badRequest(`only best_of = 1 is supported`, 'best_of', 'unsupported_value');
  // Legacy: logprobs k (0–5) reports the chosen tokens' logprobs and the k most likely at each step.
  const lp = num(b, 'logprobs', 0, 5, { int: true });
  r.logprobs = lp !== undefined;
  r.params.logprobs = lp !== undefined;
  r.topLogprobs = lp ?? 0;
  r.params.topLogprobs = lp ?? 0;
  return r;
}

// ---- ids -----------------------------------------------------------------------------------------

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

export function randomId(prefix: string, n = 24): string {
  const b = new Uint8Array(n);
  globalThis.crypto.getRandomValues(b);
  let s = '';
  for (const x of b) s += ALPHABET[x % ALPHABET.length];
  return `${prefix}-${s}`;
}
