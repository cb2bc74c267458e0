// RecurrentGemma / Griffin (RecurrentGemmaForCausalLM): pre-norm residual blocks whose temporal
// mixer follows `block_types` cyclically — RG-LRU recurrent blocks or local sliding-window MQA —
// each followed by a GeGLU MLP (intermediate_size / 2, with biases). RMSNorms are (1 + w); the
// embeddings are scaled by √hidden rounded to bfloat16 (HF keeps `normalizer` as a bf16 buffer);
// logits are soft-capped at logits_soft_cap.
//
// Recurrent block (HF RecurrentGemmaRecurrentBlock + RecurrentGemmaRglru), W = lru_width, H heads:
//   y = GeLU_tanh(linear_y x);  xb = conv1d_K(linear_x x)            (depthwise, with bias)
//   per head (block-diagonal [H, W/H, W/H], applied as xb_h · M_h):
//     i = sigmoid(xb M_i + b_i);  r = sigmoid(xb M_a + b_a)
//     log a = −8 r softplus(Λ);  h ← a h + (i ⊙ xb) sqrt(1 − a²)   (a = 0, multiplier 1 at position 0)
//   out = linear_out(h ⊙ y)

import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { causalConv, linear } from '../graph/ops';
import { geluTanh, rglru, type RglruSpec } from '../graph/ops-recurrent';
import { Attention } from '../layers/attention';
import type { Ctx, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation } from '../layers/mlp';
import { bool, int, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import type { RegionSpec } from '../runtime/state';

/** x rounded to the nearest bfloat16 (ties to even), as torch.tensor(x, dtype=torch.bfloat16). */
export function bf16Round(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000;
  return f[0];
}

export interface RglruConfig {
  hidden: number;
  /** lru_width */
  W: number;
  /** num_attention_heads: blocks of the block-diagonal gates */
  H: number;
  /** conv1d_width */
  convK: number;
}

export class RecurrentBlock implements Mixer {
  readonly linY: Weight;
  readonly linX: Weight;
  readonly linOut: Weight;
  readonly bY: number;
  readonly bX: number;
  readonly bOut: number;
  readonly convW: number;
  readonly convB: number;
  /** Per head, the input / recurrence gate matrices transposed in place to Linear layout [out, in]. */
  readonly gateI: Weight[] = [];
  readonly gateA: Weight[] = [];
  readonly bI: number;
  readonly bA: number;
  /** −8·softplus(Λ) [W]: log a = r ⊙ this */
  readonly logABase: Float32Array;
  /** The RG-LRU's gates, as the rglru op takes them. */
  readonly lru: RglruSpec;

  /** Session state: the conv window. */
  readonly convState: RegionSpec;
  /** Session state: the RG-LRU hidden state. */
  readonly hState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: RglruConfig) {
    const { ws } = ctx;
    const { hidden, W, H, convK } = cfg;
    const bw = W / H;
    this.linY = ws.mat(`${prefix}.linear_y.weight`, W, hidden);
    this.linX = ws.mat(`${prefix}.linear_x.weight`, W, hidden);
    this.linOut = ws.mat(`${prefix}.linear_out.weight`, hidden, W);
    this.bY = ws.vec(`${prefix}.linear_y.bias`, W);
    this.bX = ws.vec(`${prefix}.linear_x.bias`, W);
    this.bOut = ws.vec(`${prefix}.linear_out.bias`, hidden);
    this.convW = ws.vec(`${prefix}.conv_1d.weight`, W * convK);
    this.convB = ws.vec(`${prefix}.conv_1d.bias`, W);
    const lru = `${prefix}.rg_lru`;
    for (const [name, list] of [['input_gate_weight', this.gateI], ['recurrent_gate_weight', this.gateA]] as const) {
      const ptr = ws.vec(`${lru}.${name}`, H * bw * bw);
      // HF applies x · M (torch.baddbmm); the matmul kernel computes x · Wᵀ, so each block is transposed.
      const m = ctx.f32(ptr, H * bw * bw);
      for (let h = 0; h < H; h++) {
        const o = h * bw * bw;
        for (let i = 0; i < bw; i++) {
          for (let j = i + 1; j < bw; j++) {
            const t = m[o + i * bw + j];
            m[o + i * bw + j] = m[o + j * bw + i];
            m[o + j * bw + i] = t;
          }
        }
        list.push({ ptr: ptr + o * 4, dtype: 'f32', rows: bw, cols: bw });
      }
    }
    this.bI = ws.vec(`${lru}.input_gate_bias`, W);
    this.bA = ws.vec(`${lru}.recurrent_gate_bias`, W);
    const lambda = ctx.f32(ws.vec(`${lru}.recurrent_param`, W), W);
    this.logABase = new Float32Array(W);
    for (let c = 0; c < W; c++) this.logABase[c] = -8 * (lambda[c] > 20 ? lambda[c] : Math.log1p(Math.exp(lambda[c])));

    this.lru = { W, H, gateI: this.gateI, gateA: this.gateA, bI: this.bI, bA: this.bA, logABase: this.logABase };
    this.convState = { name: `${this.prefix}.conv`, kind: 'fixed', floats: this.cfg.W * (this.cfg.convK - 1) };
    this.hState = { name: `${this.prefix}.h`, kind: 'fixed', floats: this.cfg.W };
  }

  specs(): RegionSpec[] {
    return [this.convState, this.hState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { W, convK } = this.cfg;
    const y = g.tmp(W), xb = g.tmp(W), hs = g.tmp(W);
    linear(g, y, x, this.linY, this.bY);
    geluTanh(g, y);
    linear(g, xb, x, this.linX, this.bX);
    causalConv(g, xb, xb, { w: this.convW, bias: this.convB, state: this.convState, W: convK, act: 'none' });
    rglru(g, hs, xb, y, this.hState, this.lru);
    linear(g, out, hs, this.linOut, this.bOut);
  }
}

export type RecurrentGemmaBlockType = 'recurrent' | 'attention';

export interface RecurrentGemmaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  nHeads: number;
  nKv: number;
  /** hidden_size / num_attention_heads */
  headDim: number;
  /** rms_norm_eps */
  eps: number;
  /** lru_width */
  lruWidth: number;
  /** conv1d_width */
  convK: number;
  /** attention_window_size */
  window: number;
  act: Activation;
  /** block_types, repeated cyclically over the layers. */
  blockTypes: RecurrentGemmaBlockType[];
  /** int(head_dim · partial_rotary_factor) */
  rotaryDim: number;
  rope: RopeParams;
  attnBias: boolean;
  /** The MLP width: intermediate_size / 2. */
  inter: number;
  /** logits_soft_cap, if > 0. */
  finalSoftcap?: number;
  tieEmbeddings: boolean;
}

export function parseRecurrentGemma(c: RawConfig): RecurrentGemmaConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const nHeads = int(c, 'num_attention_heads');
  const nKv = int(c, 'num_key_value_heads', nHeads);
  // RecurrentGemmaConfig sets head_dim = hidden_size // num_attention_heads whatever the file says.
  const headDim = Math.floor(hidden / nHeads);
  const vocab = int(c, 'vocab_size');
  const eps = num(c, 'rms_norm_eps', 1e-6);
  const W = int(c, 'lru_width', hidden);
  const convK = int(c, 'conv1d_width', 4);
  const window = int(c, 'attention_window_size', 2048);
  const act = parseActivation(c.hidden_activation ?? 'gelu_pytorch_tanh', 'hidden_activation');
  rejectIf(nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
  rejectIf(W % nHeads !== 0, 'lru_width', `${W} is not a multiple of num_attention_heads ${nHeads}`);
  rejectIf(convK < 2 || convK > 4, 'conv1d_width', `${convK} is not supported (2 … 4)`);
  // The recurrent block's y branch uses ACT2FN[hidden_activation], as the MLP does.
  rejectIf(act !== 'gelu_tanh', 'hidden_activation', `${JSON.stringify(c.hidden_activation)} is not supported (gelu_pytorch_tanh)`);
  const pattern = c.block_types ?? ['recurrent', 'recurrent', 'attention'];
  rejectIf(!Array.isArray(pattern) || !pattern.length || pattern.some((t) => t !== 'recurrent' && t !== 'attention'), 'block_types', 'must be a non-empty list of "recurrent" / "attention"');
  const prf = num(obj(c.rope_parameters), 'partial_rotary_factor', num(c, 'partial_rotary_factor', 0.5));
  const rotaryDim = Math.floor(headDim * prf);
  rejectIf(rotaryDim < 2 || rotaryDim % 2 !== 0, 'partial_rotary_factor', `gives ${rotaryDim} rotary dims of head_dim ${headDim}; need an even number ≥ 2`);
  const rtype = obj(c.rope_parameters).rope_type ?? obj(c.rope_scaling).rope_type ?? 'default';
  rejectIf(rtype !== 'default', 'rope_parameters.rope_type', `${JSON.stringify(rtype)} is not supported by RecurrentGemma (default only)`);
  const cap = num(c, 'logits_soft_cap', 30);
  return {
    hidden, nLayers, vocab, nHeads, nKv, headDim, eps, lruWidth: W, convK, window, act,
    blockTypes: pattern as RecurrentGemmaBlockType[], rotaryDim, rope: ropeParams(c),
    attnBias: bool(c, 'attention_bias', false),
    inter: Math.floor(int(c, 'intermediate_size') / 2),
    finalSoftcap: cap > 0 ? cap : undefined,
    tieEmbeddings: tiedEmbeddings(c, true),
  };
}

export function buildRecurrentGemma(ctx: Ctx, c: RecurrentGemmaConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, nHeads, nKv, headDim, eps, lruWidth: W, convK, window, act, attnBias, inter } = c;
  const pattern = c.blockTypes;
  const rope = ropeSpec(c.rope, headDim, c.rotaryDim);

  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const recurrent = pattern[i % pattern.length] === 'recurrent';
    const mixer: Mixer = recurrent
      ? new RecurrentBlock(ctx, `${p}.temporal_block`, { hidden, W, H: nHeads, convK })
      : new Attention(ctx, `${p}.temporal_block`, {
        hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: true, rope,
        scale: 1 / Math.sqrt(headDim), window,
      });
    blocks.push(new PreNormBlock(ctx, {
      kind: recurrent ? 'rg_lru' : 'sliding_attention', hidden, mixer,
      ffn: new GatedMlp(ctx, `${p}.mlp_block`, hidden, inter, act, true),
      preMixer: { w: ws.vec(`${p}.temporal_pre_norm.weight`, hidden), eps, addOne: true },
      preFfn: { w: ws.vec(`${p}.channel_pre_norm.weight`, hidden), eps, addOne: true },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    embedScale: bf16Round(Math.sqrt(hidden)),
    finalNorm: { w: ws.vec('model.final_norm.weight', hidden), eps, addOne: true },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
    finalSoftcap: c.finalSoftcap,
  });
}

export const recurrentGemma: Family<RecurrentGemmaConfig> = {
  types: ['recurrent_gemma'],
  keepF32: (name) => name.endsWith('.conv_1d.weight') || name.endsWith('_gate_weight') || name.endsWith('.recurrent_param'),
  parse: parseRecurrentGemma,
  build: buildRecurrentGemma,
};
