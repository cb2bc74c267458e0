// Kimi Linear (model_type "kimi_linear") and xLSTM ("xlstm"): on the committed fixture checkpoints,
// chunked prefill equals token-by-token decode (logits and every state region), prefill pieces
// compose, snapshots round trip; and config.json fields are read as transformers' config classes read
// them (Kimi's attribute_map aliases and the released checkpoints' linear_attn_config), unsupported
// values rejected naming the field. Parity against transformers: test/parity.test.ts.

import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/formats/errors';
import { parseKimiLinear } from '../src/models/kimi_linear';
import { parseXlstm } from '../src/models/xlstm';
import { expectChunkedPrefillComposes, expectSnapshotRestores } from './recurrent-checks';

const FIXTURES = [
  'test/fixtures/parity/kimilinear-kda-mla', 'test/fixtures/parity/kimilinear-qlora-conv3',
  'test/fixtures/parity/xlstm-capped-gates', 'test/fixtures/parity/xlstm-bias-chunk64',
];

describe.each(FIXTURES)('%s', (dir) => {
  it('chunked prefill equals token-by-token decode (logits and state), and prefill pieces compose', async () => {
    // The KDA chunked form differs from its step by rounding (the mLSTM kernel is bit-identical across splits).
    await expectChunkedPrefillComposes(dir);
  });

  it('snapshot → restore into a fresh model gives identical next-token logits', async () => {
    await expectSnapshotRestores(dir);
  });
});

describe('kimi_linear config.json', () => {
  const base = {
    model_type: 'kimi_linear', hidden_size: 64, num_hidden_layers: 4, vocab_size: 100, num_attention_heads: 4, num_key_value_heads: 4,
    intermediate_size: 96, moe_intermediate_size: 16, kv_lora_rank: 32, q_lora_rank: null, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16,
  };

  it('reads the released checkpoints\' linear_attn_config (1-based layer lists) and the attribute_map names', () => {
    const c = parseKimiLinear({
      ...base, linear_attn_config: { head_dim: 8, num_heads: 8, short_conv_kernel_size: 3, kda_layers: [1, 2, 4], full_attn_layers: [3] },
      num_experts: 6, num_experts_per_token: 3, num_shared_experts: 2, num_expert_group: 2, topk_group: 1, moe_renormalize: false, first_k_dense_replace: 2,
    });
    expect([c.kda.H, c.kda.d, c.kda.convK]).toEqual([8, 8, 3]);
    expect(c.layerTypes).toEqual(['linear_attention', 'linear_attention', 'full_attention', 'linear_attention']);
    expect(c.sparse).toEqual([false, false, true, true]);
    expect(c.moe).toMatchObject({ nExperts: 6, topk: 3, nShared: 2, nGroup: 2, topkGroup: 1, renormalize: false });
    // transformers' own names, and its default layer pattern (every 4th layer from layer 4 full).
    const d = parseKimiLinear({ ...base, num_hidden_layers: 9, num_local_experts: 8, num_experts_per_tok: 2, n_group: 2, norm_topk_prob: true, linear_head_dim: 16, linear_num_heads: 4 });
    expect(d.layerTypes.map((t) => t[0])).toEqual(['l', 'l', 'l', 'l', 'f', 'l', 'l', 'l', 'f']);
    expect(d.sparse).toEqual([false, true, true, true, true, true, true, true, true]);
    expect(d.moe).toMatchObject({ nExperts: 8, topk: 2, nGroup: 2, renormalize: true });
    expect(d.mla.scale).toBeCloseTo(1 / Math.sqrt(24), 12);
  });

  it.each([
    [{ hidden_act: 'gelu' }, 'config.hidden_act'],
    [{ linear_conv_kernel_dim: 5 }, 'config.linear_conv_kernel_dim'],
    [{ layer_types: ['linear_attention', 'kda_attention', 'full_attention', 'linear_attention'] }, 'config.layer_types[1]'],
    [{ layer_types: ['linear_attention'] }, 'config.layer_types'],
    [{ qk_rope_head_dim: 0 }, 'config.qk_rope_head_dim'],
    [{ num_key_value_heads: 2 }, 'config.num_key_value_heads'],
    [{ mlp_layer_types: ['dense', 'moe', 'sparse', 'sparse'] }, 'config.mlp_layer_types[1]'],
    [{ num_experts: 6, num_experts_per_token: 7 }, 'config.num_experts_per_token'],
    [{ num_experts: 6, num_experts_per_token: 2, num_expert_group: 4 }, 'config.num_expert_group'],
    [{ moe_router_activation_func: 'softmax' }, 'config.moe_router_activation_func'],
  ])('rejects %j naming %s', (patch, field) => {
    let err: unknown;
    try {
      parseKimiLinear({ ...base, ...patch });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain(field);
  });
});

describe('xlstm config.json', () => {
  const base = { model_type: 'xlstm', hidden_size: 4096, num_hidden_layers: 32, vocab_size: 50304, num_heads: 8 };

  it('derives the head sizes and the FFN width as xLSTMConfig and the layer do', () => {
    const c = parseXlstm(base);
    expect([c.qkDim, c.vDim, c.ffnDim]).toEqual([2048, 4096, 10944]);
    expect([c.gateCap, c.logitCap, c.eps, c.normEps, c.useBias, c.fused]).toEqual([15, 30, 1e-6, 1e-6, false, false]);
    const d = parseXlstm({ model_type: 'xlstm', embedding_dim: 64, num_blocks: 3, vocab_size: 100, num_heads: 4, qk_dim_factor: 1, v_dim_factor: 2,
      ffn_proj_factor: 1.5, output_logit_soft_cap: null, weight_mode: 'fused' });
    expect([d.hidden, d.nLayers, d.qkDim, d.vDim, d.ffnDim, d.logitCap, d.fused]).toEqual([64, 3, 64, 128, 128, null, true]);
  });

  it.each([
    [{ num_heads: 3 }, 'config.qk_dim_factor'],
    [{ v_dim_factor: 0.0001 }, 'config.v_dim_factor'],
    [{ weight_mode: 'packed' }, 'config.weight_mode'],
    [{ gate_soft_cap: 0 }, 'config.gate_soft_cap'],
    [{ use_bias: 1 }, 'config.use_bias'],
  ])('rejects %j naming %s', (patch, field) => {
    let err: unknown;
    try {
      parseXlstm({ ...base, ...patch });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain(field);
  });
});
