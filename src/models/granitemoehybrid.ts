// Granite 4.0-H (GraniteMoeHybridForCausalLM, model_type "granitemoehybrid"): pre-norm decoder whose
// layers are Mamba-2 mixers or GQA attention by layer_types ("mamba"/"linear_attention",
// "attention"/"full_attention"). Attention scores are scaled by attention_multiplier (not
// head_dim^-0.5) and use RoPE only when position_embedding_type is "rope". The feed-forward is a
// top-k-then-softmax MoE (GraniteMoe router) plus an always-on shared SwiGLU expert `shared_mlp`
// (fused input_linear [2S, D] = [gate; up]), or the shared expert alone when num_local_experts is 0.
// Granite µP multipliers: x0 = embedding_multiplier · embed, x += residual_multiplier · branch,
// logits = lm_head(x) / logits_scaling.

import { Attention, type RopeSpec } from '../layers/attention';
import type { Ctx, Ffn } from '../layers/context';
import { Mamba2Mixer, ssmKeepF32, type Mamba2Config } from '../layers/mamba';
import { GatedFfn, parseActivation, rowsOf, type Activation, type GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, bool, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertWeights, hybridMamba2Config } from './shared';
import type { WeightStore } from '../runtime/weights';

/** `shared_mlp.input_linear` [2S, D] holds gate rows then up rows (chunk(2) in GraniteMoeHybridMLP). */
function sharedWeights(ws: WeightStore, p: string, S: number, D: number): GatedWeights {
  const inp = ws.mat(`${p}.shared_mlp.input_linear.weight`, 2 * S, D);
  return { gate: rowsOf(inp, 0, S), up: rowsOf(inp, S, S), down: ws.mat(`${p}.shared_mlp.output_linear.weight`, D, S) };
}

export type GraniteMoeHybridLayerType = 'mamba' | 'linear_attention' | 'attention' | 'full_attention';

export interface GraniteMoeHybridConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  mamba: Mamba2Config;
  attn: AttentionShape;
  attnBias: boolean;
  /** attention_multiplier: the score scale (instead of head_dim^-0.5). */
  attnScale: number;
  layerTypes: GraniteMoeHybridLayerType[];
  /** num_local_experts (0: the shared expert alone) */
  nExperts: number;
  topk: number;
  /** intermediate_size of each routed expert */
  inter: number;
  /** shared_intermediate_size */
  sharedInter: number;
  /** RoPE when position_embedding_type is "rope", with the dims it rotates; else null. */
  rope: { params: RopeParams; rotaryDim: number } | null;
  residualMultiplier: number;
  embeddingMultiplier: number;
  logitsScaling: number;
  tieEmbeddings: boolean;
}

export function parseGraniteMoeHybrid(c: RawConfig): GraniteMoeHybridConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const act = parseActivation(c.hidden_act ?? 'silu');
  const mamba = hybridMamba2Config(c, hidden);
  const attn = attentionShape(c, hidden);
  const types = layerTypes<GraniteMoeHybridLayerType>(c, nLayers, ['mamba', 'linear_attention', 'attention', 'full_attention'], () => 'mamba');
  const E = int(c, 'num_local_experts', 8);
  const topk = int(c, 'num_experts_per_tok', 2);
  rejectIf(E > 0 && (topk < 1 || topk > E), 'num_experts_per_tok', `${topk} must be in [1, ${E}]`);
  const inter = int(c, 'intermediate_size');
  const sharedInter = int(c, 'shared_intermediate_size', 1024);

  const pet = c.position_embedding_type ?? null;
  rejectIf(pet !== null && pet !== 'rope' && pet !== 'nope', 'position_embedding_type', `${JSON.stringify(pet)} is not one of "rope", "nope", null`);
  let rope: GraniteMoeHybridConfig['rope'] = null;
  if (pet === 'rope') {
    // The default rotary embedding spans the whole head; the scaled ones honour partial_rotary_factor.
    const rp = obj(c.rope_parameters);
    const type = rp.rope_type ?? rp.type ?? 'default';
    const prf = type === 'default' ? 1 : rp.partial_rotary_factor ?? 1;
    rejectIf(typeof prf !== 'number', 'rope_parameters.partial_rotary_factor', `must be a number, got ${JSON.stringify(prf)}`);
    rope = { params: ropeParams(c), rotaryDim: Math.floor(attn.headDim * (prf as number)) };
  }
  return {
    hidden, nLayers, vocab, eps, act, mamba, attn,
    attnBias: bool(c, 'attention_bias', false),
    attnScale: num(c, 'attention_multiplier', 1),
    layerTypes: types, nExperts: E, topk, inter, sharedInter, rope,
    residualMultiplier: num(c, 'residual_multiplier', 1),
    embeddingMultiplier: num(c, 'embedding_multiplier', 1),
    logitsScaling: num(c, 'logits_scaling', 1),
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildGraniteMoeHybrid(ctx: Ctx, c: GraniteMoeHybridConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, act, attnBias, nExperts: E, topk, inter: I, sharedInter: S, residualMultiplier } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope: RopeSpec | null = c.rope ? ropeSpec(c.rope.params, headDim, c.rope.rotaryDim) : null;

  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const isAttn = c.layerTypes[i] === 'attention' || c.layerTypes[i] === 'full_attention';
    const mixer = isAttn
      ? new Attention(ctx, `${p}.self_attn`, {
        hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: attnBias, rope, scale: c.attnScale,
      })
      : new Mamba2Mixer(ctx, `${p}.mamba`, c.mamba);
    const shared = sharedWeights(ws, p, S, hidden);
    let ffn: Ffn;
    if (E > 0) {
      const moe = `${p}.block_sparse_moe`;
      const routerName = ws.has(`${moe}.router.layer.weight`) ? `${moe}.router.layer.weight` : `${moe}.router.weight`;
      ffn = new Moe(ctx, {
        hidden, nExperts: E, topk, inter: I, act, routing: { mode: 'topk_softmax' },
        router: ws.mat(routerName, E, hidden), expert: expertWeights(ws, moe, E, I, hidden),
        shared: { w: shared, inter: S },
      });
    } else {
      ffn = new GatedFfn(shared, act);
    }
    blocks.push(new PreNormBlock(ctx, {
      kind: isAttn ? 'attention' : 'mamba2', hidden, mixer, ffn,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
      residualMultiplier,
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    embedScale: c.embeddingMultiplier,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
    logitsDivisor: c.logitsScaling,
  });
}

export const graniteMoeHybrid: Family<GraniteMoeHybridConfig> = {
  types: ['granitemoehybrid'],
  keepF32: (name) => ssmKeepF32(name),
  parse: parseGraniteMoeHybrid,
  build: buildGraniteMoeHybrid,
};
