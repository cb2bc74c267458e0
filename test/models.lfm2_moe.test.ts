// LFM2-MoE: parity against the HF transformers fixtures, and the config fields it reads.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseLfm2Moe } from '../src/models/lfm2_moe';
import { runFixture } from '../tools/parity-lib';

const FIXTURES = ['test/fixtures/parity/lfm2moe-bias', 'test/fixtures/parity/lfm2moe-nobias'].filter((d) => existsSync(join(d, 'reference.json')));

describe.runIf(FIXTURES.length > 0)('LFM2-MoE HF parity fixtures', () => {
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

describe('LFM2-MoE config', () => {
  const base = {
    model_type: 'lfm2_moe', hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 40,
    intermediate_size: 48, moe_intermediate_size: 16, num_experts: 4, num_experts_per_tok: 2, layer_types: ['conv', 'full_attention', 'conv'],
  };
  it('dense MLPs of intermediate_size on the first num_dense_layers, sigmoid-routed MoE after', () => {
    const c = parseLfm2Moe({ ...base, num_dense_layers: 1 });
    expect(c.nDense).toBe(1);
    expect(c.denseInter).toBe(48);
    expect(c.moe).toEqual({ nExperts: 4, topk: 2, inter: 16, expertBias: true, renormalize: true, routedScaling: 1 });
    expect(c.tieEmbeddings).toBe(true);
    expect(parseLfm2Moe({ ...base, num_dense_layers: 5 }).moe).toBeNull();
  });
  it('requires layer_types and a valid expert count', () => {
    const { layer_types: _, ...noTypes } = base;
    expect(() => parseLfm2Moe(noTypes)).toThrow(/layer_types/);
    expect(() => parseLfm2Moe({ ...base, num_experts_per_tok: 5 })).toThrow(/num_experts_per_tok/);
    expect(() => parseLfm2Moe({ ...base, conv_L_cache: 6 })).toThrow(/conv_L_cache/);
  });
});
