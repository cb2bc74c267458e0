// Matching a grammar byte by byte with a set of parse stacks.
//
// A stack is a chain of positions of the compiled program (compile.ts): the top is the BYTES
// position the next byte must match, each frame below is where its caller goes on once the rule
// above completes. Stacks are hash-consed (one node per (position, parent)), so a set of stacks is a
// sorted list of node ids and two matchers in the same parse configuration share it exactly.
//
// Each distinct set becomes a state of a lazily built automaton over bytes: the transition of a
// state on a byte is computed once (advance every stack whose top matches, then expand rule
// references and completed rules until each stack tops at a BYTES position) and kept in a table.
// In the middle of a JSON string the set after a character is the very set before it, so the
// steady state costs one table lookup per byte. A multi-byte character is matched one byte at a
// time, so a state may sit inside a character (a token can end there).
//
// Bounds: a state holds at most MAX_STACKS stacks (more is a GrammarError: the grammar is too
// ambiguous); the automaton is discarded and rebuilt when it grows past MAX_STATES states or
// MAX_NODES stack nodes, the matchers keep their stacks and carry on.

import { BYTES, END, type Program, RULE } from './compile';
import { GrammarError } from './errors';
import type { Grammar } from './gbnf';

export const MAX_STACKS = 4096;
export const MAX_STATES = 8192;
export const MAX_NODES = 500_000;

/** A transition not computed yet. */
export const UNKNOWN = -2;
/** The transition of a byte no stack accepts. */
export const DEAD = -1;

/** One frame of a parse stack: a program position over the frames below. */
export class StackNode {
  constructor(readonly id: number, readonly pos: number, readonly parent: StackNode | null) {}
}

/** A set of parse stacks: a state of the byte automaton. */
export interface ParseState {
  /** Index in `GrammarEngine.states` while `gen` is the engine's generation. */
  readonly id: number;
  readonly gen: number;
  /** Stacks topped by a BYTES position, sorted by id. */
  readonly stacks: readonly StackNode[];
  /** Whether the root rule is complete here. */
  readonly canEnd: boolean;
}

/** The automaton of one grammar, shared by all its matchers. */
export class GrammarEngine {
  /** States of the current generation by id. */
  states: ParseState[] = [];
  /** Transitions, 256 per state: a state id, DEAD, or UNKNOWN (not computed yet). */
  trans = new Int32Array(256 * 16).fill(UNKNOWN);
  /** Bumped when the automaton is discarded; states of older generations are re-interned on use. */
  gen = 0;
  /** Caches keyed by states (token masks per vocabulary), dropped with the automaton. */
  stateCaches = new WeakMap<object, Map<ParseState | string, Uint8Array>>();
  private nodes = new Map<number, StackNode>();
  private nextNode = 1;
  private index = new Map<string, number>();
  private start: ParseState | null = null;
  private readonly positions: number;
  private readonly seen = new Set<number>();
  private readonly workPos: number[] = [];
  private readonly workParent: (StackNode | null)[] = [];

  constructor(readonly program: Program) {
    this.positions = program.kind.length;
  }

  initial(): ParseState {
    if (!this.start) {
      const out: StackNode[] = [];
      this.seen.clear();
      let canEnd = false;
      for (const a of this.program.alts[this.program.root]) canEnd = this.expand(a, null, out) || canEnd;
      this.start = this.intern(out, canEnd);
    }
    return this.start;
  }

  /** The state a state goes to on byte `b` (DEAD if none). */
  step(s: number, b: number): number {
    const t = this.trans[s * 256 + b];
    return t !== UNKNOWN ? t : this.computeStep(s, b);
  }

  /** `st` as a state of the current generation. */
  live(st: ParseState): ParseState {
    return st.gen === this.gen ? st : this.intern(st.stacks, st.canEnd);
  }

  /** Discards the automaton once it has grown past its bounds; call only between operations. */
  maybeReset(): void {
    if (this.states.length <= MAX_STATES && this.nodes.size <= MAX_NODES) return;
    this.gen++;
    this.states = [];
    this.index = new Map();
    this.nodes = new Map();
    this.trans = new Int32Array(256 * 16).fill(UNKNOWN);
    this.stateCaches = new WeakMap();
    this.start = null;
  }

  private computeStep(s: number, b: number): number {
    const st = this.states[s];
    const { arg, byteSets } = this.program;
    const out: StackNode[] = [];
    let canEnd = false;
    this.seen.clear();
    for (const node of st.stacks) {
      if (byteSets[arg[node.pos] * 256 + b]) canEnd = this.expand(node.pos + 1, node.parent, out) || canEnd;
    }
    const t = out.length || canEnd ? this.intern(out, canEnd).id : DEAD;
    this.trans[s * 256 + b] = t;
    return t;
  }

  private node(pos: number, parent: StackNode | null): StackNode {
    const key = (parent ? parent.id : 0) * this.positions + pos;
    let n = this.nodes.get(key);
    if (!n) {
      n = new StackNode(this.nextNode++, pos, parent);
      this.nodes.set(key, n);
    }
    return n;
  }

  /**
   * Adds to `out` the stacks that continuing at `pos` over `parent` reaches without consuming a
   * byte, each topped by a BYTES position; returns whether the root completes on the way.
   * `seen` (cleared by the caller) skips (position, parent) pairs already expanded in this step.
   */
  private expand(pos: number, parent: StackNode | null, out: StackNode[]): boolean {
    const { kind, arg, alts, setEmpty } = this.program;
    const wp = this.workPos;
    const wq = this.workParent;
    wp.push(pos);
    wq.push(parent);
    let canEnd = false;
    while (wp.length) {
      const p = wp.pop()!;
      const q = wq.pop()!;
      const key = (q ? q.id : 0) * this.positions + p;
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      const k = kind[p];
      if (k === END) {
        if (q === null) canEnd = true;
        else {
          wp.push(q.pos);
          wq.push(q.parent);
        }
      } else if (k === BYTES) {
        if (setEmpty[arg[p]]) continue;
        out.push(this.node(p, q));
        if (out.length > MAX_STACKS) {
          wp.length = 0;
          wq.length = 0;
          throw new GrammarError(`more than ${MAX_STACKS} parse stacks at once: the grammar is too ambiguous (in rule '${this.program.ruleNames[this.ruleAt(p)]}')`);
        }
      } else if (k === RULE) {
        // A reference at the last position of its alternative continues straight at the caller's
        // continuation: no frame is pushed, so recursion there (repetition loops) keeps the stack flat.
        const next = kind[p + 1] === END ? q : this.node(p + 1, q);
        for (const a of alts[arg[p]]) {
          wp.push(a);
          wq.push(next);
        }
      }
    }
    return canEnd;
  }

  private intern(stacks: readonly StackNode[], canEnd: boolean): ParseState {
    const sorted = [...stacks].sort((a, b) => a.id - b.id);
    let key = canEnd ? '$' : '';
    for (const n of sorted) key += n.id + ',';
    const known = this.index.get(key);
    if (known !== undefined) return this.states[known];
    const st: ParseState = { id: this.states.length, gen: this.gen, stacks: sorted, canEnd };
    this.states.push(st);
    this.index.set(key, st.id);
    if (this.trans.length < this.states.length * 256) {
      const grown = new Int32Array(this.trans.length * 2).fill(UNKNOWN);
      grown.set(this.trans);
      this.trans = grown;
    }
    return st;
  }

  /** The rule holding position `p` (for messages). */
  private ruleAt(p: number): number {
    let best = 0;
    let bestStart = -1;
    this.program.alts.forEach((starts, r) => {
      for (const s of starts) if (s <= p && s > bestStart) {
        bestStart = s;
        best = r;
      }
    });
    return best;
  }
}

const engines = new WeakMap<Grammar, GrammarEngine>();

/** The shared automaton of a grammar. */
export function engineOf(g: Grammar): GrammarEngine {
  let e = engines.get(g);
  if (!e) {
    e = new GrammarEngine(g.program);
    engines.set(g, e);
  }
  return e;
}

const encoder = new TextEncoder();

/** Where a text stands in a grammar's language, fed one byte at a time. */
export class GrammarMatcher {
  readonly engine: GrammarEngine;
  private state: ParseState;

  constructor(grammar: Grammar);
  constructor(grammar: GrammarEngine, state: ParseState);
  constructor(grammar: Grammar | GrammarEngine, state?: ParseState) {
    this.engine = grammar instanceof GrammarEngine ? grammar : engineOf(grammar);
    this.state = state ?? this.engine.initial();
  }

  /** Consumes one byte if the grammar allows it there; false (state unchanged) if not. */
  acceptByte(b: number): boolean {
    if (!(b >= 0 && b <= 255 && Number.isInteger(b))) return false;
    const s = this.currentState();
    const t = this.engine.step(s, b);
    if (t === DEAD) return false;
    this.state = this.engine.states[t];
    return true;
  }

  /** Consumes all bytes, or none (false) if the grammar refuses one of them. */
  acceptBytes(bytes: Uint8Array): boolean {
    const e = this.engine;
    let s = this.currentState();
    for (let i = 0; i < bytes.length; i++) {
      s = e.step(s, bytes[i]);
      if (s === DEAD) return false;
    }
    this.state = e.states[s];
    return true;
  }

  /** acceptBytes of the UTF-8 of `text`. */
  acceptString(text: string): boolean {
    return this.acceptBytes(encoder.encode(text));
  }

  /** Whether the text so far is a complete sentence of the grammar. */
  get canEnd(): boolean {
    return this.state.canEnd;
  }

  /** Whether no further byte is possible. */
  get mustEnd(): boolean {
    return this.state.stacks.length === 0;
  }

  clone(): GrammarMatcher {
    return new GrammarMatcher(this.engine, this.state);
  }

  /**
   * The id of the current state in the engine's current generation, for walking the automaton
   * directly (token masks); ids stay valid until the next call of a matcher method.
   */
  currentState(): number {
    this.engine.maybeReset();
    this.state = this.engine.live(this.state);
    return this.state.id;
  }
}
