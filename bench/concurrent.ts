// Concurrent generations with and without batched decoding (LanguageModel.batching, as the server
// runs them): N streams start together, each with its own 16-token prompt, and generate --tokens
// tokens (sampled, seeded, EOS ignored); the figure is the tokens of all streams over the wall time
// until the last one ends. Without batching the streams take turns token by token; with it they
// advance in one pass per step. Rounds alternate the two ways (which goes first alternates too);
// medians. Every round checks that both ways wrote the same tokens.
//
// Run: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/concurrent.ts
//        [--model DIR|FILE] [--synthetic smol135 [--dtype q8_0|q4_0|f32]] [--build simd|relaxed]
//        [--streams 1,2,4,8] [--tokens N] [--rounds N]
// Without --model or --synthetic: sparrow-mini, then smol135 (random weights in the shape of
// SmolLM-135M, written to a temporary GGUF) with --rounds-synthetic rounds (default 3).

import { rmSync } from 'node:fs';
import os from 'node:os';
import type { LlamaCppTarget } from '../src/formats/llamacpp';
import type { BuildChoice } from '../src/kernels/runtime';
import { batcherOf, loadModel, type LanguageModel } from '../src/index';
import { smol135, writeSyntheticGguf } from './synthetic';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const streams = (arg('streams') ?? '1,2,4,8').split(',').map(Number);
const tokens = Number(arg('tokens') ?? 128);
const rounds = Number(arg('rounds') ?? 5);
const roundsSynthetic = Number(arg('rounds-synthetic') ?? 3);
const dtype = (arg('dtype') ?? 'q8_0') as LlamaCppTarget;
const build = (arg('build') ?? 'simd') as BuildChoice;
const PROMPT = 16;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** N streams at once: aggregate tokens per second, every stream's tokens, and the most sessions in one batched pass. */
async function run(lm: LanguageModel, n: number, batching: boolean): Promise<{ tps: number; out: number[][]; widest: number }> {
  lm.batching = batching;
  const V = lm.vocabSize;
  const t0 = performance.now();
  const out = await Promise.all(Array.from({ length: n }, async (_, s) => {
    const prompt = Array.from({ length: PROMPT }, (_, i) => (s * 7919 + i * 104729 + 17) % V);
    const r = await lm.generate(prompt, { maxTokens: tokens, temperature: 0.8, topP: 0.95, seed: 1000 + s, ignoreEos: true }).result();
    return r.tokens;
  }));
  const tps = (n * tokens) / ((performance.now() - t0) / 1000);
  const widest = batcherOf(lm.model)?.stats.widest ?? 0;
  lm.batching = false;
  return { tps, out, widest };
}

async function table(lm: LanguageModel, name: string, nRounds: number): Promise<void> {
  console.log(`\n${name}: ${lm.info().build} build, 1 thread; ${tokens} tokens per stream after a ${PROMPT}-token prompt; median of ${nRounds} interleaved rounds (${new Date().toISOString().slice(0, 16)})\n`);
  console.log('| streams | one at a time, interleaved (tok/s) | batched (tok/s) | ratio | widest pass | same tokens |');
  console.log('|---:|---:|---:|---:|---:|---|');
  for (const n of streams) {
    // A warm-up of each way, untimed.
    await run(lm, n, false);
    await run(lm, n, true);
    const off: number[] = [], on: number[] = [];
    let same = true, widest = 0;
    for (let r = 0; r < nRounds; r++) {
      const order = r % 2 ? [true, false] : [false, true];
      const got = new Map<boolean, Awaited<ReturnType<typeof run>>>();
      for (const b of order) got.set(b, await run(lm, n, b));
      const a = got.get(false)!, b = got.get(true)!;
      off.push(a.tps);
      on.push(b.tps);
      widest = Math.max(widest, b.widest);
      same &&= JSON.stringify(a.out) === JSON.stringify(b.out);
    }
    console.log(`| ${n} | ${median(off).toFixed(1)} | ${median(on).toFixed(1)} | ${(median(on) / median(off)).toFixed(2)}× | ${widest} | ${same ? 'yes' : 'NO'} |`);
  }
}

console.log(`${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} cores; ${process.version}`);
const model = arg('model');
const synthetic = arg('synthetic');
if (model) {
  const lm = await loadModel(model, { build, maxContext: PROMPT + tokens + 8 });
  await table(lm, model, rounds);
  await lm.dispose();
} else {
  if (!synthetic) {
    const lm = await loadModel('models/sparrow-mini', { build, maxContext: PROMPT + tokens + 8 });
    await table(lm, 'sparrow-mini (Q8_0)', rounds);
    await lm.dispose();
  }
  if (!synthetic || synthetic === 'smol135') {
    const file = await writeSyntheticGguf(smol135(), 'smol135', dtype);
    try {
      const lm = await loadModel(file.path, { build, maxContext: PROMPT + tokens + 8 });
      await table(lm, `smol135 (${dtype}, random weights: ${file.written})`, synthetic ? rounds : roundsSynthetic);
      await lm.dispose();
    } finally {
      rmSync(file.dir, { recursive: true, force: true });
    }
  } else throw new Error(`--synthetic must be smol135, got ${synthetic}`);
}
