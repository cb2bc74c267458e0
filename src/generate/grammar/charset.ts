// Sets of Unicode code points as sorted inclusive ranges, and their UTF-8 form: every set of code
// points is a union of byte-range sequences ([E1-EC][80-BF][80-BF], …), which is how grammars over
// characters become automata over bytes.

export const MAX_CODE_POINT = 0x10ffff;

/** Code points of one UTF-8 length: 1, 2, 3 and 4 bytes. */
const LENGTH_CLASSES: readonly (readonly [number, number])[] = [[0, 0x7f], [0x80, 0x7ff], [0x800, 0xffff], [0x10000, MAX_CODE_POINT]];

/** A byte range [lo, hi], inclusive. */
export type ByteRange = readonly [number, number];

export class CharSet {
  /** Sorted, disjoint, non-adjacent inclusive ranges: lo0, hi0, lo1, hi1, … */
  private constructor(readonly ranges: readonly number[]) {}

  static readonly empty = new CharSet([]);
  static readonly all = new CharSet([0, MAX_CODE_POINT]);

  static of(pairs: Iterable<readonly [number, number]>): CharSet {
    const list = [...pairs].filter(([lo, hi]) => lo <= hi).sort((a, b) => a[0] - b[0]);
    const out: number[] = [];
    for (const [lo, hi] of list) {
      const n = out.length;
      if (n && lo <= out[n - 1] + 1) out[n - 1] = Math.max(out[n - 1], hi);
      else out.push(lo, hi);
    }
    return new CharSet(out);
  }

  static char(c: number): CharSet {
    return new CharSet([c, c]);
  }

  /** The characters of `s` (by code point). */
  static chars(s: string): CharSet {
    return CharSet.of([...s].map((ch) => [ch.codePointAt(0)!, ch.codePointAt(0)!] as const));
  }

  get isEmpty(): boolean {
    return this.ranges.length === 0;
  }

  /** The one code point of a single-character set, else -1. */
  get single(): number {
    return this.ranges.length === 2 && this.ranges[0] === this.ranges[1] ? this.ranges[0] : -1;
  }

  /** A string naming the set exactly (equal sets, equal keys). */
  get key(): string {
    return this.ranges.join(',');
  }

  pairs(): [number, number][] {
    const out: [number, number][] = [];
    for (let i = 0; i < this.ranges.length; i += 2) out.push([this.ranges[i], this.ranges[i + 1]]);
    return out;
  }

  has(c: number): boolean {
    for (let i = 0; i < this.ranges.length; i += 2) if (c >= this.ranges[i] && c <= this.ranges[i + 1]) return true;
    return false;
  }

  union(o: CharSet): CharSet {
    return CharSet.of([...this.pairs(), ...o.pairs()]);
  }

  complement(): CharSet {
    const out: [number, number][] = [];
    let next = 0;
    for (const [lo, hi] of this.pairs()) {
      if (lo > next) out.push([next, lo - 1]);
      next = hi + 1;
    }
    if (next <= MAX_CODE_POINT) out.push([next, MAX_CODE_POINT]);
    return CharSet.of(out);
  }

  intersect(o: CharSet): CharSet {
    return this.complement().union(o.complement()).complement();
  }

  subtract(o: CharSet): CharSet {
    return this.intersect(o.complement());
  }

  /**
   * The UTF-8 encodings of the set (surrogates D800–DFFF have none and are left out) as sequences
   * of byte ranges: a byte string encodes a member exactly when it matches one of the sequences.
   * No two sequences match the same string.
   */
  utf8Sequences(): ByteRange[][] {
    const out: ByteRange[][] = [];
    for (const [lo, hi] of this.pairs()) {
      for (const [a, b] of [[lo, Math.min(hi, 0xd7ff)], [Math.max(lo, 0xe000), hi]]) {
        for (const [clo, chi] of LENGTH_CLASSES) {
          const x = Math.max(a, clo);
          const y = Math.min(b, chi);
          if (x <= y) out.push(...splitSameLength(utf8(x), utf8(y), 0));
        }
      }
    }
    return out;
  }
}

/** The UTF-8 bytes of one code point. */
export function utf8(c: number): number[] {
  if (c < 0x80) return [c];
  if (c < 0x800) return [0xc0 | (c >> 6), 0x80 | (c & 0x3f)];
  if (c < 0x10000) return [0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f)];
  return [0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f)];
}

/**
 * Byte-range sequences for the code points between the encodings `a` and `b` (same length) from
 * byte `i` on. Within one encoded length, code point order is the lexicographic order of the
 * encodings and every byte string in between (continuation bytes 80–BF) encodes a code point in
 * between, so the split is done on bytes alone.
 */
function splitSameLength(a: number[], b: number[], i: number): ByteRange[][] {
  const n = a.length;
  if (i === n - 1) return [[[a[i], b[i]]]];
  if (a[i] === b[i]) return splitSameLength(a, b, i + 1).map((s) => [[a[i], a[i]] as ByteRange, ...s]);
  const full = (k: number): ByteRange[] => Array.from({ length: k }, () => [0x80, 0xbf] as ByteRange);
  const loMin = a.slice(i + 1).every((x) => x === 0x80);
  const hiMax = b.slice(i + 1).every((x) => x === 0xbf);
  const out: ByteRange[][] = [];
  let first = a[i];
  let last = b[i];
  if (!loMin) {
    out.push(...splitSameLength(a, [...a.slice(0, i + 1), ...Array<number>(n - i - 1).fill(0xbf)], i));
    first++;
  }
  if (!hiMax) last--;
  if (first <= last) out.push([[first, last], ...full(n - i - 1)]);
  if (!hiMax) out.push(...splitSameLength([...b.slice(0, i + 1), ...Array<number>(n - i - 1).fill(0x80)], b, i));
  return out;
}
