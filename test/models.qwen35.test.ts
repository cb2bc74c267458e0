// Qwen3.5 (dense and MoE):
//  - parity against the HF transformers fixtures (prefill, token-by-token decode, greedy);
//  - the layout of the multimodal checkpoints (Qwen3_5ForConditionalGeneration): config.json with the
//    language model under text_config, weights under model.language_model., a vision tower and MTP
//    head that are never read — built from a fixture's own tensors, it gives bit-identical logits;
//  - config errors name the field under text_config.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/formats/errors';
import { openCheckpoint } from '../src/formats/checkpoint';
import { parseQwen35 } from '../src/models/qwen3_5';
import { relMaxErr, runFixture, type FixtureReference } from '../tools/parity-lib';
import { modelFromTensors } from './helpers';

const DENSE = 'test/fixtures/parity/qwen35-dense';
const MOE = 'test/fixtures/parity/qwen35-moe';
const dirs = [DENSE, MOE].filter((d) => existsSync(join(d, 'reference.json')));

describe.runIf(dirs.length > 0)('Qwen3.5 HF parity fixtures', () => {
  for (const dir of dirs) {
    it(dir.split('/').pop()!, async () => {
      const r = await runFixture(dir);
      expect(r.error).toBeUndefined();
      expect(r.prefillErr).toBeLessThanOrEqual(1e-4);
      expect(r.decodeErr).toBeLessThanOrEqual(1e-4);
      expect(r.greedyAgree).toBe(r.greedyTotal);
    }, 120_000);
  }
});

/** A fixture's config and f32 tensors. */
async function fixtureTensors(dir: string): Promise<{ config: any; ref: FixtureReference; tensors: { name: string; shape: number[]; data: Float32Array }[] }> {
  const ckpt = await openCheckpoint(dir);
  const tensors = [];
  for (const [name, info] of ckpt.tensors) tensors.push({ name, shape: info.shape, data: await ckpt.readF32(name) });
  await ckpt.close();
  const ref: FixtureReference = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
  return { config: ckpt.config, ref, tensors };
}

describe.runIf(dirs.length > 0)('Qwen3.5 multimodal checkpoint layout', () => {
  for (const dir of dirs) {
    it(`${dir.split('/').pop()}: text_config + model.language_model. weights give the same logits`, async () => {
      const { config, ref, tensors } = await fixtureTensors(dir);
      const moe = config.model_type === 'qwen3_5_moe_text';
      const plain = await modelFromTensors(config, tensors, 16);
      const { tie_word_embeddings, ...text } = config;
      const wrapped = {
        architectures: [moe ? 'Qwen3_5MoeForConditionalGeneration' : 'Qwen3_5ForConditionalGeneration'],
        model_type: moe ? 'qwen3_5_moe' : 'qwen3_5',
        text_config: { ...text, tie_word_embeddings },
        vision_config: { model_type: moe ? 'qwen3_5_moe_vision' : 'qwen3_5_vision', depth: 1, hidden_size: 16 },
        tie_word_embeddings: false,
        image_token_id: 5, video_token_id: 6,
      };
      const renamed = tensors.map((t) => ({ ...t, name: t.name.replace(/^model\./, 'model.language_model.') }));
      // Pieces a real checkpoint carries that the language model never reads.
      renamed.push({ name: 'model.visual.blocks.0.attn.qkv.weight', shape: [48, 16], data: new Float32Array(48 * 16).fill(Number.NaN) });
      renamed.push({ name: 'mtp.fc.weight', shape: [config.hidden_size, 2 * config.hidden_size], data: new Float32Array(2 * config.hidden_size ** 2).fill(Number.NaN) });
      const mm = await modelFromTensors(wrapped, renamed, 16);
      const ids = ref.input_ids;
      const a = plain.newSession().forward(ids, true);
      const b = mm.newSession().forward(ids, true);
      expect(relMaxErr(b, a)).toBe(0);
      expect(mm.info().params).toBe(plain.info().params);
      plain.dispose();
      mm.dispose();
    }, 120_000);
  }
});

describe('Qwen3.5 config', () => {
  const text = {
    model_type: 'qwen3_5_text', hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1,
    head_dim: 16, vocab_size: 50, intermediate_size: 48, linear_num_key_heads: 2, linear_num_value_heads: 4,
    linear_key_head_dim: 8, linear_value_head_dim: 8, layer_types: ['linear_attention', 'full_attention'],
    rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.5, mrope_section: [2, 1, 1] },
  };

  it('reads the language model from text_config, the tie from the text config', () => {
    const c = parseQwen35({ model_type: 'qwen3_5', text_config: { ...text, tie_word_embeddings: true }, tie_word_embeddings: false }, false);
    expect(c.hidden).toBe(32);
    expect(c.rotaryDim).toBe(8);
    expect(c.tieEmbeddings).toBe(true);
    expect(c.moe).toBeNull();
    expect(parseQwen35({ ...text }, false).layerTypes).toEqual(['linear_attention', 'full_attention']);
  });

  it('names fields under text_config in errors', () => {
    const bad = { model_type: 'qwen3_5', text_config: { ...text, linear_num_value_heads: 3 } };
    expect(() => parseQwen35(bad, false)).toThrow(ConfigError);
    expect(() => parseQwen35(bad, false)).toThrow(/config\.text_config\.linear_num_value_heads/);
    expect(() => parseQwen35({ model_type: 'qwen3_5', text_config: 7 }, false)).toThrow(/config\.text_config/);
    expect(() => parseQwen35({ ...text, hidden_act: 'gelu' }, false)).toThrow(/config\.hidden_act/);
  });

  it('MoE: experts from the text config, every layer sparse', () => {
    const c = parseQwen35({ model_type: 'qwen3_5_moe', text_config: { ...text, model_type: 'qwen3_5_moe_text', num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 8, shared_expert_intermediate_size: 12 } }, true);
    expect(c.moe).toEqual({ nExperts: 4, topk: 2, inter: 8, sharedInter: 12 });
    expect(c.denseInter).toBeNull();
    expect(() => parseQwen35({ ...text, num_experts: 4, num_experts_per_tok: 5 }, true)).toThrow(/num_experts_per_tok/);
  });
});
