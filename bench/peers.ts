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

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { ControlledEvaluateInputItem, Token } from 'node-llama-cpp';
import { openCheckpoint, type Checkpoint, type TensorInfo } from '../src/formats/checkpoint';
import { LLAMACPP_TARGETS, llamaCppWriterFor, type LlamaCppTarget } from '../src/formats/llamacpp';
import { buildModel } from '../src/models/index';
import { loadPeer } from '../test/peer';

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

// ---- synthetic checkpoints ----------------------------------------------------------------------

/** xorshift32 in [-1, 1). */
function filler(seed: number): (a: Float32Array, scale: number, offset: number) => void {
  let s = seed >>> 0 || 1;
  return (a, scale, offset) => {
    for (let i = 0; i < a.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      a[i] = offset + scale * ((s >>> 0) / 2 ** 31 - 1);
    }
  };
}

/** An in-memory HF checkpoint whose tensors are made (seeded random) when read. */
function syntheticCheckpoint(config: Record<string, unknown>, shapes: Record<string, [number[], number, number]>): Checkpoint {
  const tensors = new Map<string, TensorInfo>();
  let seed = 1;
  const seeds = new Map<string, number>();
  for (const [name, [shape]] of Object.entries(shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    seeds.set(name, seed++);
    tensors.set(name, { name, dtype: 'f32', shape, byteOffset: 0, byteLength: n * 4, source: { size: 0, name, read: () => Promise.reject(new Error('synthetic')) } });
  }
  const readF32 = async (name: string) => {
    const [shape, scale, offset] = shapes[name];
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1));
    filler(seeds.get(name)!)(a, scale, offset);
    return a;
  };
  return {
    format: 'safetensors', config, metadata: {}, tensors, readF32,
    read: () => Promise.reject(new Error('synthetic checkpoint: readF32 only')),
    readInto: () => Promise.reject(new Error('synthetic checkpoint: readF32 only')),
    close: async () => {},
  } as unknown as Checkpoint;
}

function smol135(): Checkpoint {
  const D = 576, L = 30, H = 9, KV = 3, hd = 64, F = 1536, V = 49152;
  const config = {
    model_type: 'llama', hidden_size: D, num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: KV, head_dim: hd,
    intermediate_size: F, vocab_size: V, max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000, hidden_act: 'silu',
    tie_word_embeddings: true, attention_bias: false, mlp_bias: false,
  };
  const s: Record<string, [number[], number, number]> = { 'model.embed_tokens.weight': [[V, D], 0.5, 0], 'model.norm.weight': [[D], 0.1, 1] };
  for (let i = 0; i < L; i++) {
    const p = `model.layers.${i}`;
    Object.assign(s, {
      [`${p}.input_layernorm.weight`]: [[D], 0.1, 1], [`${p}.post_attention_layernorm.weight`]: [[D], 0.1, 1],
      [`${p}.self_attn.q_proj.weight`]: [[H * hd, D], 0.05, 0], [`${p}.self_attn.k_proj.weight`]: [[KV * hd, D], 0.05, 0],
      [`${p}.self_attn.v_proj.weight`]: [[KV * hd, D], 0.05, 0], [`${p}.self_attn.o_proj.weight`]: [[D, H * hd], 0.05, 0],
      [`${p}.mlp.gate_proj.weight`]: [[F, D], 0.05, 0], [`${p}.mlp.up_proj.weight`]: [[F, D], 0.05, 0], [`${p}.mlp.down_proj.weight`]: [[D, F], 0.03, 0],
    });
  }
  return syntheticCheckpoint(config, s);
}

function mamba130(): Checkpoint {
  const D = 768, L = 24, N = 16, V = 50280, I = 2 * D, R = 48, K = 4;
  const config = {
    model_type: 'mamba', hidden_size: D, num_hidden_layers: L, state_size: N, vocab_size: V, expand: 2, intermediate_size: I,
    conv_kernel: K, time_step_rank: R, use_bias: false, use_conv_bias: true, layer_norm_epsilon: 1e-5, tie_word_embeddings: true, hidden_act: 'silu',
  };
  const s: Record<string, [number[], number, number]> = { 'backbone.embeddings.weight': [[V, D], 0.5, 0], 'backbone.norm_f.weight': [[D], 0.1, 1] };
  for (let i = 0; i < L; i++) {
    const p = `backbone.layers.${i}`;
    Object.assign(s, {
      [`${p}.norm.weight`]: [[D], 0.1, 1], [`${p}.mixer.in_proj.weight`]: [[2 * I, D], 0.05, 0],
      [`${p}.mixer.conv1d.weight`]: [[I, 1, K], 0.3, 0], [`${p}.mixer.conv1d.bias`]: [[I], 0.1, 0],
      [`${p}.mixer.x_proj.weight`]: [[R + 2 * N, I], 0.05, 0], [`${p}.mixer.dt_proj.weight`]: [[I, R], 0.1, 0],
      [`${p}.mixer.dt_proj.bias`]: [[I], 0.5, -3], [`${p}.mixer.A_log`]: [[I, N], 0.5, 1.5], [`${p}.mixer.D`]: [[I], 0.1, 1],
      [`${p}.mixer.out_proj.weight`]: [[D, I], 0.03, 0],
    });
  }
  return syntheticCheckpoint(config, s);
}

// ---- timing -----------------------------------------------------------------------------------

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

let tmp: string | undefined;
let written = '';
if (!modelPath) {
  tmp = mkdtempSync(join(os.tmpdir(), 'sparrow-bench-peers-'));
  modelPath = join(tmp, `${synthetic}.${dtype}.gguf`);
  const ck = synthetic === 'smol135' ? smol135() : synthetic === 'mamba130' ? mamba130() : null;
  if (!ck) throw new Error(`--synthetic must be smol135 or mamba130, got ${synthetic}`);
  const t0 = performance.now();
  const { writer, tensorsByDType } = llamaCppWriterFor(ck, { dtype });
  await writer.writeTo(modelPath);
  written = Object.entries(tensorsByDType).map(([d, n]) => `${n} ${d}`).join(', ');
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
