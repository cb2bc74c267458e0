// MiniMax-01 (MiniMaxForCausalLM): lightning-attention layers and softmax GQA layers (`layer_types`),
// each followed by a Mixtral-style MoE, in an unusual residual wiring where the residual stream is
// the *normed* input (HF MiniMaxDecoderLayer):
//   h = RMSNorm₁(x);  y = α_attn·h + β_attn·mixer(h)
//   h' = RMSNorm₂(y); x' = α_mlp·h' + β_mlp·MoE(h')
// with (α, β) = linear_attn_{alpha,beta}_factor or full_attn_{alpha,beta}_factor, mlp_{alpha,beta}_factor.
//
// Lightning attention (HF MiniMaxLightningAttention), per head h of H, layer l of L:
//   [q k v] = SiLU(qkv_proj x)                (per head [q d | k d | v d]; no scale, no RoPE)
//   s_h = (2^(−8/H))^(h+1) · (1 − l/(L−1+1e−5) + 1e−5)
//   S ← exp(−s_h) S + k vᵀ;  o = Sᵀ q          (S [d, d] per head, f32)
//   out = out_proj( sigmoid(output_gate x) ⊙ RMSNorm_{H·d}(o) )   (that RMSNorm has eps 1e−6)
// HF's block-wise prefill (block_size) is the chunked form of the same recurrence.

import type { Graph, Tensor } from '../graph/graph';
import { add, matmul, mulSigmoid, norm, scale, silu } from '../graph/ops';
import { lightningAttention } from '../graph/ops-conv';
import type { Weight } from '../kernels/types';
import { Attention } from '../layers/attention';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { parseActivation, type Activation } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, type Block, type NormSpec } from './decoder';
import type { Family, Net } from './net';
import { expertCount, expertWeights, slidingWindow } from './shared';
import type { RegionSpec } from '../runtime/state';

export interface LightningConfig {
  hidden: number;
  H: number;
  d: number;
  layer: number;
  nLayers: number;
  /** block_size of HF's block-wise prefill */
  blockSize: number;
}

/** HF MiniMaxLightningAttention.get_slope_rate, in its float32 steps. */
export function lightningSlopes(H: number, layer: number, nLayers: number): Float32Array {
  const f = Math.fround;
  const base = 1 / 2 ** (8 / H);
  const factor = 1 - layer / (nLayers - 1 + 1e-5) + 1e-5;
  const s = new Float32Array(H);
  for (let h = 0; h < H; h++) s[h] = f(f(base ** (h + 1)) * factor);
  return s;
}

export class LightningAttention implements Mixer {
  readonly qkv: Weight;
  readonly gate: Weight;
  readonly out: Weight;
  readonly normW: number;
  /** s_h, f32[H] in the arena */
  readonly slopes: number;

  /** Session state: the per-head lightning-attention state [H, d, d]. */
  readonly kvState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: LightningConfig) {
    const { ws } = ctx;
    const { hidden, H, d } = cfg;
    this.qkv = ws.mat(`${prefix}.qkv_proj.weight`, 3 * H * d, hidden);
    this.gate = ws.mat(`${prefix}.output_gate.weight`, H * d, hidden);
    this.out = ws.mat(`${prefix}.out_proj.weight`, hidden, H * d);
    this.normW = ws.vec(`${prefix}.norm.weight`, H * d);
    // HF saves slope_rate as a persistent buffer and from_pretrained uses the file's values.
    this.slopes = ws.has(`${prefix}.slope_rate`)
      ? ws.vec(`${prefix}.slope_rate`, H)
      : ctx.k.arena.putF32(lightningSlopes(H, cfg.layer, cfg.nLayers)).ptr;
    this.kvState = { name: `${this.prefix}.S`, kind: 'fixed', floats: this.cfg.H * this.cfg.d * this.cfg.d };
  }

  specs(): RegionSpec[] {
    return [this.kvState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { H, d, blockSize } = this.cfg;
    const n = H * d;
    const qkv = g.tmp(3 * n), o = g.tmp(n), gate = g.tmp(n);
    matmul(g, qkv, x, this.qkv);
    silu(g, qkv, qkv);
    lightningAttention(g, o, qkv, { state: this.kvState, slopes: this.slopes, H, d, blockSize });
    norm(g, { w: this.normW, eps: 1e-6 }, o, o);
    matmul(g, gate, x, this.gate);
    mulSigmoid(g, o, o, gate);
    matmul(g, out, o, this.out);
  }
}

/** MiniMaxDecoderLayer: residuals taken from the normed inputs, each branch weighted by (α, β). */
export class MiniMaxBlock implements Block {
  constructor(
    readonly ctx: Ctx, readonly kind: string, readonly hidden: number,
    readonly mixer: Mixer, readonly ffn: Ffn, readonly norm1: NormSpec, readonly norm2: NormSpec,
    readonly attn: { alpha: number; beta: number }, readonly mlp: { alpha: number; beta: number },
  ) {}
  specs(maxContext: number): RegionSpec[] {
    return this.mixer.specs(maxContext);
  }
  forward(g: Graph, x: Tensor): void {
    const o = g.tmp(this.hidden);
    const branch = (f: { alpha: number; beta: number }) => {
      scale(g, x, x, f.alpha);
      scale(g, o, o, f.beta);
      add(g, x, x, o);
    };
    norm(g, this.norm1, x, x);
    this.mixer.forward(g, x, o);
    branch(this.attn);
    norm(g, this.norm2, x, x);
    this.ffn.forward(g, x, o);
    branch(this.mlp);
  }
}

export type MiniMaxLayerType = 'linear_attention' | 'full_attention';

/** The (α, β) weights of a residual branch: x' = α·h + β·branch(h). */
export interface BranchFactors {
  alpha: number;
  beta: number;
}

export interface MiniMaxConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  /** Sliding window of the softmax layers, or 0. */
  window: number;
  layerTypes: MiniMaxLayerType[];
  nExperts: number;
  topk: number;
  /** intermediate_size of each expert */
  inter: number;
  /** linear_attn_{alpha,beta}_factor, full_attn_{alpha,beta}_factor, mlp_{alpha,beta}_factor */
  factors: { linearAttn: BranchFactors; fullAttn: BranchFactors; mlp: BranchFactors };
  rope: RopeParams;
  /** block_size of HF's block-wise prefill */
  blockSize: number;
  tieEmbeddings: boolean;
}

export function parseMiniMax(c: RawConfig): MiniMaxConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-5);
  const act = parseActivation(c.hidden_act ?? 'silu');
  // The lightning qkv activation is ACT2FN[hidden_act]; SiLU is what MiniMax-01 uses.
  rejectIf(act !== 'silu', 'hidden_act', `${JSON.stringify(c.hidden_act)} is not supported (MiniMax uses silu)`);
  const window = slidingWindow(c);
  const types = layerTypes<MiniMaxLayerType>(c, nLayers, ['linear_attention', 'full_attention'], (i) => ((i + 1) % 2 ? 'full_attention' : 'linear_attention'));
  const nExperts = expertCount(c, 8);
  const topk = int(c, 'num_experts_per_tok', 2);
  rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
  const inter = int(c, 'intermediate_size');
  const factor = (f: string): BranchFactors => ({ alpha: num(c, `${f}_alpha_factor`, 1), beta: num(c, `${f}_beta_factor`, 1) });
  // The default RoPE here rotates the whole head whatever partial_rotary_factor says; the scaled types
  // would build partial tables that HF's full-head apply_rotary_pos_emb cannot take.
  const rp = obj(c.rope_parameters), rs = obj(c.rope_scaling);
  const ropeType = rp.rope_type ?? rs.rope_type ?? rs.type ?? 'default';
  const prf = rp.partial_rotary_factor ?? c.partial_rotary_factor ?? 1;
  rejectIf(ropeType !== 'default' && prf !== 1, 'rope_parameters.partial_rotary_factor', `${prf} is not supported with rope_type ${JSON.stringify(ropeType)}`);
  return {
    hidden, nLayers, vocab, attn, eps, act, window, layerTypes: types, nExperts, topk, inter,
    factors: { linearAttn: factor('linear_attn'), fullAttn: factor('full_attn'), mlp: factor('mlp') },
    rope: ropeParams(c),
    blockSize: int(c, 'block_size', 256),
    // MiniMaxConfig.tie_word_embeddings defaults to false.
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildMiniMax(ctx: Ctx, c: MiniMaxConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, eps, act, window, nExperts, topk, inter, blockSize } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const rope = ropeSpec(c.rope, headDim);
  // transformers v5 names the MoE `mlp`; earlier conversions `block_sparse_moe`.
  const moeName = ws.has('model.layers.0.block_sparse_moe.gate.weight') ? 'block_sparse_moe' : 'mlp';

  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const linear = c.layerTypes[i] === 'linear_attention';
    const mixer: Mixer = linear
      ? new LightningAttention(ctx, `${p}.self_attn`, { hidden, H: nHeads, d: headDim, layer: i, nLayers, blockSize })
      : new Attention(ctx, `${p}.self_attn`, {
        hidden, nHeads, nKv, headDim, qkvBias: false, oBias: false, rope,
        scale: 1 / Math.sqrt(headDim), window: window || undefined,
      });
    const moe = `${p}.${moeName}`;
    const ffn = new Moe(ctx, {
      hidden, nExperts, topk, inter, act,
      routing: { mode: 'softmax_topk', renormalize: true },
      router: ws.mat(`${moe}.gate.weight`, nExperts, hidden),
      expert: expertWeights(ws, moe, nExperts, inter, hidden),
    });
    blocks.push(new MiniMaxBlock(
      ctx, linear ? 'lightning_attention' : window ? 'sliding_attention' : 'attention', hidden, mixer, ffn,
      { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
      linear ? c.factors.linearAttn : c.factors.fullAttn, c.factors.mlp,
    ));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export const miniMax: Family<MiniMaxConfig> = {
  types: ['minimax'],
  keepF32: (name) => name.endsWith('.slope_rate'),
  // The block-wise prefill's decay tables (HF buffers) are recomputed from slope_rate by the kernel.
  ignore: (name) => /\.(query_decay|key_decay|diagonal_decay)$/.test(name),
  parse: parseMiniMax,
  build: buildMiniMax,
};
