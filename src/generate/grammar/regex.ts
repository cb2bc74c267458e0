// Regular expressions (JavaScript syntax) as GBNF expressions: literals and escapes, classes with
// \d \w \s and their negations, `.`, groups (capturing, named and (?:…)), alternation, and the
// quantifiers * + ? {m} {m,} {m,n} (lazy forms match the same strings). The expression matches
// whole strings: ^ and $ are allowed only at the very start and end and change nothing.
// Backreferences, lookaround, word boundaries, Unicode property escapes and inline flags are
// refused with a GrammarError.
//
// With `jsonString`, the expression matches the *JSON encoding* of strings that match the regex
// (the inside of a JSON string literal, quotes excluded): `"` and `\` appear as \" and \\, control
// characters as their JSON escapes. JSON Schema `pattern` goes through this form.

import { CharSet } from './charset';
import { GrammarError } from './errors';
import { gbnfClass, gbnfLiteral, MAX_REPEAT } from './emit';

type RegexNode =
  | { t: 'set'; set: CharSet }
  | { t: 'seq'; items: RegexNode[] }
  | { t: 'alt'; options: RegexNode[] }
  | { t: 'repeat'; item: RegexNode; min: number; max: number };

export interface RegexOptions {
  /** Match the JSON-escaped form of the strings (see above). */
  jsonString?: boolean;
}

const DIGIT = CharSet.of([[0x30, 0x39]]);
const WORD = CharSet.of([[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]]);
/** JavaScript's \s: WhiteSpace and LineTerminator. */
const SPACE = CharSet.of([[9, 13], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a], [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff]]);
/** What `.` matches: everything but line terminators. */
const DOT = CharSet.of([[10, 10], [13, 13], [0x2028, 0x2029]]).complement();

/** A GBNF expression matching the same whole strings as `pattern`. */
export function regexToGbnf(pattern: string, opts: RegexOptions = {}): string {
  return emit(parseRegex(pattern), opts.jsonString ?? false);
}

export function parseRegex(pattern: string): RegexNode {
  let body = pattern;
  let offset = 0;
  if (body.startsWith('^')) {
    body = body.slice(1);
    offset = 1;
  }
  if (body.endsWith('$') && !escapedAt(body, body.length - 1)) body = body.slice(0, -1);
  return new RegexParser(body, offset, pattern).parse();
}

/** Whether the character at `i` is escaped by an odd run of backslashes. */
function escapedAt(s: string, i: number): boolean {
  let n = 0;
  while (i - n - 1 >= 0 && s[i - n - 1] === '\\') n++;
  return n % 2 === 1;
}

class RegexParser {
  private i = 0;

  constructor(private readonly src: string, private readonly offset: number, private readonly pattern: string) {}

  parse(): RegexNode {
    const node = this.alternation();
    if (this.i < this.src.length) this.fail(`unmatched ')'`);
    return node;
  }

  private alternation(): RegexNode {
    const options = [this.sequence()];
    while (this.src[this.i] === '|') {
      this.i++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { t: 'alt', options };
  }

  private sequence(): RegexNode {
    const items: RegexNode[] = [];
    while (this.i < this.src.length && this.src[this.i] !== '|' && this.src[this.i] !== ')') {
      let atom = this.atom();
      const q = this.quantifier();
      if (q) {
        atom = { t: 'repeat', item: atom, min: q[0], max: q[1] };
        if (this.quantifier()) this.fail('nothing to repeat');
      }
      items.push(atom);
    }
    return items.length === 1 ? items[0] : { t: 'seq', items };
  }

  private quantifier(): [number, number] | null {
    const c = this.src[this.i];
    let q: [number, number] | null = null;
    if (c === '*') q = [0, Infinity];
    else if (c === '+') q = [1, Infinity];
    else if (c === '?') q = [0, 1];
    if (q) this.i++;
    else if (c === '{') {
      const m = /\{(\d+)(?:(,)(\d*))?\}/y;
      m.lastIndex = this.i;
      const r = m.exec(this.src);
      if (!r) return null;
      const min = Number(r[1]);
      const max = r[2] === undefined ? min : r[3] === '' ? Infinity : Number(r[3]);
      if (min > max) this.fail(`quantifier {${min},${max}} has its minimum above its maximum`);
      if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) this.fail(`quantifier count is above ${MAX_REPEAT}`);
      this.i += r[0].length;
      q = [min, max];
    }
    if (q && this.src[this.i] === '?') this.i++;
    return q;
  }

  private atom(): RegexNode {
    const c = this.src[this.i];
    if (c === '(') return this.group();
    if (c === '[') return { t: 'set', set: this.charClass() };
    if (c === '.') {
      this.i++;
      return { t: 'set', set: DOT };
    }
    if (c === '\\') return { t: 'set', set: this.escape(false) };
    if (c === '^' || c === '$') this.fail(`anchor '${c}' is only supported at the ${c === '^' ? 'start' : 'end'} of the pattern`);
    if (c === '*' || c === '+' || c === '?') this.fail(`nothing to repeat before '${c}'`);
    if (c === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i))) this.fail(`nothing to repeat before '{'`);
    const cp = this.src.codePointAt(this.i)!;
    this.i += cp > 0xffff ? 2 : 1;
    return { t: 'set', set: CharSet.char(cp) };
  }

  private group(): RegexNode {
    const start = this.i;
    this.i++;
    if (this.src[this.i] === '?') {
      const rest = this.src.slice(this.i, this.i + 3);
      if (rest.startsWith('?:')) this.i += 2;
      else if (rest.startsWith('?=') || rest.startsWith('?!') || rest === '?<=' || rest === '?<!') this.fail(`lookaround '(${rest.startsWith('?<') ? rest : rest.slice(0, 2)}' is not supported`);
      else if (rest.startsWith('?<') || rest.startsWith('?P<')) {
        const close = this.src.indexOf('>', this.i);
        if (close < 0) this.fail('unterminated group name');
        this.i = close + 1;
      } else this.fail(`group modifier '(${rest.slice(0, 2)}' is not supported`);
    }
    const inner = this.alternation();
    if (this.src[this.i] !== ')') {
      this.i = start;
      this.fail(`'(' is not closed`);
    }
    this.i++;
    return inner;
  }

  private charClass(): CharSet {
    const start = this.i;
    this.i++;
    const negated = this.src[this.i] === '^';
    if (negated) this.i++;
    let set = CharSet.empty;
    let first = true;
    for (;;) {
      const c = this.src[this.i];
      if (c === undefined) {
        this.i = start;
        this.fail(`'[' is not closed`);
      }
      if (c === ']' && !first) break;
      first = false;
      const lo = this.classAtom();
      if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']' && this.src[this.i + 1] !== undefined) {
        this.i++;
        const hi = this.classAtom();
        const a = lo.single;
        const b = hi.single;
        if (a < 0 || b < 0) this.fail('a class escape cannot bound a range');
        if (b < a) this.fail('character range runs backwards');
        set = set.union(CharSet.of([[a, b]]));
      } else set = set.union(lo);
    }
    this.i++;
    return negated ? set.complement() : set;
  }

  private classAtom(): CharSet {
    if (this.src[this.i] === '\\') return this.escape(true);
    const cp = this.src.codePointAt(this.i)!;
    this.i += cp > 0xffff ? 2 : 1;
    return CharSet.char(cp);
  }

  /** The set a backslash escape stands for; `inClass` is whether it is inside [...]. */
  private escape(inClass: boolean): CharSet {
    const e = this.src[this.i + 1];
    if (e === undefined) this.fail('pattern ends with a lone backslash');
    this.i += 2;
    switch (e) {
      case 'd':
        return DIGIT;
      case 'D':
        return DIGIT.complement();
      case 'w':
        return WORD;
      case 'W':
        return WORD.complement();
      case 's':
        return SPACE;
      case 'S':
        return SPACE.complement();
      case 'n':
        return CharSet.char(10);
      case 'r':
        return CharSet.char(13);
      case 't':
        return CharSet.char(9);
      case 'f':
        return CharSet.char(12);
      case 'v':
        return CharSet.char(11);
      case '0':
        if (/[0-9]/.test(this.src[this.i] ?? '')) this.fail('octal escapes are not supported');
        return CharSet.char(0);
      case 'b':
        if (inClass) return CharSet.char(8);
        return this.fail(`word boundary '\\b' is not supported`);
      case 'B':
        return this.fail(`word boundary '\\B' is not supported`);
      case 'k':
        return this.fail('backreference \\k<…> is not supported');
      case 'p':
      case 'P':
        return this.fail(`Unicode property escape '\\${e}' is not supported`);
      case 'c': {
        const l = this.src[this.i];
        if (!l || !/[A-Za-z]/.test(l)) this.fail("'\\c' needs a letter");
        this.i++;
        return CharSet.char(l.charCodeAt(0) % 32);
      }
      case 'x':
      case 'u': {
        if (e === 'u' && this.src[this.i] === '{') {
          const m = /\{([0-9A-Fa-f]{1,6})\}/y;
          m.lastIndex = this.i;
          const r = m.exec(this.src);
          if (!r || Number.parseInt(r[1], 16) > 0x10ffff) this.fail('malformed \\u{…} escape');
          this.i += r[0].length;
          return CharSet.char(Number.parseInt(r[1], 16));
        }
        const n = e === 'x' ? 2 : 4;
        const hex = this.src.slice(this.i, this.i + n);
        if (!new RegExp(`^[0-9A-Fa-f]{${n}}$`).test(hex)) this.fail(`'\\${e}' needs ${n} hex digits`);
        this.i += n;
        let cp = Number.parseInt(hex, 16);
        // A surrogate pair written as two \u escapes is one character.
        const low = /^\\u(d[c-f][0-9a-f]{2})/i.exec(this.src.slice(this.i));
        if (e === 'u' && cp >= 0xd800 && cp < 0xdc00 && low) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (Number.parseInt(low[1], 16) - 0xdc00);
          this.i += 6;
        }
        return CharSet.char(cp);
      }
      default:
        if (/[1-9]/.test(e)) return this.fail(`backreference '\\${e}' is not supported`);
        if (/[A-Za-z]/.test(e)) return this.fail(`unknown escape '\\${e}'`);
        this.i--;
        {
          const cp = this.src.codePointAt(this.i)!;
          this.i += cp > 0xffff ? 2 : 1;
          return CharSet.char(cp);
        }
    }
  }

  private fail(msg: string): never {
    const at = `offset ${this.i + this.offset}`;
    throw new GrammarError(`regex ${JSON.stringify(this.pattern)}: ${msg} at ${at}`, at);
  }
}

/** JSON's two-character escapes, by code point. */
const JSON_SHORT: Record<number, string> = { 8: '\\b', 9: '\\t', 10: '\\n', 12: '\\f', 13: '\\r', 34: '\\"', 92: '\\\\' };
/** Characters a JSON string cannot hold raw. */
const JSON_ESCAPED = CharSet.of([[0, 0x1f], [0x22, 0x22], [0x5c, 0x5c]]);

function jsonEscape(c: number): string {
  return JSON_SHORT[c] ?? '\\u' + c.toString(16).padStart(4, '0');
}

function emit(n: RegexNode, json: boolean): string {
  switch (n.t) {
    case 'set':
      return emitSet(n.set, json);
    case 'seq': {
      const parts: string[] = [];
      let run = '';
      for (const item of n.items) {
        const c = item.t === 'set' ? item.set.single : -1;
        if (c >= 0) run += json && JSON_ESCAPED.has(c) ? jsonEscape(c) : String.fromCodePoint(c);
        else {
          if (run) parts.push(gbnfLiteral(run));
          run = '';
          parts.push(emit(item, json));
        }
      }
      if (run) parts.push(gbnfLiteral(run));
      return parts.length ? `(${parts.join(' ')})` : '""';
    }
    case 'alt':
      return `(${n.options.map((o) => emit(o, json)).join(' | ')})`;
    case 'repeat': {
      const inner = emit(n.item, json);
      const q = n.max === Infinity ? (n.min === 0 ? '*' : n.min === 1 ? '+' : `{${n.min},}`) : n.min === 0 && n.max === 1 ? '?' : n.min === n.max ? `{${n.min}}` : `{${n.min},${n.max}}`;
      return `${inner.startsWith('(') || inner.startsWith('[') ? inner : `(${inner})`}${q}`;
    }
  }
}

function emitSet(set: CharSet, json: boolean): string {
  if (!json) {
    const c = set.single;
    return c >= 0 ? gbnfLiteral(String.fromCodePoint(c)) : gbnfClass(set);
  }
  const options: string[] = [];
  const raw = set.subtract(JSON_ESCAPED);
  if (!raw.isEmpty) options.push(raw.single >= 0 ? gbnfLiteral(String.fromCodePoint(raw.single)) : gbnfClass(raw));
  for (const [lo, hi] of set.intersect(JSON_ESCAPED).pairs()) for (let c = lo; c <= hi; c++) options.push(gbnfLiteral(jsonEscape(c)));
  if (!options.length) return '[]';
  return options.length === 1 ? options[0] : `(${options.join(' | ')})`;
}
