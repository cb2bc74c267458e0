// Mixtral: Mistral's pre-norm decoder with a sparse MoE feed-forward — router p = softmax(W_g x),
// top-k of p renormalised to sum 1, y = Σ_j w_j · SwiGLU_{e_j}(x) — and an optional sliding window on
// every layer. buildMoeLike is shared with the other Llama-shaped MoE decoders (OLMoE, Qwen2-MoE,
// Qwen3-MoE), which differ in q/k norms, biases, routing normalisation and shared / dense layers.

import { ConfigError } from '../formats/errors';
import type { RouteOptions } from '../kernels/moe';
import { Attention, type AttentionConfig } from '../layers/attention';
import type { Ctx, Ffn } from '../layers/context';
import { GatedMlp, parseActivation, rowsOf, type Activation, type GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, int, layerTypes, lmHead, num, rejectIf, ropeSpec } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import type { WeightStore } from './weights';

/**
 * The experts of one MoE block, in whichever layout the checkpoint holds:
 * transformers v5 fused `experts.gate_up_proj` [E, 2I, D] (gate rows first) + `experts.down_proj`
 * [E, D, I]; Mixtral's per-expert `experts.N.w1` (gate) / `w3` (up) / `w2` (down); or the per-expert
 * `experts.N.gate_proj` / `up_proj` / `down_proj` of Qwen-MoE and OLMoE checkpoints.
 */
export function expertWeights(ws: WeightStore, moe: string, E: number, I: number, D: number): (e: number) => GatedWeights {
  if (ws.has(`${moe}.experts.gate_up_proj`)) {
    const shape = ws.shape(`${moe}.experts.gate_up_proj`);
    if (shape.length !== 3 || shape[0] !== E || shape[1] !== 2 * I || shape[2] !== D) {
      throw new ConfigError(`tensors["${moe}.experts.gate_up_proj"].shape`, `is [${shape}], expected [${E}, ${2 * I}, ${D}]`);
    }
    return (e) => {
      const gu = ws.slice(`${moe}.experts.gate_up_proj`, e, 2 * I, D);
      return { gate: rowsOf(gu, 0, I), up: rowsOf(gu, I, I), down: ws.slice(`${moe}.experts.down_proj`, e, D, I) };
    };
  }
  if (ws.has(`${moe}.experts.0.w1.weight`)) {
    return (e) => ({
      gate: ws.mat(`${moe}.experts.${e}.w1.weight`, I, D),
      up: ws.mat(`${moe}.experts.${e}.w3.weight`, I, D),
      down: ws.mat(`${moe}.experts.${e}.w2.weight`, D, I),
    });
  }
  if (ws.has(`${moe}.experts.0.gate_proj.weight`)) {
    return (e) => ({
      gate: ws.mat(`${moe}.experts.${e}.gate_proj.weight`, I, D),
      up: ws.mat(`${moe}.experts.${e}.up_proj.weight`, I, D),
      down: ws.mat(`${moe}.experts.${e}.down_proj.weight`, D, I),
    });
  }
  throw new ConfigError(`tensors["${moe}.experts.gate_up_proj"]`, 'missing from the checkpoint (nor per-expert w1/w2/w3 or gate_proj/up_proj/down_proj tensors)');
}

export interface MoeLikeVariant {
  nExperts: number;
  topk: number;
  /** Intermediate size of each routed expert. */
  expertInter: number;
  routing: RouteOptions;
  qkvBias: boolean;
  oBias: boolean;
  qkNorm: AttentionConfig['qkNorm'];
  /** OLMoE clip_qkv. */
  clip?: number;
  /** Sliding window of layer i, or 0. */
  window: (i: number) => number;
  /** Whether layer i's feed-forward is the sparse MoE block (else a dense MLP of intermediate_size). */
  sparse: (i: number) => boolean;
  /** The block's tensor prefix (`…mlp`, or Mixtral's older `…block_sparse_moe`). */
  moePrefix: (layer: string) => string;
  /** Qwen2-MoE shared expert (`shared_expert`, gated by sigmoid(`shared_expert_gate` x)). */
  sharedInter?: number;
  rmsEps: number;
}

export function buildMoeLike(ctx: Ctx, c: any, v: MoeLikeVariant): Net {
  const { ws } = ctx;
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const { nHeads, nKv, headDim } = attentionShape(c, hidden);
  const vocab = int(c, 'vocab_size');
  const eps = v.rmsEps;
  const act: Activation = parseActivation(c.hidden_act ?? 'silu');
  rejectIf(v.topk < 1 || v.topk > v.nExperts, 'num_experts_per_tok', `${v.topk} must be in [1, ${v.nExperts}]`);
  const rope = ropeSpec(c, headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const window = v.window(i);
    const attn = new Attention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv, headDim, qkvBias: v.qkvBias, oBias: v.oBias, qkNorm: v.qkNorm, clip: v.clip,
      rope, scale: 1 / Math.sqrt(headDim), window: window || undefined,
    });
    let ffn: Ffn;
    if (v.sparse(i)) {
      const moe = v.moePrefix(p);
      ffn = new Moe(ctx, {
        hidden, nExperts: v.nExperts, topk: v.topk, inter: v.expertInter, act, routing: v.routing,
        router: ws.mat(`${moe}.gate.weight`, v.nExperts, hidden),
        expert: expertWeights(ws, moe, v.nExperts, v.expertInter, hidden),
        shared: v.sharedInter !== undefined ? {
          inter: v.sharedInter,
          w: {
            gate: ws.mat(`${moe}.shared_expert.gate_proj.weight`, v.sharedInter, hidden),
            up: ws.mat(`${moe}.shared_expert.up_proj.weight`, v.sharedInter, hidden),
            down: ws.mat(`${moe}.shared_expert.down_proj.weight`, hidden, v.sharedInter),
          },
          gate: ws.mat(`${moe}.shared_expert_gate.weight`, 1, hidden),
        } : undefined,
      });
    } else {
      ffn = new GatedMlp(ctx, `${p}.mlp`, hidden, int(c, 'intermediate_size'), act);
    }
    blocks.push(new PreNormBlock(ctx, {
      kind: window ? 'sliding_attention' : 'attention', hidden, mixer: attn, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    // Every MoE config here defaults tie_word_embeddings to False.
    lmHead: lmHead(ws, { ...c, tie_word_embeddings: c.tie_word_embeddings ?? false }, vocab, hidden),
  });
}

/** Number of experts: transformers names it num_local_experts (Mixtral, gpt-oss) or num_experts. */
export function expertCount(c: any, dflt: number): number {
  return c.num_local_experts !== undefined ? int(c, 'num_local_experts') : int(c, 'num_experts', dflt);
}

export const mixtral: Family = {
  types: ['mixtral'],
  build: (ctx, c) => {
    const window = c.sliding_window ?? 0;
    rejectIf(!Number.isInteger(window) || window < 0, 'sliding_window', `must be a non-negative integer or null, got ${JSON.stringify(c.sliding_window)}`);
    // The decoder layer's MoE is `mlp` in transformers v5 checkpoints, `block_sparse_moe` before.
    const v5 = ctx.ws.has('model.layers.0.mlp.gate.weight');
    return buildMoeLike(ctx, c, {
      nExperts: expertCount(c, 8),
      topk: int(c, 'num_experts_per_tok', 2),
      expertInter: int(c, 'intermediate_size'),
      routing: { mode: 'softmax_topk', renormalize: true },
      qkvBias: false,
      oBias: false,
      qkNorm: null,
      window: () => window,
      sparse: () => true,
      moePrefix: (p) => `${p}.${v5 ? 'mlp' : 'block_sparse_moe'}`,
      rmsEps: num(c, 'rms_norm_eps', 1e-5),
    });
  },
};

/** Layer i's window from `layer_types` (sliding layers get `window`), validated. */
export function slidingByType(c: any, nLayers: number, window: number): (i: number) => number {
  const types = layerTypes(c, nLayers, ['full_attention', 'sliding_attention'], () => 'full_attention');
  return (i) => (types[i] === 'sliding_attention' ? window : 0);
}

/** Qwen-MoE's decoder_sparse_step / mlp_only_layers rule for which layers are sparse. */
export function qwenSparseLayers(c: any, nExperts: number): (i: number) => boolean {
  const step = int(c, 'decoder_sparse_step', 1);
  rejectIf(step < 1, 'decoder_sparse_step', 'must be ≥ 1');
  const only = c.mlp_only_layers ?? [];
  rejectIf(!Array.isArray(only) || !only.every((x: unknown) => Number.isInteger(x)), 'mlp_only_layers', 'must be a list of layer indices');
  return (i) => !only.includes(i) && nExperts > 0 && (i + 1) % step === 0;
}
