// Writing GBNF text: literals and character classes with the escapes the parser (gbnf.ts) reads.

import type { CharSet } from './charset';

/** Largest count of a {m,n} repetition. */
export const MAX_REPEAT = 100_000;

/** A GBNF string literal for `text` (quotes, backslashes and non-printing characters escaped). */
export function gbnfLiteral(text: string): string {
  let out = '"';
  for (const ch of text) out += gbnfChar(ch.codePointAt(0)!, '"\\');
  return out + '"';
}

/** A GBNF character class for a set (positive form). */
export function gbnfClass(set: CharSet): string {
  let out = '[';
  for (const [lo, hi] of set.pairs()) {
    out += gbnfChar(lo, ']\\^-[');
    if (hi > lo) out += (hi > lo + 1 ? '-' : '') + gbnfChar(hi, ']\\^-[');
  }
  return out + ']';
}

function gbnfChar(c: number, special: string): string {
  if (c < 0x80 && special.includes(String.fromCharCode(c))) return '\\' + String.fromCharCode(c);
  if (c >= 0x20 && c < 0x7f) return String.fromCharCode(c);
  if (c === 10) return '\\n';
  if (c === 9) return '\\t';
  if (c === 13) return '\\r';
  if (c < 0x100) return '\\x' + c.toString(16).padStart(2, '0');
  if (c < 0x10000) return '\\u' + c.toString(16).padStart(4, '0');
  return '\\U' + c.toString(16).padStart(8, '0');
}
