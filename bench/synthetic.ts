// Synthetic checkpoints for benchmarks: seeded random weights in the shapes of real models, made
// when read (readF32), and written to a temporary GGUF in llama.cpp's layout when a benchmark needs
// a file (bench/peers.ts, bench/concurrent.ts).

import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { Checkpoint, TensorInfo } from '../src/formats/checkpoint';
import { llamaCppWriterFor, type LlamaCppTarget } from '../src/formats/llamacpp';

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
export function syntheticCheckpoint(config: Record<string, unknown>, shapes: Record<string, [number[], number, number]>): Checkpoint {
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

/** Random weights in the shape of SmolLM-135M: llama, 576 × 30 layers, 9/3 heads, FFN 1536, vocab 49152, tied embeddings. */
export function smol135(): Checkpoint {
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

/** Random weights in the shape of mamba-130m: 768 × 24 layers, d_state 16, vocab 50280. */
export function mamba130(): Checkpoint {
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

/** Writes `ck` as a llama.cpp-layout GGUF of `dtype` into a new temporary directory; its path and the tensor count per written type. */
export async function writeSyntheticGguf(ck: Checkpoint, name: string, dtype: LlamaCppTarget): Promise<{ path: string; dir: string; written: string }> {
  const dir = mkdtempSync(join(os.tmpdir(), 'sparrow-bench-'));
  const path = join(dir, `${name}.${dtype}.gguf`);
  const { writer, tensorsByDType } = llamaCppWriterFor(ck, { dtype });
  await writer.writeTo(path);
  return { path, dir, written: Object.entries(tensorsByDType).map(([d, n]) => `${n} ${d}`).join(', ') };
}
