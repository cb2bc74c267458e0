// gpt-oss: pre-norm decoder alternating sliding-window and full attention (`layer_types`), with
// q/k/v/o biases, a learned per-head sink logit in every softmax denominator, YaRN RoPE, and a sparse
// MoE: router logits W_r x + b_r, top-k of the logits, softmax over those k; each expert computes
// gate_up = x·W_gu + b_gu, gate = min(g, limit), up = clamp(u, −limit, limit),
// h = (up + 1) · gate · σ(α · gate), y = h·W_d + b_d with α = 1.702 and limit = 7.0 fixed, as
// transformers 5.17's GptOssExperts has them (its GptOssConfig has no swiglu_limit / swiglu_alpha field,
// so a config's `swiglu_limit` key does not reach the math there either).
//
// HF stores the experts transposed and interleaved: gate_up_proj [E, D, 2I] with gate = columns 0::2
// and up = columns 1::2, down_proj [E, I, D]. The build rewrites both in place, per expert, into the
// [out, in] row layout the matmul reads: gate_up → [2I, D] (I gate rows, then I up rows), down → [D, I].

import { blockSize, encodeF32, toF32 } from '../formats/dtype';
import { ConfigError } from '../formats/errors';
import { rowBytes } from '../kernels/types';
import { Attention } from '../layers/attention';
import type { Ctx } from '../layers/context';
import type { GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { attentionShape, int, layerTypes, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';
import { expertCount } from './shared';
import type { WeightStore } from '../runtime/weights';

/** Tensors already rewritten, per weight store (a second build over the same store must not redo it). */
const rearranged = new WeakMap<WeightStore, Set<string>>();

function once(ws: WeightStore, name: string, fn: () => void): void {
  let done = rearranged.get(ws);
  if (!done) rearranged.set(ws, (done = new Set()));
  if (done.has(name)) return;
  fn();
  done.add(name);
}

/**
 * Rewrites each of the E matrices of a stacked tensor in place: element (r, c) of the new [R, C]
 * matrix is element src(r, c) of the old one (flat index into the old matrix). Element dtypes are
 * moved exactly; block-quantized matrices (Q8_0, Q4_0, K-quants) are dequantized, moved and
 * re-quantized in their dtype (both layouts need whole blocks along their rows).
 */
function permuteMatrices(ws: WeightStore, name: string, E: number, R: number, C: number, oldCols: number, src: (r: number, c: number) => number): void {
  const w = ws.mat(name);
  const k = ws.k;
  const n = R * C;
  const dtype = w.dtype;
  const bytesPer = rowBytes(dtype, C) * R;
  const block = blockSize(dtype);
  if (block > 1 && (C % block !== 0 || oldCols % block !== 0)) {
    throw new ConfigError(`tensors["${name}"]`, `cannot re-block ${dtype} rows of ${C} (needs multiples of ${block})`);
  }
  for (let e = 0; e < E; e++) {
    const p = w.ptr + e * bytesPer;
    if (dtype === 'f32' || dtype === 'f16' || dtype === 'bf16') {
      const view = dtype === 'f32' ? new Float32Array(k.memory.buffer, p, n) : new Uint16Array(k.memory.buffer, p, n);
      const old = view.slice();
      for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) view[r * C + c] = old[src(r, c)];
    } else {
      const bytes = k.arena.u8(p, bytesPer);
      const old = toF32(dtype, bytes.slice(), n);
      const f = new Float32Array(n);
      for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) f[r * C + c] = old[src(r, c)];
      k.arena.u8(p, bytesPer).set(encodeF32(dtype, f, R, C, name));
    }
  }
}

export type GptOssLayerType = 'full_attention' | 'sliding_attention';

export interface GptOssConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  /** intermediate_size of each expert */
  inter: number;
  nExperts: number;
  topk: number;
  /** rms_norm_eps */
  eps: number;
  /** q/k/v/o biases (attention_bias, default true). */
  attnBias: boolean;
  layerTypes: GptOssLayerType[];
  /** sliding_window of the sliding layers (0 when no layer slides). */
  window: number;
  rope: RopeParams;
  tieEmbeddings: boolean;
}

export function parseGptOss(c: RawConfig): GptOssConfig {
  const hidden = int(c, 'hidden_size');
  const nLayers = int(c, 'num_hidden_layers');
  const attn = attentionShape(c, hidden);
  const inter = int(c, 'intermediate_size');
  const vocab = int(c, 'vocab_size');
  const nExperts = expertCount(c, 128);
  const topk = int(c, 'num_experts_per_tok', 4);
  const eps = num(c, 'rms_norm_eps', 1e-5);
  const attnBias = c.attention_bias ?? true;
  rejectIf(typeof attnBias !== 'boolean', 'attention_bias', 'must be a boolean');
  rejectIf(topk < 1 || topk > nExperts, 'num_experts_per_tok', `${topk} must be in [1, ${nExperts}]`);
  const types = layerTypes<GptOssLayerType>(c, nLayers, ['full_attention', 'sliding_attention'], (i) => ((i + 1) % 2 ? 'sliding_attention' : 'full_attention'));
  const window = types.includes('sliding_attention') ? int(c, 'sliding_window', 128) : 0;
  rejectIf(types.includes('sliding_attention') && window < 1, 'sliding_window', 'must be ≥ 1 when layers slide');
  // GptOssConfig's RoPE when the config names none (YaRN ×32 over 4096 positions), and its default θ.
  const theta = c.rope_theta ?? 150000;
  const rp = c.rope_parameters != null ? obj(c.rope_parameters) : c.rope_scaling ? { ...obj(c.rope_scaling), rope_theta: theta } : {
    rope_type: 'yarn', factor: 32, beta_fast: 32, beta_slow: 1, truncate: false, original_max_position_embeddings: 4096,
  };
  const rope = ropeParams({ ...c, rope_parameters: { rope_theta: theta, ...rp } });
  return {
    hidden, nLayers, vocab, attn, inter, nExperts, topk, eps, attnBias: attnBias as boolean,
    layerTypes: types, window, rope, tieEmbeddings: tiedEmbeddings(c, false),
  };
}

export function buildGptOss(ctx: Ctx, c: GptOssConfig): Net {
  const { ws } = ctx;
  const { hidden, nLayers, vocab, inter, nExperts: E, topk, eps, attnBias, window } = c;
  const { nHeads, nKv, headDim } = c.attn;
  const alpha = 1.702, limit = 7.0;
  const rope = ropeSpec(c.rope, headDim);

  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const sliding = c.layerTypes[i] === 'sliding_attention';
    const attn = new Attention(ctx, `${p}.self_attn`, {
      hidden, nHeads, nKv, headDim, qkvBias: attnBias, oBias: attnBias, rope,
      scale: 1 / Math.sqrt(headDim), window: sliding ? window : undefined, sinks: true,
    });

    const ex = `${p}.mlp.experts`;
    const gu = ws.shape(`${ex}.gate_up_proj`), dn = ws.shape(`${ex}.down_proj`);
    if (gu.join() !== [E, hidden, 2 * inter].join()) throw new ConfigError(`tensors["${ex}.gate_up_proj"].shape`, `is [${gu}], expected [${E}, ${hidden}, ${2 * inter}]`);
    if (dn.join() !== [E, inter, hidden].join()) throw new ConfigError(`tensors["${ex}.down_proj"].shape`, `is [${dn}], expected [${E}, ${inter}, ${hidden}]`);
    const guBias = ws.vec(`${ex}.gate_up_proj_bias`, E * 2 * inter);
    const downBias = ws.vec(`${ex}.down_proj_bias`, E * hidden);
    once(ws, `${ex}.gate_up_proj`, () => {
      // new row r < I is gate unit r (old column 2r); row I + r is up unit r (old column 2r + 1)
      permuteMatrices(ws, `${ex}.gate_up_proj`, E, 2 * inter, hidden, 2 * inter,
        (r, d) => d * 2 * inter + (r < inter ? 2 * r : 2 * (r - inter) + 1));
      const b = ctx.f32(guBias, E * 2 * inter);
      for (let e = 0; e < E; e++) {
        const old = b.slice(e * 2 * inter, (e + 1) * 2 * inter);
        for (let j = 0; j < inter; j++) {
          b[e * 2 * inter + j] = old[2 * j];
          b[e * 2 * inter + inter + j] = old[2 * j + 1];
        }
      }
    });
    once(ws, `${ex}.down_proj`, () => {
      permuteMatrices(ws, `${ex}.down_proj`, E, hidden, inter, hidden, (d, j) => j * hidden + d);
    });
    // Now per expert: [2I, D] gate-then-up rows, and [D, I].
    const gateUp = ws.mat(`${ex}.gate_up_proj`), down = ws.mat(`${ex}.down_proj`);
    const expert = (e: number): GatedWeights => {
      const guRow = rowBytes(gateUp.dtype, hidden), dRow = rowBytes(down.dtype, inter);
      return {
        gate: { ptr: gateUp.ptr + e * 2 * inter * guRow, dtype: gateUp.dtype, rows: inter, cols: hidden },
        up: { ptr: gateUp.ptr + (e * 2 * inter + inter) * guRow, dtype: gateUp.dtype, rows: inter, cols: hidden },
        down: { ptr: down.ptr + e * hidden * dRow, dtype: down.dtype, rows: hidden, cols: inter },
        gateBias: guBias + e * 2 * inter * 4,
        upBias: guBias + (e * 2 * inter + inter) * 4,
        downBias: downBias + e * hidden * 4,
      };
    };
    const moe = new Moe(ctx, {
      hidden, nExperts: E, topk, inter, act: 'clamped_swiglu', alpha, limit,
      routing: { mode: 'topk_softmax' },
      router: ws.mat(`${p}.mlp.router.weight`, E, hidden),
      routerBias: ws.vec(`${p}.mlp.router.bias`, E),
      expert,
    });
    blocks.push(new PreNormBlock(ctx, {
      kind: sliding ? 'sliding_attention' : 'attention', hidden, mixer: attn, ffn: moe,
      preMixer: { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps },
      preFfn: { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
    }));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}


export const gptOss: Family<GptOssConfig> = {
  types: ['gpt_oss'],
  // Biases are [E, n] matrices on disk; the host de-interleaves them and the kernels read them as f32.
  keepF32: (name) => name.endsWith('_proj_bias') || name.endsWith('.sinks') || name.endsWith('router.bias'),
  parse: parseGptOss,
  build: buildGptOss,
};
