// LanguageModel.generate / chat for block-diffusion models: the decoding loop of ./diffusion.ts
// behind the Generation interface. Tokens are emitted canvas by canvas, as each is committed (the text
// of a canvas arrives at once). Options that belong to autoregressive decoding are refused naming the
// option: sessions (prompt reuse, resume), log-probabilities, grammars, and the per-token sampling
// warpers and penalties.

import { RequestError } from './errors';
import { yieldToHost } from './host';
import { Generation, type FinishReason, type GeneratedToken, type GenerateParams, type LanguageModel } from './language-model';
import { checkDiffusionParams, diffusionDefaults, diffusionGenerate, type DiffusionParams } from './diffusion';
import { randomSeed } from './sampler';
import { StopStrings, TextStream } from './stream';

const now = (): number => globalThis.performance?.now() ?? Date.now();

/** The options a diffusion generation refuses, with why. */
const REFUSED: [keyof GenerateParams, string][] = [
  ['session', 'sessions (prompt reuse, resume) keep an autoregressive state; a diffusion generation runs in a fresh one'],
  ['logprobs', 'log-probabilities of generated tokens are not defined for denoised canvases'],
  ['topLogprobs', 'log-probabilities of generated tokens are not defined for denoised canvases'],
  ['grammar', 'constrained decoding masks one next token at a time, which a canvas does not have'],
  ['jsonSchema', 'constrained decoding masks one next token at a time, which a canvas does not have'],
  ['regex', 'constrained decoding masks one next token at a time, which a canvas does not have'],
  ['topK', 'the denoiser draws from the whole tempered distribution (generation_config t_min / t_max)'],
  ['topP', 'the denoiser draws from the whole tempered distribution (generation_config t_min / t_max)'],
  ['minP', 'the denoiser draws from the whole tempered distribution (generation_config t_min / t_max)'],
  ['repetitionPenalty', 'penalties act on a next-token distribution'],
  ['presencePenalty', 'penalties act on a next-token distribution'],
  ['frequencyPenalty', 'penalties act on a next-token distribution'],
  ['logitBias', 'logit biases act on a next-token distribution'],
];

function isOff(k: keyof GenerateParams, v: unknown): boolean {
  if (v === undefined || v === null || v === false) return true;
  if (k === 'topK' || k === 'minP' || k === 'presencePenalty' || k === 'frequencyPenalty') return v === 0;
  if (k === 'topP' || k === 'repetitionPenalty') return v === 1;
  if (k === 'topLogprobs') return v === 0;
  if (k === 'logitBias') return v instanceof Map ? v.size === 0 : typeof v === 'object' && Object.keys(v as object).length === 0;
  return false;
}

/** The loop's parameters for a request: generation_config defaults, the request's overrides, checked. */
export function diffusionParamsFor(lm: LanguageModel, promptLen: number, params: GenerateParams): DiffusionParams {
  for (const [k, why] of REFUSED) {
    if (!isOff(k, params[k])) throw new RequestError(k, `is not supported by block-diffusion models (model type ${lm.model.modelType}): ${why}`);
  }
  if (lm.gpu) throw new RequestError('backend', `block-diffusion models run on the WASM backend only`);
  const t = params.temperature;
  if (t !== undefined && t !== null && t !== 0 && t !== 1) {
    throw new RequestError('temperature', `must be 0 (most probable proposals) or 1 (drawn proposals) for block-diffusion models, which temper by the generation_config schedule t_min … t_max; got ${JSON.stringify(t)}`);
  }
  const seed = params.seed;
  if (seed !== undefined && seed !== null && !Number.isInteger(seed)) throw new RequestError('seed', `must be an integer, got ${JSON.stringify(seed)}`);
  const eos = params.ignoreEos ? [] : [...lm.eosTokenIds];
  const d = diffusionDefaults(lm.generationConfig, eos);
  const k = params.diffusion ?? {};
  if (typeof k !== 'object' || k === null) throw new RequestError('diffusion', 'must be an object of knobs');
  const room = lm.model.maxContext - promptLen;
  const C = (lm.model.net as { diffusion?: { canvasLength: number } }).diffusion!.canvasLength;
  let maxNew = params.maxTokens ?? d.maxNewTokens;
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new RequestError('maxTokens', `must be an integer ≥ 1, got ${JSON.stringify(maxNew)}`);
  // Whole canvases run: the last one must fit the context too.
  const fit = Math.floor(room / C) * C;
  if (fit < 1) throw new RequestError('prompt', `leaves ${room} positions of the context, less than one canvas of ${C}`);
  maxNew = Math.min(maxNew, fit);
  const p: DiffusionParams = {
    ...d,
    maxNewTokens: maxNew,
    steps: k.steps ?? d.steps,
    entropyBound: k.entropyBound ?? d.entropyBound,
    tMin: k.tMin ?? d.tMin,
    tMax: k.tMax ?? d.tMax,
    stabilityThreshold: k.stabilityThreshold ?? d.stabilityThreshold,
    confidenceThreshold: k.confidenceThreshold ?? d.confidenceThreshold,
    proposal: t === 0 ? 'argmax' : 'sample',
    seed: (seed ?? randomSeed()) >>> 0,
  };
  checkDiffusionParams(p);
  return p;
}

export function startDiffusion(lm: LanguageModel, ids: number[], params: GenerateParams): Generation {
  const p = diffusionParamsFor(lm, ids.length, params);
  const wanted = p.maxNewTokens;
  const stops = typeof params.stop === 'string' ? [params.stop] : params.stop ?? [];
  if (!Array.isArray(stops) || stops.some((s) => typeof s !== 'string')) throw new RequestError('stop', 'must be a string or a list of strings');
  const stopIds = new Set((params.stopTokenIds ?? []).filter((x) => Number.isInteger(x)));
  const eos = new Set(p.eos);
  return new Generation(ids.length, async function* (g): AsyncGenerator<GeneratedToken> {
    const t0 = now();
    let tFirst = 0;
    const text = lm.tokenizer ? new TextStream(lm.tokenizer, ids, !params.specialTokens) : null;
    const stop = new StopStrings(stops);
    g.stats.denoisingSteps = 0;
    g.stats.blocks = 0;
    g.stats.denoiseMs = 0;
    let tLoop = 0;
    const hooks = {
      signal: params.signal,
      onPrompt: () => {
        tLoop = now();
        g.stats.prefillMs = tLoop - t0;
      },
      onStep: () => {
        g.stats.denoisingSteps!++;
      },
    };
    try {
      for await (const block of diffusionGenerate(lm.model, ids, p, hooks)) {
        g.stats.blocks!++;
        g.stats.denoiseMs = now() - tLoop;
        for (let i = 0; i < block.tokens.length; i++) {
          const tok = block.tokens[i];
          const ends = eos.has(tok) || stopIds.has(tok);
          g.tokens.push(tok);
          g.stats.generatedTokens++;
          let out = stop.push(ends || !text ? '' : text.push(tok));
          let finish: FinishReason | null = stop.stopped !== null || ends ? 'stop' : null;
          if (!finish && (g.tokens.length >= wanted || (block.last && i === block.tokens.length - 1))) finish = 'length';
          if (finish && stop.stopped === null) {
            out += stop.push(text?.flush(true) ?? '');
            out += stop.flush();
            if (stop.stopped !== null) finish = 'stop';
          }
          g.text += out;
          if (!tFirst) {
            tFirst = now();
            g.stats.ttftMs = tFirst - t0;
          }
          g.stats.decodeMs = now() - tFirst;
          if (finish) g.finishReason = finish;
          yield { token: tok, text: out };
          if (finish) return;
        }
        await yieldToHost();
        if (params.signal?.aborted) return;
      }
    } finally {
      if (g.finishReason === null) g.finishReason = 'abort';
    }
  });
}
