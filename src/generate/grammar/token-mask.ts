// Which tokens a grammar allows next. The vocabulary's token bytes form a trie; the mask is found by
// walking it with the grammar's byte automaton (matcher.ts) from the current state: tokens sharing a
// prefix share the work for it, and a subtree is skipped as soon as its prefix is refused. The walk
// is over the trie in preorder (flat arrays, a subtree is a contiguous range), keeping the state of
// each depth on the current path. Masks are cached per automaton state, so a state met again (the
// inside of a JSON string, after every character) costs a copy.
//
// naiveAllowed is the reference: every token tried on its own clone of the matcher.

import type { Tokenizer } from '../tokenizer';
import { cappedPosition } from './compile';
import { GrammarError } from './errors';
import type { Grammar } from './gbnf';
import { type GrammarEngine, GrammarMatcher, type ParseState, type StackNode, UNKNOWN } from './matcher';

/** Masks kept per (grammar, vocabulary), least recently used dropped first. */
export const MASK_CACHE_ENTRIES = 256;

/** A vocabulary's token bytes as a trie. */
export class TokenVocabulary {
  /** Number of token ids. */
  readonly size: number;
  /** Trie nodes in preorder; node 0 is the root (the empty prefix). */
  readonly nodeByte: Uint8Array;
  readonly nodeDepth: Int32Array;
  /** One past the last node of each node's subtree. */
  readonly nodeEnd: Int32Array;
  /** Tokens spelled by the path to node k: tokenIds[tokenStart[k]] … tokenIds[tokenStart[k + 1] - 1]. */
  readonly tokenStart: Int32Array;
  readonly tokenIds: Int32Array;
  readonly maxDepth: number;

  /**
   * `tokenBytes[id]` is the text of token `id` as bytes; null marks a token never to be produced
   * under a grammar (special and control tokens), as does an empty one (it would make no progress).
   */
  constructor(readonly tokenBytes: readonly (Uint8Array | null)[]) {
    this.size = tokenBytes.length;
    const ids: number[] = [];
    for (let id = 0; id < tokenBytes.length; id++) if (tokenBytes[id]?.length) ids.push(id);
    ids.sort((a, b) => compareBytes(tokenBytes[a]!, tokenBytes[b]!) || a - b);
    const bytes: number[] = [0];
    const depth: number[] = [0];
    const nodeOf = new Int32Array(ids.length);
    const path: number[] = [0];
    let prev: Uint8Array = new Uint8Array(0);
    ids.forEach((id, k) => {
      const t = tokenBytes[id]!;
      let lcp = 0;
      while (lcp < t.length && lcp < prev.length && t[lcp] === prev[lcp]) lcp++;
      for (let d = lcp + 1; d <= t.length; d++) {
        path[d] = bytes.length;
        bytes.push(t[d - 1]);
        depth.push(d);
      }
      nodeOf[k] = path[t.length];
      prev = t;
    });
    const n = bytes.length;
    this.nodeByte = Uint8Array.from(bytes);
    this.nodeDepth = Int32Array.from(depth);
    this.maxDepth = depth.reduce((a, b) => Math.max(a, b), 0);
    this.nodeEnd = new Int32Array(n);
    const open: number[] = [];
    for (let i = 0; i < n; i++) {
      while (open.length && depth[open[open.length - 1]] >= depth[i]) this.nodeEnd[open.pop()!] = i;
      open.push(i);
    }
    for (const i of open) this.nodeEnd[i] = n;
    this.tokenStart = new Int32Array(n + 1);
    for (const node of nodeOf) this.tokenStart[node + 1]++;
    for (let i = 0; i < n; i++) this.tokenStart[i + 1] += this.tokenStart[i];
    this.tokenIds = new Int32Array(ids.length);
    const fill = this.tokenStart.slice(0, n);
    ids.forEach((id, k) => {
      this.tokenIds[fill[nodeOf[k]]++] = id;
    });
  }

  static fromTokenizer(tokenizer: Pick<Tokenizer, 'tokenBytes'>): TokenVocabulary {
    return new TokenVocabulary(tokenizer.tokenBytes());
  }

  /** Number of trie nodes (the root included). */
  get nodeCount(): number {
    return this.nodeByte.length;
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * Sets mask[id] = 1 for every token whose bytes the automaton accepts from state `s` (ids never set
 * stay as they are). The walk may add states to the engine; state ids stay valid throughout.
 */
export function walkTrie(vocab: TokenVocabulary, engine: GrammarEngine, s: number, mask: Uint8Array): void {
  const { nodeByte, nodeDepth, nodeEnd, tokenStart, tokenIds } = vocab;
  const stateAt = new Int32Array(vocab.maxDepth + 1);
  stateAt[0] = s;
  let trans = engine.trans;
  const n = nodeByte.length;
  let i = 1;
  while (i < n) {
    const d = nodeDepth[i];
    const from = stateAt[d - 1];
    let t = trans[from * 256 + nodeByte[i]];
    if (t === UNKNOWN) {
      t = engine.step(from, nodeByte[i]);
      trans = engine.trans;
    }
    if (t < 0) {
      i = nodeEnd[i];
      continue;
    }
    stateAt[d] = t;
    for (let k = tokenStart[i], e = tokenStart[i + 1]; k < e; k++) mask[tokenIds[k]] = 1;
    i++;
  }
}

/** The reference mask: each token fed to its own clone of `matcher`; end tokens allowed iff it can end. */
export function naiveAllowed(matcher: GrammarMatcher, vocab: TokenVocabulary, endTokens: readonly number[]): Uint8Array {
  const mask = new Uint8Array(vocab.size);
  vocab.tokenBytes.forEach((bytes, id) => {
    if (bytes?.length && matcher.clone().acceptBytes(bytes)) mask[id] = 1;
  });
  for (const id of endTokens) if (id >= 0 && id < vocab.size) mask[id] = matcher.canEnd ? 1 : 0;
  return mask;
}

/** Constrains sampling to a grammar: the tokens allowed next, and the text so far. */
export class GrammarConstraint {
  readonly matcher: GrammarMatcher;
  private readonly endTokens: readonly number[];
  private ended = false;

  /** `endTokens`: ids that finish the text (EOS, end-of-turn), allowed exactly where the grammar can end. */
  constructor(grammar: Grammar | GrammarMatcher, readonly vocab: TokenVocabulary, endTokens: readonly number[]) {
    this.matcher = grammar instanceof GrammarMatcher ? grammar.clone() : new GrammarMatcher(grammar);
    this.endTokens = [...new Set(endTokens)].filter((id) => id >= 0 && id < vocab.size);
  }

  /** 1 for every token id allowed next (a fresh array the caller may keep). */
  allowed(): Uint8Array {
    const out = new Uint8Array(this.vocab.size);
    if (this.ended) return out;
    out.set(this.byteMask());
    const end = this.matcher.canEnd ? 1 : 0;
    for (const id of this.endTokens) out[id] = end;
    return out;
  }

  /** Sets the logit of every token not allowed next to -Infinity (ids past the vocabulary too). */
  apply(logits: Float32Array): void {
    const size = Math.min(logits.length, this.vocab.size);
    if (this.ended) {
      logits.fill(-Infinity);
      return;
    }
    const mask = this.byteMask();
    const end = this.matcher.canEnd;
    const endLogits = this.endTokens.map((id) => logits[id]);
    for (let i = 0; i < size; i++) if (!mask[i]) logits[i] = -Infinity;
    this.endTokens.forEach((id, k) => {
      if (id < size) logits[id] = end ? endLogits[k] : -Infinity;
    });
    if (logits.length > size) logits.fill(-Infinity, size);
  }

  /** Advances past token `id`; a GrammarError if it is not allowed here. */
  accept(id: number): void {
    if (this.ended) throw new GrammarError(`token ${id} after the end of the constrained text`);
    if (this.endTokens.includes(id)) {
      if (!this.matcher.canEnd) throw new GrammarError(`end token ${id} before the constrained text is complete`);
      this.ended = true;
      return;
    }
    const bytes = id >= 0 && id < this.vocab.size ? this.vocab.tokenBytes[id] : null;
    if (!bytes?.length || !this.matcher.acceptBytes(bytes)) throw new GrammarError(`token ${id} is not allowed by the grammar here`);
  }

  /** Whether the text is finished: an end token was accepted, or it is complete and nothing may follow. */
  get done(): boolean {
    return this.ended || (this.matcher.mustEnd && this.matcher.canEnd);
  }

  clone(): GrammarConstraint {
    const c = new GrammarConstraint(this.matcher, this.vocab, this.endTokens);
    c.ended = this.ended;
    return c;
  }

  /** Tokens allowed by their bytes alone (end tokens aside), shared with the cache: read only. */
  private byteMask(): Uint8Array {
    const s = this.matcher.currentState();
    const engine = this.matcher.engine;
    const st: ParseState = engine.states[s];
    let cache = engine.stateCaches.get(this.vocab);
    if (!cache) engine.stateCaches.set(this.vocab, (cache = new Map()));
    const key = this.maskKey(engine, st);
    let mask = cache.get(key);
    if (mask) {
      cache.delete(key);
      cache.set(key, mask);
      return mask;
    }
    mask = new Uint8Array(this.vocab.size);
    walkTrie(this.vocab, engine, s, mask);
    if (cache.size >= MASK_CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
    cache.set(key, mask);
    return mask;
  }

  /**
   * What the mask of a state depends on. Without counted repetitions, the state itself. With them,
   * its stacks with every repetition count capped just above the longest token (see
   * cappedPosition): the states inside a string of maxLength 1000 then share one mask until the
   * end is within a token's reach.
   */
  private maskKey(engine: GrammarEngine, st: ParseState): ParseState | string {
    const prog = engine.program;
    if (!prog.chainStarts.length) return st;
    const cap = this.vocab.maxDepth + 1;
    const stacks = new Set<string>();
    for (const top of st.stacks) {
      let key = '';
      for (let n: StackNode | null = top; n; n = n.parent) key += cappedPosition(prog, n.pos, cap) + ',';
      stacks.add(key);
    }
    return (st.canEnd ? '$' : '') + [...stacks].sort().join('|');
  }
}
