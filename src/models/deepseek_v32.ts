// DeepSeek-V3.2 (HF DeepseekV32ForCausalLM): DeepSeek-V3 with DeepSeek Sparse Attention (arXiv 2512.02556).
// Every layer's MLA attends only to the `index_topk` past tokens its lightning indexer scores highest:
//   q^I_t = wq_b(q_a_layernorm(q_a_proj x_t))  [index_n_heads, index_head_dim]
//   k^I_s = LayerNorm(wk x_s)                   [index_head_dim], one head, cached per token
//   (RoPE, rotate-half style, on the first qk_rope_head_dim dims of both)
//   w_t   = weights_proj x_t · index_n_heads^-0.5
//   I_t,s = Σ_j w_t,j · ReLU(q^I_t,j · k^I_s · index_head_dim^-0.5),  s ≤ t
// A query at position p with p + 1 ≤ index_topk keeps every causal key (HF's top-k over the causally
// masked scores then still contains them all); beyond that, MLA runs over the top-index_topk keys only
// (the sparse mode of the latent attention op, src/graph/ops-mla.ts), in prefill and decode alike.
// With kvCache q8_0 / q4_0 the latent cache is quantized; the indexer's key cache stays f32 (it ranks
// positions, and its width is a fraction of the latent's).

import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { kvAppend, matmul, norm, rope, type RopeSpec } from '../graph/ops';
import { latentAttention } from '../graph/ops-mla';
import type { Ctx } from '../layers/context';
import { bool, int, layerTypes, rejectIf } from './common';
import { buildDeepseek, MlaAttention, parseDeepseek, type DeepseekConfig, type MlaConfig } from './deepseek_v3';
import type { Family } from './net';
import { keepKvbF32 } from './shared';
import type { RegionSpec } from '../runtime/state';

/** HF DeepseekV32Indexer.k_norm = nn.LayerNorm(index_head_dim, eps=1e-6). */
export const INDEXER_NORM_EPS = 1e-6;

export interface DsaConfig {
  /** index_n_heads, index_head_dim, index_topk */
  nHeads: number;
  headDim: number;
  topk: number;
}

/** DeepSeek-V3's config plus the lightning indexer's settings. */
export interface DeepseekV32Config extends DeepseekConfig {
  dsa: DsaConfig;
}

export class DsaAttention extends MlaAttention {
  readonly wqb: Weight;
  readonly wk: Weight;
  readonly kNormW: number;
  readonly kNormB: number;
  readonly weightsProj: Weight;
  /** The indexer's RoPE: the MLA frequencies on the first qk_rope_head_dim dims, rotate-half. */
  readonly indexRope: RopeSpec;
  /** Cache positions the last query of the last WASM forward attended to (ascending), for inspection. */
  lastSelected: Int32Array = new Int32Array(0);
  /** Session state: the indexer's key cache. */
  indexerState?: RegionSpec;

  constructor(ctx: Ctx, prefix: string, cfg: MlaConfig, readonly dsa: DsaConfig) {
    super(ctx, prefix, cfg);
    const { ws } = ctx;
    const { nHeads: Hi, headDim: Di } = dsa;
    const ip = `${prefix}.indexer`;
    this.wqb = ws.mat(`${ip}.wq_b.weight`, Hi * Di, cfg.qLora);
    this.wk = ws.mat(`${ip}.wk.weight`, Di, cfg.hidden);
    this.kNormW = ws.vec(`${ip}.k_norm.weight`, Di);
    this.kNormB = ws.vec(`${ip}.k_norm.bias`, Di);
    this.weightsProj = ws.mat(`${ip}.weights_proj.weight`, Hi, cfg.hidden);
    const r = cfg.rope;
    this.indexRope = { invFreq: r.invFreq, rotaryDim: cfg.dRope, style: 'neox', attentionFactor: r.attentionFactor };
  }

  specs(maxContext: number): RegionSpec[] {
    this.indexerState ??= { name: `${this.prefix}.indexer.k`, kind: 'kv', perToken: this.dsa.headDim };
    return [...super.specs(maxContext), this.indexerState];
  }

  protected attend(g: Graph, x: Tensor, qa: Tensor | null, qlat: Tensor, olat: Tensor): void {
    const { cfg, dsa } = this;
    const { nHeads: Hi, headDim: Di, topk } = dsa;

    // Indexer keys: LayerNorm, RoPE on the first qk_rope_head_dim dims, cached at the pass's positions.
    const kI = g.tmp(Di);
    matmul(g, kI, x, this.wk);
    norm(g, { w: this.kNormW, b: this.kNormB, eps: INDEXER_NORM_EPS, kind: 'layer' }, kI, kI);
    rope(g, kI, 1, Di, this.indexRope);
    kvAppend(g, this.indexerState!, kI);

    // Indexer queries from the normalised query latent, and the per-head weights.
    const qI = g.tmp(Hi * Di), w = g.tmp(Hi);
    matmul(g, qI, qa!, this.wqb);
    rope(g, qI, Hi, Di, this.indexRope);
    matmul(g, w, x, this.weightsProj);

    latentAttention(g, {
      y: olat, q: qlat, cache: this.latentState, nHeads: cfg.nHeads, dim: this.latentDim, vDim: cfg.kvLora, scale: cfg.scale,
      sparse: { keys: this.indexerState!, q: qI, w, nHeads: Hi, headDim: Di, scale: 1 / Math.sqrt(Di) / Math.sqrt(Hi), topk, picks: this },
    });
  }
}

export const deepseekV32: Family<DeepseekV32Config> = {
  types: ['deepseek_v32'],
  // HF keeps indexer.weights_proj in float32 (_keep_in_fp32_modules).
  keepF32: (name) => keepKvbF32(name) || name.endsWith('.indexer.weights_proj.weight'),
  parse: (c) => {
    const nLayers = int(c, 'num_hidden_layers');
    layerTypes(c, nLayers, ['deepseek_sparse_attention'], () => 'deepseek_sparse_attention');
    // DeepseekV32Attention always takes the q_a_proj → q_a_layernorm path (its indexer reads that
    // latent) and always de-interleaves the MLA rope slice (no rope_interleave field).
    rejectIf(c.q_lora_rank === null, 'q_lora_rank', 'must be set: the DSA indexer reads the query latent');
    const base = parseDeepseek(c, 'interleaved', bool(c, 'mlp_bias', false));
    const dsa: DsaConfig = {
      nHeads: int(c, 'index_n_heads', 64),
      headDim: int(c, 'index_head_dim', 128),
      topk: int(c, 'index_topk', 2048),
    };
    rejectIf(dsa.nHeads < 1, 'index_n_heads', 'must be ≥ 1');
    rejectIf(dsa.headDim < base.mla.dRope, 'index_head_dim', `${dsa.headDim} < qk_rope_head_dim ${base.mla.dRope}: RoPE covers the first qk_rope_head_dim dims`);
    rejectIf(dsa.topk < 1, 'index_topk', 'must be ≥ 1');
    return { ...base, dsa };
  },
  build: (ctx, c) => buildDeepseek(ctx, c, 'dsa_attention', (p, mla) => new DsaAttention(ctx, p, mla, c.dsa)),
};
