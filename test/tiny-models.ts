// Tiny random checkpoints (Llama: attention only; Mamba: recurrent only) written as HF directories
// (config.json, model.safetensors, generation_config.json) with one of the hand-made tokenizers of
// test/fixtures/tokenizers/.
// Generation, session and CLI tests run on it when no trained model is around: its logits are
// arbitrary but deterministic, which is all those tests compare.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, type SafetensorsTensor } from '../src/formats/safetensors';
import { randn, rng } from './helpers';

export const TOKENIZERS = fileURLToPath(new URL('./fixtures/tokenizers/', import.meta.url));

export interface TinyOptions {
  arch?: 'llama' | 'mamba';
  tokenizer?: 'byte-bpe' | 'spm-bpe' | 'unigram' | null;
  seed?: number;
  hidden?: number;
  layers?: number;
  vocab?: number;
  generationConfig?: Record<string, unknown>;
  dir?: string;
}

export function tinyModelDir(o: TinyOptions = {}): string {
  const hidden = o.hidden ?? 64, layers = o.layers ?? 2, vocab = o.vocab ?? 544, inter = 128;
  const heads = 4, kv = 2, headDim = hidden / heads;
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'sparrow-tiny-'));
  mkdirSync(dir, { recursive: true });
  const tok = o.tokenizer === undefined ? 'byte-bpe' : o.tokenizer;
  const eos = tok ? fixtureEosId(tok) : 2;
  const llamaConfig = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: hidden, intermediate_size: inter,
    num_hidden_layers: layers, num_attention_heads: heads, num_key_value_heads: kv, head_dim: headDim,
    vocab_size: vocab, max_position_embeddings: 512, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: false, hidden_act: 'silu', eos_token_id: eos, torch_dtype: 'float32',
  };
  const r = rng(o.seed ?? 7);
  const t: SafetensorsTensor[] = [];
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const a = randn(shape.reduce((x, y) => x * y, 1), r, scale);
    if (offset) for (let i = 0; i < a.length; i++) a[i] += offset;
    t.push({ name, dtype: 'f32', shape, data: new Uint8Array(a.buffer) });
  };
  let config: object = llamaConfig;
  if (o.arch === 'mamba') {
    const dInner = 2 * hidden, N = 8, R = 4, W = 4;
    config = {
      architectures: ['MambaForCausalLM'], model_type: 'mamba', hidden_size: hidden, num_hidden_layers: layers,
      vocab_size: vocab, state_size: N, conv_kernel: W, expand: 2, time_step_rank: R, intermediate_size: dInner,
      use_bias: false, use_conv_bias: true, layer_norm_epsilon: 1e-5, hidden_act: 'silu', tie_word_embeddings: false,
      eos_token_id: eos, torch_dtype: 'float32',
    };
    add('backbone.embeddings.weight', [vocab, hidden], 1);
    for (let i = 0; i < layers; i++) {
      const p = `backbone.layers.${i}`;
      add(`${p}.norm.weight`, [hidden], 0.1, 1);
      add(`${p}.mixer.in_proj.weight`, [2 * dInner, hidden], 0.3);
      add(`${p}.mixer.conv1d.weight`, [dInner, 1, W], 0.4);
      add(`${p}.mixer.conv1d.bias`, [dInner], 0.1);
      add(`${p}.mixer.x_proj.weight`, [R + 2 * N, dInner], 0.2);
      add(`${p}.mixer.dt_proj.weight`, [dInner, R], 0.3);
      add(`${p}.mixer.dt_proj.bias`, [dInner], 1, -3);
      const aLog = new Float32Array(dInner * N);
      for (let c = 0; c < dInner; c++) for (let n = 0; n < N; n++) aLog[c * N + n] = Math.log(n + 1);
      t.push({ name: `${p}.mixer.A_log`, dtype: 'f32', shape: [dInner, N], data: new Uint8Array(aLog.buffer) });
      add(`${p}.mixer.D`, [dInner], 0.1, 1);
      add(`${p}.mixer.out_proj.weight`, [hidden, dInner], 0.2);
    }
    add('backbone.norm_f.weight', [hidden], 0.1, 1);
    add('lm_head.weight', [vocab, hidden], 0.3);
  } else {
    add('model.embed_tokens.weight', [vocab, hidden], 1);
    for (let i = 0; i < layers; i++) {
      const p = `model.layers.${i}`;
      add(`${p}.input_layernorm.weight`, [hidden], 0.1, 1);
      add(`${p}.post_attention_layernorm.weight`, [hidden], 0.1, 1);
      add(`${p}.self_attn.q_proj.weight`, [heads * headDim, hidden], 0.3);
      add(`${p}.self_attn.k_proj.weight`, [kv * headDim, hidden], 0.3);
      add(`${p}.self_attn.v_proj.weight`, [kv * headDim, hidden], 0.3);
      add(`${p}.self_attn.o_proj.weight`, [hidden, heads * headDim], 0.2);
      add(`${p}.mlp.gate_proj.weight`, [inter, hidden], 0.2);
      add(`${p}.mlp.up_proj.weight`, [inter, hidden], 0.2);
      add(`${p}.mlp.down_proj.weight`, [hidden, inter], 0.2);
    }
    add('model.norm.weight', [hidden], 0.1, 1);
    add('lm_head.weight', [vocab, hidden], 0.6);
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 1));
  writeFileSync(join(dir, 'model.safetensors'), writeSafetensors(t));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(o.generationConfig ?? { eos_token_id: eos }));
  if (tok) for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZERS, tok, f), join(dir, f));
  return dir;
}

/** The id of a tokenizer fixture's EOS token (tokenizer_config.json eos_token in tokenizer.json added_tokens). */
export function fixtureEosId(tok: string): number {
  const cfg = JSON.parse(readFileSync(join(TOKENIZERS, tok, 'tokenizer_config.json'), 'utf8'));
  const json = JSON.parse(readFileSync(join(TOKENIZERS, tok, 'tokenizer.json'), 'utf8'));
  const eos = typeof cfg.eos_token === 'string' ? cfg.eos_token : cfg.eos_token.content;
  return json.added_tokens.find((t: any) => t.content === eos).id;
}
