// Nemotron-H (NemotronHForCausalLM, model_type "nemotron_h"): a stack of pre-norm residual blocks
// x += mixer(RMSNorm(x)), each block's mixer one of (layers_block_type, or the legacy
// hybrid_override_pattern M / * / - / E):
//   Mamba-2 ("linear_attention" / "mamba"): in_proj / out_proj biases by use_bias, Δ clamped below at
//     time_step_min, gated RMSNorm over n_groups slices of d_inner (norm of y ⊙ SiLU(z));
//   attention ("full_attention" / "attention"): GQA without positional encoding and without biases,
//     scale head_dim^-0.5;
//   MLP ("mlp"): non-gated down(act(up(x))), act mlp_hidden_act (relu2);
//   MoE ("moe"): non-gated experts routed as DeepSeek-V3 (sigmoid scores, e_score_correction_bias for
//     the selection, n_group / topk_group, norm_topk_prob, routed_scaling_factor) plus one non-gated
//     shared expert of moe_shared_expert_intermediate_size.
// Embeddings `embeddings` (no scale), final norm `norm_f`; the LM head is its own tensor
// (NemotronHForCausalLM ties nothing). Checkpoints name the backbone `backbone.` (as saved by
// transformers 5.17, and as released) or `model.`; experts per expert or fused [E, I, D].

import { ConfigError } from '../formats/errors';
import type { Graph, Tensor } from '../graph/graph';
import { add, moe, ungatedFfn, type GatedWeights, type MoeSpec, type UngatedAct } from '../graph/ops';
import { Attention } from '../layers/attention';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { ssmKeepF32 } from '../layers/mamba';
import type { WeightStore } from '../runtime/weights';
import type { RegionSpec } from '../runtime/state';
import { bool, int, num, rejectIf, type AttentionShape, type RawConfig } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import { HybridMamba2Mixer, type HybridMamba2Config } from './mamba2_hybrid';
import type { Family, Net } from './net';
import { requireSilu } from './shared';

export type NemotronHLayer = 'mamba' | 'attention' | 'mlp' | 'moe';

export interface NemotronHMoeConfig {
  nExperts: number;
  topk: number;
  /** moe_intermediate_size */
  inter: number;
  /** moe_shared_expert_intermediate_size */
  sharedInter: number;
  nGroup: number;
  topkGroup: number;
  renormalize: boolean;
  routedScaling: number;
}

export interface NemotronHConfig {
  hidden: number;
  vocab: number;
  /** layer_norm_epsilon (block norms, final norm and the Mamba gated norm) */
  eps: number;
  layers: NemotronHLayer[];
  attn: AttentionShape;
  mamba: HybridMamba2Config;
  /** intermediate_size of the "mlp" layers */
  inter: number;
  act: UngatedAct;
  mlpBias: boolean;
  moe: NemotronHMoeConfig | null;
  tieEmbeddings: boolean;
}

const LAYER_NAMES: Record<string, NemotronHLayer> = {
  linear_attention: 'mamba', mamba: 'mamba', M: 'mamba',
  full_attention: 'attention', attention: 'attention', '*': 'attention',
  mlp: 'mlp', '-': 'mlp',
  moe: 'moe', E: 'moe',
};

function parseLayers(c: RawConfig): NemotronHLayer[] {
  const list = c.layers_block_type ?? c.layer_types;
  let names: unknown[];
  let field: string;
  if (Array.isArray(list)) {
    names = list;
    field = c.layers_block_type !== undefined ? 'layers_block_type' : 'layer_types';
  } else if (typeof c.hybrid_override_pattern === 'string') {
    names = [...c.hybrid_override_pattern];
    field = 'hybrid_override_pattern';
  } else {
    throw new ConfigError('config.layers_block_type', 'is required (or hybrid_override_pattern)');
  }
  rejectIf(names.length === 0, field, 'has no layers');
  return names.map((t, i) => {
    const k = typeof t === 'string' ? LAYER_NAMES[t] : undefined;
    if (!k) throw new ConfigError(`config.${field}[${i}]`, `${JSON.stringify(t)} is not a Nemotron-H layer type (linear_attention / mamba, full_attention / attention, mlp, moe)`);
    return k;
  });
}

/** HF NemotronHConfig takes a legacy field name (mamba_n_groups, mamba_d_conv, …) over the current one. */
function legacy(c: RawConfig, current: string, old: string): string {
  return c[old] !== undefined && c[old] !== null ? old : current;
}

function ungatedAct(v: unknown, field: string): UngatedAct {
  const a = v ?? 'relu2';
  if (a === 'relu2') return 'relu2';
  if (a === 'silu' || a === 'swish') return 'silu';
  throw new ConfigError(`config.${field}`, `activation ${JSON.stringify(a)} is not supported for the non-gated MLPs (relu2, silu)`);
}

export function parseNemotronH(c: RawConfig): NemotronHConfig {
  const hidden = int(c, 'hidden_size');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'layer_norm_epsilon', 1e-5);
  const layers = parseLayers(c);

  // NemotronHAttention: head_dim from the config (class default 128), no biases whatever attention_bias says.
  const nHeads = int(c, 'num_attention_heads', 32);
  const nKv = int(c, 'num_key_value_heads', nHeads);
  rejectIf(nKv === 0 || nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
  const attn: AttentionShape = { nHeads, nKv, headDim: int(c, 'head_dim', 128) };

  requireSilu(c, 'mamba_hidden_act');
  const H = int(c, 'mamba_num_heads', 128), P = int(c, 'mamba_head_dim', 64);
  const G = int(c, legacy(c, 'n_groups', 'mamba_n_groups'), 8);
  rejectIf(G < 1 || H % G !== 0, 'n_groups', `${G} does not divide mamba_num_heads ${H}`);
  const dtMin = num(c, legacy(c, 'time_step_min', 'mamba_dt_min'), 0.001);
  const mamba: HybridMamba2Config = {
    hidden, H, P, G, N: int(c, 'ssm_state_size', 128), W: int(c, legacy(c, 'conv_kernel', 'mamba_d_conv'), 4),
    inBias: bool(c, 'use_bias', false), outBias: bool(c, 'use_bias', false),
    convBias: bool(c, legacy(c, 'use_conv_bias', 'mamba_conv_bias'), true),
    // The chunked scan clamps Δ to [time_step_min, ∞) (time_step_limit is not read by the mixer).
    dtLimit: [dtMin, Infinity],
    out: 'norm_after_gate', normGroups: G, normEps: eps,
  };

  let moe: NemotronHMoeConfig | null = null;
  if (layers.includes('moe')) {
    rejectIf(c.moe_latent_size !== undefined && c.moe_latent_size !== null, 'moe_latent_size', 'latent MoE projections are not supported');
    const E = int(c, 'n_routed_experts', 8), topk = int(c, 'num_experts_per_tok', 2);
    rejectIf(E < 1, 'n_routed_experts', 'must be ≥ 1');
    rejectIf(topk < 1 || topk > E, 'num_experts_per_tok', `${topk} must be in [1, ${E}]`);
    const nGroup = int(c, 'n_group', 1), topkGroup = int(c, 'topk_group', 1);
    rejectIf(nGroup < 1 || E % nGroup !== 0 || E / nGroup < 2, 'n_group', `${nGroup} must split the ${E} experts into groups of at least 2`);
    rejectIf(topkGroup < 1 || topkGroup > nGroup, 'topk_group', `${topkGroup} must be in [1, n_group ${nGroup}]`);
    rejectIf(topkGroup * (E / nGroup) < topk, 'topk_group', `${topkGroup} groups of ${E / nGroup} experts hold fewer than num_experts_per_tok ${topk}`);
    moe = {
      nExperts: E, topk, inter: int(c, 'moe_intermediate_size', 7688),
      sharedInter: int(c, 'moe_shared_expert_intermediate_size', 7688),
      nGroup, topkGroup, renormalize: bool(c, 'norm_topk_prob', true), routedScaling: num(c, 'routed_scaling_factor', 1),
    };
  }
  return {
    hidden, vocab, eps, layers, attn, mamba,
    inter: int(c, 'intermediate_size', 21504),
    act: ungatedAct(c.mlp_hidden_act, 'mlp_hidden_act'),
    mlpBias: bool(c, 'mlp_bias', false),
    moe,
    tieEmbeddings: Boolean(c.tie_word_embeddings ?? false),
  };
}

/** NemotronHMLP: up_proj / down_proj (biases by mlp_bias). */
function mlpWeights(ws: WeightStore, p: string, D: number, I: number, bias: boolean): GatedWeights {
  const up = ws.mat(`${p}.up_proj.weight`, I, D);
  return {
    gate: up, up, down: ws.mat(`${p}.down_proj.weight`, D, I),
    upBias: bias ? ws.vec(`${p}.up_proj.bias`, I) : 0, downBias: bias ? ws.vec(`${p}.down_proj.bias`, D) : 0,
  };
}

/** A feed-forward block in the mixer slot of a Nemotron-H layer (no session state). */
class FfnMixer implements Mixer {
  constructor(readonly ffn: Ffn) {}
  specs(): RegionSpec[] {
    return [];
  }
  forward(g: Graph, x: Tensor, out: Tensor): void {
    this.ffn.forward(g, x, out);
  }
}

class UngatedMlp implements Ffn {
  constructor(readonly w: GatedWeights, readonly act: UngatedAct) {}
  forward(g: Graph, x: Tensor, out: Tensor): void {
    ungatedFfn(g, this.w, this.act, x, out);
  }
}

/** NemotronHMoE: routed non-gated experts (one moe op) + the shared expert. */
class NemotronHMoe implements Ffn {
  readonly spec: MoeSpec;
  readonly shared: GatedWeights;
  constructor(ctx: Ctx, p: string, c: NemotronHConfig, m: NemotronHMoeConfig) {
    const { ws } = ctx;
    const { hidden: D } = c;
    const { nExperts: E, inter: I } = m;
    const fusedUp = `${p}.experts.up_proj`, fusedDown = `${p}.experts.down_proj`;
    let expert: (e: number) => GatedWeights;
    if (ws.has(fusedUp)) {
      const s = ws.shape(fusedUp);
      if (s.length !== 3 || s[0] !== E || s[1] !== I || s[2] !== D) throw new ConfigError(`tensors["${fusedUp}"].shape`, `is [${s}], expected [${E}, ${I}, ${D}]`);
      expert = (e) => {
        const up = ws.slice(fusedUp, e, I, D);
        return { gate: up, up, down: ws.slice(fusedDown, e, D, I) };
      };
    } else {
      expert = (e) => mlpWeights(ws, `${p}.experts.${e}`, D, I, false);
    }
    const experts: (GatedWeights | null)[] = new Array(E).fill(null);
    this.spec = {
      name: p, hidden: D, nExperts: E, topk: m.topk, inter: I, act: c.act, ungated: true,
      routing: {
        mode: 'sigmoid', renormalize: m.renormalize, bias: ws.vec(`${p}.gate.e_score_correction_bias`, E),
        nGroup: m.nGroup, topkGroup: m.topkGroup, routedScaling: m.routedScaling, maskFill: -Infinity,
      },
      router: ws.mat(`${p}.gate.weight`, E, D),
      expert: (e) => (experts[e] ??= expert(e)),
    };
    this.shared = mlpWeights(ws, `${p}.shared_experts`, D, m.sharedInter, c.mlpBias);
  }
  forward(g: Graph, x: Tensor, out: Tensor): void {
    const s = g.tmp(x.width);
    moe(g, out, x, this.spec);
    ungatedFfn(g, this.shared, this.spec.act as UngatedAct, x, s);
    add(g, out, out, s);
  }
}

export function buildNemotronH(ctx: Ctx, c: NemotronHConfig): Net {
  const { ws } = ctx;
  const { hidden, vocab, eps } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const root = ws.has('backbone.embeddings.weight') || ws.has('backbone.embedding.weight') ? 'backbone' : 'model';
  const embedName = ws.has(`${root}.embeddings.weight`) ? `${root}.embeddings.weight` : `${root}.embedding.weight`;
  const blocks: Block[] = c.layers.map((kind, i) => {
    const p = `${root}.layers.${i}`, mx = `${p}.mixer`;
    let mixer: Mixer;
    if (kind === 'mamba') mixer = new HybridMamba2Mixer(ctx, mx, c.mamba);
    else if (kind === 'attention') mixer = new Attention(ctx, mx, { hidden, nHeads, nKv, headDim, qkvBias: false, oBias: false, rope: null, scale: 1 / Math.sqrt(headDim) });
    else if (kind === 'mlp') mixer = new FfnMixer(new UngatedMlp(mlpWeights(ws, mx, hidden, c.inter, c.mlpBias), c.act));
    else mixer = new FfnMixer(new NemotronHMoe(ctx, mx, c, c.moe!));
    return new PreNormBlock(ctx, {
      kind: kind === 'mamba' ? 'mamba2' : kind, hidden, mixer, ffn: null,
      preMixer: { w: ws.vec(`${p}.norm.weight`, hidden), eps },
    });
  });
  // The head is lm_head.weight whenever the checkpoint has it; a checkpoint without one can only
  // mean the embeddings (tie_word_embeddings).
  if (!ws.has('lm_head.weight') && !c.tieEmbeddings) throw new ConfigError('tensors["lm_head.weight"]', 'missing while tie_word_embeddings is false');
  const lmHead = ws.mat(ws.has('lm_head.weight') ? 'lm_head.weight' : embedName, vocab, hidden);
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat(embedName, vocab, hidden), blocks,
    finalNorm: { w: ws.vec(`${root}.norm_f.weight`, hidden), eps },
    lmHead,
  });
}

export const nemotronH: Family<NemotronHConfig> = {
  types: ['nemotron_h'],
  keepF32: (name) => ssmKeepF32(name) || name.endsWith('.e_score_correction_bias'),
  // Multi-token-prediction layers are not part of the causal LM (HF ignores them on load).
  ignore: (name) => name.startsWith('mtp.'),
  parse: parseNemotronH,
  build: buildNemotronH,
};
