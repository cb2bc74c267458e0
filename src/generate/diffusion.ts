// Block-diffusion decoding (DiffusionGemma, models/diffusion_gemma.ts), as transformers'
// DiffusionGemmaGenerationMixin.generate defines it:
//
//   encode the prompt (a causal pass filling the KV caches)
//   for each canvas, at most ⌈max_new_tokens / C⌉ of them:
//     canvas ← C random tokens (uniform over the vocabulary); self-conditioning ← none
//     for step n = N … 1 (N = max_denoising_steps):
//       logits ← denoiser(canvas, self-conditioning); processed ← logits / T(n),
//         T(n) = t_min + (t_max − t_min)·n/N (no scaling when t_min or t_max is unset)
//       proposal ← a draw from softmax(processed) per position (argmax in 'argmax' mode)
//       accept the positions of lowest entropy H_i while Σ H (sorted, so far) − H_i ≤ entropy_bound,
//         taking the proposal there; every other position gets a fresh random token (renoising)
//       stop early when the argmax canvas equals the last stability_threshold ones and the mean
//         entropy is below confidence_threshold
//       self-conditioning ← softmax(processed)
//     commit the argmax canvas of the last step; encode it (causal pass) for the next canvas
//     stop after a canvas holding EOS (tokens after the first EOS become pad) or at max length
//
// Every random draw (canvas initialisation, renoising, proposals) comes from one seeded mulberry32
// stream, so a seed gives the same tokens on every runtime; `noise` replaces the canvas draws (the
// parity runner replays transformers' recorded ones).

import type { Model, Session } from '../models/model';
import { isDiffusionNet, type DiffusionGemmaNet } from '../models/diffusion_gemma';
import { RequestError } from './errors';
import { expNonPositive, mulberry32 } from './sampler';
import { yieldToHost } from './host';

/** The generation knobs (DiffusionGemmaGenerationConfig). */
export interface DiffusionParams {
  /** Most new tokens; whole canvases are generated (⌈maxNewTokens / C⌉ at most). */
  maxNewTokens: number;
  /** max_denoising_steps (N). */
  steps: number;
  /** sampler_config.entropy_bound */
  entropyBound: number;
  /** Linear temperature schedule, t_max at the first step down to t_min at the last (both or neither). */
  tMin: number | null;
  tMax: number | null;
  /** Adaptive stopping (both or neither). */
  stabilityThreshold: number | null;
  confidenceThreshold: number | null;
  eos: number[];
  pad: number | null;
  /** 'sample': proposals drawn from the distribution (transformers); 'argmax': the most probable token. */
  proposal: 'sample' | 'argmax';
  seed: number;
}

/** One denoising step, as the loop saw it. */
export interface DiffusionStep {
  block: number;
  /** n, counting down from N. */
  step: number;
  canvasIn: Int32Array;
  /** Accepted positions (ascending) and the proposals taken there. */
  positions: number[];
  tokens: number[];
  argmax: Int32Array;
  canvasOut: Int32Array;
  /** The adaptive stopping fired at this step. */
  finished: boolean;
  /** The processed logits [C, V] (divided by the step's temperature). */
  logits: Float32Array;
}

/** A committed canvas. */
export interface DiffusionBlock {
  index: number;
  /** The C tokens as committed (after EOS: pad). */
  tokens: number[];
  /** Denoising steps it took. */
  steps: number;
  /** The sequence ends with this canvas (EOS or max length). */
  last: boolean;
}

export interface DiffusionHooks {
  /** After the prompt's encoder pass. */
  onPrompt?: () => void;
  onStep?: (s: DiffusionStep) => void;
  /** Canvas draws (initialisation and renoising, C tokens each); default: the seeded stream. */
  noise?: (C: number, V: number) => Int32Array;
  signal?: AbortSignal;
}

/** The knobs of a generation_config.json (DiffusionGemmaGenerationConfig; its defaults where unset). */
export function diffusionDefaults(gc: Record<string, unknown>, eos: number[]): Omit<DiffusionParams, 'seed' | 'proposal'> {
  const n = (k: string, d: number | null): number | null => (typeof gc[k] === 'number' ? (gc[k] as number) : d);
  const sc = gc.sampler_config;
  const bound = sc && typeof sc === 'object' && typeof (sc as Record<string, unknown>).entropy_bound === 'number'
    ? (sc as Record<string, number>).entropy_bound : 0.1;
  const given = (k: string) => k in gc;
  return {
    maxNewTokens: n('max_new_tokens', 256)!,
    steps: n('max_denoising_steps', 48)!,
    entropyBound: bound,
    tMin: given('t_min') ? n('t_min', null) : 0.4,
    tMax: given('t_max') ? n('t_max', null) : 0.8,
    stabilityThreshold: given('stability_threshold') ? n('stability_threshold', null) : 1,
    confidenceThreshold: given('confidence_threshold') ? n('confidence_threshold', null) : 0.005,
    eos,
    pad: typeof gc.pad_token_id === 'number' ? gc.pad_token_id : null,
  };
}

/** Checks the knobs as transformers' validate() does; errors name the option. */
export function checkDiffusionParams(p: DiffusionParams): void {
  const bad = (field: string, why: string): never => {
    throw new RequestError(field, why);
  };
  if (!Number.isInteger(p.maxNewTokens) || p.maxNewTokens < 1) bad('maxTokens', `must be an integer ≥ 1, got ${p.maxNewTokens}`);
  if (!Number.isInteger(p.steps) || p.steps < 1) bad('steps', `(max_denoising_steps) must be an integer ≥ 1, got ${p.steps}`);
  if (!(p.entropyBound > 0)) bad('entropyBound', `must be > 0, got ${p.entropyBound}`);
  if ((p.tMin === null) !== (p.tMax === null)) bad('tMin', 't_min and t_max are set together or not at all');
  if (p.tMin !== null && p.tMax !== null) {
    if (!(p.tMin >= 0)) bad('tMin', `must be ≥ 0, got ${p.tMin}`);
    if (!(p.tMax > p.tMin)) bad('tMax', `must be > t_min (${p.tMin}), got ${p.tMax}`);
  }
  if (p.stabilityThreshold !== null && (!Number.isInteger(p.stabilityThreshold) || p.stabilityThreshold < 0)) bad('stabilityThreshold', `must be an integer ≥ 0, got ${p.stabilityThreshold}`);
  if (p.confidenceThreshold !== null && !(p.confidenceThreshold > 0)) bad('confidenceThreshold', `must be > 0, got ${p.confidenceThreshold}`);
  if (p.proposal !== 'sample' && p.proposal !== 'argmax') bad('proposal', `must be 'sample' or 'argmax', got ${JSON.stringify(p.proposal)}`);
}

/** The model's denoiser net, or an error naming the model type. */
export function diffusionNet(model: Model): DiffusionGemmaNet {
  if (!isDiffusionNet(model.net)) throw new RequestError('model', `model type ${model.modelType} is not a diffusion model`);
  return model.net;
}

/** Runs the denoiser over `canvas` at the session's next positions; the session keeps its position. */
export function denoise(model: Model, session: Session, canvas: Int32Array, probs: Float32Array | null): Float32Array {
  const net = diffusionNet(model);
  const C = canvas.length, V = net.vocabSize;
  if (C > model.maxChunk) throw new RangeError(`a canvas of ${C} tokens exceeds maxChunk ${model.maxChunk}`);
  if (session.pos + C > model.maxContext) throw new RangeError(`context full: ${session.pos} + a canvas of ${C} > max context ${model.maxContext}`);
  session.check(canvas);
  net.pass = { kind: 'denoise', probs };
  model.graph.prompt = true;
  try {
    const t = model.graph.forward(net, session.state, canvas, session.pos, true);
    return model.k.arena.f32(t.off, C * V).slice();
  } finally {
    net.pass = { kind: 'encode' };
    model.graph.prompt = false;
  }
}

/** Row-wise softmax of [rows, V] logits (f64 sums, f32 results). */
export function softmaxRows(logits: Float32Array, V: number): Float32Array {
  const out = new Float32Array(logits.length);
  for (let r = 0; r < logits.length / V; r++) {
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, logits[r * V + i]);
    let z = 0;
    for (let i = 0; i < V; i++) z += out[r * V + i] = expNonPositive(logits[r * V + i] - max);
    for (let i = 0; i < V; i++) out[r * V + i] /= z;
  }
  return out;
}

/** Entropy −Σ p log p of each row of logits (the Categorical distribution of the logits). */
export function entropyRows(logits: Float32Array, V: number): Float64Array {
  const rows = logits.length / V;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, logits[r * V + i]);
    let z = 0;
    for (let i = 0; i < V; i++) z += expNonPositive(logits[r * V + i] - max);
    const lz = Math.log(z);
    let h = 0;
    for (let i = 0; i < V; i++) {
      const lp = logits[r * V + i] - max - lz;
      const p = expNonPositive(lp);
      if (p > 0) h -= p * lp;
    }
    out[r] = h;
  }
  return out;
}

/**
 * The positions accepted by the entropy bound: ascending entropy order, position i (the k-th) kept while
 * Σ_{j ≤ k} H_j − H_i ≤ bound (the lowest always is). Ties keep the lower position first.
 */
export function entropyAccept(entropy: Float64Array, bound: number): boolean[] {
  const order = Array.from(entropy.keys()).sort((a, b) => entropy[a] - entropy[b] || a - b);
  const keep = new Array<boolean>(entropy.length).fill(false);
  let cum = 0;
  for (const i of order) {
    cum += entropy[i];
    keep[i] = cum - entropy[i] <= bound;
  }
  return keep;
}

/** Temperature at step n of N: t_min + (t_max − t_min)·n/N in f32 (as torch computes it), or 1 without a schedule. */
export function stepTemperature(p: DiffusionParams, n: number): number {
  if (p.tMin === null || p.tMax === null) return 1;
  const f = Math.fround;
  return f(p.tMin + f((p.tMax - p.tMin) * f(n / p.steps)));
}

/**
 * Generates after `prompt` in a fresh session of `model`, yielding each canvas as it is committed.
 * The session is disposed at the end.
 */
export async function* diffusionGenerate(model: Model, prompt: ArrayLike<number>, p: DiffusionParams, hooks: DiffusionHooks = {}): AsyncGenerator<DiffusionBlock> {
  checkDiffusionParams(p);
  const net = diffusionNet(model);
  const C = net.diffusion.canvasLength, V = net.vocabSize;
  const rand = mulberry32(p.seed);
  const noise = hooks.noise ?? ((n: number, v: number) => {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.min(v - 1, Math.floor(rand() * v));
    return out;
  });
  const draw = (c: number, v: number): Int32Array => {
    const out = noise(c, v);
    if (out.length !== c) throw new RangeError(`a canvas draw of ${out.length} tokens, expected ${c}`);
    return out;
  };
  const eos = new Set(p.eos);
  const maxCanvases = Math.ceil(p.maxNewTokens / C);
  const maxLength = prompt.length + p.maxNewTokens;
  const session = model.newSession();
  try {
    session.forward(prompt);
    hooks.onPrompt?.();
    let curLen = prompt.length;
    let last: number[] | null = null;
    for (let b = 0; b < maxCanvases; b++) {
      if (hooks.signal?.aborted) return;
      if (last) {
        session.forward(last);
        curLen += C;
      }
      let canvas = draw(C, V);
      let argmaxCanvas = canvas;
      let probs: Float32Array | null = null;
      const S = p.stabilityThreshold, adaptive = S !== null && p.confidenceThreshold !== null;
      const history: Int32Array[] = adaptive ? Array.from({ length: S! }, () => new Int32Array(C).fill(-1)) : [];
      let steps = 0;
      for (let n = p.steps; n >= 1; n--) {
        steps++;
        const raw = denoise(model, session, canvas, probs);
        const temp = stepTemperature(p, n);
        const logits = new Float32Array(raw.length);
        for (let i = 0; i < raw.length; i++) logits[i] = Math.fround(raw[i] / temp);
        probs = softmaxRows(logits, V);
        const am = new Int32Array(C), proposal = new Int32Array(C);
        for (let r = 0; r < C; r++) {
          let best = 0;
          for (let i = 1; i < V; i++) if (logits[r * V + i] > logits[r * V + best]) best = i;
          am[r] = best;
          if (p.proposal === 'argmax') proposal[r] = best;
          else {
            const u = rand();
            let cum = 0, pick = V - 1;
            for (let i = 0; i < V; i++) {
              cum += probs[r * V + i];
              if (u < cum) {
                pick = i;
                break;
              }
            }
            proposal[r] = pick;
          }
        }
        const entropy = entropyRows(logits, V);
        const keep = entropyAccept(entropy, p.entropyBound);
        const fresh = draw(C, V);
        const next = new Int32Array(C);
        const positions: number[] = [], tokens: number[] = [];
        for (let i = 0; i < C; i++) {
          if (keep[i]) {
            next[i] = proposal[i];
            positions.push(i);
            tokens.push(proposal[i]);
          } else next[i] = fresh[i];
        }
        let finished = false;
        if (adaptive) {
          const stable = S === 0 || history.every((h) => h.every((t, i) => t === am[i]));
          if (S! > 0) {
            history.shift();
            history.push(am.slice());
          }
          let mean = 0;
          for (const h of entropy) mean += h;
          finished = stable && mean / C < p.confidenceThreshold!;
        }
        hooks.onStep?.({ block: b, step: n, canvasIn: canvas, positions, tokens, argmax: am, canvasOut: next, finished, logits });
        canvas = next;
        argmaxCanvas = am;
        if (finished) break;
        await yieldToHost();
        if (hooks.signal?.aborted) return;
      }
      const tokens = Array.from(argmaxCanvas);
      const firstEos = tokens.findIndex((t) => eos.has(t));
      const ends = firstEos >= 0 || curLen + C >= maxLength;
      if (firstEos >= 0 && p.pad !== null) for (let i = firstEos + 1; i < C; i++) tokens[i] = p.pad;
      yield { index: b, tokens, steps, last: ends || b === maxCanvases - 1 };
      if (ends) return;
      last = tokens;
    }
  } finally {
    session.dispose();
  }
}
