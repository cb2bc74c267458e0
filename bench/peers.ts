// sparrow (WASM, 1 thread) against llama.cpp (node-llama-cpp's prebuilt CPU binary, 1 thread) on
// one GGUF file in llama.cpp's layout: prefill and decode tokens per second, interleaved rounds in
// one process, medians and the ratio sparrow ÷ llama.cpp as a markdown table.
//
// Run: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/peers.ts
//        (--model FILE.gguf | --synthetic smol135|mamba130 [--dtype f32|q8_0|q4_0|q4_k_m|q5_k_m|q6_k|…])
//        [--rounds N] [--prompt N] [--gen N]
// --synthetic writes random weights in the shape of SmolLM-135M (llama, 576 × 30 layers, 9/3 heads,
// FFN 1536, vocab 49152) or mamba-130m (768 × 24 layers, d_state 16, vocab 50280) to a temporary
// GGUF with the llama.cpp-layout writer, in any of its targets (formats/llamacpp.ts LLAMACPP_TARGETS:
// whole-file f32 / f16 / q8_0 / q4_0, the K-quant mixes q4_k_m … q6_k, or one K-quant type for every
// quantized tensor); the tensor count per written type is printed with the table.

import { rmSync } from 'node:fs';
import os from 'node:os';
import type { ControlledEvaluateInputItem, Token } from 'node-llama-cpp';
import { openCheckpoint } from '../src/formats/checkpoint';
import { LLAMACPP_TARGETS, type LlamaCppTarget } from '../src/formats/llamacpp';
import { buildModel } from '../src/models/index';
import { loadPeer } from '../test/peer';
import { mamba130, smol135, writeSyntheticGguf } from './synthetic';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const rounds = Number(arg('rounds') ?? 3);
const promptLen = Number(arg('prompt') ?? 128);
const genLen = Number(arg('gen') ?? 128);
const dtype = (arg('dtype') ?? 'q8_0') as LlamaCppTarget;
const synthetic = arg('synthetic');
let modelPath = arg('model');
if (!modelPath && !synthetic) throw new Error('give --model FILE.gguf or --synthetic smol135|mamba130');
if (!LLAMACPP_TARGETS.includes(dtype)) throw new Error(`--dtype must be one of ${LLAMACPP_TARGETS.join(', ')}, got ${dtype}`);

// ---- timing -----------------------------------------------------------------------------------

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

let tmp: string | undefined;
let written = '';
if (!modelPath) {
  const ck = synthetic === 'smol135' ? smol135() : synthetic === 'mamba130' ? mamba130() : null;
  if (!ck) throw new Error(`--synthetic must be smol135 or mamba130, got ${synthetic}`);
  const t0 = performance.now();
  const file = await writeSyntheticGguf(ck, synthetic!, dtype);
  ({ dir: tmp, path: modelPath, written } = file);
  console.error(`wrote ${modelPath} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

try {
  const ctx = promptLen + genLen + 8;
  const ck = await openCheckpoint(modelPath);
  const model = await buildModel(ck, { maxContext: ctx });
  await ck.close();
  const peer = await loadPeer(modelPath, { threads: 1, contextSize: ctx, kvCacheType: 'F16' });
  const V = model.net.vocabSize;
  const prompt = Array.from({ length: promptLen }, (_, i) => 3 + ((i * 7919) % (V - 3)));
  const argmax = (x: Float32Array) => {
    let b = 0;
    for (let i = 1; i < x.length; i++) if (x[i] > x[b]) b = i;
    return b;
  };

  const runSparrow = () => {
    const s = model.newSession();
    let t0 = performance.now();
    let tok = argmax(s.forward(prompt));
    const prefill = performance.now() - t0;
    t0 = performance.now();
    for (let i = 1; i < genLen; i++) tok = argmax(s.forward([tok]));
    const decode = performance.now() - t0;
    s.dispose();
    return { prefill: promptLen / (prefill / 1000), decode: (genLen - 1) / (decode / 1000) };
  };
  const runPeer = async () => {
    const seq = peer.sequence;
    await seq.clearHistory();
    const ask = (t: number): ControlledEvaluateInputItem => [t as Token, { generateNext: { token: true, options: { temperature: 0 } } }];
    let t0 = performance.now();
    let res = await seq.controlledEvaluate(prompt.map((t, i) => (i === prompt.length - 1 ? ask(t) : (t as Token))));
    let tok = res[prompt.length - 1]!.next.token!;
    const prefill = performance.now() - t0;
    t0 = performance.now();
    for (let i = 1; i < genLen; i++) {
      res = await seq.controlledEvaluate([ask(tok)]);
      tok = res[0]!.next.token!;
    }
    const decode = performance.now() - t0;
    await seq.clearHistory();
    return { prefill: promptLen / (prefill / 1000), decode: (genLen - 1) / (decode / 1000) };
  };

  const sp: { prefill: number; decode: number }[] = [];
  const lc: { prefill: number; decode: number }[] = [];
  for (let r = 0; r < rounds; r++) {
    sp.push(runSparrow());
    lc.push(await runPeer());
    console.error(`round ${r + 1}/${rounds}: sparrow ${sp[r].prefill.toFixed(1)} / ${sp[r].decode.toFixed(1)} tok/s, llama.cpp ${lc[r].prefill.toFixed(1)} / ${lc[r].decode.toFixed(1)} tok/s`);
  }
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  const what = synthetic ? `synthetic ${synthetic} (random weights)` : modelPath;
  console.log(`## sparrow vs llama.cpp — ${what}, ${synthetic ? dtype : 'weights as stored'}\n`);
  if (written) console.log(`tensors written: ${written}\n`);
  console.log(`${cpu}, ${os.cpus().length} cores; ${new Date().toISOString().slice(0, 10)}; 1 thread each; prompt ${promptLen}, generate ${genLen}; median of ${rounds} interleaved rounds; llama.cpp KV cache F16, sparrow WASM\n`);
  console.log('| runtime | prefill tok/s | decode tok/s |');
  console.log('|---|---|---|');
  const row = (name: string, xs: { prefill: number; decode: number }[]) => console.log(`| ${name} | ${median(xs.map((x) => x.prefill)).toFixed(1)} | ${median(xs.map((x) => x.decode)).toFixed(1)} |`);
  row('sparrow', sp);
  row('llama.cpp (node-llama-cpp)', lc);
  const ratio = (k: 'prefill' | 'decode') => (median(sp.map((x) => x[k])) / median(lc.map((x) => x[k]))).toFixed(2);
  console.log(`| sparrow ÷ llama.cpp | ${ratio('prefill')}× | ${ratio('decode')}× |`);
  await peer.close();
  model.dispose?.();
} finally {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}
process.exit(0);
