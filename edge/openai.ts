// The OpenAI request surface: body checks that name the parameter at fault, the mapping of OpenAI
// sampling fields onto the library's GenerateParams, and the error shape
// `{ error: { message, type, param, code } }`. Nothing here needs the model.

import { Grammar, GrammarError, RequestError, templateMessages, templateTools, type ChatMessage, type GenerateParams } from '../src/index';
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
  grammar: 'response_format',
  jsonSchema: 'response_format',
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

/** Recent grammars by what they were made from: one asked for again reuses the token masks already computed. */
const grammars = new Map<string, Grammar>();
const KEPT_GRAMMARS = 32;

/** The grammar kept under `key`, or the one `make` gives, kept from now on (least recently used dropped first). */
export function cachedGrammar(key: string, make: () => Grammar): Grammar {
  const g = grammars.get(key) ?? make();
  grammars.delete(key);
  grammars.set(key, g);
  while (grammars.size > KEPT_GRAMMARS) grammars.delete(grammars.keys().next().value!);
  return g;
}

/**
 * `response_format`: `{type: "text"}` (no constraint), `{type: "json_object"}` (any JSON object) or
 * `{type: "json_schema", json_schema: {name, schema, strict}}` (JSON valid under the schema). The
 * grammar that enforces it while decoding, or null.
 */
function responseFormat(b: Body): Grammar | null {
  const rf = b.response_format;
  if (absent(rf)) return null;
  if (typeof rf !== 'object' || Array.isArray(rf)) throw badRequest(`'response_format' must be an object`, 'response_format', 'invalid_type');
  const type = (rf as Body).type;
  if (type === 'text') return null;
  if (type === 'json_object') return cachedGrammar('json_object', () => Grammar.jsonObject());
  if (type !== 'json_schema') throw badRequest(`'response_format.type' must be text, json_object or json_schema`, 'response_format.type', 'invalid_value');
  const js = (rf as Body).json_schema;
  if (typeof js !== 'object' || js === null || Array.isArray(js)) throw badRequest(`'response_format.json_schema' must be an object`, 'response_format.json_schema', 'invalid_type');
  const name = (js as Body).name;
  if (name !== undefined && (typeof name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(name))) {
    throw badRequest(`'response_format.json_schema.name' must be 1–64 letters, digits, '_' or '-'`, 'response_format.json_schema.name', 'invalid_value');
  }
  bool(js as Body, 'strict');
  const schema = (js as Body).schema ?? {};
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    throw badRequest(`'response_format.json_schema.schema' must be a JSON Schema object`, 'response_format.json_schema.schema', 'invalid_type');
  }
  try {
    return cachedGrammar(`schema:${JSON.stringify(schema)}`, () => Grammar.fromJsonSchema(schema));
  } catch (e) {
    if (e instanceof GrammarError) throw badRequest(`'response_format.json_schema.schema': ${e.message}`, 'response_format.json_schema.schema', 'unsupported_value');
    throw e;
  }
}

/** `tools`, `tool_choice` and `parallel_tool_calls` of a chat request. */
function tools(b: Body, r: ParsedRequest): void {
  const pc = bool(b, 'parallel_tool_calls');
  r.parallelToolCalls = pc ?? true;
  const list = b.tools;
  if (!absent(list) && !(Array.isArray(list) && list.length === 0)) {
    try {
      r.tools = templateTools(list);
    } catch (e) {
      if (e instanceof RequestError) throw badRequest(`'${e.field}' ${e.detail}`, e.field, 'invalid_value');
      throw e;
    }
    if (r.tools.length > 128) throw badRequest(`'tools' holds at most 128 tools`, 'tools', 'invalid_value');
  }
  const tc = b.tool_choice;
  if (absent(tc)) return;
  if (tc === 'auto' || tc === 'none' || tc === 'required') r.toolChoice = tc;
  else if (typeof tc === 'object' && !Array.isArray(tc) && (tc as Body).type === 'function' && typeof ((tc as Body).function as Body | undefined)?.name === 'string') {
    r.toolChoice = { name: ((tc as Body).function as Body).name as string };
  } else throw badRequest(`'tool_choice' must be "auto", "none", "required" or {"type": "function", "function": {"name": …}}`, 'tool_choice', 'invalid_value');
  if (r.toolChoice !== 'auto' && r.toolChoice !== 'none' && !r.tools) throw badRequest(`'tool_choice' ${JSON.stringify(tc)} needs 'tools'`, 'tool_choice', 'invalid_value');
  if (typeof r.toolChoice === 'object') {
    const name = r.toolChoice.name;
    if (!r.tools!.some((t) => (t.function as Body).name === name)) throw badRequest(`'tool_choice' names the function '${name}', which 'tools' does not hold`, 'tool_choice', 'invalid_value');
  }
  if ((r.toolChoice === 'required' || typeof r.toolChoice === 'object') && r.params.grammar) {
    throw badRequest(`'response_format' cannot constrain a reply that 'tool_choice' makes a tool call`, 'response_format', 'invalid_value');
  }
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
  /** Completions: the prompts (one, or a batch), each text or token ids. */
  prompts?: (string | number[])[];
  /** Choices per prompt. */
  n: number;
  /** Chat: the tools offered (as templates get them), absent without `tools`. */
  tools?: Record<string, unknown>[];
  /** Chat: whether the reply may (auto), must (required), must not (none) call tools, or must call the one named. */
  toolChoice: 'auto' | 'none' | 'required' | { name: string };
  /** Chat: more than one call in a reply (default true). */
  parallelToolCalls: boolean;
  echo: boolean;
}

/** Most choices one request asks for (prompts × n). */
export const MAX_CHOICES = 128;

/** Fields every generation request shares. */
function common(b: Body, kind: ParsedRequest['kind']): ParsedRequest {
  const model = str(b, 'model', 256);
  const n = num(b, 'n', 1, MAX_CHOICES, { int: true }) ?? 1;
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
  for (const k of ['functions', 'function_call'] as const) {
    const v = b[k];
    if (!absent(v) && !(Array.isArray(v) && v.length === 0)) throw badRequest(`'${k}' (the deprecated form of tool calling) is not supported; use 'tools' and 'tool_choice'`, k, 'unsupported_parameter');
  }
  const grammar = responseFormat(b);
  if (grammar) params.grammar = grammar;
  // Choices of a stored session would each leave another state behind: one conversation, one reply.
  if (session !== undefined && n > 1) throw badRequest(`'n' > 1 cannot be used with a session`, 'n', 'unsupported_value');
  return { kind, model, stream, includeUsage, session, params, logprobs: false, topLogprobs: 0, echo: false, n, toolChoice: 'auto', parallelToolCalls: true };
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
    const msg: ChatMessage = { role: role === 'developer' ? 'system' : role, content: messageContent(m as Body, i) };
    // Tool calls of an assistant turn, and the call a tool result answers, are rendered by the template.
    for (const k of ['tool_calls', 'tool_call_id', 'name'] as const) if (!absent((m as Body)[k])) msg[k] = (m as Body)[k];
    return msg;
  });
  try {
    templateMessages(r.messages);
  } catch (e) {
    if (e instanceof RequestError) throw badRequest(`'${e.field}' ${e.detail}`, e.field, 'invalid_value');
    throw e;
  }
  tools(b, r);
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
  const p = b.prompt;
  if (absent(p)) throw badRequest(`'prompt' is required`, 'prompt', 'missing_required_parameter');
  // One prompt (text or token ids), or a batch of them (an array of texts or of token-id arrays).
  const one = (x: unknown, param: string): string | number[] => {
    if (typeof x === 'string') return x;
    if (Array.isArray(x) && x.length > 0 && x.every((t) => typeof t === 'number')) {
      if (!x.every((t) => Number.isInteger(t) && t >= 0)) throw badRequest(`'${param}' token ids must be integers ≥ 0`, param, 'invalid_value');
      return x as number[];
    }
    throw badRequest(`'${param}' must be a string or an array of token ids`, param, 'invalid_type');
  };
  if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || Array.isArray(x))) {
    r.prompts = p.map((x, i) => one(x, `prompt[${i}]`));
  } else r.prompts = [one(p, 'prompt')];
  if (r.prompts.length * r.n > MAX_CHOICES) {
    throw badRequest(`${r.prompts.length} prompts × n = ${r.n} asks for ${r.prompts.length * r.n} choices; at most ${MAX_CHOICES}`, r.prompts.length > 1 ? 'prompt' : 'n', 'invalid_value');
  }
  if (r.prompts.length > 1 && r.session !== undefined) throw badRequest(`a batch of prompts cannot be used with a session`, 'prompt', 'unsupported_value');
  if (!absent(b.tools) || !absent(b.tool_choice)) throw badRequest(`'tools' are for /v1/chat/completions`, absent(b.tools) ? 'tool_choice' : 'tools', 'unsupported_parameter');
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
