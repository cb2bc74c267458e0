// Grammar expressions (over code points) compiled to a flat program over bytes, the form the matcher
// runs. Every rule is a list of alternatives; an alternative is a run of positions ending in END:
//
//   BYTES k   matches one byte of byte set k
//   RULE r    matches rule r, then goes on at the next position
//   END       the alternative is complete
//
// Character classes become helper rules whose alternatives are UTF-8 byte-range sequences, so a
// multi-byte character is matched one byte at a time. Groups and repetitions become helper rules
// too: x* is S ::= x S | ε, x{0,n} a chain O_n ::= x O_{n-1} | ε. Repetition loops recur at the last
// position of an alternative, which the matcher runs without growing its stack.

import { type CharSet, utf8 } from './charset';
import { GrammarError } from './errors';
import type { GrammarExpr } from './gbnf';

export const END = 0;
export const BYTES = 1;
export const RULE = 2;

/** Most positions a compiled program may hold (repetitions are expanded). */
export const MAX_POSITIONS = 2_000_000;

export interface Program {
  /** Per position: END, BYTES or RULE. */
  readonly kind: Uint8Array;
  /** Per position: the byte set (BYTES) or rule (RULE) index. */
  readonly arg: Int32Array;
  /** 256 entries per byte set, 1 where the byte belongs to the set. */
  readonly byteSets: Uint8Array;
  /** Per byte set: 1 when it holds no byte (a class that matches nothing). */
  readonly setEmpty: Uint8Array;
  /** Per rule: the first position of each alternative. */
  readonly alts: readonly Int32Array[];
  /** Per rule: the grammar rule it belongs to (helper rules carry their owner's name). */
  readonly ruleNames: readonly string[];
  readonly root: number;
  /** Per position: the counted repetition chain (x{m,n} → O_{n−m} … O_1) whose rule holds it, or -1. */
  readonly chainOf: Int32Array;
  /** Per position in a chain: j, the count of iterations left in its rule O_j. */
  readonly chainCount: Int32Array;
  /** Per chain: the first position of O_j's looping alternative at index j (1 … n−m). */
  readonly chainStarts: readonly Int32Array[];
}

/** An element of an alternative while building: byte set k is 2k, rule r is 2r + 1. */
type Elem = number;

class Builder {
  readonly ruleAlts: Elem[][][] = [];
  readonly ruleNames: string[] = [];
  readonly index = new Map<string, number>();
  private readonly setIndex = new Map<string, number>();
  private readonly sets: Uint8Array[] = [];
  private readonly classRules = new Map<string, Elem>();
  /** Rules O_1 … O_k of each counted repetition x{m,n} (k = n − m), by count left. */
  private readonly chains: number[][] = [];
  private size = 0;

  rule(owner: string): number {
    this.ruleAlts.push([]);
    this.ruleNames.push(owner);
    return this.ruleAlts.length - 1;
  }

  setAlts(r: number, alts: Elem[][]): void {
    for (const a of alts) this.size += a.length + 1;
    if (this.size > MAX_POSITIONS) throw new GrammarError(`grammar is too large once repetitions are expanded (more than ${MAX_POSITIONS} positions, in rule '${this.ruleNames[r]}')`, this.ruleNames[r]);
    this.ruleAlts[r] = alts;
  }

  byteSet(ranges: readonly (readonly [number, number])[]): Elem {
    const bits = new Uint8Array(256);
    for (const [lo, hi] of ranges) bits.fill(1, lo, hi + 1);
    const key = bits.join('');
    let k = this.setIndex.get(key);
    if (k === undefined) {
      k = this.sets.length;
      this.sets.push(bits);
      this.setIndex.set(key, k);
    }
    return 2 * k;
  }

  alternatives(e: GrammarExpr, owner: string): Elem[][] {
    return e.kind === 'alt' ? e.options.map((o) => this.sequence(o, owner, [])) : [this.sequence(e, owner, [])];
  }

  sequence(e: GrammarExpr, owner: string, out: Elem[]): Elem[] {
    switch (e.kind) {
      case 'literal':
        for (const ch of e.text) for (const b of utf8(ch.codePointAt(0)!)) out.push(this.byteSet([[b, b]]));
        break;
      case 'class':
        out.push(this.charClass(e.set, owner));
        break;
      case 'ref':
        out.push(2 * this.index.get(e.name)! + 1);
        break;
      case 'seq':
        for (const x of e.items) this.sequence(x, owner, out);
        break;
      case 'alt': {
        const r = this.rule(owner);
        this.setAlts(r, this.alternatives(e, owner));
        out.push(2 * r + 1);
        break;
      }
      case 'repeat':
        this.repeat(e.item, e.min, e.max, owner, out);
        break;
    }
    return out;
  }

  private repeat(item: GrammarExpr, min: number, max: number, owner: string, out: Elem[]): void {
    let unit = this.sequence(item, owner, []);
    if (!unit.length || max === 0) return;
    if (unit.length > 1 && (min > 1 || max > 1)) {
      const r = this.rule(owner);
      this.setAlts(r, [unit]);
      unit = [2 * r + 1];
    }
    for (let i = 0; i < min; i++) out.push(...unit);
    if (max === Infinity) {
      const s = this.rule(owner);
      this.setAlts(s, [[...unit, 2 * s + 1], []]);
      out.push(2 * s + 1);
      return;
    }
    let prev = -1;
    const chain: number[] = [];
    for (let j = min; j < max; j++) {
      const o = this.rule(owner);
      this.setAlts(o, [prev < 0 ? [...unit] : [...unit, prev], []]);
      chain.push(o);
      prev = 2 * o + 1;
    }
    if (prev >= 0) out.push(prev);
    if (chain.length > 2) this.chains.push(chain);
  }

  private charClass(set: CharSet, owner: string): Elem {
    const cached = this.classRules.get(set.key);
    if (cached !== undefined) return cached;
    const seqs = set.utf8Sequences();
    const single = seqs.filter((s) => s.length === 1).map((s) => s[0]);
    let elem: Elem;
    if (single.length === seqs.length) elem = this.byteSet(single);
    else {
      const alts: Elem[][] = seqs.filter((s) => s.length > 1).map((s) => s.map((r) => this.byteSet([r])));
      if (single.length) alts.unshift([this.byteSet(single)]);
      const r = this.rule(owner);
      this.setAlts(r, alts);
      elem = 2 * r + 1;
    }
    this.classRules.set(set.key, elem);
    return elem;
  }

  program(root: number): Program {
    const total = this.ruleAlts.reduce((n, alts) => n + alts.reduce((m, a) => m + a.length + 1, 0), 0);
    const kind = new Uint8Array(total);
    const arg = new Int32Array(total);
    const alts: Int32Array[] = [];
    let p = 0;
    for (const ra of this.ruleAlts) {
      const starts = new Int32Array(ra.length);
      ra.forEach((a, i) => {
        starts[i] = p;
        for (const el of a) {
          kind[p] = el & 1 ? RULE : BYTES;
          arg[p++] = el >> 1;
        }
        kind[p++] = END;
      });
      alts.push(starts);
    }
    const byteSets = new Uint8Array(this.sets.length * 256);
    const setEmpty = new Uint8Array(this.sets.length);
    this.sets.forEach((s, k) => {
      byteSets.set(s, k * 256);
      setEmpty[k] = s.includes(1) ? 0 : 1;
    });
    const chainOf = new Int32Array(total).fill(-1);
    const chainCount = new Int32Array(total);
    const chainStarts = this.chains.map((rules, c) => {
      const starts = new Int32Array(rules.length + 1);
      rules.forEach((r, i) => {
        const from = alts[r][0];
        starts[i + 1] = from;
        for (let q = from; kind[q] !== END; q++) {
          chainOf[q] = c;
          chainCount[q] = i + 1;
        }
      });
      return starts;
    });
    return { kind, arg, byteSets, setEmpty, alts, ruleNames: this.ruleNames, root, chainOf, chainCount, chainStarts };
  }
}

/**
 * Position `p` with the count left of its repetition chain capped at `cap`: the position at the same
 * offset in chain rule O_cap when p lies in O_j, j > cap. A stack with counts above `cap` accepts the
 * same byte strings of up to cap − 1 bytes as with the counts capped (every iteration consumes a
 * byte or is optional), so states equal after capping allow the same tokens of that length.
 */
export function cappedPosition(prog: Program, p: number, cap: number): number {
  const c = prog.chainOf[p];
  if (c < 0) return p;
  const j = prog.chainCount[p];
  if (j <= cap) return p;
  const starts = prog.chainStarts[c];
  return starts[cap] + (p - starts[j]);
}

export function compileGrammar(rules: ReadonlyMap<string, GrammarExpr>, root: string): Program {
  const b = new Builder();
  for (const name of rules.keys()) b.index.set(name, b.rule(name));
  for (const [name, expr] of rules) b.setAlts(b.index.get(name)!, b.alternatives(expr, name));
  checkLeftRecursion(b.ruleAlts, b.ruleNames);
  return b.program(b.index.get(root)!);
}

/**
 * Refuses left recursion that would grow the matcher's stack without bound: rule A reaching rule B
 * at a position reached without consuming input (after nullable elements only) and not the last
 * one of its alternative (so a continuation is pushed), with B reaching A back the same way.
 * Recursion at the last position (tail calls, as repetitions compile to) is fine.
 */
function checkLeftRecursion(ruleAlts: Elem[][][], names: readonly string[]): void {
  const n = ruleAlts.length;
  const nullable = new Uint8Array(n);
  for (let changed = true; changed;) {
    changed = false;
    for (let r = 0; r < n; r++) {
      if (nullable[r]) continue;
      if (ruleAlts[r].some((a) => a.every((el) => el & 1 && nullable[el >> 1]))) {
        nullable[r] = 1;
        changed = true;
      }
    }
  }
  const edges: number[][] = Array.from({ length: n }, () => []);
  const growing: [number, number][] = [];
  for (let r = 0; r < n; r++) {
    for (const a of ruleAlts[r]) {
      for (let i = 0; i < a.length; i++) {
        const el = a[i];
        if (!(el & 1)) break;
        const q = el >> 1;
        edges[r].push(q);
        if (i < a.length - 1) growing.push([r, q]);
        if (!nullable[q]) break;
      }
    }
  }
  if (!growing.length) return;
  const comp = stronglyConnected(edges);
  for (const [r, q] of growing) {
    if (comp[r] !== comp[q]) continue;
    const members = [...new Set(names.filter((_, k) => comp[k] === comp[r]))];
    throw new GrammarError(`left recursion in rule '${names[r]}' (through ${members.map((m) => `'${m}'`).join(', ')}): a rule may not reach itself before consuming input`, names[r]);
  }
}

/** Component number of every node (Tarjan's algorithm, iterative). */
function stronglyConnected(edges: number[][]): Int32Array {
  const n = edges.length;
  const index = new Int32Array(n).fill(-1);
  const low = new Int32Array(n);
  const comp = new Int32Array(n).fill(-1);
  const onStack = new Uint8Array(n);
  const stack: number[] = [];
  let counter = 0;
  let comps = 0;
  const work: [number, number][] = [];
  for (let s = 0; s < n; s++) {
    if (index[s] >= 0) continue;
    work.push([s, 0]);
    while (work.length) {
      const top = work[work.length - 1];
      const v = top[0];
      if (top[1] === 0 && index[v] < 0) {
        index[v] = low[v] = counter++;
        stack.push(v);
        onStack[v] = 1;
      }
      if (top[1] < edges[v].length) {
        const w = edges[v][top[1]++];
        if (index[w] < 0) work.push([w, 0]);
        else if (onStack[w]) low[v] = Math.min(low[v], index[w]);
        continue;
      }
      work.pop();
      if (work.length) {
        const u = work[work.length - 1][0];
        low[u] = Math.min(low[u], low[v]);
      }
      if (low[v] === index[v]) {
        for (;;) {
          const w = stack.pop()!;
          onStack[w] = 0;
          comp[w] = comps;
          if (w === v) break;
        }
        comps++;
      }
    }
  }
  return comp;
}
