// A tiny random DiffusionGemma checkpoint (model_type "diffusion_gemma", text_config) written as an HF
// directory, with one of the hand-made tokenizers: for the decoding loop, streaming and refusal tests.

import { copyFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSafetensors, type SafetensorsTensor } from '../src/formats/safetensors';
import { randn, rng } from './helpers';
import { fixtureEosId, TOKENIZERS } from './tiny-models';

export interface TinyDiffusionOptions {
  vocab?: number;
  canvas?: number;
  seed?: number;
  generationConfig?: Record<string, unknown>;
  tokenizer?: 'byte-bpe' | null;
  /** Scale of the LM head's input (larger: sharper logits, lower entropy). */
  sharp?: number;
}

export function tinyDiffusionDir(o: TinyDiffusionOptions = {}): string {
  const tok = o.tokenizer === undefined ? 'byte-bpe' : o.tokenizer;
  const V = o.vocab ?? 544, H = 32, I = 48, E = 4, MI = 16, heads = 2, kv = 1, D = 16, GD = 16;
  const layerTypes = ['sliding_attention', 'full_attention'];
  const eos = tok ? fixtureEosId(tok) : 2;
  const dir = mkdtempSync(join(tmpdir(), 'sparrow-diffusion-'));
  const config = {
    architectures: ['DiffusionGemmaForBlockDiffusion'], model_type: 'diffusion_gemma', canvas_length: o.canvas ?? 8,
    tie_word_embeddings: true,
    text_config: {
      model_type: 'diffusion_gemma_text', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: 2,
      num_attention_heads: heads, num_key_value_heads: kv, head_dim: D, global_head_dim: GD, num_global_key_value_heads: 1,
      hidden_activation: 'gelu_pytorch_tanh', max_position_embeddings: 512, rms_norm_eps: 1e-6, sliding_window: 6,
      layer_types: layerTypes, num_experts: E, top_k_experts: 2, moe_intermediate_size: MI, final_logit_softcapping: 30,
      rope_parameters: {
        sliding_attention: { rope_type: 'default', rope_theta: 10000 },
        full_attention: { rope_type: 'proportional', partial_rotary_factor: 0.5, rope_theta: 1000000 },
      },
      eos_token_id: eos, pad_token_id: 0, bos_token_id: 1,
    },
  };
  const r = rng(o.seed ?? 11);
  const t: SafetensorsTensor[] = [];
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const a = randn(shape.reduce((x, y) => x * y, 1), r, scale);
    if (offset) for (let i = 0; i < a.length; i++) a[i] += offset;
    t.push({ name, dtype: 'f32', shape, data: new Uint8Array(a.buffer) });
  };
  const m = 'model.decoder';
  add(`${m}.embed_tokens.weight`, [V, H], 0.3);
  for (let i = 0; i < layerTypes.length; i++) {
    const p = `${m}.layers.${i}`, full = layerTypes[i] === 'full_attention';
    const hd = full ? GD : D, nkv = full ? 1 : kv;
    add(`${p}.self_attn.q_proj.weight`, [heads * hd, H], 0.3);
    add(`${p}.self_attn.k_proj.weight`, [nkv * hd, H], 0.3);
    if (!full) add(`${p}.self_attn.v_proj.weight`, [nkv * hd, H], 0.3);
    add(`${p}.self_attn.o_proj.weight`, [H, heads * hd], 0.2);
    add(`${p}.self_attn.q_norm.weight`, [hd], 0.1, 1);
    add(`${p}.self_attn.k_norm.weight`, [hd], 0.1, 1);
    for (const n of ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm',
      'post_feedforward_layernorm_1', 'post_feedforward_layernorm_2', 'pre_feedforward_layernorm_2']) add(`${p}.${n}.weight`, [H], 0.1, 1);
    add(`${p}.mlp.gate_proj.weight`, [I, H], 0.2);
    add(`${p}.mlp.up_proj.weight`, [I, H], 0.2);
    add(`${p}.mlp.down_proj.weight`, [H, I], 0.2);
    add(`${p}.router.proj.weight`, [E, H], 0.3);
    add(`${p}.router.scale`, [H], 0.1, 1);
    add(`${p}.router.per_expert_scale`, [E], 0.1, 1);
    add(`${p}.experts.gate_up_proj`, [E, 2 * MI, H], 0.2);
    add(`${p}.experts.down_proj`, [E, H, MI], 0.2);
    add(`${p}.layer_scalar`, [1], 0.05, 1);
    add(`model.encoder.language_model.layers.${i}.layer_scalar`, [1], 0.05, 1);
  }
  add(`${m}.norm.weight`, [H], 0.1, o.sharp ?? 1);
  add(`${m}.self_conditioning.pre_norm.weight`, [H], 0.1, 1);
  add(`${m}.self_conditioning.gate_proj.weight`, [I, H], 0.2);
  add(`${m}.self_conditioning.up_proj.weight`, [I, H], 0.2);
  add(`${m}.self_conditioning.down_proj.weight`, [H, I], 0.2);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 1));
  writeFileSync(join(dir, 'model.safetensors'), writeSafetensors(t));
  const gc = o.generationConfig ?? {
    max_new_tokens: 16, max_denoising_steps: 4, sampler_config: { entropy_bound: 1.0, _cls_name: 'EntropyBoundSamplerConfig' },
    t_min: 0.4, t_max: 0.8, stability_threshold: 1, confidence_threshold: 0.005, eos_token_id: eos, pad_token_id: 0,
  };
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(gc));
  if (tok) for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZERS, tok, f), join(dir, f));
  return dir;
}
