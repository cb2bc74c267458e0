// Next-token selection from one row of logits. Stage order follows transformers' generate():
// logit bias and penalties edit the logits, then temperature, top-k, top-p and min-p shape the
// distribution, then one seeded draw picks the token (argmax when temperature is 0).
//
// Same seed → same tokens on every runtime: the PRNG is integer arithmetic (mulberry32) and the
// softmax uses expNonPositive below, built from IEEE-exact +, ×, and powers of two, because
// Math.exp is free to differ in the last bit between JavaScript engines.

import { RequestError } from './errors';

export interface SamplingParams {
  /** 0 → greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 → off. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose mass reaches p; 1 → off. */
  topP?: number;
  /** Keep tokens whose probability is at least minP × the top probability; 0 → off. */
  minP?: number;
  /** transformers' repetition_penalty over prompt and generated tokens: logit/p if > 0, logit·p if < 0. 1 → off. */
  repetitionPenalty?: number;
  /** OpenAI presence_penalty: subtracted once from every token generated so far. */
  presencePenalty?: number;
  /** OpenAI frequency_penalty: subtracted once per occurrence in the generated tokens. */
  frequencyPenalty?: number;
  /** Added to the logit of a token id (−Infinity bans it). */
  logitBias?: Record<number, number> | Map<number, number>;
  /** Seed of the draw; without one a random seed is taken from crypto.getRandomValues. */
  seed?: number;
}

export interface ResolvedSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  logitBias: Map<number, number>;
  seed: number;
}

function finite(field: string, v: unknown, lo = -Infinity, hi = Infinity, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    throw new RequestError(field, `must be a number in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
  return v;
}

export function randomSeed(): number {
  const a = new Uint32Array(1);
  globalThis.crypto.getRandomValues(a);
  return a[0];
}

/** Checks every parameter (RequestError naming the one at fault) and fills the neutral defaults. */
export function resolveSampling(p: SamplingParams = {}): ResolvedSampling {
  const topK = p.topK ?? 0;
  if (!Number.isInteger(topK) || topK < 0) throw new RequestError('topK', `must be an integer ≥ 0, got ${JSON.stringify(p.topK)}`);
  const topP = finite('topP', p.topP, 0, 1, 1);
  if (topP === 0) throw new RequestError('topP', 'must be > 0');
  const repetitionPenalty = finite('repetitionPenalty', p.repetitionPenalty, 0, Infinity, 1);
  if (repetitionPenalty === 0) throw new RequestError('repetitionPenalty', 'must be > 0');
  const logitBias = new Map<number, number>();
  const entries = p.logitBias instanceof Map ? [...p.logitBias] : Object.entries(p.logitBias ?? {});
  for (const [k, v] of entries) {
    const id = Number(k);
    if (!Number.isInteger(id) || id < 0) throw new RequestError('logitBias', `key ${JSON.stringify(k)} is not a token id`);
    if (typeof v !== 'number' || Number.isNaN(v) || v === Infinity) throw new RequestError(`logitBias[${id}]`, `must be a finite number or -Infinity, got ${v}`);
    logitBias.set(id, v);
  }
  let seed = p.seed;
  if (seed === undefined || seed === null) seed = randomSeed();
  else if (!Number.isInteger(seed)) throw new RequestError('seed', `must be an integer, got ${JSON.stringify(seed)}`);
  return {
    temperature: finite('temperature', p.temperature, 0, Infinity, 1),
    topK,
    topP,
    minP: finite('minP', p.minP, 0, 1, 0),
    repetitionPenalty,
    presencePenalty: finite('presencePenalty', p.presencePenalty, -Infinity, Infinity, 0),
    frequencyPenalty: finite('frequencyPenalty', p.frequencyPenalty, -Infinity, Infinity, 0),
    logitBias,
    seed: seed >>> 0,
  };
}

/** mulberry32: uniform in [0, 1) with 32 bits; integer arithmetic only. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const LN2_HI = 6.93147180369123816490e-1; // ln 2 with its low 32 bits cleared, so k·LN2_HI is exact
const LN2_LO = 1.90821492927058770002e-10;
const INV_LN2 = 1.44269504088896338700;
const pow2buf = new DataView(new ArrayBuffer(8));

/**
 * e^x for x ≤ 0, to within 2 ulp, identical on every engine: x = k·ln2 + r with |r| ≤ ln2/2,
 * e^r by its Taylor series to r¹³ (remainder < 1e-17), times 2^k assembled from exponent bits.
 */
export function expNonPositive(x: number): number {
  if (!(x > -708)) return Number.isNaN(x) ? NaN : 0;
  if (x === 0) return 1;
  const k = Math.round(x * INV_LN2);
  const r = x - k * LN2_HI - k * LN2_LO;
  let s = 1 / 6227020800; // 1/13!
  s = s * r + 1 / 479001600;
  s = s * r + 1 / 39916800;
  s = s * r + 1 / 3628800;
  s = s * r + 1 / 362880;
  s = s * r + 1 / 40320;
  s = s * r + 1 / 5040;
  s = s * r + 1 / 720;
  s = s * r + 1 / 120;
  s = s * r + 1 / 24;
  s = s * r + 1 / 6;
  s = s * r + 0.5;
  s = s * r + 1;
  s = s * r + 1;
  pow2buf.setUint32(0, (k + 1023) << 20);
  pow2buf.setUint32(4, 0);
  return s * pow2buf.getFloat64(0);
}

// ---- logit edits ---------------------------------------------------------------------------------

export function applyLogitBias(logits: Float32Array, bias: Map<number, number>): void {
  for (const [id, b] of bias) if (id < logits.length) logits[id] += b;
}

/** transformers RepetitionPenaltyLogitsProcessor: once per distinct token seen. */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of seen instanceof Set ? seen : new Set(seen)) {
    if (id < 0 || id >= logits.length) continue;
    const l = logits[id];
    logits[id] = l < 0 ? l * penalty : l / penalty;
  }
}

/** OpenAI: logit −= count·frequency + (count > 0)·presence, counts over generated tokens. */
export function applyPresenceFrequency(logits: Float32Array, counts: Map<number, number>, presence: number, frequency: number): void {
  if (presence === 0 && frequency === 0) return;
  for (const [id, c] of counts) if (id >= 0 && id < logits.length && c > 0) logits[id] -= c * frequency + presence;
}

/** Index of the largest logit; the lowest index among ties; NaN never wins. −1 when none is finite or +∞. */
export function argmax(logits: ArrayLike<number>): number {
  let best = -1, bv = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] > bv) {
      bv = logits[i];
      best = i;
    }
  }
  return best;
}

// ---- distribution shaping --------------------------------------------------------------------------

/** A distribution over candidate ids; `p` sums to 1. Sorted by descending probability when `sorted`. */
export interface Candidates {
  ids: Int32Array;
  p: Float64Array;
  sorted: boolean;
}

/** "a ranks before b": higher logit, then lower id (a fixed tie order keeps draws reproducible). */
function before(l: ArrayLike<number>, a: number, b: number): boolean {
  return l[a] > l[b] || (l[a] === l[b] && a < b);
}

/** The k best ids by logit, best first (a bounded heap: O(V log k)). */
export function topKIds(logits: ArrayLike<number>, k: number): Int32Array {
  const heap = new Int32Array(k); // min-heap: heap[0] ranks last
  let n = 0;
  const down = (i: number) => {
    for (;;) {
      const a = 2 * i + 1, b = a + 1;
      let w = i;
      if (a < n && before(logits, heap[w], heap[a])) w = a;
      if (b < n && before(logits, heap[w], heap[b])) w = b;
      if (w === i) return;
      const t = heap[i]; heap[i] = heap[w]; heap[w] = t;
      i = w;
    }
  };
  for (let id = 0; id < logits.length; id++) {
    if (!(logits[id] > -Infinity)) continue;
    if (n < k) {
      let i = n++;
      heap[i] = id;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!before(logits, heap[parent], heap[i])) break;
        const t = heap[i]; heap[i] = heap[parent]; heap[parent] = t;
        i = parent;
      }
    } else if (before(logits, id, heap[0])) {
      heap[0] = id;
      down(0);
    }
  }
  const out = Array.from(heap.subarray(0, n));
  out.sort((a, b) => (before(logits, a, b) ? -1 : 1));
  return Int32Array.from(out);
}

/**
 * softmax(logits / temperature) over the top-k ids (k > 0) or over every id with a finite logit.
 * Returns null when no logit is finite.
 */
export function softmaxCandidates(logits: ArrayLike<number>, temperature: number, k = 0): Candidates | null {
  let ids: Int32Array;
  let sorted = false;
  if (k > 0 && k < logits.length) {
    ids = topKIds(logits, k);
    sorted = true;
  } else {
    let n = 0;
    for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity && logits[i] < Infinity) n++;
    ids = new Int32Array(n);
    n = 0;
    for (let i = 0; i < logits.length; i++) if (logits[i] > -Infinity && logits[i] < Infinity) ids[n++] = i;
  }
  if (!ids.length) return null;
  let max = -Infinity;
  for (const id of ids) if (logits[id] > max) max = logits[id];
  const p = new Float64Array(ids.length);
  let z = 0;
  for (let i = 0; i < ids.length; i++) z += p[i] = expNonPositive((logits[ids[i]] - max) / temperature);
  for (let i = 0; i < p.length; i++) p[i] /= z;
  return { ids, p, sorted };
}

function renormalized(ids: number[] | Int32Array, p: number[] | Float64Array, sorted: boolean): Candidates {
  let z = 0;
  for (let i = 0; i < p.length; i++) z += p[i];
  const q = Float64Array.from(p, (x) => x / z);
  return { ids: Int32Array.from(ids), p: q, sorted };
}

/** Sorts by descending probability (lower id first among ties). */
function sortCandidates(c: Candidates): Candidates {
  if (c.sorted) return c;
  const order = Array.from(c.ids.keys()).sort((a, b) => c.p[b] - c.p[a] || c.ids[a] - c.ids[b]);
  return { ids: Int32Array.from(order, (i) => c.ids[i]), p: Float64Array.from(order, (i) => c.p[i]), sorted: true };
}

/**
 * Nucleus filtering: a token stays when the mass of the tokens ranked above it is < topP
 * (transformers TopPLogitsWarper; at least one token stays).
 */
export function keepTopP(c: Candidates, topP: number): Candidates {
  if (topP >= 1) return c;
  let work = c;
  if (!c.sorted) {
    // Tokens below (1 − topP)/n cannot survive: the tokens at or above that bound hold more
    // than topP of the mass. Filtering before sorting keeps the sort small for peaked rows.
    const bound = (1 - topP) / c.ids.length;
    const ids: number[] = [], p: number[] = [];
    for (let i = 0; i < c.ids.length; i++) if (c.p[i] >= bound) {
      ids.push(c.ids[i]);
      p.push(c.p[i]);
    }
    work = sortCandidates({ ids: Int32Array.from(ids), p: Float64Array.from(p), sorted: false });
  }
  let cum = 0, n = 0;
  while (n < work.ids.length && (n === 0 || cum < topP)) cum += work.p[n++];
  return renormalized(work.ids.subarray(0, n), work.p.subarray(0, n), true);
}

/** Keeps tokens with p ≥ minP · max p (transformers MinPLogitsWarper). */
export function keepMinP(c: Candidates, minP: number): Candidates {
  if (minP <= 0) return c;
  let top = 0;
  for (let i = 0; i < c.p.length; i++) if (c.p[i] > top) top = c.p[i];
  const bound = minP * top;
  const ids: number[] = [], p: number[] = [];
  for (let i = 0; i < c.ids.length; i++) if (c.p[i] >= bound) {
    ids.push(c.ids[i]);
    p.push(c.p[i]);
  }
  return renormalized(ids, p, c.sorted);
}

/** The candidate at which the cumulative probability first exceeds u ∈ [0, 1). */
export function drawFrom(c: Candidates, u: number): number {
  let cum = 0;
  for (let i = 0; i < c.ids.length; i++) {
    cum += c.p[i];
    if (u < cum) return c.ids[i];
  }
  return c.ids[c.ids.length - 1];
}

/** log softmax(logits)[id], the model's own log-probability of a token. */
export function logProb(logits: ArrayLike<number>, id: number): number {
  const { max, lz } = logNormalizer(logits);
  return logits[id] - max - lz;
}

/** The largest logit and log Σ exp(logit − max): log-probabilities are logit − max − lz. */
function logNormalizer(logits: ArrayLike<number>): { max: number; lz: number } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += expNonPositive(logits[i] - max);
  return { max, lz: Math.log(z) };
}

/** The k most likely tokens (topKIds' order) and their log-probabilities. */
export function topLogProbs(logits: ArrayLike<number>, k: number): { id: number; logprob: number }[] {
  const { max, lz } = logNormalizer(logits);
  // The same expression as logProb, so the chosen token's two figures agree exactly.
  return Array.from(topKIds(logits, Math.min(k, logits.length)), (id) => ({ id, logprob: logits[id] - max - lz }));
}

/** Sampling state of one generation: the token history the penalties read, and the PRNG. */
export class Sampler {
  readonly params: ResolvedSampling;
  private readonly rand: () => number;
  private readonly seen = new Set<number>();
  private readonly counts = new Map<number, number>();

  constructor(params: SamplingParams | ResolvedSampling, prompt: ArrayLike<number> = []) {
    this.params = resolveSampling(params);
    this.rand = mulberry32(this.params.seed);
    for (let i = 0; i < prompt.length; i++) this.seen.add(prompt[i]);
  }

  get greedy(): boolean {
    return this.params.temperature === 0;
  }

  /** Greedy with nothing that edits the logits (no bias, no penalties): the argmax of the raw logits. */
  get plainGreedy(): boolean {
    const s = this.params;
    return this.greedy && !s.logitBias.size && s.repetitionPenalty === 1 && s.presencePenalty === 0 && s.frequencyPenalty === 0;
  }

  /** Records a generated token for the penalties. */
  accept(id: number): void {
    this.seen.add(id);
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
  }

  /** Picks the next token. Edits `logits` in place (bias and penalties). */
  next(logits: Float32Array): number {
    const s = this.params;
    applyLogitBias(logits, s.logitBias);
    applyRepetitionPenalty(logits, this.seen, s.repetitionPenalty);
    applyPresenceFrequency(logits, this.counts, s.presencePenalty, s.frequencyPenalty);
    if (this.greedy) {
      const id = argmax(logits);
      if (id < 0) throw new RequestError('logitBias', 'every token is banned');
      return id;
    }
    let c = softmaxCandidates(logits, s.temperature, s.topK);
    if (!c) throw new RequestError('logitBias', 'every token is banned');
    c = keepTopP(c, s.topP);
    c = keepMinP(c, s.minP);
    return drawFrom(c, this.rand());
  }
}
