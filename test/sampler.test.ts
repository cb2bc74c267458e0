// Sampler stages against straightforward references on fixed logits, the seeded draw, and stop
// strings over streamed text.
import { describe, expect, it } from 'vitest';
import {
  applyLogitBias, applyPresenceFrequency, applyRepetitionPenalty, argmax, drawFrom, expNonPositive, keepMinP, keepTopP,
  logProb, mulberry32, resolveSampling, Sampler, softmaxCandidates, topKIds, topLogProbs, type Candidates,
} from '../src/generate/sampler';
import { StopStrings } from '../src/generate/stream';
import { RequestError } from '../src/generate/errors';
import { randn, rng } from './helpers';

// ---- references: whole-vocabulary sorts and Math.exp, obviously right ------------------------------

function refSoftmax(l: ArrayLike<number>, T: number): Map<number, number> {
  const ids = Array.from({ length: l.length }, (_, i) => i).filter((i) => Number.isFinite(l[i]));
  const m = Math.max(...ids.map((i) => l[i]));
  const e = ids.map((i) => Math.exp((l[i] - m) / T));
  const z = e.reduce((a, b) => a + b, 0);
  return new Map(ids.map((id, j) => [id, e[j] / z]));
}

function normalize(m: Map<number, number>): Map<number, number> {
  const z = [...m.values()].reduce((a, b) => a + b, 0);
  return new Map([...m].map(([k, v]) => [k, v / z]));
}

function byRank(m: Map<number, number>): [number, number][] {
  return [...m].sort((a, b) => b[1] - a[1] || a[0] - b[0]);
}

function refTopK(l: ArrayLike<number>, T: number, k: number): Map<number, number> {
  const ids = Array.from({ length: l.length }, (_, i) => i).filter((i) => Number.isFinite(l[i])).sort((a, b) => l[b] - l[a] || a - b);
  const keep = new Set(ids.slice(0, k));
  return normalize(new Map([...refSoftmax(l, T)].filter(([id]) => keep.has(id))));
}

function refTopP(p: Map<number, number>, top: number): Map<number, number> {
  const out = new Map<number, number>();
  let cum = 0;
  for (const [id, q] of byRank(p)) {
    if (out.size > 0 && cum >= top) break;
    out.set(id, q);
    cum += q;
  }
  return normalize(out);
}

function refMinP(p: Map<number, number>, m: number): Map<number, number> {
  const max = Math.max(...p.values());
  return normalize(new Map([...p].filter(([, q]) => q >= m * max)));
}

function asMap(c: Candidates): Map<number, number> {
  return new Map(Array.from(c.ids, (id, i) => [id, c.p[i]]));
}

function expectSameDist(a: Map<number, number>, b: Map<number, number>): void {
  expect([...a.keys()].sort((x, y) => x - y)).toEqual([...b.keys()].sort((x, y) => x - y));
  // Float64 softmax with exp to ≤ 2 ulp: agreement far inside 1e-12.
  for (const [k, v] of b) expect(Math.abs(a.get(k)! - v)).toBeLessThan(1e-12);
}

/** Logits with ties, a masked entry and a wide spread, at an odd vocabulary size. */
function fixedLogits(V = 257, seed = 3): Float32Array {
  const l = randn(V, rng(seed), 4);
  l[10] = l[11] = l[200] = 5.5; // three-way tie at the top
  l[42] = -Infinity;
  return l;
}

describe('expNonPositive', () => {
  it('matches Math.exp to 2 ulp on [-708, 0]', () => {
    const r = rng(1);
    let worst = 0;
    for (let i = 0; i < 100_000; i++) {
      const x = -r() * (i % 2 ? 708 : 2);
      worst = Math.max(worst, Math.abs(expNonPositive(x) - Math.exp(x)) / Math.exp(x));
    }
    expect(worst).toBeLessThan(4.5e-16);
    expect(expNonPositive(0)).toBe(1);
    expect(expNonPositive(-800)).toBe(0);
    expect(expNonPositive(-Infinity)).toBe(0);
  });
});

describe('logit edits', () => {
  it('logit bias adds per id, −Infinity bans', () => {
    const l = Float32Array.from([1, 2, 3, 4]);
    applyLogitBias(l, new Map([[0, 2.5], [3, -Infinity], [9, 1]]));
    expect(Array.from(l)).toEqual([3.5, 2, 3, -Infinity]);
  });

  it('repetition penalty divides positive and multiplies negative logits, once per distinct id', () => {
    const base = fixedLogits();
    const seen = [3, 3, 7, 10, 42, 256, 3];
    const got = base.slice();
    applyRepetitionPenalty(got, seen, 1.3);
    const want = Float32Array.from(base);
    for (const id of new Set(seen)) want[id] = base[id] < 0 ? base[id] * 1.3 : base[id] / 1.3;
    expect(Array.from(got)).toEqual(Array.from(want));
  });

  it('presence and frequency penalties follow OpenAI: count·f + (count>0)·p', () => {
    const base = fixedLogits();
    const counts = new Map([[5, 1], [6, 3], [7, 0]]);
    const got = base.slice();
    applyPresenceFrequency(got, counts, 0.5, 0.25);
    const want = Float32Array.from(base);
    want[5] -= 0.25 + 0.5;
    want[6] -= 0.75 + 0.5;
    expect(Array.from(got)).toEqual(Array.from(want));
  });

  it('argmax takes the lowest index among ties and skips NaN', () => {
    expect(argmax(fixedLogits())).toBe(10);
    expect(argmax([NaN, 1, 3, 3])).toBe(2);
    expect(argmax([-Infinity, -Infinity])).toBe(-1);
  });
});

describe('distribution shaping', () => {
  const l = fixedLogits();
  for (const T of [0.3, 1, 1.7]) {
    it(`softmax at temperature ${T} over finite logits`, () => {
      expectSameDist(asMap(softmaxCandidates(l, T)!), refSoftmax(l, T));
    });
  }

  for (const k of [1, 2, 3, 7, 64, 256, 300]) {
    it(`top-k ${k} keeps the k largest (ties by lower id)`, () => {
      const c = softmaxCandidates(l, 0.9, k)!;
      expectSameDist(asMap(c), k >= l.length ? refSoftmax(l, 0.9) : refTopK(l, 0.9, k));
      if (k < l.length) expect(Array.from(topKIds(l, k))).toEqual(byRank(refTopK(l, 1, k)).map(([id]) => id));
    });
  }

  for (const p of [0.05, 0.5, 0.9, 0.99, 1]) {
    it(`top-p ${p} equals a full sort and cumulative cut`, () => {
      const c = keepTopP(softmaxCandidates(l, 1.2)!, p);
      expectSameDist(asMap(c), p >= 1 ? refSoftmax(l, 1.2) : refTopP(refSoftmax(l, 1.2), p));
      // after top-k too (the candidates arrive sorted)
      expectSameDist(asMap(keepTopP(softmaxCandidates(l, 1.2, 50)!, p)), refTopP(refTopK(l, 1.2, 50), p));
    });
  }

  it('top-p keeps one token when the top one alone exceeds p', () => {
    const c = keepTopP(softmaxCandidates(Float32Array.from([10, 0, 0, 0]), 1)!, 0.5);
    expect(Array.from(c.ids)).toEqual([0]);
    expect(c.p[0]).toBe(1);
  });

  for (const m of [0.01, 0.1, 0.5, 1]) {
    it(`min-p ${m} keeps p ≥ m·max`, () => {
      expectSameDist(asMap(keepMinP(softmaxCandidates(l, 0.8)!, m)), refMinP(refSoftmax(l, 0.8), m));
    });
  }

  it('drawFrom walks the cumulative distribution', () => {
    const c: Candidates = { ids: Int32Array.from([4, 9, 2]), p: Float64Array.from([0.5, 0.25, 0.25]), sorted: true };
    expect(drawFrom(c, 0)).toBe(4);
    expect(drawFrom(c, 0.4999)).toBe(4);
    expect(drawFrom(c, 0.5)).toBe(9);
    expect(drawFrom(c, 0.76)).toBe(2);
    expect(drawFrom(c, 0.9999999)).toBe(2);
  });

  it('logProb is log softmax', () => {
    const ref = refSoftmax(l, 1);
    expect(Math.abs(logProb(l, 17) - Math.log(ref.get(17)!))).toBeLessThan(1e-12);
  });
});

describe('Sampler', () => {
  const l = fixedLogits();

  it('temperature 0 is greedy after bias and penalties', () => {
    const s = new Sampler({ temperature: 0, logitBias: { 10: -100 } });
    expect(s.next(l.slice())).toBe(11);
    s.accept(11);
    const rep = new Sampler({ temperature: 0, repetitionPenalty: 2 }, [10, 11]);
    expect(rep.next(l.slice())).toBe(200);
  });

  it('the same seed gives the same tokens; another seed gives others', () => {
    const run = (seed: number) => {
      const s = new Sampler({ temperature: 1.1, topK: 40, topP: 0.95, minP: 0.02, seed });
      return Array.from({ length: 64 }, () => s.next(l.slice()));
    };
    expect(run(123)).toEqual(run(123));
    expect(run(123)).not.toEqual(run(124));
  });

  it('a fixed seed gives a fixed sequence (golden values; integer PRNG and exact exp)', () => {
    const s = new Sampler({ temperature: 0.9, topP: 0.9, seed: 42 });
    const got = Array.from({ length: 12 }, () => s.next(l.slice()));
    expect(got).toEqual(GOLDEN);
  });

  it('draws follow the shaped distribution', () => {
    const s = new Sampler({ temperature: 1.5, topK: 12, minP: 0.05, seed: 9 });
    const want = refMinP(refTopK(l, 1.5, 12), 0.05);
    const n = 40_000;
    const hits = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const t = s.next(l.slice());
      hits.set(t, (hits.get(t) ?? 0) + 1);
    }
    for (const id of hits.keys()) expect(want.has(id)).toBe(true);
    for (const [id, p] of want) {
      // 5 standard deviations of a binomial count: a seeded run, so a fixed outcome either way.
      const sd = Math.sqrt(n * p * (1 - p));
      expect(Math.abs((hits.get(id) ?? 0) - n * p)).toBeLessThan(5 * sd + 1);
    }
  });

  it('frequency penalty lowers the odds of repeating', () => {
    const flat = new Float32Array(8);
    const s = new Sampler({ temperature: 0, frequencyPenalty: 1 });
    const seq: number[] = [];
    for (let i = 0; i < 8; i++) {
      const t = s.next(flat.slice());
      s.accept(t);
      seq.push(t);
    }
    expect(seq).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('mulberry32 gives 32-bit uniforms, the same sequence as the test helper generator', () => {
    const a = mulberry32(2024), b = rng(2024);
    for (let i = 0; i < 1000; i++) {
      const x = a();
      expect(x).toBe(b());
      expect(Number.isInteger(x * 2 ** 32) && x >= 0 && x < 1).toBe(true);
    }
  });

  it('rejects bad parameters naming them', () => {
    const bad: [object, string][] = [
      [{ temperature: -1 }, 'temperature'], [{ topK: 1.5 }, 'topK'], [{ topP: 0 }, 'topP'], [{ topP: 1.5 }, 'topP'],
      [{ minP: 2 }, 'minP'], [{ repetitionPenalty: 0 }, 'repetitionPenalty'], [{ seed: 0.5 }, 'seed'],
      [{ logitBias: { x: 1 } }, 'logitBias'], [{ presencePenalty: NaN }, 'presencePenalty'],
    ];
    for (const [p, field] of bad) {
      try {
        resolveSampling(p as any);
        throw new Error(`accepted ${JSON.stringify(p)}`);
      } catch (e) {
        expect(e).toBeInstanceOf(RequestError);
        expect((e as RequestError).field).toBe(field);
      }
    }
  });
});

describe('StopStrings', () => {
  const feed = (stops: string[], parts: string[]) => {
    const s = new StopStrings(stops);
    const out = parts.map((p) => s.push(p));
    return { out, stopped: s.stopped, rest: s.flush() };
  };

  it('cuts the stop string and what follows it', () => {
    expect(feed(['END'], ['abc', 'dEN', 'Dxyz', 'more'])).toEqual({ out: ['abc', 'd', '', ''], stopped: 'END', rest: '' });
  });

  it('holds back a possible prefix and releases it when it is not one', () => {
    expect(feed(['\n\nUser:'], ['Hi', '\n', '\nUs', 'ually'])).toEqual({ out: ['Hi', '', '', '\n\nUsually'], stopped: null, rest: '' });
  });

  it('flushes held text at the end', () => {
    expect(feed(['###'], ['a#', '#'])).toEqual({ out: ['a', ''], stopped: null, rest: '##' });
  });

  it('the earliest of several stop strings wins', () => {
    expect(feed(['cd', 'bcde'], ['abcdef'])).toEqual({ out: ['a'], stopped: 'bcde', rest: '' });
    expect(feed(['cd', 'bcx'], ['ab', 'cd'])).toEqual({ out: ['a', 'b'], stopped: 'cd', rest: '' });
    expect(feed(['x', 'ab'], ['zab'])).toEqual({ out: ['z'], stopped: 'ab', rest: '' });
  });

  it('passes everything through without stop strings', () => {
    expect(feed([], ['a', 'b'])).toEqual({ out: ['a', 'b'], stopped: null, rest: '' });
  });
});

const GOLDEN = [237, 146, 151, 91, 11, 88, 200, 76, 66, 86, 11, 196];

describe('topLogProbs', () => {
  it('the k likeliest ids, best first (ties by id), with logProb of each, at odd vocabulary sizes', () => {
    const r = rng(71);
    for (const V of [1, 7, 333, 5001]) {
      const l = randn(V, r).map((v) => Math.round(v * 8) / 8);
      for (const k of [1, 3, 20]) {
        const got = topLogProbs(l, k);
        const ids = Array.from({ length: V }, (_, i) => i).sort((a, b) => l[b] - l[a] || a - b).slice(0, k);
        expect(got.map((g) => g.id)).toEqual(ids);
        for (const g of got) expect(g.logprob).toBeCloseTo(logProb(l, g.id), 12);
      }
    }
  });
});
