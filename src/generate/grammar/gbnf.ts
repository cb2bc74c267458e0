// Grammars in GBNF, the notation of llama.cpp's grammar files, and the expression tree they parse to.
//
//   root  ::= "{" ws pair ("," ws pair)* "}"     # a rule: name ::= alternatives
//   pair  ::= [a-z]+ ":" ( "yes" | "no" )
//   ws    ::= [ \t]{0,4}
//
// Terminals: "literal" (escapes \n \t \r \" \\ \xHH \uHHHH \UHHHHHHHH), [class] and [^negated class]
// (ranges a-z, the same escapes plus \] \[ \- \^), and `.` (any character). Grouping ( ), and
// repetition *, +, ?, {m}, {m,}, {m,n}. `#` starts a comment to the end of the line. A rule's
// alternatives may span lines: a rule ends where the next `name ::=` begins.

import { CharSet, MAX_CODE_POINT } from './charset';
import { compileGrammar, type Program } from './compile';
import { MAX_REPEAT } from './emit';
import { GrammarError } from './errors';
import { type JsonSchemaOptions, jsonSchemaToGbnf } from './json-schema';
import { regexToGbnf } from './regex';

/** A grammar expression over characters (code points). */
export type GrammarExpr =
  | { readonly kind: 'literal'; readonly text: string }
  | { readonly kind: 'class'; readonly set: CharSet }
  | { readonly kind: 'ref'; readonly name: string; readonly at: string }
  | { readonly kind: 'seq'; readonly items: readonly GrammarExpr[] }
  | { readonly kind: 'alt'; readonly options: readonly GrammarExpr[] }
  | { readonly kind: 'repeat'; readonly item: GrammarExpr; readonly min: number; readonly max: number };

export class Grammar {
  /** The compiled byte-level form the matcher runs (see compile.ts). */
  readonly program: Program;

  /**
   * Rules by name and the start rule. Every reference names a rule; a rule that can reach itself
   * without consuming input at a place that needs a continuation (left recursion) is refused.
   */
  constructor(readonly rules: ReadonlyMap<string, GrammarExpr>, readonly root = 'root') {
    if (!rules.has(root)) throw new GrammarError(`grammar has no rule '${root}'`, root);
    for (const [name, expr] of rules) checkRefs(expr, rules, name);
    this.program = compileGrammar(rules, root);
  }

  static fromGbnf(text: string, root = 'root'): Grammar {
    return new Grammar(parseGbnf(text), root);
  }

  /** Instances of a JSON Schema, written as compact JSON (see json-schema.ts). */
  static fromJsonSchema(schema: unknown, opts: Omit<JsonSchemaOptions, 'rootName'> = {}): Grammar {
    return Grammar.fromGbnf(jsonSchemaToGbnf(schema, { ...opts, rootName: 'root' }));
  }

  /** Any JSON object: `response_format: {type: "json_object"}`. */
  static jsonObject(): Grammar {
    return Grammar.fromJsonSchema({ type: 'object', additionalProperties: true });
  }

  /** Strings matching the whole regex (JavaScript syntax; ^ and $ only at the ends). */
  static fromRegex(pattern: string): Grammar {
    return Grammar.fromGbnf(`root ::= ${regexToGbnf(pattern)}\n`);
  }
}

function checkRefs(e: GrammarExpr, rules: ReadonlyMap<string, GrammarExpr>, rule: string): void {
  switch (e.kind) {
    case 'ref':
      if (!rules.has(e.name)) throw new GrammarError(`undefined rule '${e.name}' referenced in rule '${rule}' at ${e.at}`, e.at);
      return;
    case 'seq':
      for (const x of e.items) checkRefs(x, rules, rule);
      return;
    case 'alt':
      for (const x of e.options) checkRefs(x, rules, rule);
      return;
    case 'repeat':
      checkRefs(e.item, rules, rule);
      return;
    default:
      return;
  }
}

const NAME = /[A-Za-z0-9_-]+/y;
const RULE_START = /[A-Za-z0-9_-]+[ \t\r\n]*::=/y;

/** Rules of a GBNF text, in the order written. */
export function parseGbnf(text: string): Map<string, GrammarExpr> {
  return new GbnfParser(text).parse();
}

class GbnfParser {
  private i = 0;
  private readonly rules = new Map<string, GrammarExpr>();
  /** Offsets where lines begin, for line:column positions. */
  private readonly lineStarts: number[] = [0];

  constructor(private readonly src: string) {
    for (let k = 0; k < src.length; k++) if (src[k] === '\n') this.lineStarts.push(k + 1);
  }

  parse(): Map<string, GrammarExpr> {
    this.skip();
    while (this.i < this.src.length) {
      const at = this.where();
      NAME.lastIndex = this.i;
      const m = NAME.exec(this.src);
      if (!m) this.fail(`expected a rule name, found ${this.show()}`);
      const name = m[0];
      this.i += name.length;
      this.skip();
      if (!this.src.startsWith('::=', this.i)) this.fail(`expected '::=' after rule name '${name}', found ${this.show()}`);
      this.i += 3;
      if (this.rules.has(name)) throw new GrammarError(`rule '${name}' is defined twice (again at ${at})`, at);
      this.rules.set(name, this.alternatives(false));
      this.skip();
    }
    if (!this.rules.size) throw new GrammarError('grammar has no rules', 'line 1, column 1');
    return this.rules;
  }

  private alternatives(nested: boolean): GrammarExpr {
    const options = [this.sequence(nested)];
    while (this.src[this.i] === '|') {
      this.i++;
      options.push(this.sequence(nested));
    }
    return options.length === 1 ? options[0] : { kind: 'alt', options };
  }

  private sequence(nested: boolean): GrammarExpr {
    const items: GrammarExpr[] = [];
    for (;;) {
      this.skip();
      const c = this.src[this.i];
      if (c === undefined || c === '|' || c === ')') break;
      if (!nested) {
        RULE_START.lastIndex = this.i;
        if (RULE_START.test(this.src)) break;
      }
      let item = this.primary();
      for (;;) {
        const p = this.src[this.i];
        if (p === '*') item = { kind: 'repeat', item, min: 0, max: Infinity };
        else if (p === '+') item = { kind: 'repeat', item, min: 1, max: Infinity };
        else if (p === '?') item = { kind: 'repeat', item, min: 0, max: 1 };
        else if (p === '{') {
          item = this.counted(item);
          continue;
        } else break;
        this.i++;
      }
      items.push(item);
    }
    if (!nested && this.src[this.i] === ')') this.fail(`unmatched ')'`);
    return items.length === 1 ? items[0] : { kind: 'seq', items };
  }

  private counted(item: GrammarExpr): GrammarExpr {
    const at = this.where();
    const m = /\{[ \t]*(\d+)[ \t]*(?:(,)[ \t]*(\d*)[ \t]*)?\}/y;
    m.lastIndex = this.i;
    const r = m.exec(this.src);
    if (!r) this.fail(`malformed repetition, expected {m}, {m,} or {m,n}`);
    const min = Number(r[1]);
    const max = r[2] === undefined ? min : r[3] === '' ? Infinity : Number(r[3]);
    if (min > max) throw new GrammarError(`repetition {${min},${max}} at ${at} has its minimum above its maximum`, at);
    if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) throw new GrammarError(`repetition count at ${at} is above ${MAX_REPEAT}`, at);
    this.i += r[0].length;
    return { kind: 'repeat', item, min, max };
  }

  private primary(): GrammarExpr {
    const c = this.src[this.i];
    if (c === '"') return this.literal();
    if (c === '[') return this.charClass();
    if (c === '.') {
      this.i++;
      return { kind: 'class', set: CharSet.all };
    }
    if (c === '(') {
      const at = this.where();
      this.i++;
      const e = this.alternatives(true);
      this.skip();
      if (this.src[this.i] !== ')') throw new GrammarError(`'(' at ${at} is not closed`, at);
      this.i++;
      return e;
    }
    NAME.lastIndex = this.i;
    const m = NAME.exec(this.src);
    if (m) {
      const at = this.where();
      this.i += m[0].length;
      return { kind: 'ref', name: m[0], at };
    }
    return this.fail(`unexpected ${this.show()}`);
  }

  private literal(): GrammarExpr {
    const at = this.where();
    this.i++;
    let text = '';
    for (;;) {
      const c = this.src[this.i];
      if (c === undefined || c === '\n') throw new GrammarError(`string literal at ${at} is not closed`, at);
      if (c === '"') break;
      text += String.fromCodePoint(this.char());
    }
    this.i++;
    return { kind: 'literal', text };
  }

  private charClass(): GrammarExpr {
    const at = this.where();
    this.i++;
    const negated = this.src[this.i] === '^';
    if (negated) this.i++;
    const pairs: [number, number][] = [];
    for (;;) {
      const c = this.src[this.i];
      if (c === undefined || c === '\n') throw new GrammarError(`character class at ${at} is not closed`, at);
      if (c === ']') break;
      const lo = this.char();
      let hi = lo;
      if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']' && this.src[this.i + 1] !== undefined) {
        this.i++;
        hi = this.char();
        if (hi < lo) throw new GrammarError(`character range at ${at} runs backwards`, at);
      }
      pairs.push([lo, hi]);
    }
    this.i++;
    const set = CharSet.of(pairs);
    return { kind: 'class', set: negated ? set.complement() : set };
  }

  /** One character of a literal or class, escapes resolved; advances past it. */
  private char(): number {
    const c = this.src.codePointAt(this.i)!;
    if (c !== 0x5c) {
      this.i += c > 0xffff ? 2 : 1;
      return c;
    }
    const at = this.where();
    const e = this.src[this.i + 1];
    const simple: Record<string, number> = { n: 10, t: 9, r: 13, '"': 34, '\\': 92, "'": 39, '[': 91, ']': 93, '-': 45, '^': 94, '/': 47 };
    if (e !== undefined && e in simple) {
      this.i += 2;
      return simple[e];
    }
    const digits = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
    if (!digits) throw new GrammarError(`unknown escape '\\${e ?? ''}' at ${at}`, at);
    const hex = this.src.slice(this.i + 2, this.i + 2 + digits);
    if (!new RegExp(`^[0-9A-Fa-f]{${digits}}$`).test(hex)) throw new GrammarError(`escape '\\${e}' at ${at} needs ${digits} hex digits`, at);
    const v = Number.parseInt(hex, 16);
    if (v > MAX_CODE_POINT) throw new GrammarError(`escape at ${at} is beyond U+10FFFF`, at);
    this.i += 2 + digits;
    return v;
  }

  /** Skips spaces, newlines and comments. */
  private skip(): void {
    for (;;) {
      const c = this.src[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.i++;
      else if (c === '#') {
        while (this.i < this.src.length && this.src[this.i] !== '\n') this.i++;
      } else return;
    }
  }

  private where(i = this.i): string {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    return `line ${lo + 1}, column ${i - this.lineStarts[lo] + 1}`;
  }

  private show(): string {
    const c = this.src[this.i];
    return c === undefined ? 'end of grammar' : `'${c}'`;
  }

  private fail(msg: string): never {
    const at = this.where();
    throw new GrammarError(`${msg} at ${at}`, at);
  }
}
