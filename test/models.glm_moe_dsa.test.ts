// GLM-MoE-DSA (GLM-5):
//  - parity against the HF transformers fixtures (prefill, token-by-token decode, greedy);
//  - IndexShare: a "shared" layer has no indexer and no indexer key cache, attends to exactly the
//    positions the full layer before it picked, and prefill equals token-by-token decode. Built from
//    the DeepSeek-V3.2 fixture's tensors (the same MLA, indexer and MoE tensor names);
//  - config errors name indexer_types.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import type { DecoderNet, PreNormBlock } from '../src/models/decoder';
import { type GlmDsaAttention, parseGlmMoeDsa } from '../src/models/glm_moe_dsa';
import type { Model } from '../src/models/index';
import { relMaxErr, runFixture } from '../tools/parity-lib';
import { modelFromTensors } from './helpers';

const FIXTURES = ['test/fixtures/parity/glmdsa-dsa', 'test/fixtures/parity/glmdsa-indexshare'].filter((d) => existsSync(join(d, 'reference.json')));
const V32 = 'test/fixtures/parity/deepseekv32-dsa';

describe.runIf(FIXTURES.length > 0)('GLM-MoE-DSA HF parity fixtures', () => {
  for (const dir of FIXTURES) {
    it(dir.split('/').pop()!, async () => {
      const r = await runFixture(dir);
      expect(r.error).toBeUndefined();
      expect(r.prefillErr).toBeLessThanOrEqual(1e-4);
      expect(r.decodeErr).toBeLessThanOrEqual(1e-4);
      expect(r.greedyAgree).toBe(r.greedyTotal);
    }, 120_000);
  }
});

const mixers = (m: Model): GlmDsaAttention[] => (m.net as DecoderNet).d.blocks.map((b) => (b as PreNormBlock).s.mixer as GlmDsaAttention);

describe.runIf(existsSync(join(V32, 'reference.json')))('GLM-MoE-DSA IndexShare', () => {
  it('a shared layer attends to the previous full layer\'s picks; prefill = decode', async () => {
    const ckpt = await openCheckpoint(V32);
    const tensors = [];
    for (const [name, info] of ckpt.tensors) {
      if (!name.startsWith('model.layers.1.self_attn.indexer.')) tensors.push({ name, shape: info.shape, data: await ckpt.readF32(name) });
    }
    // The multi-token-prediction layer after the last decoder layer is never read.
    tensors.push({ name: 'model.layers.3.self_attn.q_a_proj.weight', shape: [2, 2], data: new Float32Array(4).fill(Number.NaN) });
    const config = { ...ckpt.config, model_type: 'glm_moe_dsa', indexer_types: ['full', 'shared', 'full'] };
    await ckpt.close();
    const model = await modelFromTensors(config, tensors, 16);
    const m = mixers(model);
    expect(m.map((x) => x.shared)).toEqual([false, true, false]);
    const c = model.config;
    // Latent cache per layer, indexer keys only on the two full layers.
    expect(model.info().stateBytesPerToken).toBe(4 * (3 * (c.kv_lora_rank + c.qk_rope_head_dim) + 2 * c.index_head_dim));

    const V = model.net.vocabSize;
    const ids = Array.from({ length: 40 }, (_, i) => 3 + ((i * 13 + 5) % (V - 3)));
    const full = model.newSession().forward(ids, true);
    expect(m[0].lastSelected.length).toBe(c.index_topk);
    expect(Array.from(m[1].lastSelected)).toEqual(Array.from(m[0].lastSelected));
    expect(Array.from(m[2].lastSelected)).not.toEqual(Array.from(m[0].lastSelected));
    const s = model.newSession();
    const dec = new Float32Array(full.length);
    ids.forEach((t, i) => dec.set(s.forward([t]), i * V));
    expect(relMaxErr(dec, full)).toBeLessThan(1e-5);
    expect(Array.from(m[1].lastSelected)).toEqual(Array.from(m[0].lastSelected));
    model.dispose();
  }, 60_000);
});

describe('GLM-MoE-DSA config', () => {
  const base = {
    model_type: 'glm_moe_dsa', hidden_size: 64, num_hidden_layers: 3, vocab_size: 97, num_attention_heads: 4, num_key_value_heads: 4,
    q_lora_rank: 24, kv_lora_rank: 16, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16, index_head_dim: 16, index_n_heads: 4,
    index_topk: 12, n_routed_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 32, intermediate_size: 96, first_k_dense_replace: 1,
    rope_parameters: { rope_type: 'default', rope_theta: 10000 },
  };
  it('defaults every layer to its own indexer, one expert group', () => {
    const c = parseGlmMoeDsa(base);
    expect(c.indexerTypes).toEqual(['full', 'full', 'full']);
    expect(c.moe?.nGroup).toBe(1);
    expect(c.sparse).toEqual([false, true, true]);
  });
  it('derives indexer_types from index_topk_pattern or index_topk_freq / index_skip_topk_offset', () => {
    expect(parseGlmMoeDsa({ ...base, index_topk_pattern: 'FSF' }).indexerTypes).toEqual(['full', 'shared', 'full']);
    expect(parseGlmMoeDsa({ ...base, num_hidden_layers: 6, first_k_dense_replace: 1, index_topk_freq: 2, index_skip_topk_offset: 3 }).indexerTypes)
      .toEqual(['full', 'full', 'full', 'shared', 'full', 'shared']);
    expect(() => parseGlmMoeDsa({ ...base, index_topk_pattern: 'FXF' })).toThrow(/indexer_types\[1\]/);
  });
  it('rejects indexer_types it cannot run', () => {
    expect(() => parseGlmMoeDsa({ ...base, indexer_types: ['shared', 'full', 'full'] })).toThrow(/indexer_types\[0\]/);
    expect(() => parseGlmMoeDsa({ ...base, indexer_types: ['full', 'full'] })).toThrow(/indexer_types/);
    expect(() => parseGlmMoeDsa({ ...base, indexer_types: ['full', 'skip', 'full'] })).toThrow(/indexer_types\[1\]/);
    expect(() => parseGlmMoeDsa({ ...base, q_lora_rank: null })).toThrow(/q_lora_rank/);
  });
});
