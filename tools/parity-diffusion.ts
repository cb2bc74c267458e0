// Parity of a block-diffusion model (DiffusionGemma) against a fixture of row kind "diffusion"
// (docs/parity-fixtures.md §8, written by tools/parity/diffusion_reference.py):
// - denoiser logits on a fixed canvas after the prompt, without and with self-conditioning, against
//   diffusion_logits.f32 (reported as "prefill");
// - every step's processed logits given the reference's inputs (its input canvas, the reference's
//   previous step as self-conditioning, the reference's committed canvases encoded) against
//   diffusion_step_logits.f32 (reported as "decode");
// - transformers' decoding trajectory replayed: the same knobs, argmax proposals and the recorded
//   canvas draws; each step's input canvas, accepted positions and tokens, argmax canvas, output
//   canvas and stopping decision, then the final sequence (reported as "greedy": leading steps that
//   agree, of all steps plus one for the sequence).

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../src/formats/checkpoint';
import { buildModel } from '../src/models/index';
import { denoise, diffusionGenerate, softmaxRows, stepTemperature, type DiffusionParams, type DiffusionStep } from '../src/generate/diffusion';
import { relMaxErr, TOLERANCE, type ParityResult } from './parity-lib';

export interface DiffusionTrajectoryStep {
  block: number;
  step: number;
  canvas_in: number[];
  positions: number[];
  tokens: number[];
  argmax: number[];
  canvas_out: number[];
  finished: boolean;
}

export interface DiffusionReference {
  family: string;
  model_type: string;
  diffusion: {
    prompt: number[];
    canvas_length: number;
    max_new_tokens: number;
    max_denoising_steps: number;
    entropy_bound: number;
    t_min: number | null;
    t_max: number | null;
    stability_threshold: number | null;
    confidence_threshold: number | null;
    eos_token_id: number | number[] | null;
    pad_token_id: number | null;
    proposal: 'argmax';
    noise: number[][];
    trajectory: DiffusionTrajectoryStep[];
    blocks: number[][];
    sequence: number[];
    step_logits: { file: string; shape: [number, number, number] };
    denoise: { prompt: number[]; canvas: number[]; self_conditioning_divisor: number; file: string; shape: [number, number, number] };
  };
}

async function f32File(path: string, n: number): Promise<Float32Array> {
  const buf = await readFile(path);
  if (buf.byteLength !== n * 4) throw new Error(`${path.split('/').pop()} has ${buf.byteLength} bytes, expected ${n * 4}`);
  return new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

const same = (a: ArrayLike<number>, b: ArrayLike<number>): boolean => a.length === b.length && Array.from(a).every((x, i) => x === b[i]);

export async function runDiffusionFixture(dir: string, name: string, ref: DiffusionReference, opts: { build?: 'auto' | 'simd' | 'relaxed'; dtype?: 'auto' | 'f32'; backend?: 'wasm' | 'webgpu' } = {}): Promise<ParityResult> {
  const d = ref.diffusion;
  const res: ParityResult = { name, family: ref.family ?? ref.model_type, prefillErr: NaN, decodeErr: NaN, greedyAgree: 0, greedyTotal: d.trajectory.length + 1, pass: false };
  if (opts.backend === 'webgpu') {
    res.pass = true;
    res.error = 'skipped: diffusion models run on the WASM backend only';
    return res;
  }
  try {
    const C = d.canvas_length;
    const [, , V] = d.denoise.shape;
    const refDenoise = await f32File(join(dir, d.denoise.file), 2 * C * V);
    const nSteps = d.step_logits.shape[0];
    const refSteps = nSteps ? await f32File(join(dir, d.step_logits.file), nSteps * C * V) : new Float32Array(0);
    const maxContext = Math.max(d.prompt.length, d.denoise.prompt.length) + Math.ceil(d.max_new_tokens / C) * C + C + 8;
    const model = await buildModel(await openCheckpoint(dir), { exact: true, maxContext, build: opts.build, dtype: opts.dtype ?? 'auto' });
    try {
      if (model.net.vocabSize !== V) throw new Error(`vocab ${model.net.vocabSize} != reference ${V}`);
      // (a) The denoiser on a fixed canvas.
      const s = model.newSession();
      s.forward(d.denoise.prompt);
      const canvas = Int32Array.from(d.denoise.canvas);
      const r0 = refDenoise.subarray(0, C * V), r1 = refDenoise.subarray(C * V);
      const l0 = denoise(model, s, canvas, null);
      const scaled = new Float32Array(r0.length);
      for (let i = 0; i < r0.length; i++) scaled[i] = Math.fround(r0[i] / d.denoise.self_conditioning_divisor);
      const l1 = denoise(model, s, canvas, softmaxRows(scaled, V));
      s.dispose();
      res.prefillErr = Math.max(relMaxErr(l0, r0), relMaxErr(l1, r1));

      // (b) Each step's logits given the reference's inputs: its input canvas, and the reference's previous
      // step as self-conditioning (sharp tempered distributions would otherwise compound f32 differences
      // from step to step); the committed canvases are encoded as the reference committed them.
      const p: DiffusionParams = {
        maxNewTokens: d.max_new_tokens, steps: d.max_denoising_steps, entropyBound: d.entropy_bound, tMin: d.t_min, tMax: d.t_max,
        stabilityThreshold: d.stability_threshold, confidenceThreshold: d.confidence_threshold,
        eos: d.eos_token_id === null ? [] : Array.isArray(d.eos_token_id) ? d.eos_token_id : [d.eos_token_id], pad: d.pad_token_id, proposal: 'argmax', seed: 0,
      };
      let stepErr = 0;
      const tf = model.newSession();
      tf.forward(d.prompt);
      let block = 0;
      for (let k = 0; k < Math.min(nSteps, d.trajectory.length); k++) {
        const st = d.trajectory[k];
        while (block < st.block) tf.forward(d.blocks[block++]);
        const prev = k > 0 && d.trajectory[k - 1].block === st.block ? softmaxRows(refSteps.subarray((k - 1) * C * V, k * C * V), V) : null;
        const raw = denoise(model, tf, Int32Array.from(st.canvas_in), prev);
        const temp = stepTemperature(p, st.step);
        for (let i = 0; i < raw.length; i++) raw[i] = Math.fround(raw[i] / temp);
        stepErr = Math.max(stepErr, relMaxErr(raw, refSteps.subarray(k * C * V, (k + 1) * C * V)));
      }
      tf.dispose();

      // (c) The trajectory, replaying the recorded canvas draws.
      let draws = 0;
      const noise = (n: number): Int32Array => {
        const row = d.noise[draws++];
        if (!row || row.length !== n) throw new Error(`canvas draw ${draws} is not in the fixture (it holds ${d.noise.length})`);
        return Int32Array.from(row);
      };
      let k = 0, agreeing = true;
      const onStep = (st: DiffusionStep) => {
        const want = d.trajectory[k];
        k++;
        if (!agreeing || !want) {
          agreeing = false;
          return;
        }
        const ok = want.block === st.block && want.step === st.step && same(st.canvasIn, want.canvas_in) && same(st.positions, want.positions)
          && same(st.tokens, want.tokens) && same(st.argmax, want.argmax) && same(st.canvasOut, want.canvas_out) && st.finished === want.finished;
        if (ok) res.greedyAgree++;
        else agreeing = false;
      };
      const seq = [...d.prompt];
      for await (const b of diffusionGenerate(model, d.prompt, p, { noise, onStep })) seq.push(...b.tokens);
      res.decodeErr = stepErr;
      if (k !== d.trajectory.length) agreeing = false;
      if (agreeing && same(seq, d.sequence)) res.greedyAgree++;
    } finally {
      model.dispose();
    }
    res.pass = res.prefillErr <= TOLERANCE && res.decodeErr <= TOLERANCE && res.greedyAgree === res.greedyTotal;
  } catch (e) {
    res.error = (e as Error).message;
  }
  return res;
}
