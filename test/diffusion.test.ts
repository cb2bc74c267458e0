// Block-diffusion decoding (DiffusionGemma) on a tiny random checkpoint: the denoiser's attention
// (causal encoder, bidirectional canvas that leaves the session where it was), the loop's mechanics
// (temperature schedule, entropy-bound acceptance, renoising from the canvas draws, early stopping,
// canvas commits, EOS padding, seeding), streaming through generate / CLI, refusals of
// autoregressive-only options, and the parity runner's "diffusion" row kind against a fixture made
// from the loop's own trajectory.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, type LanguageModel } from '../src/index';
import { runCli } from '../src/cli';
import { denoise, diffusionDefaults, diffusionGenerate, entropyAccept, softmaxRows, stepTemperature, type DiffusionBlock, type DiffusionParams, type DiffusionStep } from '../src/generate/diffusion';
import { ReferenceDiffusionGemma } from './diffusion-reference';
import { runFixture } from '../tools/parity-lib';
import { tinyDiffusionDir } from './diffusion-tiny';
import { tinyModelDir } from './tiny-models';
import { post, sse, testApp } from './app-helpers';

let dir: string;
let lm: LanguageModel;
const PROMPT = [5, 17, 33, 9, 71, 4];

beforeAll(async () => {
  dir = tinyDiffusionDir();
  lm = await loadModel(dir, { backend: 'wasm', dtype: 'f32' });
});
afterAll(async () => {
  await lm?.dispose();
});

function params(o: Partial<DiffusionParams> = {}): DiffusionParams {
  return { ...diffusionDefaults(lm.generationConfig, [...lm.eosTokenIds]), seed: 1, proposal: 'sample', ...o };
}

async function run(p: DiffusionParams, noise?: (C: number, V: number) => Int32Array): Promise<{ blocks: DiffusionBlock[]; steps: DiffusionStep[] }> {
  const blocks: DiffusionBlock[] = [], steps: DiffusionStep[] = [];
  for await (const b of diffusionGenerate(lm.model, PROMPT, p, { onStep: (s) => steps.push(s), noise })) blocks.push(b);
  return { blocks, steps };
}

describe('denoiser passes', () => {
  it('attend bidirectionally over the canvas and keep the session position', () => {
    const m = lm.model, V = m.net.vocabSize, C = 8;
    const s = m.newSession();
    s.forward(PROMPT);
    const canvas = Int32Array.from([3, 4, 5, 6, 7, 8, 9, 10]);
    const a = denoise(m, s, canvas, null);
    expect(s.pos).toBe(PROMPT.length);
    const again = denoise(m, s, canvas, null);
    expect(Array.from(again)).toEqual(Array.from(a));
    const changed = canvas.slice();
    changed[C - 1] = 200;
    const b = denoise(m, s, changed, null);
    // Position 0 sees the last canvas token: its logits move.
    let d0 = 0;
    for (let i = 0; i < V; i++) d0 = Math.max(d0, Math.abs(a[i] - b[i]));
    expect(d0).toBeGreaterThan(1e-6);
    // Self-conditioning changes the result.
    const probs = new Float32Array(C * V).fill(1 / V);
    const c = denoise(m, s, canvas, probs);
    expect(Array.from(c)).not.toEqual(Array.from(a));
    s.dispose();
  });

  it('equal a naive float64 port of the transformers equations (encoder, denoiser, self-conditioning, a second canvas)', () => {
    const m = lm.model, V = m.net.vocabSize, C = 8;
    const ref = new ReferenceDiffusionGemma(dir);
    const rel = (a: Float32Array, b: Float64Array) => {
      let d = 0, mx = 0;
      for (let i = 0; i < b.length; i++) {
        d = Math.max(d, Math.abs(a[i] - b[i]));
        mx = Math.max(mx, Math.abs(b[i]));
      }
      return d / mx;
    };
    // A prompt longer than the sliding window (6), so that window is in play for both passes.
    const prompt = [5, 17, 33, 9, 71, 4, 100, 200, 13, 7];
    const s = m.newSession();
    expect(rel(s.forward(prompt, true), ref.encode(prompt))).toBeLessThan(1e-5);
    const canvas = [3, 4, 5, 6, 7, 8, 9, 10];
    const l0 = denoise(m, s, Int32Array.from(canvas), null);
    expect(rel(l0, ref.denoise(canvas, null))).toBeLessThan(1e-5);
    const sc = l0.map((x) => x / 0.5);
    expect(rel(denoise(m, s, Int32Array.from(canvas), softmaxRows(sc, V)), ref.denoise(canvas, sc))).toBeLessThan(1e-5);
    // The committed canvas is encoded; the next canvas sees it.
    const committed = [40, 41, 42, 43, 44, 45, 46, 47];
    s.forward(committed);
    ref.encode(committed);
    const next = [50, 51, 52, 53, 54, 55, 56, C];
    expect(rel(denoise(m, s, Int32Array.from(next), null), ref.denoise(next, null))).toBeLessThan(1e-5);
    s.dispose();
  });

  it('leave the encoder pass causal', () => {
    const m = lm.model, V = m.net.vocabSize;
    const s1 = m.newSession(), s2 = m.newSession();
    const l1 = s1.forward([...PROMPT, 40], true), l2 = s2.forward([...PROMPT, 41], true);
    for (let t = 0; t < PROMPT.length; t++) for (let i = 0; i < V; i++) expect(l1[t * V + i]).toBe(l2[t * V + i]);
    s1.dispose();
    s2.dispose();
  });
});

describe('the decoding loop', () => {
  it('follows the temperature schedule and the entropy bound', () => {
    const p = params({ steps: 4, tMin: 0.4, tMax: 0.8 });
    expect(stepTemperature(p, 4)).toBeCloseTo(0.8, 6);
    expect(stepTemperature(p, 1)).toBeCloseTo(0.5, 6);
    expect(stepTemperature({ ...p, tMin: null, tMax: null }, 3)).toBe(1);
    // Sorted entropies 0.1, 0.2, 0.3, 5: cumulative minus own 0, 0.1, 0.3, 0.6.
    expect(entropyAccept(Float64Array.from([0.3, 5, 0.1, 0.2]), 0.35)).toEqual([true, false, true, true]);
    expect(entropyAccept(Float64Array.from([0.3, 5, 0.1, 0.2]), 0.05)).toEqual([false, false, true, false]);
  });

  it('renoises the unaccepted positions from the canvas draws and commits the argmax canvas', async () => {
    let k = 0;
    const draws: Int32Array[] = [];
    const noise = (C: number, V: number) => {
      const a = Int32Array.from({ length: C }, (_, i) => (37 * k + 11 * i + 3) % V);
      k++;
      draws.push(a);
      return a;
    };
    const p = params({ maxNewTokens: 16, steps: 3, stabilityThreshold: null, confidenceThreshold: null, proposal: 'argmax', eos: [] });
    const { blocks, steps } = await run(p, noise);
    expect(blocks.length).toBe(2);
    expect(steps.length).toBe(6);
    // One draw per canvas, one per step.
    expect(draws.length).toBe(2 + 6);
    expect(Array.from(steps[0].canvasIn)).toEqual(Array.from(draws[0]));
    steps.forEach((s, j) => {
      expect(s.step).toBe(3 - (j % 3));
      expect(s.positions.length).toBeGreaterThan(0);
      const fresh = draws[j < 3 ? 1 + j : 2 + j];
      for (let i = 0; i < 8; i++) {
        const at = s.positions.indexOf(i);
        expect(s.canvasOut[i]).toBe(at >= 0 ? s.tokens[at] : fresh[i]);
        // argmax proposals: an accepted token is the argmax there.
        if (at >= 0) expect(s.tokens[at]).toBe(s.argmax[i]);
      }
      if (j % 3) expect(Array.from(s.canvasIn)).toEqual(Array.from(steps[j - 1].canvasOut));
    });
    expect(blocks[0].tokens).toEqual(Array.from(steps[2].argmax));
    expect(blocks[1].tokens).toEqual(Array.from(steps[5].argmax));
    expect(blocks[1].last).toBe(true);
  });

  it('is seeded: the same seed gives the same canvases, another seed others', async () => {
    const a = await run(params({ seed: 5, eos: [] })), b = await run(params({ seed: 5, eos: [] })), c = await run(params({ seed: 6, eos: [] }));
    expect(a.blocks.map((x) => x.tokens)).toEqual(b.blocks.map((x) => x.tokens));
    expect(a.steps.map((x) => Array.from(x.canvasIn))).not.toEqual(c.steps.map((x) => Array.from(x.canvasIn)));
  });

  it('stops a canvas early when stable and confident', async () => {
    // A threshold every entropy is under: the second step repeats the first argmax (stability 1) only if stable.
    const { steps } = await run(params({ steps: 6, stabilityThreshold: 0, confidenceThreshold: 1e9, eos: [], maxNewTokens: 8 }));
    expect(steps.length).toBe(1);
    expect(steps[0].finished).toBe(true);
  });

  it('ends after a canvas holding EOS, padding what follows it', async () => {
    const first = await run(params({ seed: 9, eos: [], maxNewTokens: 24 }));
    const tok = first.blocks[0].tokens[2];
    const firstAt = first.blocks[0].tokens.indexOf(tok);
    const { blocks } = await run(params({ seed: 9, eos: [tok], pad: 0, maxNewTokens: 24 }));
    expect(blocks.length).toBe(1);
    expect(blocks[0].last).toBe(true);
    expect(blocks[0].tokens.slice(0, firstAt + 1)).toEqual(first.blocks[0].tokens.slice(0, firstAt + 1));
    expect(blocks[0].tokens.slice(firstAt + 1).every((t) => t === 0)).toBe(true);
  });
});

describe('generate', () => {
  it('streams committed canvases as tokens, seeded', async () => {
    const g1 = lm.generate(PROMPT, { seed: 3, maxTokens: 16, ignoreEos: true });
    const events: number[] = [];
    for await (const t of g1) events.push(t.token);
    expect(events.length).toBe(16);
    expect(g1.finishReason).toBe('length');
    expect(g1.stats.blocks).toBe(2);
    expect(g1.stats.denoisingSteps).toBeGreaterThanOrEqual(2);
    const g2 = await lm.generate(PROMPT, { seed: 3, maxTokens: 16, ignoreEos: true }).result();
    expect(g2.tokens).toEqual(events);
    // maxTokens inside a canvas: the canvas is cut.
    const g3 = await lm.generate(PROMPT, { seed: 3, maxTokens: 5, ignoreEos: true }).result();
    expect(g3.tokens).toEqual(events.slice(0, 5));
    // The loop's own canvases, in order.
    const p = params({ seed: 3, eos: [], maxNewTokens: 16 });
    const direct = (await run(p)).blocks.flatMap((b) => b.tokens);
    expect(events).toEqual(direct);
    // temperature 0: argmax proposals, and the knobs of a request.
    const g4 = await lm.generate(PROMPT, { seed: 3, maxTokens: 8, temperature: 0, ignoreEos: true, diffusion: { steps: 2 } }).result();
    expect(g4.stats.denoisingSteps).toBeLessThanOrEqual(2);
    const d4 = (await run(params({ seed: 3, eos: [], maxNewTokens: 8, steps: 2, proposal: 'argmax' }))).blocks[0].tokens;
    expect(g4.tokens).toEqual(d4);
  });

  it('refuses autoregressive-only options, naming them', () => {
    const s = lm.session();
    const cases: [Parameters<LanguageModel['generate']>[1], RegExp][] = [
      [{ session: s }, /^session: .*not supported by block-diffusion/],
      [{ logprobs: true }, /^logprobs: /],
      [{ topLogprobs: 3 }, /^topLogprobs: /],
      [{ jsonSchema: true }, /^jsonSchema: /],
      [{ regex: 'a+' }, /^regex: /],
      [{ topK: 5 }, /^topK: /],
      [{ topP: 0.5 }, /^topP: /],
      [{ repetitionPenalty: 1.2 }, /^repetitionPenalty: /],
      [{ logitBias: { 3: 1 } }, /^logitBias: /],
      [{ temperature: 0.7 }, /^temperature: /],
      [{ diffusion: { steps: 0 } }, /^steps: /],
      [{ diffusion: { tMin: 0.9, tMax: 0.5 } }, /^tMax: /],
    ];
    for (const [p, re] of cases) expect(() => lm.generate(PROMPT, p), JSON.stringify(Object.keys(p ?? {}))).toThrow(re);
    s.dispose();
    // Neutral values pass.
    expect(() => lm.generate(PROMPT, { topK: 0, topP: 1, temperature: 1, logprobs: false })).not.toThrow();
  });

  it('refuses diffusion knobs on an autoregressive model', async () => {
    const ar = await loadModel(tinyModelDir({ tokenizer: null }), { backend: 'wasm' });
    try {
      expect(() => ar.generate([1, 2, 3], { diffusion: { steps: 2 } })).toThrow(/^diffusion: applies to block-diffusion models only/);
    } finally {
      await ar.dispose();
    }
  });

  it('streams through the CLI and reports steps/s in bench', async () => {
    let out = '', err = '';
    const io = { out: (t: string) => (out += t), err: (t: string) => (err += t) };
    expect(await runCli(['generate', '--model', dir, '--prompt', 'hello', '--max-tokens', '8', '--seed', '2', '--stats', '--no-echo'], io)).toBe(0);
    expect(err).toMatch(/generated in \d+ canvases, \d+ denoising steps, .* tok\/s, .* steps\/s/);
    out = '';
    err = '';
    expect(await runCli(['generate', '--model', dir, '--prompt', 'hello', '--top-k', '4'], io)).not.toBe(0);
    expect(err).toMatch(/--top-k is not supported by block-diffusion models/);
    out = '';
    expect(await runCli(['bench', '--model', dir, '--prompt-len', '8', '--gen-len', '8', '--runs', '1', '--json'], io)).toBe(0);
    const r = JSON.parse(out);
    expect(r.diffusion.stepsPerS).toBeGreaterThan(0);
    expect(r.diffusion.tokPerS).toBeGreaterThan(0);
  });
});

describe('OpenAI API', () => {
  it('streams committed canvases and refuses sessions, tools and log-probabilities', async () => {
    const app = testApp(() => lm, { promptCache: 0 });
    const body = { model: 'sparrow-mini', prompt: 'hello there', max_tokens: 16, seed: 4, temperature: 0 };
    const full = await (await post(app, '/v1/completions', body)).json();
    expect(full.usage.completion_tokens).toBeGreaterThan(0);
    const events = await sse(await post(app, '/v1/completions', { ...body, stream: true }));
    const text = events.map((e) => e.choices[0]?.text ?? '').join('');
    expect(text).toBe(full.choices[0].text);
    const two = await (await post(app, '/v1/completions', { ...body, n: 2, temperature: 1 })).json();
    expect(two.choices.length).toBe(2);
    const sid = (await (await post(app, '/v1/sessions', {})).json()).id as string;
    for (const [extra, param] of [[{ logprobs: 2 }, 'logprobs'], [{ session: sid }, 'session'], [{ top_k: 3 }, 'top_k']] as const) {
      const res = await post(app, '/v1/completions', { ...body, ...extra });
      expect(res.status, JSON.stringify(extra)).toBe(400);
      const j = await res.json();
      expect(JSON.stringify(j.error)).toContain(param);
    }
  });
});

describe('parity runner, row kind "diffusion"', () => {
  it('passes a fixture of the loop\'s own trajectory and fails a changed one', async () => {
    const m = lm.model, V = m.net.vocabSize, C = 8;
    const fx = mkdtempSync(join(tmpdir(), 'sparrow-diffusion-fx-'));
    for (const f of ['config.json', 'model.safetensors', 'generation_config.json']) writeFileSync(join(fx, f), await import('node:fs').then((fs) => fs.readFileSync(join(dir, f))));
    // (a) the denoiser on a fixed canvas, without and with self-conditioning (the first logits / 0.5).
    const canvas = [3, 4, 5, 6, 7, 8, 9, 10];
    const s = m.newSession();
    s.forward(PROMPT);
    const l0 = denoise(m, s, Int32Array.from(canvas), null);
    const sc = l0.map((x) => Math.fround(x / 0.5));
    const l1 = denoise(m, s, Int32Array.from(canvas), softmaxRows(sc, V));
    s.dispose();
    const both = new Float32Array(2 * C * V);
    both.set(l0);
    both.set(l1, C * V);
    writeFileSync(join(fx, 'diffusion_logits.f32'), new Uint8Array(both.buffer));
    // (b) a trajectory with recorded draws.
    const noise: number[][] = [];
    let k = 0;
    const draw = (n: number, v: number) => {
      const a = Int32Array.from({ length: n }, (_, i) => (29 * k + 7 * i + 1) % v);
      k++;
      noise.push(Array.from(a));
      return a;
    };
    const p = params({ maxNewTokens: 16, steps: 3, proposal: 'argmax', eos: [2], pad: 0 });
    const { blocks, steps } = await run(p, draw);
    const stepLogits = new Float32Array(steps.length * C * V);
    steps.forEach((st, i) => stepLogits.set(st.logits, i * C * V));
    writeFileSync(join(fx, 'diffusion_step_logits.f32'), new Uint8Array(stepLogits.buffer));
    const ref = {
      family: 'diffusion_gemma', model_type: 'diffusion_gemma',
      diffusion: {
        prompt: PROMPT, canvas_length: C, max_new_tokens: 16, max_denoising_steps: 3, entropy_bound: p.entropyBound, t_min: p.tMin, t_max: p.tMax,
        stability_threshold: p.stabilityThreshold, confidence_threshold: p.confidenceThreshold, eos_token_id: 2, pad_token_id: 0, proposal: 'argmax',
        noise,
        trajectory: steps.map((st) => ({ block: st.block, step: st.step, canvas_in: Array.from(st.canvasIn), positions: st.positions, tokens: st.tokens, argmax: Array.from(st.argmax), canvas_out: Array.from(st.canvasOut), finished: st.finished })),
        blocks: blocks.map((b) => b.tokens),
        sequence: [...PROMPT, ...blocks.flatMap((b) => b.tokens)],
        step_logits: { file: 'diffusion_step_logits.f32', shape: [steps.length, C, V] },
        denoise: { prompt: PROMPT, canvas, self_conditioning_divisor: 0.5, file: 'diffusion_logits.f32', shape: [2, C, V] },
      },
    };
    writeFileSync(join(fx, 'reference.json'), JSON.stringify(ref));
    const r = await runFixture(fx);
    expect(r.error).toBeUndefined();
    expect(r.prefillErr).toBe(0);
    expect(r.decodeErr).toBe(0);
    expect(r.greedyAgree).toBe(steps.length + 1);
    expect(r.pass).toBe(true);
    ref.diffusion.trajectory[1].positions = [...ref.diffusion.trajectory[1].positions, 99];
    writeFileSync(join(fx, 'reference.json'), JSON.stringify(ref));
    const bad = await runFixture(fx);
    expect(bad.pass).toBe(false);
    expect(bad.greedyAgree).toBe(1);
  });
});
