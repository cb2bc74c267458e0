// JSON Schema → GBNF: a grammar whose sentences are JSON texts valid under the schema.
//
// Output style: compact JSON, at most one space between tokens (`{"a": 1, "b": [2, 3]}` and
// `{"a":1,"b":[2,3]}` both match, newlines never), so a model cannot spin on whitespace. Properties
// come in the order of `properties`; required ones must appear, optional ones may be left out.
// Other properties are refused unless `additionalProperties` is true or a schema, and then come after
// the declared ones with keys different from them. Strings hold no raw control characters; numbers
// have at most 16 integer digits, 16 fraction digits and 3 exponent digits.
//
// Supported: type (and type lists), properties, required, additionalProperties, enum and const (their
// values of a type `type` excludes dropped; other sibling keywords are not applied to them), items,
// prefixItems, minItems, maxItems, anyOf, oneOf (as anyOf), allOf (merged), $ref to #/$defs/…,
// #/definitions/… or any local JSON pointer (recursion allowed), minLength, maxLength, pattern
// (the whole string must match), format (date, time, date-time, uuid, email), nullable.
// Annotations (description, title, default, examples, $schema, $id, $comment, …) are ignored.
// Any other keyword is a GrammarError naming it and its JSON pointer.

import { GrammarError } from './errors';
import { gbnfLiteral } from './emit';
import { regexToGbnf } from './regex';

export interface JsonSchemaOptions {
  /** Put before every rule name, so the rules can join a bigger grammar without clashes. Default ''. */
  rulePrefix?: string;
  /** The name of the rule for the schema itself. Default `${rulePrefix}root`. */
  rootName?: string;
}

/** GBNF rules for the JSON texts valid under `schema`, the rule `rootName` first. */
export function jsonSchemaToGbnf(schema: unknown, opts: JsonSchemaOptions = {}): string {
  const prefix = opts.rulePrefix ?? '';
  const rootName = opts.rootName ?? `${prefix}root`;
  if (!/^[A-Za-z0-9_-]+$/.test(prefix + 'x') || !/^[A-Za-z0-9_-]+$/.test(rootName)) throw new GrammarError(`rule names may hold only letters, digits, '_' and '-' (rulePrefix ${JSON.stringify(prefix)}, rootName ${JSON.stringify(rootName)})`);
  const c = new SchemaConverter(schema, prefix, rootName);
  const body = c.visit(schema, '#', 'root');
  return [`${rootName} ::= ${body}`, ...[...c.rules].map(([name, b]) => `${name} ::= ${b}`)].join('\n') + '\n';
}

type Schema = Record<string, unknown>;

const ANNOTATIONS = new Set(['description', 'title', 'default', 'examples', 'example', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly', '$defs', 'definitions']);
const SUPPORTED = new Set(['type', 'properties', 'required', 'additionalProperties', 'enum', 'const', 'items', 'prefixItems', 'minItems', 'maxItems', 'anyOf', 'oneOf', 'allOf', '$ref', 'minLength', 'maxLength', 'pattern', 'format', 'nullable']);
const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'] as const;
type JsonType = (typeof TYPES)[number];
/** Keywords that say which type a schema without `type` is about. */
const TYPE_OF: Record<string, JsonType> = {
  properties: 'object', additionalProperties: 'object', required: 'object',
  items: 'array', prefixItems: 'array', minItems: 'array', maxItems: 'array',
  minLength: 'string', maxLength: 'string', pattern: 'string', format: 'string',
};

/** Rules shared by all schemas, by name (before the prefix); `$x` refers to rule x. */
const PRIMITIVES: Record<string, string> = {
  ws: '" "?',
  escape: '"\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
  char: '[^"\\\\\\x00-\\x1f] | $escape',
  string: '"\\"" $char* "\\""',
  integer: '"-"? ( "0" | [1-9] [0-9]{0,15} )',
  number: '"-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?',
  boolean: '"true" | "false"',
  null: '"null"',
  value: '$object | $array | $string | $number | $boolean | $null',
  object: '"{" $ws ( $string $ws ":" $ws $value ( $ws "," $ws $string $ws ":" $ws $value )* $ws )? "}"',
  array: '"[" $ws ( $value ( $ws "," $ws $value )* $ws )? "]"',
  date: '[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )',
  time: '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,9} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
  'date-time': '$date "T" $time',
  uuid: '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
  'email-atom': '[A-Za-z0-9!#$%&\'*+/=?^_`{|}~-]+',
  'email-label': '[A-Za-z0-9] ( [A-Za-z0-9-]* [A-Za-z0-9] )?',
  email: '$email-atom ( "." $email-atom )* "@" $email-label ( "." $email-label )+',
};
const FORMATS = ['date', 'time', 'date-time', 'uuid', 'email'];

function isSchemaObject(x: unknown): x is Schema {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function pointer(path: string, ...keys: (string | number)[]): string {
  return [path, ...keys.map((k) => String(k).replace(/~/g, '~0').replace(/\//g, '~1'))].join('/');
}

/** Whether a JSON value is of a JSON Schema type. */
function hasType(v: unknown, t: JsonType): boolean {
  switch (t) {
    case 'null':
      return v === null;
    case 'integer':
      return Number.isInteger(v);
    case 'array':
      return Array.isArray(v);
    case 'object':
      return isSchemaObject(v);
    default:
      return typeof v === t;
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

class SchemaConverter {
  readonly rules = new Map<string, string>();
  private readonly refs = new Map<string, string>();
  private readonly names = new Set<string>();

  constructor(private readonly root: unknown, private readonly prefix: string, rootName: string) {
    this.names.add(rootName);
  }

  /** A GBNF expression (no top-level `|`) for the instances of `schema` at JSON pointer `path`. */
  visit(schema: unknown, path: string, hint: string): string {
    if (schema === true) return this.prim('value');
    if (schema === false) throw new GrammarError(`schema false at ${path} allows no value`, path);
    if (!isSchemaObject(schema)) throw new GrammarError(`schema at ${path} must be an object or a boolean`, path);
    this.checkKeywords(schema, path);
    const s = schema;
    const expr = this.constrained(s, path, hint);
    if (s.nullable === true) return `( ${expr} | ${this.prim('null')} )`;
    return expr;
  }

  private constrained(s: Schema, path: string, hint: string): string {
    if ('$ref' in s) {
      const siblings = Object.keys(s).filter((k) => k !== '$ref' && k !== 'nullable' && !ANNOTATIONS.has(k));
      if (siblings.length) throw new GrammarError(`unsupported JSON Schema keyword '${siblings[0]}' beside '$ref' at ${path}`, path);
      return this.ref(s.$ref, path);
    }
    if ('allOf' in s) return this.visit(this.mergeAllOf(s, path), path, hint);
    for (const key of ['anyOf', 'oneOf'] as const) {
      if (!(key in s)) continue;
      const branches = s[key];
      if (!Array.isArray(branches) || !branches.length) throw new GrammarError(`'${key}' at ${path} must be a non-empty array`, pointer(path, key));
      const rest: Schema = {};
      for (const [k, v] of Object.entries(s)) if (k !== key && k !== 'nullable' && !ANNOTATIONS.has(k)) rest[k] = v;
      const options = branches.map((b, i) => (Object.keys(rest).length
        ? this.visit({ allOf: [rest, b] }, pointer(path, key, i), `${hint}-${i}`)
        : this.visit(b, pointer(path, key, i), `${hint}-${i}`)));
      return this.rule(`${hint}-${key === 'anyOf' ? 'any' : 'one'}`, options.join(' | '));
    }
    let types: JsonType[];
    if ('type' in s) {
      const list = Array.isArray(s.type) ? s.type : [s.type];
      for (const t of list) if (!TYPES.includes(t as JsonType)) throw new GrammarError(`unsupported JSON Schema type ${JSON.stringify(t)} at ${pointer(path, 'type')}`, pointer(path, 'type'));
      types = [...new Set(list as JsonType[])];
      if (!types.length) throw new GrammarError(`'type' at ${path} lists no type`, pointer(path, 'type'));
    } else types = [...TYPES];
    if ('const' in s || 'enum' in s) {
      const values = 'const' in s ? [s.const] : s.enum;
      if (!Array.isArray(values) || !values.length) throw new GrammarError(`'enum' at ${path} must be a non-empty array`, pointer(path, 'enum'));
      const kept = values.filter((v) => types.some((t) => hasType(v, t)));
      if (!kept.length) throw new GrammarError(`no value of '${'const' in s ? 'const' : 'enum'}' at ${path} has a type 'type' allows`, path);
      return `( ${kept.map((v) => gbnfLiteral(JSON.stringify(v))).join(' | ')} )`;
    }
    if (!('type' in s)) {
      types = [...new Set(Object.keys(s).filter((k) => k in TYPE_OF).map((k) => TYPE_OF[k]))];
      if (!types.length) return this.prim('value');
    }
    const options = types.map((t) => this.typed(t, s, path, types.length > 1 ? `${hint}-${t}` : hint));
    return options.length === 1 ? options[0] : `( ${options.join(' | ')} )`;
  }

  private typed(t: JsonType, s: Schema, path: string, hint: string): string {
    switch (t) {
      case 'object':
        return this.object(s, path, hint);
      case 'array':
        return this.array(s, path, hint);
      case 'string':
        return this.string(s, path);
      default:
        return this.prim(t);
    }
  }

  private checkKeywords(s: Schema, path: string): void {
    for (const k of Object.keys(s)) {
      if (!SUPPORTED.has(k) && !ANNOTATIONS.has(k)) throw new GrammarError(`unsupported JSON Schema keyword '${k}' at ${path}`, path);
    }
  }

  private ref(ref: unknown, path: string): string {
    if (typeof ref !== 'string' || !ref.startsWith('#')) throw new GrammarError(`only local '$ref' ("#/…") is supported, found ${JSON.stringify(ref)} at ${path}`, path);
    const known = this.refs.get(ref);
    if (known) return known;
    const target = this.resolve(ref, path);
    const segments = ref.split('/');
    const name = this.newName(ref === '#' ? 'root' : segments[segments.length - 1]);
    this.refs.set(ref, name);
    this.rules.set(name, '');
    this.rules.set(name, this.visit(target, ref, name.slice(this.prefix.length)));
    return name;
  }

  private resolve(ref: string, path: string): unknown {
    let node: unknown = this.root;
    const segments = ref.slice(1).split('/').slice(1);
    for (const raw of segments) {
      const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
      if (typeof node !== 'object' || node === null || !(key in node)) throw new GrammarError(`'$ref' ${JSON.stringify(ref)} at ${path} does not resolve`, path);
      node = (node as Record<string, unknown>)[key];
    }
    return node;
  }

  /** One schema holding the constraints of `s` and all its allOf members (objects merge). */
  private mergeAllOf(s: Schema, path: string, depth = 0): Schema {
    if (depth > 32) throw new GrammarError(`'allOf' at ${path} nests too deep (a cycle of $ref?)`, path);
    const parts: [Schema, string][] = [];
    const rest: Schema = {};
    for (const [k, v] of Object.entries(s)) if (k !== 'allOf' && !ANNOTATIONS.has(k)) rest[k] = v;
    parts.push([rest, path]);
    if (!Array.isArray(s.allOf) || !s.allOf.length) throw new GrammarError(`'allOf' at ${path} must be a non-empty array`, pointer(path, 'allOf'));
    s.allOf.forEach((m, i) => {
      let at = pointer(path, 'allOf', i);
      let member: unknown = m;
      if (isSchemaObject(member) && typeof member.$ref === 'string' && Object.keys(member).every((k) => k === '$ref' || ANNOTATIONS.has(k))) {
        at = member.$ref as string;
        member = this.resolve(member.$ref as string, at);
      }
      if (member === true) return;
      if (member === false) throw new GrammarError(`schema false at ${at} allows no value`, at);
      if (!isSchemaObject(member)) throw new GrammarError(`schema at ${at} must be an object or a boolean`, at);
      this.checkKeywords(member, at);
      parts.push([ 'allOf' in member ? this.mergeAllOf(member, at, depth + 1) : member, at]);
    });
    const out: Schema = {};
    for (const [part, at] of parts) {
      for (const [k, v] of Object.entries(part)) {
        if (ANNOTATIONS.has(k)) continue;
        if (!(k in out)) out[k] = v;
        else if (k === 'properties' && isSchemaObject(v) && isSchemaObject(out[k])) {
          const props: Schema = { ...(out[k] as Schema) };
          for (const [name, sub] of Object.entries(v)) props[name] = name in props && !deepEqual(props[name], sub) ? { allOf: [props[name], sub] } : sub;
          out[k] = props;
        } else if (k === 'required' && Array.isArray(v) && Array.isArray(out[k])) out[k] = [...new Set([...(out[k] as unknown[]), ...v])];
        else if (k === 'type') {
          const a = Array.isArray(out[k]) ? (out[k] as unknown[]) : [out[k]];
          const b = Array.isArray(v) ? v : [v];
          const both = a.filter((t) => b.includes(t) || (t === 'integer' && b.includes('number'))).concat(b.filter((t) => t === 'integer' && a.includes('number')));
          if (!both.length) throw new GrammarError(`'allOf' at ${path} combines types that share no value`, at);
          out[k] = [...new Set(both)];
        } else if (!deepEqual(out[k], v)) throw new GrammarError(`'allOf' at ${path}: cannot combine differing '${k}' (at ${at})`, at);
      }
    }
    return out;
  }

  private object(s: Schema, path: string, hint: string): string {
    const props = s.properties ?? {};
    if (!isSchemaObject(props)) throw new GrammarError(`'properties' at ${path} must be an object`, pointer(path, 'properties'));
    const required = s.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) throw new GrammarError(`'required' at ${path} must be an array of strings`, pointer(path, 'required'));
    const ap = s.additionalProperties;
    let extraValue: string | null = null;
    if (ap === true) extraValue = this.prim('value');
    else if (isSchemaObject(ap)) extraValue = this.visit(ap, pointer(path, 'additionalProperties'), `${hint}-additional`);
    else if (ap !== undefined && ap !== false) throw new GrammarError(`'additionalProperties' at ${path} must be a boolean or a schema`, pointer(path, 'additionalProperties'));
    const ws = this.prim('ws');
    const entries: { expr: string; required: boolean }[] = [];
    const member = (key: string, value: string) => `${gbnfLiteral(JSON.stringify(key))} ${ws} ":" ${ws} ${value}`;
    for (const [key, sub] of Object.entries(props)) {
      entries.push({ expr: member(key, this.visit(sub, pointer(path, 'properties', key), `${hint}-${key}`)), required: required.includes(key) });
    }
    for (const key of required as string[]) {
      if (key in props) continue;
      if (extraValue === null) throw new GrammarError(`required property '${key}' at ${pointer(path, 'required')} is not in 'properties' and additional properties are not allowed`, pointer(path, 'required'));
      entries.push({ expr: member(key, extraValue), required: true });
    }
    const declared = [...Object.keys(props), ...(required as string[])];
    const extra = extraValue === null ? null : `${this.keyNotIn(declared, hint)} ${ws} ":" ${ws} ${extraValue}`;
    const n = entries.length;
    const comma = `${ws} "," ${ws}`;
    // tail(i): the members from entry i on, once at least one was written (each starts with a
    // comma); head(i): the members from entry i on when none was written yet (at least one, or null
    // if none can follow). Rules are made on first use.
    const tails = new Map<number, string>();
    const heads = new Map<number, string | null>();
    const tail = (i: number): string => {
      let t = tails.get(i);
      if (t !== undefined) return t;
      if (i === n) t = extra === null ? '' : this.rule(`${hint}-more`, `( ${comma} ${extra} )*`);
      else {
        const e = entries[i];
        const rest = tail(i + 1);
        const withIt = `${comma} ${e.expr} ${rest}`.trim();
        t = this.rule(`${hint}-tail${i}`, e.required ? withIt : rest ? `${withIt} | ${rest}` : `( ${withIt} )?`);
      }
      tails.set(i, t);
      return t;
    };
    const head = (i: number): string | null => {
      let h = heads.get(i);
      if (h !== undefined) return h;
      if (i === n) h = extra === null ? null : `${extra} ${tail(n)}`.trim();
      else {
        const e = entries[i];
        const first = `${e.expr} ${tail(i + 1)}`.trim();
        const skip = e.required ? null : head(i + 1);
        h = skip === null ? first : this.rule(`${hint}-head${i}`, `${first} | ${skip}`);
      }
      heads.set(i, h);
      return h;
    };
    const empty = `"{" ${ws} "}"`;
    const members = head(0);
    if (members === null) return empty;
    const full = `"{" ${ws} ${members} ${ws} "}"`;
    const anyRequired = entries.some((e) => e.required);
    return this.rule(hint, anyRequired ? full : `${full} | ${empty}`);
  }

  /**
   * A JSON string whose written form differs from each of `keys` (a character-level trie of their
   * encodings; a key spelled with a needless escape, as \u0061 for "a", is not caught).
   */
  private keyNotIn(keys: string[], hint: string): string {
    if (!keys.length) return this.prim('string');
    interface Node { end: boolean; next: Map<string, Node> }
    const rootNode: Node = { end: false, next: new Map() };
    for (const k of keys) {
      let node = rootNode;
      for (const ch of JSON.stringify(k).slice(1, -1)) {
        let child = node.next.get(ch);
        if (!child) node.next.set(ch, (child = { end: false, next: new Map() }));
        node = child;
      }
      node.end = true;
    }
    const char = this.prim('char');
    const escapeRule = this.prim('escape');
    let count = 0;
    const build = (node: Node): string => {
      const name = this.newName(`${hint}-key${count++}`);
      this.rules.set(name, '');
      const options: string[] = [];
      if (!node.end) options.push('""');
      const plain = [...node.next.keys()].filter((ch) => ch !== '\\');
      for (const [ch, child] of node.next) if (ch !== '\\') options.push(`${gbnfLiteral(ch)} ${build(child)}`);
      // Any other unescaped character leaves the trie; escapes always do (keys rarely hold one).
      const excluded = ['"', '\\\\', '\\x00-\\x1f', ...plain.map((ch) => (ch === ']' || ch === '^' || ch === '-' || ch === '[' ? '\\' + ch : ch))];
      options.push(`[^${excluded.join('')}] ${char}*`, `${escapeRule} ${char}*`);
      this.rules.set(name, options.join(' | '));
      return name;
    };
    return `"\\"" ${build(rootNode)} "\\""`;
  }

  private array(s: Schema, path: string, hint: string): string {
    let prefix: unknown[] = [];
    let items: unknown = s.items;
    if (Array.isArray(s.prefixItems)) prefix = s.prefixItems;
    else if (s.prefixItems !== undefined) throw new GrammarError(`'prefixItems' at ${path} must be an array`, pointer(path, 'prefixItems'));
    if (Array.isArray(items)) {
      if (prefix.length) throw new GrammarError(`'items' at ${path} is an array beside 'prefixItems'`, pointer(path, 'items'));
      prefix = items;
      items = true;
    }
    const count = (k: 'minItems' | 'maxItems', dflt: number): number => {
      const v = s[k] ?? dflt;
      if (typeof v !== 'number' || !(v >= 0) || (v !== Infinity && !Number.isInteger(v))) throw new GrammarError(`'${k}' at ${path} must be a non-negative integer`, pointer(path, k));
      return v;
    };
    const min = count('minItems', 0);
    let max = count('maxItems', Infinity);
    const k = prefix.length;
    const itemExpr = items === false ? null : this.visit(items ?? true, pointer(path, 'items'), `${hint}-item`);
    if (itemExpr === null) max = Math.min(max, k);
    if (min > max) throw new GrammarError(`array at ${path} cannot hold between ${min} and ${max} items`, path);
    const ws = this.prim('ws');
    const comma = `${ws} "," ${ws}`;
    const at = (i: number) => (i < k ? this.visit(prefix[i], pointer(path, 'prefixItems', i), `${hint}-${i}`) : itemExpr!);
    // tail[i]: the items after the first i.
    const start = Math.max(k, 1);
    let tail = '';
    if (itemExpr !== null && max > start) {
      const lo = Math.max(0, min - start);
      const hi = max - start;
      const q = hi === Infinity ? (lo === 0 ? '*' : lo === 1 ? '+' : `{${lo},}`) : `{${lo},${hi}}`;
      tail = `( ${comma} ${itemExpr} )${q}`;
    }
    for (let i = start - 1; i >= 1; i--) {
      const next = i < max ? `${comma} ${at(i)} ${tail}`.trim() : null;
      const options = [...(next ? [next] : []), ...(i >= min ? ['""'] : [])];
      tail = this.rule(`${hint}-tail${i}`, options.join(' | '));
    }
    const empty = `"[" ${ws} "]"`;
    if (max === 0) return empty;
    const full = `"[" ${ws} ${at(0)} ${tail} ${ws} "]"`;
    return this.rule(hint, min === 0 ? `${full} | ${empty}` : full);
  }

  private string(s: Schema, path: string): string {
    const length = (k: 'minLength' | 'maxLength'): number | undefined => {
      const v = s[k];
      if (v === undefined) return undefined;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new GrammarError(`'${k}' at ${path} must be a non-negative integer`, pointer(path, k));
      return v;
    };
    const minLength = length('minLength');
    const maxLength = length('maxLength');
    const quote = '"\\""';
    const others = (k: string) => ['pattern', 'format', 'minLength', 'maxLength'].filter((x) => x !== k && s[x] !== undefined);
    if (s.format !== undefined) {
      if (typeof s.format !== 'string' || !FORMATS.includes(s.format)) throw new GrammarError(`unsupported JSON Schema format ${JSON.stringify(s.format)} at ${pointer(path, 'format')} (supported: ${FORMATS.join(', ')})`, pointer(path, 'format'));
      if (others('format').length) throw new GrammarError(`unsupported JSON Schema keyword '${others('format')[0]}' beside 'format' at ${path}`, path);
      return `${quote} ${this.prim(s.format)} ${quote}`;
    }
    if (s.pattern !== undefined) {
      if (typeof s.pattern !== 'string') throw new GrammarError(`'pattern' at ${path} must be a string`, pointer(path, 'pattern'));
      if (others('pattern').length) throw new GrammarError(`unsupported JSON Schema keyword '${others('pattern')[0]}' beside 'pattern' at ${path}`, path);
      try {
        return `${quote} ${regexToGbnf(s.pattern, { jsonString: true })} ${quote}`;
      } catch (e) {
        if (e instanceof GrammarError) throw new GrammarError(`${e.message} (${pointer(path, 'pattern')})`, pointer(path, 'pattern'));
        throw e;
      }
    }
    if (minLength === undefined && maxLength === undefined) return this.prim('string');
    const lo = minLength ?? 0;
    const hi = maxLength ?? Infinity;
    if (lo > hi) throw new GrammarError(`string at ${path} cannot be between ${lo} and ${hi} characters long`, path);
    return `${quote} ${this.prim('char')}{${lo},${hi === Infinity ? '' : hi}} ${quote}`;
  }

  /** The prefixed name of a shared rule, adding it (and the rules it uses) on first use. */
  private prim(name: string): string {
    const full = this.prefix + name;
    if (!this.rules.has(full)) {
      this.names.add(full);
      this.rules.set(full, '');
      this.rules.set(full, PRIMITIVES[name].replace(/\$([a-z-]+)/g, (_, n: string) => this.prim(n)));
    }
    return full;
  }

  /** A new rule with a fresh name made from `hint`; returns the name. */
  private rule(hint: string, body: string): string {
    const name = this.newName(hint);
    this.rules.set(name, body);
    return name;
  }

  private newName(hint: string): string {
    const base = this.prefix + (hint.replace(/[^A-Za-z0-9-]+/g, '-').slice(0, 48) || 'x');
    let name = base;
    for (let i = 2; this.names.has(name) || Object.hasOwn(PRIMITIVES, name.slice(this.prefix.length)); i++) name = `${base}${i}`;
    this.names.add(name);
    return name;
  }
}
