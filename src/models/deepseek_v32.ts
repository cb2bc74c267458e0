// DeepSeek-V3.2 (HF DeepseekV32ForCausalLM): DeepSeek-V3 with DeepSeek Sparse Attention (arXiv 2512.02556).
// Every layer's MLA attends only to the `index_topk` past tokens its lightning indexer scores highest:
//   q^I_t = wq_b(q_a_layernorm(q_a_proj x_t))  [index_n_heads, index_head_dim]
//   k^I_s = LayerNorm(wk x_s)                   [index_head_dim], one head, cached per token
//   (RoPE, rotate-half style, on the first qk_rope_head_dim dims of both)
//   w_t   = weights_proj x_t · index_n_heads^-0.5
//   I_t,s = Σ_j w_t,j · ReLU(q^I_t,j · k^I_s · index_head_dim^-0.5),  s ≤ t
// A query at position p with p + 1 ≤ index_topk keeps every causal key (HF's top-k over the causally
// masked scores then still contains them all); beyond that, MLA runs over the top-index_topk keys only
// (topkSelect + attendSelected), in prefill and decode alike.

import { attendSelected, attention, dsaIndexerScores, topkSelect } from '../kernels/attention';
import { layerNorm } from '../kernels/norm';
import { rope } from '../kernels/rope';
import type { Buf } from '../kernels/runtime';
import type { Weight } from '../kernels/types';
import type { Ctx } from '../layers/context';
import { bool, int, layerTypes, rejectIf } from './common';
import { buildDeepseek, MlaAttention, parseDeepseek, type DeepseekConfig, type MlaConfig } from './deepseek_v3';
import type { Family } from './net';
import { keepKvbF32 } from './shared';
import type { RegionSpec, SeqState } from '../runtime/state';

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

/** Per-query indexer scores over the whole context: one buffer per arena, sized at state layout. */
const scoreBufs = new WeakMap<object, Buf>();

export class DsaAttention extends MlaAttention {
  readonly wqb: Weight;
  readonly wk: Weight;
  readonly kNormW: number;
  readonly kNormB: number;
  readonly weightsProj: Weight;
  /** Cache positions the last query of the last forward attended to (ascending), for inspection. */
  lastSelected: Int32Array = new Int32Array(0);
  /** Session state: the indexer's key cache. */
  indexerState?: RegionSpec;

  constructor(ctx: Ctx, prefix: string, cfg: MlaConfig, readonly dsa: DsaConfig) {
    super(ctx, prefix, cfg);
    const { ws } = ctx;
    const { nHeads: Hi, headDim: Di, topk } = dsa;
    const ip = `${prefix}.indexer`;
    this.wqb = ws.mat(`${ip}.wq_b.weight`, Hi * Di, cfg.qLora);
    this.wk = ws.mat(`${ip}.wk.weight`, Di, cfg.hidden);
    this.kNormW = ws.vec(`${ip}.k_norm.weight`, Di);
    this.kNormB = ws.vec(`${ip}.k_norm.bias`, Di);
    this.weightsProj = ws.mat(`${ip}.weights_proj.weight`, Hi, cfg.hidden);
    const T = ctx.maxChunk, s = ctx.scratch;
    s.need('dsa.q', T * Hi * Di);
    s.need('dsa.w', T * Hi);
    s.need('dsa.idx', topk);
  }

  specs(maxContext: number): RegionSpec[] {
    const arena = this.ctx.k.arena;
    const have = scoreBufs.get(arena);
    if (!have || have.n < maxContext) scoreBufs.set(arena, arena.f32buf(maxContext));
    this.indexerState ??= { name: `${this.prefix}.indexer.k`, kind: 'kv', perToken: this.dsa.headDim };
    return [...super.specs(maxContext), this.indexerState];
  }

  protected attend(state: SeqState, x: number, qa: number, qlat: number, olat: number, T: number, pos0: number): void {
    const { ctx, cfg, dsa } = this;
    const { k } = ctx;
    const s = ctx.scratch;
    const { nHeads: Hi, headDim: Di, topk } = dsa;
    const H = cfg.nHeads, L = this.latentDim, R = cfg.kvLora;
    const lat = state.ptr(this.latentState);
    const kI = state.ptr(this.indexerState!);

    // Indexer keys of this chunk straight into their cache rows; RoPE (rotate-half) on the first
    // qk_rope_head_dim dims with the MLA position tables.
    const pos = s.get('pos');
    const r = cfg.rope;
    const kRows = kI + pos0 * Di * 4;
    ctx.mm(kRows, x, this.wk, T);
    layerNorm(k, kRows, kRows, this.kNormW, this.kNormB, T, Di, INDEXER_NORM_EPS);
    rope(k, kRows, T, 1, Di, pos, this.invFreq, cfg.dRope, 'neox', r.attentionFactor);

    // Rows whose position p has p + 1 ≤ index_topk see every causal key: one dense call.
    const nDense = Math.max(0, Math.min(T, topk - pos0));
    if (nDense > 0) {
      attention(k, olat, qlat, lat, lat, {
        T: nDense, qPos0: pos0, nHeads: H, nKv: 1, headDim: L, vDim: R, scale: cfg.scale, kStride: L, vStride: L,
      });
      if (nDense === T) {
        const n = pos0 + T;
        this.lastSelected = Int32Array.from({ length: n }, (_, i) => i);
        return;
      }
    }

    const qI = s.get('dsa.q'), w = s.get('dsa.w'), idx = s.get('dsa.idx');
    ctx.mm(qI, qa, this.wqb, T);
    rope(k, qI, T, Hi, Di, pos, this.invFreq, cfg.dRope, 'neox', r.attentionFactor);
    ctx.mm(w, x, this.weightsProj, T);
    const scores = scoreBufs.get(k.arena)!.ptr;
    for (let t = nDense; t < T; t++) {
      const n = pos0 + t + 1;
      dsaIndexerScores(k, scores, qI + t * Hi * Di * 4, w + t * Hi * 4, kI, n, Hi, Di);
      const m = topkSelect(k, idx, scores, n, topk);
      attendSelected(k, olat + t * H * R * 4, qlat + t * H * L * 4, lat, lat, idx, m, {
        nHeads: H, nKv: 1, headDim: L, vDim: R, scale: cfg.scale, kStride: L, vStride: L,
      });
      if (t === T - 1) this.lastSelected = k.arena.i32(idx, m).slice();
    }
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
