// DiffusionGemma (DiffusionGemmaForBlockDiffusion, model_type "diffusion_gemma", language model fields
// under `text_config`): a Gemma-4-shaped MoE decoder used two ways with the same weights.
// - Encoder pass: the prompt (then each committed canvas) runs causally and fills the KV caches
//   (sliding-window layers see keys p − W < k ≤ p).
// - Denoiser pass: a canvas of `canvas_length` tokens at the next positions, embedded and mixed with
//   the self-conditioning signal (the previous step's distribution times the embedding matrix, through a
//   gated MLP), attends bidirectionally to the cache and the whole canvas (sliding layers: the keys after
//   pos0 − W, i.e. the last W − 1 cached positions) and yields logits for every canvas position; its
//   cache writes are scratch (the session keeps its position), overwritten by the next pass.
// Each layer: attention with per-head q/k RMSNorm (weighted), a weightless RMSNorm of v, scale 1; full
// layers have their own head width and kv heads, no v_proj (v is the raw k projection) and
// proportional RoPE (the first ⌊p·D/2⌋ frequency pairs rotate); then a dense gated MLP and a routed
// MoE side by side (router: weightless RMSNorm · scale · D^−½, softmax top-k renormalised, times
// per_expert_scale), each post-normed, summed, post-normed, added; the layer output times
// layer_scalar (the encoder's and the denoiser's may differ). Logits: final norm, tied LM head,
// softcap. The decoding loop is generate/diffusion.ts.

import { ConfigError } from '../formats/errors';
import { KernelError } from '../kernels/runtime';
import type { Weight } from '../kernels/types';
import type { Ctx } from '../layers/context';
import { parseActivation } from '../layers/mlp';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import { add, attention, copy, embed, gatedFfn, kvAppend, linear, matmul, moe, mulRow, norm, rope, scale, softcap, type GatedWeights, type GatedAct, type MoeSpec, type RopeSpec } from '../graph/ops';
import { hostRows } from '../graph/ops-diffusion';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import { bool, int, num, obj, rejectIf, ropeParams, ropeSpec, type RawConfig } from './common';
import type { Family, Net } from './net';
import { expertWeights } from './shared';

export type DgLayerType = 'sliding_attention' | 'full_attention';

export interface DiffusionGemmaConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  inter: number;
  eps: number;
  act: GatedAct;
  nHeads: number;
  nKv: number;
  headDim: number;
  /** Full-attention layers: head width and kv heads as configured (the weights decide; checked at build). */
  globalHeadDim: number | null;
  globalKv: number | null;
  window: number;
  layerTypes: DgLayerType[];
  rope: Record<DgLayerType, RawConfig>;
  maxPositions: number;
  nExperts: number;
  topk: number;
  moeInter: number;
  finalSoftcap: number | null;
  tieEmbeddings: boolean;
  canvasLength: number;
}

/** The language-model fields: `text_config` of the composite config. */
function textConfig(c: RawConfig): RawConfig {
  const t = c.text_config;
  rejectIf(t === null || typeof t !== 'object' || Array.isArray(t), 'text_config', 'must be an object (the language model config)');
  return t as RawConfig;
}

export function parseDiffusionGemma(c: RawConfig): DiffusionGemmaConfig {
  const t = textConfig(c);
  try {
    const hidden = int(t, 'hidden_size', 2304);
    const nLayers = int(t, 'num_hidden_layers', 30);
    const nHeads = int(t, 'num_attention_heads', 8);
    const nKv = int(t, 'num_key_value_heads', 4);
    rejectIf(nKv < 1 || nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
    const lt = t.layer_types;
    const layerTypes: DgLayerType[] = Array.isArray(lt)
      ? lt.map((x, i) => {
        rejectIf(x !== 'sliding_attention' && x !== 'full_attention', `layer_types[${i}]`, `${JSON.stringify(x)} is not sliding_attention or full_attention`);
        return x as DgLayerType;
      })
      : Array.from({ length: nLayers }, (_, i) => ((i + 1) % 6 ? 'sliding_attention' : 'full_attention'));
    rejectIf(layerTypes.length !== nLayers, 'layer_types', `has ${layerTypes.length} entries for ${nLayers} layers`);
    layerTypes[nLayers - 1] = 'full_attention';
    const bidi = t.use_bidirectional_attention;
    rejectIf(bidi === 'all', 'use_bidirectional_attention', '"all" (a bidirectional encoder) is not supported; null or "vision" (causal text encoder) are');
    rejectIf(bool(t, 'attention_bias', false), 'attention_bias', 'true is not supported');
    const hd = t.head_dim;
    const rp = obj(t.rope_parameters);
    const rope = {
      sliding_attention: obj(rp.sliding_attention ?? { rope_type: 'default', rope_theta: 10000 }),
      full_attention: obj(rp.full_attention ?? { rope_type: 'proportional', partial_rotary_factor: 0.25, rope_theta: 1_000_000 }),
    };
    const nExperts = int(t, 'num_experts');
    const topk = int(t, 'top_k_experts');
    rejectIf(topk < 1 || topk > nExperts, 'top_k_experts', `${topk} must be in [1, ${nExperts}]`);
    const soft = t.final_logit_softcapping ?? 30;
    rejectIf(soft !== null && (typeof soft !== 'number' || !(soft >= 0)), 'final_logit_softcapping', `must be a number ≥ 0 or null, got ${JSON.stringify(soft)}`);
    return {
      hidden, nLayers, nHeads, nKv,
      vocab: int(t, 'vocab_size', 262144),
      inter: int(t, 'intermediate_size', 9216),
      eps: num(t, 'rms_norm_eps', 1e-6),
      act: parseActivation(t.hidden_activation ?? 'gelu_pytorch_tanh', 'config.text_config.hidden_activation'),
      headDim: typeof hd === 'number' ? int(t, 'head_dim') : 256,
      globalHeadDim: t.global_head_dim === undefined || t.global_head_dim === null ? null : int(t, 'global_head_dim'),
      globalKv: t.num_global_key_value_heads === undefined || t.num_global_key_value_heads === null ? null : int(t, 'num_global_key_value_heads'),
      window: int(t, 'sliding_window', 512),
      layerTypes, rope,
      maxPositions: int(t, 'max_position_embeddings', 131072),
      nExperts, topk,
      moeInter: int(t, 'moe_intermediate_size'),
      finalSoftcap: soft === null || soft === 0 ? null : (soft as number),
      tieEmbeddings: Boolean(c.tie_word_embeddings ?? t.tie_word_embeddings ?? true),
      canvasLength: int(c, 'canvas_length', 256),
    };
  } catch (e) {
    if (e instanceof ConfigError && e.field.startsWith('config.') && !e.field.startsWith('config.text_config')) {
      throw new ConfigError(`config.text_config.${e.field.slice(7)}`, e.detail);
    }
    throw e;
  }
}

/**
 * RoPE of one layer type at head width D: 'proportional' rotates the first ⌊p·D/2⌋ pairs (i, i + D/2)
 * at θ^(−2i/D) / factor and leaves the rest (zero frequencies); other types as in common.ts.
 */
function layerRope(c: DiffusionGemmaConfig, type: DgLayerType, D: number): RopeSpec {
  const p = c.rope[type];
  if ((p.rope_type ?? 'default') !== 'proportional') {
    return ropeSpec(ropeParams({ rope_parameters: p, max_position_embeddings: c.maxPositions }), D);
  }
  const theta = num(p, 'rope_theta');
  const factor = num(p, 'factor', 1);
  const frac = num(p, 'partial_rotary_factor', 1);
  const angles = Math.floor((frac * D) / 2);
  rejectIf(angles < 0 || angles > D / 2, `text_config.rope_parameters.${type}.partial_rotary_factor`, `${frac} out of range`);
  const f = Math.fround;
  const inv = new Float32Array(D / 2);
  for (let i = 0; i < angles; i++) inv[i] = f(f(1 / f(Math.pow(f(theta), f((2 * i) / D)))) / factor);
  return { invFreq: inv, rotaryDim: D, style: 'neox', attentionFactor: 1 };
}

/** What the net's next forward pass is: an encoder pass, or a denoiser pass over a canvas. */
export type DiffusionPass =
  | { kind: 'encode' }
  /** probs: the self-conditioning distribution [canvas, V] (softmax of the previous step's logits), or null. */
  | { kind: 'denoise'; probs: Float32Array | null };

/** Where a weight lives: the denoiser's names first (the tied source), then the encoder's. */
class Names {
  constructor(readonly ctx: Ctx) {}
  pick(suffix: string, encoderFirst = false): string {
    const dec = `model.decoder.${suffix}`, enc = `model.encoder.language_model.${suffix}`;
    const order = encoderFirst ? [enc, dec] : [dec, enc];
    for (const n of order) if (this.ctx.ws.has(n)) return n;
    throw new ConfigError(`tensors["${dec}"]`, `missing from the checkpoint (nor is ${enc} there)`);
  }
  has(suffix: string): boolean {
    return this.ctx.ws.has(`model.decoder.${suffix}`) || this.ctx.ws.has(`model.encoder.language_model.${suffix}`);
  }
}

class DgAttention {
  readonly q: Weight;
  readonly k: Weight;
  readonly v: Weight | null;
  readonly o: Weight;
  readonly qNorm: number;
  readonly kNorm: number;
  readonly nKv: number;
  readonly headDim: number;
  readonly rope: RopeSpec;
  readonly window: number | undefined;
  kState!: RegionSpec;
  vState!: RegionSpec;
  private declaredFor = -1;

  constructor(readonly ctx: Ctx, readonly name: string, n: Names, p: string, readonly c: DiffusionGemmaConfig, readonly type: DgLayerType) {
    const { ws } = ctx;
    const { hidden, nHeads } = c;
    const qName = n.pick(`${p}.q_proj.weight`), kName = n.pick(`${p}.k_proj.weight`);
    const qRows = ws.shape(qName)[0], kRows = ws.shape(kName)[0];
    const D = qRows / nHeads;
    if (!Number.isInteger(D) || D % 2 !== 0) throw new ConfigError(`tensors["${qName}"].shape`, `[${ws.shape(qName)}] is not ${nHeads} heads of an even width`);
    const want = type === 'full_attention' ? c.globalHeadDim ?? D : c.headDim;
    if (D !== want) throw new ConfigError(`tensors["${qName}"].shape`, `[${ws.shape(qName)}] gives heads of ${D}, config says ${want}`);
    const nKv = kRows / D;
    if (!Number.isInteger(nKv) || nKv < 1 || nHeads % nKv !== 0) throw new ConfigError(`tensors["${kName}"].shape`, `[${ws.shape(kName)}] is not a whole number of kv heads of ${D} dividing ${nHeads}`);
    const wantKv = type === 'full_attention' ? c.globalKv ?? nKv : c.nKv;
    if (nKv !== wantKv) throw new ConfigError(`tensors["${kName}"].shape`, `[${ws.shape(kName)}] gives ${nKv} kv heads, config says ${wantKv}`);
    this.headDim = D;
    this.nKv = nKv;
    this.q = ws.mat(qName, nHeads * D, hidden);
    this.k = ws.mat(kName, nKv * D, hidden);
    this.v = n.has(`${p}.v_proj.weight`) ? ws.mat(n.pick(`${p}.v_proj.weight`), nKv * D, hidden) : null;
    this.o = ws.mat(n.pick(`${p}.o_proj.weight`), hidden, nHeads * D);
    this.qNorm = ws.vec(n.pick(`${p}.q_norm.weight`), D);
    this.kNorm = ws.vec(n.pick(`${p}.k_norm.weight`), D);
    this.rope = layerRope(c, type, D);
    this.window = type === 'sliding_attention' ? c.window : undefined;
  }

  specs(maxContext: number): RegionSpec[] {
    if (maxContext !== this.declaredFor) {
      const W = this.window;
      const capacity = W ? W + this.ctx.maxChunk - 1 : 0;
      const ring = W && capacity < maxContext ? capacity : undefined;
      this.kState = kvCacheRegion(`${this.name}.k`, this.nKv, this.headDim, this.ctx.kvCache, ring);
      this.vState = kvCacheRegion(`${this.name}.v`, this.nKv, this.headDim, this.ctx.kvCache, ring);
      this.declaredFor = maxContext;
    }
    return [this.kState, this.vState];
  }

  forward(g: Graph, x: Tensor, out: Tensor, bidirectional: boolean): void {
    const { nHeads, eps } = this.c;
    const D = this.headDim, kd = this.nKv * D;
    const q = g.tmp(nHeads * D), kk = g.tmp(kd), v = g.tmp(kd), ao = g.tmp(nHeads * D);
    linear(g, q, x, this.q);
    linear(g, kk, x, this.k);
    if (this.v) linear(g, v, x, this.v);
    else copy(g, v, kk, { chunks: 1, len: kd });
    norm(g, { w: this.qNorm, eps }, q, q, D);
    norm(g, { w: this.kNorm, eps }, kk, kk, D);
    norm(g, { w: 0, eps }, v, v, D);
    rope(g, q, nHeads, D, this.rope);
    rope(g, kk, this.nKv, D, this.rope);
    kvAppend(g, this.kState, kk);
    kvAppend(g, this.vState, v);
    attention(g, {
      y: ao, q, k: this.kState, v: this.vState, nHeads, nKv: this.nKv, headDim: D, vDim: D, scale: 1,
      window: this.window, ...(bidirectional ? { bidirectional: true } : {}),
    });
    linear(g, out, ao, this.o);
  }
}

interface NormW {
  w: number;
  eps: number;
}

class DgLayer {
  readonly attn: DgAttention;
  readonly mlp: GatedWeights;
  readonly moe: MoeSpec;
  readonly routerScale: number;
  readonly norms: Record<'input' | 'postAttn' | 'preFfn' | 'postFfn' | 'postFfn1' | 'postFfn2' | 'preFfn2', NormW>;
  /** layer_scalar of the encoder's layer and of the denoiser's. */
  readonly scalar: { encode: number; denoise: number };

  constructor(readonly ctx: Ctx, readonly i: number, n: Names, readonly c: DiffusionGemmaConfig) {
    const { ws } = ctx;
    const { hidden: H, eps } = c;
    const p = `layers.${i}`;
    this.attn = new DgAttention(ctx, `layers.${i}.self_attn`, n, `${p}.self_attn`, c, c.layerTypes[i]);
    this.mlp = {
      gate: ws.mat(n.pick(`${p}.mlp.gate_proj.weight`), c.inter, H),
      up: ws.mat(n.pick(`${p}.mlp.up_proj.weight`), c.inter, H),
      down: ws.mat(n.pick(`${p}.mlp.down_proj.weight`), H, c.inter),
    };
    const nv = (s: string): NormW => ({ w: ws.vec(n.pick(`${p}.${s}.weight`), H), eps });
    this.norms = {
      input: nv('input_layernorm'), postAttn: nv('post_attention_layernorm'), preFfn: nv('pre_feedforward_layernorm'),
      postFfn: nv('post_feedforward_layernorm'), postFfn1: nv('post_feedforward_layernorm_1'),
      postFfn2: nv('post_feedforward_layernorm_2'), preFfn2: nv('pre_feedforward_layernorm_2'),
    };
    this.routerScale = ws.vec(n.pick(`${p}.router.scale`), H);
    const gu = n.pick(`${p}.experts.gate_up_proj`);
    const prefix = gu.slice(0, -'.experts.gate_up_proj'.length);
    this.moe = {
      name: `layer ${i} experts`, hidden: H, nExperts: c.nExperts, topk: c.topk, inter: c.moeInter, act: c.act,
      routing: { mode: 'softmax_topk', renormalize: true },
      router: ws.mat(n.pick(`${p}.router.proj.weight`), c.nExperts, H),
      expert: expertWeights(ws, prefix, c.nExperts, c.moeInter, H),
      expertScale: ws.vec(n.pick(`${p}.router.per_expert_scale`), c.nExperts),
    };
    const scalar = (encoderFirst: boolean): number => {
      if (!n.has(`${p}.layer_scalar`)) return 1;
      return ctx.f32(ws.vec(n.pick(`${p}.layer_scalar`, encoderFirst), 1), 1)[0];
    };
    this.scalar = { encode: scalar(true), denoise: scalar(false) };
  }

  forward(g: Graph, x: Tensor, denoise: boolean): void {
    const { hidden: H } = this.c;
    const s = this.norms;
    const h = g.tmp(H), o = g.tmp(H), h2 = g.tmp(H), r = g.tmp(H);
    norm(g, s.input, h, x);
    this.attn.forward(g, h, o, denoise);
    norm(g, s.postAttn, o, o);
    add(g, x, x, o);
    norm(g, s.preFfn, h, x);
    gatedFfn(g, this.mlp, this.c.act, h, o);
    norm(g, s.postFfn1, o, o);
    norm(g, s.preFfn2, h, x);
    norm(g, { w: 0, eps: this.c.eps }, r, x);
    mulRow(g, r, this.routerScale);
    scale(g, r, r, H ** -0.5);
    moe(g, h2, h, this.moe, r);
    norm(g, s.postFfn2, h2, h2);
    add(g, o, o, h2);
    norm(g, s.postFfn, o, o);
    add(g, x, x, o);
    const k = denoise ? this.scalar.denoise : this.scalar.encode;
    if (k !== 1) scale(g, x, x, k);
  }

  specs(maxContext: number): RegionSpec[] {
    return this.attn.specs(maxContext);
  }
}

/** Facts the decoding loop (generate/diffusion.ts) needs about a denoiser net. */
export interface DiffusionInfo {
  canvasLength: number;
}

export class DiffusionGemmaNet implements Net {
  readonly vocabSize: number;
  readonly hidden: number;
  readonly layerKinds: string[];
  readonly hiddenOutput = false;
  readonly diffusion: DiffusionInfo;
  /** The next forward pass; the loop sets it before each pass and resets it to encode after. */
  pass: DiffusionPass = { kind: 'encode' };
  private readonly layers: DgLayer[];
  private readonly embedW: Weight;
  private readonly embedT: Weight;
  private readonly head: Weight;
  private readonly finalNorm: NormW;
  private readonly sc: { pre: NormW; w: GatedWeights };
  private readonly labels: string[];

  constructor(readonly ctx: Ctx, readonly c: DiffusionGemmaConfig) {
    const { ws } = ctx;
    const n = new Names(ctx);
    const { hidden: H, vocab: V } = c;
    this.vocabSize = V;
    this.hidden = H;
    this.layers = Array.from({ length: c.nLayers }, (_, i) => new DgLayer(ctx, i, n, c));
    this.layerKinds = c.layerTypes.map((t) => (t === 'full_attention' ? 'attention' : 'sliding_attention'));
    this.labels = this.layers.map((_, i) => `layer ${i}`);
    const en = n.pick('embed_tokens.weight');
    this.embedW = ws.mat(en, V, H);
    if (this.embedW.dtype !== 'f32') throw new ConfigError(`tensors["${en}"]`, `must load as f32 (holds ${this.embedW.dtype})`);
    // The self-conditioning product p · E needs E transposed ([H, V]) as a matmul weight.
    const ptr = ctx.k.arena.alloc(H * V * 4);
    const src = ctx.f32(this.embedW.ptr, V * H), dst = ctx.f32(ptr, H * V);
    for (let v = 0; v < V; v++) for (let h = 0; h < H; h++) dst[h * V + v] = src[v * H + h];
    this.embedT = { name: `${en} (transposed)`, ptr, dtype: 'f32', rows: H, cols: V };
    this.head = !c.tieEmbeddings && ws.has('lm_head.weight') ? ws.mat('lm_head.weight', V, H) : this.embedW;
    this.finalNorm = { w: ws.vec(n.pick('norm.weight'), H), eps: c.eps };
    const scp = 'model.decoder.self_conditioning';
    this.sc = {
      pre: { w: ws.vec(`${scp}.pre_norm.weight`, H), eps: c.eps },
      w: { gate: ws.mat(`${scp}.gate_proj.weight`, c.inter, H), up: ws.mat(`${scp}.up_proj.weight`, c.inter, H), down: ws.mat(`${scp}.down_proj.weight`, H, c.inter) },
    };
    this.diffusion = { canvasLength: c.canvasLength };
  }

  specs(maxContext: number): RegionSpec[] {
    return this.layers.flatMap((l) => l.specs(maxContext));
  }

  forward(g: Graph, all: boolean, output: ForwardOutput = 'logits'): Tensor {
    if (g.backend !== 'wasm') throw new KernelError(g.backend, 'diffusion_gemma runs on the WASM backend only (its denoiser passes attend bidirectionally and take host rows): use backend "wasm"');
    if (output !== 'logits') throw new KernelError('diffusion_gemma', 'has no hidden-state output');
    const { hidden: H, vocab: V } = this.c;
    const pass = this.pass;
    const denoise = pass.kind === 'denoise';
    const x = g.tmp(H);
    embed(g, x, this.embedW, Math.fround(Math.sqrt(H)));
    if (denoise || g.dry) {
      const probs = pass.kind === 'denoise' ? pass.probs : null;
      if (probs || g.dry) {
        g.scope('self-conditioning', () => {
          const p = g.tmp(V), soft = g.tmp(H), nm = g.tmp(H), sig = g.tmp(H);
          hostRows(g, p, probs ?? new Float32Array(g.T * V));
          matmul(g, soft, p, this.embedT);
          scale(g, soft, soft, Math.fround(Math.sqrt(H)));
          norm(g, this.sc.pre, nm, soft);
          gatedFfn(g, this.sc.w, this.c.act, nm, sig);
          add(g, x, x, sig);
        });
      }
      norm(g, { w: 0, eps: this.c.eps }, x, x);
    }
    for (let i = 0; i < this.layers.length; i++) g.scope(this.labels[i], () => this.layers[i].forward(g, x, denoise));
    const xs = all ? x : g.last(x);
    norm(g, this.finalNorm, xs, xs);
    const logits = g.tmp(V, xs.rows);
    matmul(g, logits, xs, this.head);
    if (this.c.finalSoftcap) softcap(g, logits, logits, this.c.finalSoftcap);
    return logits;
  }
}

export function isDiffusionNet(net: Net): net is DiffusionGemmaNet {
  return net instanceof DiffusionGemmaNet;
}

export const diffusionGemma: Family<DiffusionGemmaConfig> = {
  types: ['diffusion_gemma'],
  keepF32: (name) => /^model\.(decoder|encoder\.language_model)\.embed_tokens\.weight$/.test(name),
  ignore: (name) => /^model\.encoder\.(vision_tower|embed_vision)\./.test(name),
  minChunk: (config) => {
    const v = (config as RawConfig).canvas_length;
    return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : 256;
  },
  parse: parseDiffusionGemma,
  build: (ctx, c) => {
    if (ctx.maxChunk < c.canvasLength) {
      throw new ConfigError('options.maxChunk', `is ${ctx.maxChunk}, but a denoiser pass runs the whole canvas (canvas_length ${c.canvasLength}) at once: use maxChunk ≥ ${c.canvasLength}`);
    }
    return new DiffusionGemmaNet(ctx, c);
  },
};
