// Tool calling (OpenAI `tools` / `tool_calls`) for checkpoints whose chat template renders tools.
// Three output formats of tool calls are known here:
//   hermes   (Qwen2.5/Qwen3, Hermes):  <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
//   llama3   (Llama 3.1/3.2 JSON):     [<|python_tag|>]{"name": "f", "parameters": {...}}[; {...}]
//   mistral:                           [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]
//                                      or [TOOL_CALLS]f[ARGS]{...} (also f[CALL_ID]id[ARGS]{...})
// This module holds what the server needs around generation: which format a template uses, the
// request's messages and tools in the shape templates expect, an incremental parser that splits
// the generated text into content and calls, and a GBNF grammar that forces a reply of calls.

import { RequestError } from './errors';
import { GrammarError, jsonSchemaToGbnf } from './grammar/index';

export type ToolFormat = 'hermes' | 'llama3' | 'mistral';

/** One function a model may call: its name, what it does, and its arguments as a JSON Schema. */
export interface ToolFunction {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

/** A call parsed from generated text; `arguments` is JSON text of an object. */
export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

/**
 * A bad tool value in a request, naming the parameter at fault (e.g. `tools[2].function.name`).
 * It is a RequestError, so servers answer it as a 400 on that parameter.
 */
export class ToolError extends RequestError {
  constructor(readonly param: string, message: string) {
    super(param, message);
    this.name = 'ToolError';
  }
}

/** The names OpenAI accepts for functions. */
const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// ---- detection ----------------------------------------------------------------------------------

/**
 * Which format a chat template's source uses for tool calls, or null when the template does not
 * render tools (its code, comments aside, never names `tools`) or uses none of the three formats.
 * The format is told by the markers the template writes for calls: `[TOOL_CALLS]` (mistral),
 * `<tool_call>` (hermes), `<|python_tag|>` or the `ipython` role of tool results (llama3).
 */
export function detectToolFormat(templateSource: string): ToolFormat | null {
  // Jinja comments do not render; a template that only mentions tools in one does not use them.
  const code = templateSource.replace(/\{#[\s\S]*?#\}/g, '');
  if (!/\btools\b/.test(code)) return null;
  if (code.includes('[TOOL_CALLS]')) return 'mistral';
  // Qwen3-Coder wraps XML calls (<function=name><parameter=...>) in <tool_call>: not JSON, not hermes.
  if (code.includes('<tool_call>')) return code.includes('<function=') ? null : 'hermes';
  if (code.includes('<|python_tag|>') || /\bipython\b/.test(code)) return 'llama3';
  return null;
}

// ---- request values → template values -----------------------------------------------------------

/** Alphanumerics for ids. */
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * A 9-character alphanumeric id derived from `id` (FNV-1a over its UTF-16 units, 64 bits), made
 * unique against `taken` by rehashing with a counter.
 */
function shortId(id: string, taken: Set<string>): string {
  for (let salt = 0; ; salt++) {
    let h = 0xcbf29ce484222325n;
    const s = salt ? `${id}#${salt}` : id;
    for (let i = 0; i < s.length; i++) h = BigInt.asUintN(64, (h ^ BigInt(s.charCodeAt(i))) * 0x100000001b3n);
    let out = '';
    for (let i = 0; i < 9; i++) {
      out += ALNUM[Number(h % 62n)];
      h /= 62n;
    }
    if (!taken.has(out)) return out;
  }
}

/** An arguments value for a template: the object a JSON string holds, else the value as it is. */
function templateArguments(args: unknown): unknown {
  if (typeof args !== 'string') return args;
  try {
    const v = JSON.parse(args);
    return isObject(v) ? v : args;
  } catch {
    return args;
  }
}

/**
 * OpenAI chat messages → the message objects HF chat templates expect: an assistant's `tool_calls`
 * keep the OpenAI shape ({id, type, function: {name, arguments}}) with `function.arguments` parsed
 * into an object (left as the string when it is not a JSON object), an empty `tool_calls` list is
 * dropped, `tool` messages keep `tool_call_id` and `name` (the name is filled in from the call with
 * that id when missing), and a null or missing content becomes ''. The input is not mutated.
 *
 * With `format: 'mistral'`, call ids that are not 9 alphanumerics (what Mistral templates demand)
 * are replaced by 9-character ones derived from them, the same in the call and in its result.
 */
export function templateMessages(messages: ReadonlyArray<Record<string, unknown>>, opts: { format?: ToolFormat | null } = {}): Record<string, unknown>[] {
  if (!Array.isArray(messages)) throw new ToolError('messages', 'must be an array');
  const names = new Map<string, string>();
  const ids = new Map<string, string>();
  const taken = new Set<string>();
  const mapId = (id: unknown): unknown => {
    if (opts.format !== 'mistral' || typeof id !== 'string' || /^[a-zA-Z0-9]{9}$/.test(id)) return id;
    let short = ids.get(id);
    if (short === undefined) {
      short = shortId(id, taken);
      ids.set(id, short);
      taken.add(short);
    }
    return short;
  };
  if (opts.format === 'mistral') {
    // Ids that already fit stay, so none of the derived ones may equal them.
    for (const m of messages) {
      if (!isObject(m)) continue;
      if (typeof m.tool_call_id === 'string' && /^[a-zA-Z0-9]{9}$/.test(m.tool_call_id)) taken.add(m.tool_call_id);
      if (Array.isArray(m.tool_calls)) for (const c of m.tool_calls) if (isObject(c) && typeof c.id === 'string' && /^[a-zA-Z0-9]{9}$/.test(c.id)) taken.add(c.id);
    }
  }
  return messages.map((m, i) => {
    if (!isObject(m)) throw new ToolError(`messages[${i}]`, 'must be an object');
    const out: Record<string, unknown> = { ...m };
    if (out.content === null || out.content === undefined) out.content = '';
    if (m.tool_calls !== undefined && m.tool_calls !== null) {
      if (!Array.isArray(m.tool_calls)) throw new ToolError(`messages[${i}].tool_calls`, 'must be an array');
      if (m.tool_calls.length === 0) delete out.tool_calls;
      else {
        out.tool_calls = m.tool_calls.map((c: unknown, j) => {
          const at = `messages[${i}].tool_calls[${j}]`;
          if (!isObject(c)) throw new ToolError(at, 'must be an object');
          if (!isObject(c.function)) throw new ToolError(`${at}.function`, 'must be an object');
          if (typeof c.function.name !== 'string') throw new ToolError(`${at}.function.name`, 'must be a string');
          if (typeof c.id === 'string') names.set(c.id, c.function.name);
          const call: Record<string, unknown> = { ...c, type: c.type ?? 'function', function: { ...c.function, arguments: templateArguments(c.function.arguments ?? {}) } };
          if (c.id !== undefined) call.id = mapId(c.id);
          return call;
        });
      }
    } else if (m.tool_calls === null) delete out.tool_calls;
    if (m.role === 'tool') {
      const name = typeof m.tool_call_id === 'string' ? names.get(m.tool_call_id) : undefined;
      if ((m.name === undefined || m.name === null) && name !== undefined) out.name = name;
      if (m.tool_call_id !== undefined) out.tool_call_id = mapId(m.tool_call_id);
    }
    return out;
  });
}

/**
 * OpenAI `tools` ([{type: 'function', function: {name, description, parameters}}]) → what chat
 * templates get (transformers passes the same objects; copies here). Checks each tool: type
 * "function", a name of 1 to 64 letters, digits, '_' or '-' that no other tool has, a string
 * description and an object of parameters when given. A null description or parameters is dropped.
 */
export function templateTools(tools: unknown): Record<string, unknown>[] {
  if (!Array.isArray(tools)) throw new ToolError('tools', 'must be an array of tools');
  const seen = new Map<string, number>();
  return tools.map((t: unknown, i) => {
    const at = `tools[${i}]`;
    if (!isObject(t)) throw new ToolError(at, 'must be an object');
    if (t.type !== 'function') throw new ToolError(`${at}.type`, 'must be "function"');
    const f = t.function;
    if (!isObject(f)) throw new ToolError(`${at}.function`, 'must be an object');
    if (typeof f.name !== 'string' || !NAME.test(f.name)) throw new ToolError(`${at}.function.name`, 'must be 1 to 64 letters, digits, underscores or dashes');
    const first = seen.get(f.name);
    if (first !== undefined) throw new ToolError(`${at}.function.name`, `repeats the name ${JSON.stringify(f.name)} of tools[${first}]`);
    seen.set(f.name, i);
    const fn: Record<string, unknown> = { ...f };
    if (fn.description === null) delete fn.description;
    else if (fn.description !== undefined && typeof fn.description !== 'string') throw new ToolError(`${at}.function.description`, 'must be a string');
    if (fn.parameters === null) delete fn.parameters;
    else if (fn.parameters !== undefined && !isObject(fn.parameters)) throw new ToolError(`${at}.function.parameters`, 'must be a JSON Schema object');
    return { ...t, function: fn };
  });
}

/** The functions of tools that templateTools() returned, for toolCallGbnf(). */
export function toolFunctions(tools: ReadonlyArray<Record<string, unknown>>): ToolFunction[] {
  return tools.map((t) => {
    const f = t.function as Record<string, unknown>;
    const out: ToolFunction = { name: f.name as string };
    if (typeof f.description === 'string') out.description = f.description;
    if (isObject(f.parameters)) out.parameters = f.parameters;
    return out;
  });
}

// ---- parsing generated text ---------------------------------------------------------------------

/**
 * Finds where a JSON object or array ends, reading its text in pieces as it streams. It tracks
 * strings and bracket nesting only (JSON.parse judges the rest), and gives up at the first
 * character that cannot occur outside a string in JSON, or at a closing bracket of the wrong kind,
 * so that text which is not JSON is released early. Control characters inside strings (raw
 * newlines, which models write in code arguments) are escaped in `text`.
 */
class JsonExtent {
  /** The text read, as generated. */
  src = '';
  /** The text read, control characters in strings escaped. */
  text = '';
  private readonly open: string[] = [];
  private inString = false;
  private escaped = false;

  /**
   * Reads on into `s`: `used` characters of it belong to the value; `state` is 'end' when the
   * value closed with the last of them, 'bad' when the next character cannot continue it, and
   * 'more' when all of `s` was taken and the value goes on.
   */
  scan(s: string): { used: number; state: 'more' | 'end' | 'bad' } {
    let i = 0;
    let state: 'more' | 'end' | 'bad' = 'more';
    let text = '';
    for (; i < s.length; i++) {
      const c = s[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
        else if (c < ' ') {
          text += `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
          continue;
        }
        text += c;
        continue;
      }
      if (c === '"' && this.open.length) this.inString = true;
      else if (c === '{' || c === '[') this.open.push(c === '{' ? '}' : ']');
      else if (c === '}' || c === ']') {
        if (this.open.pop() !== c) {
          state = 'bad';
          break;
        }
        if (!this.open.length) {
          text += c;
          i++;
          state = 'end';
          break;
        }
      } else if (!this.open.length || !/[\s,:0-9.eE+\-a-z]/.test(c)) {
        // Only an object or array opens a value here; outside strings JSON has no other characters.
        state = 'bad';
        break;
      }
      text += c;
    }
    this.src += s.slice(0, i);
    this.text += text;
    return { used: i, state };
  }
}

const WS = /\s/;

/** The arguments of a call as JSON text of an object, or null when `v` cannot be arguments. */
function argumentsText(v: unknown): string | null {
  if (isObject(v)) return JSON.stringify(v);
  if (typeof v === 'string') {
    try {
      const o = JSON.parse(v);
      return isObject(o) ? JSON.stringify(o) : null;
    } catch {
      return null;
    }
  }
  return null;
}

/** How the parser is placed in the text. */
type Mode =
  /** Reply start (llama3, mistral): a bare call may begin here, without its marker. */
  | 'start'
  /** Plain content, watching for the format's marker. */
  | 'content'
  /** After a marker, llama3's `;` or mistral's `[ARGS]`: whitespace, then the call's first character. */
  | 'open'
  /** A JSON value of a call (or array of calls) is being read. */
  | 'json'
  /** mistral `[TOOL_CALLS]name[CALL_ID]id[ARGS]`: the name and id part. */
  | 'name'
  /** hermes: after a call's JSON, before `</tool_call>`. */
  | 'close'
  /** After a call: whitespace (dropped), a separator or the next marker, or content. */
  | 'after';

/** What a complete JSON value is, in the current call. */
type JsonKind = 'call' | 'array' | 'args';

const MARKER: Record<ToolFormat, string> = { hermes: '<tool_call>', llama3: '<|python_tag|>', mistral: '[TOOL_CALLS]' };
const HERMES_CLOSE = '</tool_call>';

/** Random id characters from the platform's CSPRNG. */
function randomSuffix(): string {
  const bytes = new Uint8Array(24);
  globalThis.crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += ALNUM[b % 62];
  return s;
}

/**
 * Incremental parser of generated text: feed the text pieces as they stream; it separates plain
 * content from tool calls. Content that might be the start of a call marker (and whitespace
 * before it, which is dropped when a call follows) is held back until decided. The results do not
 * depend on how the text is split into pieces.
 *
 * A call that turns out malformed (JSON that does not parse, no name, arguments that are not an
 * object) is returned as content: the marker and text exactly as generated.
 */
export class ToolCallParser {
  /** Text read but not yet decided. */
  private buf = '';
  /** How many characters at the start of `buf` are known to be whitespace (so a long run of it is not read again on each push). */
  private wsKnown = 0;
  /** Text of the call being read (marker, whitespace), returned as content if it fails. */
  private raw = '';
  private mode: Mode;
  private kind: JsonKind = 'call';
  /** Whether the call being read came without its marker (then it must name its arguments). */
  private bare = false;
  /** mistral `name[ARGS]` form: the name. */
  private fnName = '';
  private json: JsonExtent | null = null;
  private content = '';
  private calls: ToolCall[] = [];
  private readonly marker: string;
  private readonly idPrefix: string;
  private readonly random: () => string;

  constructor(readonly format: ToolFormat, opts: { idPrefix?: string; random?: () => string } = {}) {
    if (!(format in MARKER)) throw new ToolError('format', `must be hermes, llama3 or mistral (got ${JSON.stringify(format)})`);
    this.marker = MARKER[format];
    this.mode = format === 'hermes' ? 'content' : 'start';
    this.idPrefix = opts.idPrefix ?? 'call_';
    this.random = opts.random ?? randomSuffix;
  }

  /** Returns the content text now known not to be part of a call, and calls whose JSON is complete (with ids that stay theirs). */
  push(text: string): { content: string; calls: ToolCall[] } {
    this.buf += text;
    while (this.step(false));
    return this.take();
  }

  /** At the end of generation: remaining content; an unfinished call is returned as content text (never lost). */
  finish(): { content: string; calls: ToolCall[] } {
    while (this.step(true));
    return this.take();
  }

  private take(): { content: string; calls: ToolCall[] } {
    const out = { content: this.content, calls: this.calls };
    this.content = '';
    this.calls = [];
    return out;
  }

  /** The number of whitespace characters the buffer starts with. */
  private leadingWs(): number {
    let n = this.wsKnown;
    while (n < this.buf.length && WS.test(this.buf[n])) n++;
    return (this.wsKnown = n);
  }

  /** Removes the first `n` characters of the buffer and returns them. */
  private cut(n: number): string {
    const head = this.buf.slice(0, n);
    this.buf = this.buf.slice(n);
    this.wsKnown = Math.max(0, this.wsKnown - n);
    return head;
  }

  /** The call being read is not one: its text so far becomes content, up to `upTo` of the buffer. */
  private fail(upTo: number): void {
    this.content += this.raw + (this.json?.src ?? '') + this.cut(upTo);
    this.raw = '';
    this.json = null;
    this.mode = 'content';
  }

  /** Begins reading a JSON value (an object or array) at the start of the buffer. */
  private beginJson(kind: JsonKind): void {
    this.kind = kind;
    this.json = new JsonExtent();
    this.mode = 'json';
  }

  private addCall(name: string, args: string): void {
    this.calls.push({ id: this.idPrefix + this.random(), name, arguments: args });
  }

  /** A call object's name and arguments text, or null when it is not a call. */
  private callOf(v: unknown): { name: string; args: string } | null {
    if (!isObject(v) || typeof v.name !== 'string' || !v.name) return null;
    const key = this.format === 'llama3' && v.parameters !== undefined ? 'parameters' : 'arguments';
    if (v[key] === undefined) return this.bare ? null : { name: v.name, args: '{}' };
    const args = argumentsText(v[key]);
    return args === null ? null : { name: v.name, args };
  }

  /** Acts on the buffer once; false when nothing more can be decided before more text comes. */
  private step(final: boolean): boolean {
    switch (this.mode) {
      case 'start':
        return this.stepStart(final);
      case 'content':
        return this.stepContent(final);
      case 'open':
        return this.stepOpen(final);
      case 'json':
        return this.stepJson(final);
      case 'name':
        return this.stepName(final);
      case 'close':
        return this.stepClose(final);
      case 'after':
        return this.stepAfter(final);
    }
  }

  /** llama3 `{` or mistral `[{` as the reply's first text is a call without its marker. */
  private stepStart(final: boolean): boolean {
    const lead = this.leadingWs();
    const rest = this.buf.slice(lead, lead + 1);
    if (this.format === 'llama3' && rest === '{') {
      this.raw = this.cut(lead);
      this.bare = true;
      this.beginJson('call');
      return true;
    }
    if (this.format === 'mistral' && rest === '[') {
      // `[` then whitespace: a list of calls when `{` comes next.
      const m = /^\[\s*(\S?)/.exec(this.buf.slice(lead))!;
      if (m[1] === '{') {
        this.raw = this.cut(lead);
        this.bare = true;
        this.beginJson('array');
        return true;
      }
      if (m[1] === '' && !final) return false;
    }
    if (rest === '' && !final) return false;
    this.mode = 'content';
    return true;
  }

  private stepContent(final: boolean): boolean {
    const m = this.marker;
    // Markers do not begin with whitespace: the search starts after the whitespace known to lead.
    const from = this.leadingWs();
    const at = this.buf.indexOf(m, from);
    if (at >= 0) {
      // Whitespace right before a call is markup, not content; kept in `raw` in case the call fails.
      let start = at;
      while (start > from && WS.test(this.buf[start - 1])) start--;
      if (start === from) start = 0;
      this.content += this.cut(start);
      this.raw = this.cut(at + m.length - start);
      this.bare = false;
      this.kind = 'call';
      this.mode = 'open';
      return true;
    }
    if (final) {
      this.content += this.cut(this.buf.length);
      return false;
    }
    // Hold back the longest end of the text that begins the marker, and whitespace before it.
    let hold = this.buf.length;
    for (let k = Math.min(m.length - 1, this.buf.length - from); k > 0; k--) {
      if (m.startsWith(this.buf.slice(this.buf.length - k))) {
        hold = this.buf.length - k;
        break;
      }
    }
    let start = hold;
    while (start > from && WS.test(this.buf[start - 1])) start--;
    if (start === from) start = 0;
    this.content += this.cut(start);
    this.wsKnown = hold - start;
    return false;
  }

  private stepOpen(final: boolean): boolean {
    const lead = this.leadingWs();
    if (lead === this.buf.length) {
      if (final) this.fail(this.buf.length);
      return final;
    }
    this.raw += this.cut(lead);
    const c = this.buf[0];
    if (this.kind === 'args') {
      // mistral, after `name[ARGS]`.
      if (c === '{') this.beginJson('args');
      else this.fail(0);
    } else if (c === '{' && this.format !== 'mistral') this.beginJson('call');
    else if (c === '[' && this.format === 'mistral') this.beginJson('array');
    else if (/[a-zA-Z0-9_.-]/.test(c) && this.format === 'mistral') this.mode = 'name';
    else this.fail(0);
    return true;
  }

  private stepJson(final: boolean): boolean {
    const r = this.json!.scan(this.buf);
    this.cut(r.used);
    if (r.state !== 'end') {
      if (r.state === 'bad' || final) this.fail(0);
      return r.state === 'bad' || final;
    }
    let value: unknown;
    try {
      value = JSON.parse(this.json!.text);
    } catch {
      this.fail(0);
      return true;
    }
    if (this.kind === 'array') {
      const calls = Array.isArray(value) && value.length ? value.map((v) => this.callOf(v)) : [null];
      if (calls.some((c) => c === null)) {
        this.fail(0);
        return true;
      }
      for (const c of calls) this.addCall(c!.name, c!.args);
    } else if (this.kind === 'args') {
      if (!isObject(value)) {
        this.fail(0);
        return true;
      }
      this.addCall(this.fnName, JSON.stringify(value));
    } else {
      const c = this.callOf(value);
      if (c === null) {
        this.fail(0);
        return true;
      }
      this.addCall(c.name, c.args);
    }
    this.raw = '';
    this.json = null;
    this.mode = this.format === 'hermes' ? 'close' : 'after';
    return true;
  }

  /** mistral: `name[ARGS]` or `name[CALL_ID]id[ARGS]`, then the arguments object. */
  private stepName(final: boolean): boolean {
    const m = /^([a-zA-Z0-9_.-]+)(?:\[CALL_ID\]([a-zA-Z0-9_-]*))?/.exec(this.buf)!;
    const tail = this.buf.slice(m[0].length);
    if (tail.startsWith('[ARGS]')) {
      this.fnName = m[1];
      this.raw += this.cut(m[0].length + 6);
      this.kind = 'args';
      this.mode = 'open';
      return true;
    }
    // The part read may still grow into `[CALL_ID]id` or `[ARGS]`.
    const pending = tail === '' || (m[2] === undefined ? ['[ARGS]', '[CALL_ID]'].some((t) => t.startsWith(tail)) : '[ARGS]'.startsWith(tail));
    if (pending && !final) return false;
    this.fail(this.buf.length - tail.length);
    return true;
  }

  /** hermes: whitespace and `</tool_call>` after a call's JSON (missing at the end: fine). */
  private stepClose(final: boolean): boolean {
    const lead = this.leadingWs();
    const rest = this.buf.slice(lead, lead + HERMES_CLOSE.length);
    if (rest === HERMES_CLOSE) {
      this.cut(lead + HERMES_CLOSE.length);
      this.mode = 'after';
      return true;
    }
    if (HERMES_CLOSE.startsWith(rest)) {
      if (final) this.cut(this.buf.length);
      return false;
    }
    // Something else follows the call: that is content.
    this.mode = 'content';
    return true;
  }

  /** After a call: only whitespace so far is dropped at the end; llama3's `;` leads to the next call. */
  private stepAfter(final: boolean): boolean {
    const lead = this.leadingWs();
    if (lead === this.buf.length) {
      if (final) this.cut(lead);
      return false;
    }
    if (this.format === 'llama3' && this.buf[lead] === ';') {
      this.raw = this.cut(lead + 1);
      this.kind = 'call';
      this.mode = 'open';
      return true;
    }
    this.mode = 'content';
    return true;
  }
}

// ---- forcing calls ------------------------------------------------------------------------------

/**
 * Keywords that only narrow the values a schema allows and that the grammar converter does not
 * follow; they are dropped, so the grammar allows a superset there (a number out of range, say).
 */
const NARROWING = new Set(['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf', 'minProperties', 'maxProperties', 'uniqueItems', 'contentEncoding', 'contentMediaType', 'contentSchema']);
/** String formats the grammar converter writes; others are annotations (as JSON Schema has them by default) and dropped. */
const GRAMMAR_FORMATS = new Set(['date', 'time', 'date-time', 'uuid', 'email']);
/** Keywords whose value is a schema, a list of schemas, or a map of names to schemas. */
const SUBSCHEMA = new Set(['items', 'additionalProperties', 'not', 'if', 'then', 'else', 'contains', 'propertyNames', 'unevaluatedItems', 'unevaluatedProperties']);
const SUBSCHEMA_LISTS = new Set(['prefixItems', 'anyOf', 'oneOf', 'allOf']);
const SUBSCHEMA_MAPS = new Set(['properties', '$defs', 'definitions', 'patternProperties', 'dependentSchemas']);

/** A copy of a JSON Schema without the narrowing keywords the grammar cannot follow (see NARROWING). */
function grammarSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(grammarSchema);
  if (!isObject(s)) return s;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    if (NARROWING.has(k) || (k === 'format' && !(typeof v === 'string' && GRAMMAR_FORMATS.has(v)))) continue;
    if (SUBSCHEMA.has(k) || SUBSCHEMA_LISTS.has(k)) out[k] = grammarSchema(v);
    else if (SUBSCHEMA_MAPS.has(k) && isObject(v)) out[k] = Object.fromEntries(Object.entries(v).map(([name, sub]) => [name, grammarSchema(sub)]));
    else out[k] = v;
  }
  return out;
}

/** A GBNF string literal of `text` (the names and markup here: printable ASCII and newlines). */
function gbnfLiteral(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n')}"`;
}

/** How each format writes a call and joins several, as the chat templates teach it. */
const CALL_SYNTAX: Record<ToolFormat, { before: (name: string) => string; after: string; open: string; separator: string; close: string }> = {
  hermes: { before: (n) => `<tool_call>\n{"name": "${n}", "arguments": `, after: '}\n</tool_call>', open: '', separator: '\n', close: '' },
  // Without <|python_tag|> and [TOOL_CALLS]: special tokens are not produced under a grammar, and
  // the parser takes a call without its marker at the start of a reply.
  llama3: { before: (n) => `{"name": "${n}", "parameters": `, after: '}', open: '', separator: '; ', close: '' },
  mistral: { before: (n) => `{"name": "${n}", "arguments": `, after: '}', open: '[', separator: ', ', close: ']' },
};

/**
 * A GBNF grammar (text, root rule `root`) forcing the whole reply to be tool calls in `format`:
 * with `name`, calls of only that function, else of any of `tools`; `parallel` allows more than
 * one call. Each call's arguments follow its function's JSON Schema (a function without one takes
 * `{}`), less the keywords that only narrow values and that the grammar cannot follow (minimum,
 * maximum, multipleOf, uniqueItems, formats other than date, time, date-time, uuid, email…).
 * The calls are written as ToolCallParser reads them; llama3 and mistral replies come without
 * their marker token. A schema the grammar cannot express is a ToolError on its `tools[i]`.
 */
export function toolCallGbnf(format: ToolFormat, tools: ToolFunction[], opts: { name?: string; parallel: boolean }): string {
  const syntax = CALL_SYNTAX[format];
  if (!syntax) throw new ToolError('format', `must be hermes, llama3 or mistral (got ${JSON.stringify(format)})`);
  if (!Array.isArray(tools) || !tools.length) throw new ToolError('tools', 'must hold at least one function to call');
  const chosen = tools.map((t, i) => ({ t, i })).filter(({ t }) => opts.name === undefined || t.name === opts.name);
  if (!chosen.length) throw new ToolError('tool_choice.function.name', `names no function of tools (${JSON.stringify(opts.name)})`);
  const rules: string[] = [];
  const calls: string[] = [];
  for (const { t, i } of chosen) {
    if (typeof t.name !== 'string' || !NAME.test(t.name)) throw new ToolError(`tools[${i}].function.name`, 'must be 1 to 64 letters, digits, underscores or dashes');
    const args = `tool${i}-args`;
    const schema = t.parameters === undefined ? { type: 'object', properties: {} } : grammarSchema(t.parameters);
    try {
      rules.push(jsonSchemaToGbnf(schema, { rulePrefix: `tool${i}-`, rootName: args }).trimEnd());
    } catch (e) {
      if (e instanceof GrammarError) throw new ToolError(`tools[${i}].function.parameters`, `cannot be followed by a grammar: ${e.message}`);
      throw e;
    }
    calls.push(`${gbnfLiteral(syntax.before(t.name))} ${args} ${gbnfLiteral(syntax.after)}`);
  }
  const lit = (s: string) => (s ? `${gbnfLiteral(s)} ` : '');
  const more = opts.parallel ? `( ${gbnfLiteral(syntax.separator)} call )* ` : '';
  return [`root ::= ${lit(syntax.open)}call ${more}${lit(syntax.close)}`.trimEnd(), `call ::= ${calls.join(' | ')}`, ...rules].join('\n') + '\n';
}
