// Nemotron-H ("nemotron_h"), Falcon-H1 ("falcon_h1") and Zamba2 ("zamba2"): on the committed fixture
// checkpoints, chunked prefill equals token-by-token decode and prefill pieces compose, snapshots
// round trip; config.json fields are read as transformers' config classes read them (legacy layer
// names and hybrid_override_pattern, legacy mamba_* field names, defaults), unsupported values
// rejected naming the field. Parity against transformers: test/parity.test.ts.

import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { ConfigError } from '../src/formats/errors';
import { parseFalconH1 } from '../src/models/falcon_h1';
import { buildModel, type Model } from '../src/models/index';
import { parseNemotronH } from '../src/models/nemotron_h';
import { parseZamba2 } from '../src/models/zamba2';
import { maxRelErr, rng } from './helpers';

const FIXTURES = ['test/fixtures/parity/nemotronh-moe', 'test/fixtures/parity/falconh1-mup', 'test/fixtures/parity/zamba2-shared-adapters'];

async function load(dir: string, maxChunk: number): Promise<Model> {
  return buildModel(await openCheckpoint(dir), { exact: true, maxChunk, maxContext: 256, dtype: 'f32' });
}

function tokens(n: number, V: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(r() * (V - 3)));
}

describe.each(FIXTURES)('%s', (dir) => {
  it('chunked prefill equals token-by-token decode, and prefill pieces compose', async () => {
    const chunked = await load(dir, 32), stepwise = await load(dir, 1);
    const V = chunked.net.vocabSize;
    const ids = tokens(75, V, 5);
    const a = chunked.newSession(), b = stepwise.newSession(), c = chunked.newSession();
    const la = a.forward(ids, true);
    const lb = new Float32Array(la.length);
    for (let t = 0; t < ids.length; t++) lb.set(b.forward([ids[t]]), t * V);
    expect(maxRelErr(la, lb)).toBeLessThan(1e-5);
    const lc = new Float32Array(la.length);
    let t = 0;
    for (const n of [7, 33, 1, 34]) {
      lc.set(c.forward(ids.slice(t, t + n), true), t * V);
      t += n;
    }
    expect(maxRelErr(lc, la)).toBeLessThan(1e-5);
  });

  it('snapshot → restore into a fresh model gives identical next-token logits', async () => {
    const m1 = await load(dir, 16);
    const ids = tokens(29, m1.net.vocabSize, 11);
    const s = m1.newSession();
    s.forward(ids.slice(0, 28));
    const snap = s.snapshot();
    const next = s.forward([ids[28]]);
    const r = (await load(dir, 16)).restore(snap);
    expect(r.pos).toBe(28);
    expect(Array.from(r.forward([ids[28]]))).toEqual(Array.from(next));
  });
});

const nemotron = (extra: Record<string, unknown> = {}) => ({
  model_type: 'nemotron_h', hidden_size: 64, vocab_size: 100, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16,
  mamba_num_heads: 8, mamba_head_dim: 16, n_groups: 2, ssm_state_size: 16, conv_kernel: 4, intermediate_size: 96,
  layers_block_type: ['linear_attention', 'moe', 'full_attention', 'mlp'], n_routed_experts: 8, num_experts_per_tok: 2,
  moe_intermediate_size: 32, moe_shared_expert_intermediate_size: 48, ...extra,
});

const falcon = (extra: Record<string, unknown> = {}) => ({
  model_type: 'falcon_h1', hidden_size: 64, vocab_size: 100, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
  intermediate_size: 96, mamba_n_heads: 8, mamba_d_head: 16, mamba_d_ssm: null, mamba_n_groups: 2, mamba_d_state: 16, ...extra,
});

const zamba = (extra: Record<string, unknown> = {}) => ({
  model_type: 'zamba2', hidden_size: 32, vocab_size: 100, num_attention_heads: 4, n_mamba_heads: 4, mamba_ngroups: 2,
  layers_block_type: ['mamba', 'hybrid', 'linear_attention', 'hybrid'], ...extra,
});

describe('nemotron_h config', () => {
  it('reads layers_block_type, legacy names and hybrid_override_pattern alike', () => {
    const a = parseNemotronH(nemotron());
    expect(a.layers).toEqual(['mamba', 'moe', 'attention', 'mlp']);
    const b = parseNemotronH(nemotron({ layers_block_type: ['mamba', 'moe', 'attention', 'mlp'] }));
    expect(b.layers).toEqual(a.layers);
    const { layers_block_type: _, ...rest } = nemotron();
    expect(parseNemotronH({ ...rest, hybrid_override_pattern: 'ME*-' }).layers).toEqual(a.layers);
  });

  it('takes the legacy mamba_* names over the current ones, and clamps Δ below at time_step_min', () => {
    const c = parseNemotronH(nemotron({ mamba_n_groups: 4, mamba_d_conv: 3, time_step_min: 0.01 }));
    expect(c.mamba.G).toBe(4);
    expect(c.mamba.normGroups).toBe(4);
    expect(c.mamba.W).toBe(3);
    expect(c.mamba.dtLimit).toEqual([0.01, Infinity]);
    expect(c.act).toBe('relu2');
    expect(c.moe?.nGroup).toBe(1);
  });

  it('rejects what it does not implement, naming the field', () => {
    expect(() => parseNemotronH(nemotron({ moe_latent_size: 16 }))).toThrow(/moe_latent_size/);
    expect(() => parseNemotronH(nemotron({ mlp_hidden_act: 'gelu' }))).toThrow(/mlp_hidden_act/);
    expect(() => parseNemotronH(nemotron({ layers_block_type: ['mamba', 'conv'] }))).toThrow(/layers_block_type\[1\]/);
    expect(() => parseNemotronH(nemotron({ n_group: 3 }))).toThrow(/n_group/);
    expect(() => parseNemotronH(nemotron({ n_groups: 3 }))).toThrow(ConfigError);
  });
});

describe('falcon_h1 config', () => {
  it('derives d_inner and the gate / norm order from the mamba_* fields', () => {
    const a = parseFalconH1(falcon());
    expect(a.mamba.H * a.mamba.P).toBe(128);
    expect(a.mamba.out).toBe('gate');
    expect(parseFalconH1(falcon({ mamba_rms_norm: true })).mamba.out).toBe('norm_before_gate');
    expect(parseFalconH1(falcon({ mamba_rms_norm: true, mamba_norm_before_gate: false })).mamba.out).toBe('norm_after_gate');
    const b = parseFalconH1(falcon({ mamba_d_ssm: 96, mamba_n_heads: 6, mamba_d_head: 'auto' }));
    expect(b.mamba.P).toBe(16);
    expect(b.mamba.projScale).toEqual([1, 1, 1, 1, 1]);
    expect(b.mlpMultipliers).toEqual([1, 1]);
  });

  it('rejects inconsistent Mamba shapes and malformed multipliers, naming the field', () => {
    expect(() => parseFalconH1(falcon({ mamba_d_head: 12 }))).toThrow(/mamba_d_head/);
    expect(() => parseFalconH1(falcon({ ssm_multipliers: [1, 2] }))).toThrow(/ssm_multipliers/);
    expect(() => parseFalconH1(falcon({ hidden_act: 'gelu' }))).toThrow(/hidden_act/);
  });
});

describe('zamba2 config', () => {
  it('reads the hybrid layers, the derived head widths and the defaults of Zamba2Config', () => {
    const c = parseZamba2(zamba());
    expect(c.hybrid).toEqual([false, true, false, true]);
    expect(c.headDim).toBe(16);
    expect(c.mamba.P).toBe(16);
    expect(c.inter).toBe(128);
    expect(c.act).toBe('gelu');
    expect(c.tieEmbeddings).toBe(true);
    expect(c.rope).toBeNull();
    expect(c.mamba.normEps).toBe(1e-5);
    const { layers_block_type: _, ...rest } = zamba();
    expect(parseZamba2({ ...rest, num_hidden_layers: 54 }).hybrid.filter(Boolean).length).toBe(9);
  });

  it('rejects attention adapters on narrower k / v projections, naming the field', () => {
    expect(() => parseZamba2(zamba({ use_shared_attention_adapter: true, num_key_value_heads: 2 }))).toThrow(/use_shared_attention_adapter/);
    expect(() => parseZamba2(zamba({ attention_head_dim: 8 }))).toThrow(/attention_head_dim/);
    expect(() => parseZamba2(zamba({ layers_block_type: ['mamba', 'attention'] }))).toThrow(/layer_types\[1\]/);
  });
});
