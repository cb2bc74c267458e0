// GLM-MoE-DSA (HF GlmMoeDsaForCausalLM, GLM-5): DeepSeek-V3.2's decoder — MLA with the compressed
// latent cache, DeepSeek Sparse Attention, the DeepSeekMoE feed-forward (sigmoid router with
// e_score_correction_bias, group-limited selection, shared experts) on `mlp_layer_types` "sparse" /
// after first_k_dense_replace — with GLM's differences:
//  - the lightning indexer rotates its first qk_rope_head_dim dims pairwise-interleaved (HF
//    apply_rotary_pos_emb_interleave: de-interleave, then rotate-half; the same q·k as rotating
//    adjacent pairs in place), like the MLA query/key rope slices;
//  - `indexer_types` (IndexShare): a "shared" layer has no indexer and attends to the positions that the
//    last "full" layer before it selected. Those are recomputed here from that layer's indexer queries,
//    head weights and key cache, which stay alive for the whole pass — the same scores, the same top-k;
//  - group-limited routing gives the experts of the dropped groups −∞ (DeepSeek-V3's router: 0) before
//    the top-k;
//  - GlmMoeDsaConfig's defaults (n_group 1, topk_group 1, index_n_heads 32).
// The indexer (see deepseek_v32.ts):
//   q^I_t = wq_b(q_a_layernorm(q_a_proj x_t)) [index_n_heads, index_head_dim],  k^I_s = LayerNorm(wk x_s)
//   I_t,s = Σ_j (weights_proj x_t)_j · index_n_heads^-½ · ReLU(q^I_t,j · k^I_s · index_head_dim^-½)
// A query at position p attends to every causal key while p + 1 ≤ index_topk, else to its top index_topk.

import type { Weight } from '../kernels/types';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import { kvAppend, matmul, norm, rope, type RopeSpec } from '../graph/ops';
import { latentAttention } from '../graph/ops-mla';
import type { Ctx } from '../layers/context';
import { Moe } from '../layers/moe';
import { bool, int, layerTypes, rejectIf, type RawConfig } from './common';
import { DecoderNet, PreNormBlock, type Block, type DecoderSpec } from './decoder';
import { buildDeepseek, MlaAttention, parseDeepseek, type DeepseekConfig, type MlaConfig } from './deepseek_v3';
import { INDEXER_NORM_EPS, type DsaConfig } from './deepseek_v32';
import type { Family, Net } from './net';
import { keepKvbF32 } from './shared';
import type { RegionSpec } from '../runtime/state';

export type IndexerType = 'full' | 'shared';

export interface GlmMoeDsaConfig extends DeepseekConfig {
  dsa: DsaConfig;
  /** Per layer: runs its own indexer ("full") or reuses the last full layer's selection ("shared"). */
  indexerTypes: IndexerType[];
}

/** The indexer inputs of the last full layer of the pass, read by the shared layers after it. */
export interface IndexShare {
  /** Indexer queries [T, index_n_heads·index_head_dim] and head weights [T, index_n_heads]. */
  q: Tensor | null;
  w: Tensor | null;
  /** The key cache of the last full layer run. */
  keys: RegionSpec | null;
}

/** MLA whose keys are restricted by the lightning indexer, its own ("full") or a previous layer's ("shared"). */
export class GlmDsaAttention extends MlaAttention {
  readonly wqb: Weight | null = null;
  readonly wk: Weight | null = null;
  readonly kNormW: number = 0;
  readonly kNormB: number = 0;
  readonly weightsProj: Weight | null = null;
  /** The indexer's RoPE: the MLA frequencies on the first qk_rope_head_dim dims, adjacent pairs. */
  readonly indexRope: RopeSpec;
  /** Cache positions the last query of the last WASM forward attended to (ascending), for inspection. */
  lastSelected: Int32Array = new Int32Array(0);
  /** Session state: the indexer's key cache (full layers only). */
  indexerState: RegionSpec | null = null;

  constructor(ctx: Ctx, prefix: string, cfg: MlaConfig, readonly dsa: DsaConfig, readonly shared: boolean, readonly share: IndexShare) {
    super(ctx, prefix, cfg);
    const r = cfg.rope;
    this.indexRope = { invFreq: r.invFreq, rotaryDim: cfg.dRope, style: 'interleaved', attentionFactor: r.attentionFactor };
    if (shared) return;
    const { ws } = ctx;
    const { nHeads: Hi, headDim: Di } = dsa;
    const ip = `${prefix}.indexer`;
    this.wqb = ws.mat(`${ip}.wq_b.weight`, Hi * Di, cfg.qLora);
    this.wk = ws.mat(`${ip}.wk.weight`, Di, cfg.hidden);
    this.kNormW = ws.vec(`${ip}.k_norm.weight`, Di);
    this.kNormB = ws.vec(`${ip}.k_norm.bias`, Di);
    this.weightsProj = ws.mat(`${ip}.weights_proj.weight`, Hi, cfg.hidden);
  }

  specs(maxContext: number): RegionSpec[] {
    if (this.shared) return super.specs(maxContext);
    this.indexerState ??= { name: `${this.prefix}.indexer.k`, kind: 'kv', perToken: this.dsa.headDim };
    return [...super.specs(maxContext), this.indexerState];
  }

  protected attend(g: Graph, x: Tensor, qa: Tensor | null, qlat: Tensor, olat: Tensor): void {
    const { cfg, dsa, share } = this;
    const { nHeads: Hi, headDim: Di, topk } = dsa;
    if (!this.shared) {
      // Indexer keys: LayerNorm, RoPE on the first qk_rope_head_dim dims, cached at the pass's positions.
      const kI = g.tmp(Di);
      matmul(g, kI, x, this.wk!);
      norm(g, { w: this.kNormW, b: this.kNormB, eps: INDEXER_NORM_EPS, kind: 'layer' }, kI, kI);
      rope(g, kI, 1, Di, this.indexRope);
      kvAppend(g, this.indexerState!, kI);
      // Queries from the normalised query latent, and the per-head weights, kept for the shared layers.
      matmul(g, share.q!, qa!, this.wqb!);
      rope(g, share.q!, Hi, Di, this.indexRope);
      matmul(g, share.w!, x, this.weightsProj!);
      share.keys = this.indexerState;
    }
    latentAttention(g, {
      y: olat, q: qlat, cache: this.latentState, nHeads: cfg.nHeads, dim: this.latentDim, vDim: cfg.kvLora, scale: cfg.scale,
      sparse: { keys: share.keys!, q: share.q!, w: share.w!, nHeads: Hi, headDim: Di, scale: 1 / Math.sqrt(Di) / Math.sqrt(Hi), topk, picks: this },
    });
  }
}

/** The DeepSeek decoder with the indexer queries and weights allocated for the whole pass. */
export class GlmDsaNet extends DecoderNet {
  constructor(ctx: Ctx, d: DecoderSpec, readonly share: IndexShare, readonly dsa: DsaConfig) {
    super(ctx, d);
  }

  forward(g: Graph, all: boolean, output?: ForwardOutput): Tensor {
    const { nHeads: Hi, headDim: Di } = this.dsa;
    this.share.q = g.tmp(Hi * Di);
    this.share.w = g.tmp(Hi);
    this.share.keys = null;
    return super.forward(g, all, output);
  }
}

/**
 * GlmMoeDsaConfig's indexer_types when the config lists none: from index_topk_pattern ("FSS…" or a
 * list), else layer i is full iff max(i − index_skip_topk_offset + 1, 0) is a multiple of
 * index_topk_freq (defaults 2 and 1: every layer full).
 */
function indexerSchedule(c: RawConfig, nLayers: number): unknown[] {
  const pattern = c.index_topk_pattern;
  if (typeof pattern === 'string') return [...pattern].map((ch) => ({ F: 'full', S: 'shared' })[ch] ?? ch);
  if (Array.isArray(pattern)) return pattern;
  rejectIf(pattern !== undefined && pattern !== null, 'index_topk_pattern', 'must be a string of F / S or a list');
  const freq = Math.max(int(c, 'index_topk_freq', 1), 1);
  const offset = int(c, 'index_skip_topk_offset', 2);
  return Array.from({ length: nLayers }, (_, i) => (Math.max(i - offset + 1, 0) % freq === 0 ? 'full' : 'shared'));
}

export function parseGlmMoeDsa(c: RawConfig): GlmMoeDsaConfig {
  const nLayers = int(c, 'num_hidden_layers');
  layerTypes(c, nLayers, ['deepseek_sparse_attention'], () => 'deepseek_sparse_attention');
  // The indexer reads the query latent: the q_a_proj → q_a_layernorm path is required.
  rejectIf(c.q_lora_rank === null, 'q_lora_rank', 'must be set: the DSA indexer reads the query latent');
  // GlmMoeDsaConfig defaults: n_group 1, topk_group 1, first_k_dense_replace 3.
  const base = parseDeepseek({ n_group: 1, topk_group: 1, ...c }, 'interleaved', bool(c, 'mlp_bias', false));
  const dsa: DsaConfig = {
    nHeads: int(c, 'index_n_heads', 32),
    headDim: int(c, 'index_head_dim', 128),
    topk: int(c, 'index_topk', 2048),
  };
  rejectIf(dsa.nHeads < 1, 'index_n_heads', 'must be ≥ 1');
  rejectIf(dsa.headDim < base.mla.dRope, 'index_head_dim', `${dsa.headDim} < qk_rope_head_dim ${base.mla.dRope}: RoPE covers the first qk_rope_head_dim dims`);
  rejectIf(dsa.topk < 1, 'index_topk', 'must be ≥ 1');
  const it = c.indexer_types ?? indexerSchedule(c, nLayers);
  rejectIf(!Array.isArray(it) || it.length !== nLayers, c.indexer_types ? 'indexer_types' : 'index_topk_pattern', `must give "full" / "shared" for each of the ${nLayers} layers`);
  (it as unknown[]).forEach((t, i) => rejectIf(t !== 'full' && t !== 'shared', `indexer_types[${i}]`, `${JSON.stringify(t)} is not "full" or "shared"`));
  rejectIf((it as unknown[])[0] === 'shared', 'indexer_types[0]', 'is "shared", but no earlier layer selects positions');
  return { ...base, dsa, indexerTypes: it as IndexerType[] };
}

/** GlmMoeDsaTopkRouter: the experts of the groups not kept get −∞ for the selection. */
function maskDroppedGroups(ctx: Ctx, b: Block): Block {
  if (!(b instanceof PreNormBlock) || !(b.s.ffn instanceof Moe)) return b;
  const m = b.s.ffn.cfg;
  return new PreNormBlock(ctx, { ...b.s, ffn: new Moe(ctx, { ...m, routing: { ...m.routing, maskFill: -Infinity } }) });
}

export function buildGlmMoeDsa(ctx: Ctx, c: GlmMoeDsaConfig): Net {
  const share: IndexShare = { q: null, w: null, keys: null };
  let i = 0;
  const inner = buildDeepseek(ctx, c, 'dsa_attention', (p, mla) => new GlmDsaAttention(ctx, p, mla, c.dsa, c.indexerTypes[i++] === 'shared', share)) as DecoderNet;
  return new GlmDsaNet(ctx, { ...inner.d, blocks: inner.d.blocks.map((b) => maskDroppedGroups(ctx, b)) }, share, c.dsa);
}

export const glmMoeDsa: Family<GlmMoeDsaConfig> = {
  types: ['glm_moe_dsa'],
  // HF keeps indexer.weights_proj in float32 (_keep_in_fp32_modules).
  keepF32: (name) => keepKvbF32(name) || name.endsWith('.indexer.weights_proj.weight'),
  // The multi-token-prediction layer stored after the last decoder layer (model.layers.<num_hidden_layers>.*).
  ignore: (name, config) => name.startsWith(`model.layers.${Number(config.num_hidden_layers)}.`),
  parse: parseGlmMoeDsa,
  build: buildGlmMoeDsa,
};
