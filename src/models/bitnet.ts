// BitNet b1.58 (BitNetForCausalLM): a Llama-shaped pre-norm decoder whose linear layers are
// transformers' BitLinear / AutoBitLinear (quantization_config quant_method "bitnet"): ternary
// weights t ∈ {−1, 0, 1} with one scale per matrix, the input of each product quantized to int8 per
// token (absmax, round half to even), the product exact in integers (graph/ops-bitnet.ts). Attention
// output goes through attn_sub_norm (RMSNorm over hidden) before o_proj; the MLP is
// down(ffn_sub_norm(act(gate(x)) ⊙ up(x))), act relu² by default.
//
// Weight layouts, by quantization_config:
//   linear_class "bitlinear" (default): weight uint8 [out/4, in], four ternary values a byte (row
//     r + i·out/4 in bits 2i … 2i+1, stored as t + 1), and weight_scale [1]: y = (q·t) / (s·weight_scale)
//   "autobitlinear", quantization_mode "offline": weight ternary floats [out, in] (or packed uint8 as
//     above) and weight_scale [1]: y = (q/s · t) · weight_scale
//   "autobitlinear", "online": weight floats [out, in], ternarized in f32 at load as transformers
//     does at every forward (scale mean|W|, t = round(W / mean|W|) clamped to [−1, 1]): y = (q/s · t) · mean|W|
//   use_rms_norm: each quantized linear first applies its own RMSNorm (<linear>.rms_norm.weight,
//     eps rms_norm_eps) to its input.
//   no quantization_config: every linear is a plain float product (what BitNetForCausalLM computes
//     without the quantizer).
// The ternary weights are packed into the kernel layout at load, over the f32 copy the weight store
// holds; modules_to_not_convert (lm_head always) stay float products.

import { attentionPages, pageBoundsState, type PageState } from '../layers/attention';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { parseActivation, type Activation } from '../layers/mlp';
import { ConfigError } from '../formats/errors';
import { bitLinear, type TernaryWeight } from '../graph/ops-bitnet';
import { addBias, attention, gatedAct, kvAppend, linear, norm, rope, type RopeSpec } from '../graph/ops';
import type { Graph, Tensor } from '../graph/graph';
import { packTernary } from '../kernels/ternary';
import type { Weight } from '../kernels/types';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import type { WeightStore } from '../runtime/weights';
import { attentionShape, bool, int, lmHead, num, obj, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, PreNormBlock, type Block } from './decoder';
import type { Family, Net } from './net';

export type BitNetLinearClass = 'bitlinear' | 'autobitlinear';

export interface BitNetQuant {
  linearClass: BitNetLinearClass;
  online: boolean;
  /** use_rms_norm: the eps of each quantized linear's own input RMSNorm, or null. */
  normEps: number | null;
  /** modules_to_not_convert besides lm_head. */
  skip: string[];
}

export interface BitNetConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  inter: number;
  /** rms_norm_eps */
  eps: number;
  act: Activation;
  /** attention_bias: q/k/v/o biases. */
  bias: boolean;
  rope: RopeParams;
  tieEmbeddings: boolean;
  /** null: no quantization_config, plain float linears. */
  quant: BitNetQuant | null;
}

function strList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new ConfigError(`config.${field}`, `must be a list of module names, got ${JSON.stringify(v)}`);
  return v as string[];
}

function parseQuant(c: RawConfig): BitNetQuant | null {
  if (c.quantization_config === undefined || c.quantization_config === null) return null;
  const q = obj(c.quantization_config);
  const field = (f: string) => `quantization_config.${f}`;
  rejectIf(q.quant_method !== 'bitnet', field('quant_method'), `${JSON.stringify(q.quant_method)} is not supported (only "bitnet")`);
  const linearClass = q.linear_class ?? 'bitlinear';
  rejectIf(linearClass !== 'bitlinear' && linearClass !== 'autobitlinear', field('linear_class'), `${JSON.stringify(linearClass)} must be "bitlinear" or "autobitlinear"`);
  const mode = q.quantization_mode ?? 'offline';
  rejectIf(mode !== 'offline' && mode !== 'online', field('quantization_mode'), `${JSON.stringify(mode)} must be "offline" or "online"`);
  const useNorm = bool(q, 'use_rms_norm', false);
  let normEps: number | null = null;
  if (useNorm) {
    const e = q.rms_norm_eps ?? 1e-6;
    if (typeof e !== 'number' || !Number.isFinite(e)) throw new ConfigError(`config.${field('rms_norm_eps')}`, `must be a finite number, got ${JSON.stringify(e)}`);
    normEps = e;
  }
  return {
    linearClass: linearClass as BitNetLinearClass,
    // BitLinear is always offline (packed weights); quantization_mode only picks AutoBitLinear's form.
    online: linearClass === 'autobitlinear' && mode === 'online',
    normEps,
    skip: strList(q.modules_to_not_convert, field('modules_to_not_convert')),
  };
}

export function parseBitNet(c: RawConfig): BitNetConfig {
  const hidden = int(c, 'hidden_size');
  const attn = attentionShape(c, hidden);
  rejectIf(attn.nHeads * attn.headDim !== hidden, 'head_dim', `num_attention_heads × head_dim = ${attn.nHeads * attn.headDim} must equal hidden_size ${hidden} (attn_sub_norm is over hidden_size)`);
  return {
    hidden,
    nLayers: int(c, 'num_hidden_layers'),
    vocab: int(c, 'vocab_size'),
    attn,
    inter: int(c, 'intermediate_size'),
    eps: num(c, 'rms_norm_eps', 1e-5),
    act: parseActivation(c.hidden_act ?? 'relu2'),
    bias: bool(c, 'attention_bias', false),
    // BitNetConfig's default rope_theta is 500000.
    rope: ropeParams({ rope_theta: 500000, ...c }),
    tieEmbeddings: tiedEmbeddings(c, false),
    quant: parseQuant(c),
  };
}

/** Whether transformers' replacement leaves the linear `module` a float nn.Linear (modules_to_not_convert). */
function notConverted(module: string, skip: string[]): boolean {
  return skip.some((key) => module === key || module.startsWith(`${key}.`) || module.endsWith(key) || (() => {
    try {
      return new RegExp(`^(?:${key})`).test(module);
    } catch {
      return false;
    }
  })());
}

const PROJ = /^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$/;

/** One linear layer: a ternary product (with its optional input RMSNorm) or a float one. */
type Proj =
  | { kind: 'ternary'; w: TernaryWeight; bias: number; norm: number; normEps: number }
  | { kind: 'float'; w: Weight; bias: number };

/** Packed ternary weights per weight store: a second build over the same store reuses them. */
const packedByStore = new WeakMap<WeightStore, Map<string, TernaryWeight>>();

/** The ternary values and scale of linear `name` [rows, cols] as its checkpoint holds them. */
function ternaryOf(ctx: Ctx, q: BitNetQuant, name: string, rows: number, cols: number): { t: Int8Array; scale: number } {
  const { ws } = ctx;
  const wname = `${name}.weight`;
  const shape = ws.shape(wname);
  const src = ws.ckpt.tensors.get(wname)?.dtype;
  const held = ws.mat(wname);
  if (held.dtype !== 'f32') throw new ConfigError(`tensors["${wname}"]`, `held as ${held.dtype}, expected f32`);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = ctx.f32(held.ptr, n);
  const f = Math.fround;
  const packed = shape.length === 2 && shape[0] * 4 === rows && shape[1] === cols && src === 'u8';
  if (!packed && !(shape.length === 2 && shape[0] === rows && shape[1] === cols)) {
    throw new ConfigError(`tensors["${wname}"].shape`, `is [${shape}], expected [${rows}, ${cols}] or packed uint8 [${rows / 4}, ${cols}]`);
  }
  if (q.online) {
    if (packed) throw new ConfigError(`tensors["${wname}"]`, 'is packed uint8, but quantization_mode "online" takes float weights');
    // transformers' WeightQuant in f32: s = 1 / max(mean|W|, 1e-5), t = clamp(round(W·s), −1, 1), W ≈ t / s.
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.abs(v[i]);
    const s = f(1 / Math.max(f(sum / n), f(1e-5)));
    const t = new Int8Array(n);
    for (let i = 0; i < n; i++) {
      const x = f(v[i] * s);
      let r = Math.round(x);
      if (r - x === 0.5 && r % 2 !== 0) r -= 1;
      t[i] = Math.max(-1, Math.min(1, r));
    }
    return { t, scale: f(1 / s) };
  }
  const scaleName = `${name}.weight_scale`;
  const ws0 = ctx.f32(ws.vec(scaleName, 1), 1)[0];
  if (!Number.isFinite(ws0) || ws0 === 0) throw new ConfigError(`tensors["${scaleName}"]`, `is ${ws0}, expected a finite non-zero scale`);
  // BitLinear divides by weight_scale, AutoBitLinear multiplies by it.
  const scale = q.linearClass === 'bitlinear' ? f(1 / ws0) : f(ws0);
  const t = new Int8Array(rows * cols);
  if (packed) {
    // transformers' pack_weights: row r + i·(rows/4) of the matrix in bits 2i … 2i+1 of packed row r, as t + 1.
    const pr = rows / 4;
    for (let r = 0; r < pr; r++) {
      for (let c = 0; c < cols; c++) {
        const b = v[r * cols + c];
        for (let i = 0; i < 4; i++) {
          const u = (b >> (2 * i)) & 3;
          if (u === 3) throw new ConfigError(`tensors["${wname}"]`, `packed value 3 at [${r}, ${c}] is not a ternary code`);
          t[(r + i * pr) * cols + c] = u - 1;
        }
      }
    }
    return { t, scale };
  }
  if (q.linearClass === 'bitlinear') throw new ConfigError(`tensors["${wname}"]`, `is ${src} [${shape}]; linear_class "bitlinear" takes packed uint8 weights [${rows / 4}, ${cols}]`);
  for (let i = 0; i < n; i++) {
    const x = v[i];
    if (x !== -1 && x !== 0 && x !== 1) throw new ConfigError(`tensors["${wname}"]`, `holds ${x} at ${i}: quantization_mode "offline" takes ternary weights (−1, 0, 1)`);
    t[i] = x;
  }
  return { t, scale };
}

/** The packed weight of ternary linear `name`, written over the f32 copy the store holds where it fits. */
function packedWeight(ctx: Ctx, q: BitNetQuant, name: string, rows: number, cols: number): TernaryWeight {
  const { ws } = ctx;
  let cache = packedByStore.get(ws);
  if (!cache) packedByStore.set(ws, (cache = new Map()));
  const hit = cache.get(name);
  if (hit) return hit;
  const { t, scale } = ternaryOf(ctx, q, name, rows, cols);
  const bytes = packTernary(t, rows, cols, `${name}.weight`);
  const held = ws.mat(`${name}.weight`);
  const room = held.rows * held.cols * 4;
  let ptr: number;
  if (bytes.byteLength <= room && held.ptr % 16 === 0) {
    ptr = held.ptr;
    ctx.k.arena.u8(ptr, bytes.byteLength).set(bytes);
  } else {
    ptr = ctx.k.arena.put(bytes, 64);
  }
  const w: TernaryWeight = { name: `${name}.weight`, ptr, rows, cols, scale };
  cache.set(name, w);
  return w;
}

function projection(ctx: Ctx, c: BitNetConfig, name: string, rows: number, cols: number, bias: boolean): Proj {
  const { ws } = ctx;
  const b = bias ? ws.vec(`${name}.bias`, rows) : 0;
  const q = c.quant;
  if (!q || notConverted(name, q.skip)) return { kind: 'float', w: ws.mat(`${name}.weight`, rows, cols), bias: b };
  if (rows % 4 !== 0 && q.linearClass === 'bitlinear') throw new ConfigError(`tensors["${name}.weight"]`, `${rows} output rows are not a multiple of 4, which packed BitLinear weights need`);
  const normW = q.normEps !== null ? ws.vec(`${name}.rms_norm.weight`, cols) : 0;
  const w = packedWeight(ctx, q, name, rows, cols);
  // AutoBitLinear offline scales F.linear(x, W, bias) by weight_scale, its bias included.
  const scaledBias = b && q.linearClass === 'autobitlinear' && !q.online
    ? ctx.k.arena.putF32(ctx.f32(b, rows).map((v) => v * w.scale)).ptr
    : b;
  return { kind: 'ternary', w, bias: scaledBias, norm: normW, normEps: q.normEps ?? 0 };
}

/** y = proj(x) */
function project(g: Graph, p: Proj, y: Tensor, x: Tensor): void {
  if (p.kind === 'float') {
    linear(g, y, x, p.w, p.bias);
    return;
  }
  let xin = x;
  if (p.norm) {
    xin = g.tmp(x.width, x.rows);
    norm(g, { w: p.norm, eps: p.normEps }, xin, x);
  }
  bitLinear(g, y, xin, p.w);
  addBias(g, y, p.bias);
}

/** BitNet attention: GQA with RoPE, attn_sub_norm over the heads' output before o_proj. */
class BitNetAttention implements Mixer {
  private readonly q: Proj;
  private readonly k: Proj;
  private readonly v: Proj;
  private readonly o: Proj;
  private readonly subNorm: number;
  private kState!: RegionSpec;
  private vState!: RegionSpec;
  /** Page key bounds under the load option attention { mode: 'topk' } (null: dense). */
  private pageState: PageState | null = null;
  private declaredFor = -1;

  constructor(private readonly ctx: Ctx, private readonly prefix: string, private readonly c: BitNetConfig, private readonly ropeTab: RopeSpec) {
    const { hidden } = c, { nHeads, nKv, headDim } = c.attn;
    this.q = projection(ctx, c, `${prefix}.q_proj`, nHeads * headDim, hidden, c.bias);
    this.k = projection(ctx, c, `${prefix}.k_proj`, nKv * headDim, hidden, c.bias);
    this.v = projection(ctx, c, `${prefix}.v_proj`, nKv * headDim, hidden, c.bias);
    this.o = projection(ctx, c, `${prefix}.o_proj`, hidden, nHeads * headDim, c.bias);
    this.subNorm = ctx.ws.vec(`${prefix}.attn_sub_norm.weight`, hidden);
  }

  specs(maxContext: number): RegionSpec[] {
    if (maxContext !== this.declaredFor) {
      const { nKv, headDim } = this.c.attn;
      this.kState = kvCacheRegion(`${this.prefix}.k`, nKv, headDim, this.ctx.kvCache);
      this.vState = kvCacheRegion(`${this.prefix}.v`, nKv, headDim, this.ctx.kvCache);
      this.pageState = pageBoundsState(this.ctx, this.prefix, nKv, headDim, maxContext);
      this.declaredFor = maxContext;
    }
    return this.pageState ? [this.kState, this.vState, this.pageState.spec] : [this.kState, this.vState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { nHeads, nKv, headDim } = this.c.attn;
    const q = g.tmp(nHeads * headDim), k = g.tmp(nKv * headDim), v = g.tmp(nKv * headDim), ao = g.tmp(nHeads * headDim);
    project(g, this.q, q, x);
    project(g, this.k, k, x);
    project(g, this.v, v, x);
    rope(g, q, nHeads, headDim, this.ropeTab);
    rope(g, k, nKv, headDim, this.ropeTab);
    kvAppend(g, this.kState, k);
    kvAppend(g, this.vState, v);
    const pages = attentionPages(this.ctx, this.pageState, k);
    attention(g, { y: ao, q, k: this.kState, v: this.vState, nHeads, nKv, headDim, vDim: headDim, scale: 1 / Math.sqrt(headDim), ...(pages ? { pages } : {}) });
    norm(g, { w: this.subNorm, eps: this.c.eps }, ao, ao);
    project(g, this.o, out, ao);
  }
}

/** BitNet MLP: down(ffn_sub_norm(act(gate(x)) ⊙ up(x))). */
class BitNetMlp implements Ffn {
  private readonly gate: Proj;
  private readonly up: Proj;
  private readonly down: Proj;
  private readonly subNorm: number;
  constructor(ctx: Ctx, prefix: string, private readonly c: BitNetConfig) {
    const { hidden, inter } = c;
    this.gate = projection(ctx, c, `${prefix}.gate_proj`, inter, hidden, false);
    this.up = projection(ctx, c, `${prefix}.up_proj`, inter, hidden, false);
    this.down = projection(ctx, c, `${prefix}.down_proj`, hidden, inter, false);
    this.subNorm = ctx.ws.vec(`${prefix}.ffn_sub_norm.weight`, inter);
  }
  forward(g: Graph, x: Tensor, out: Tensor): void {
    const I = this.c.inter;
    const gt = g.tmp(I, x.rows), up = g.tmp(I, x.rows);
    project(g, this.gate, gt, x);
    project(g, this.up, up, x);
    gatedAct(g, gt, gt, up, this.c.act);
    norm(g, { w: this.subNorm, eps: this.c.eps }, gt, gt);
    project(g, this.down, out, gt);
  }
}

export function buildBitNet(ctx: Ctx, c: BitNetConfig): Net {
  const { ws } = ctx;
  const { hidden, vocab, eps } = c;
  const ropeTab = ropeSpec(c.rope, c.attn.headDim);
  const blocks: Block[] = [];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `model.layers.${i}`;
    blocks.push(new PreNormBlock(ctx, {
      kind: 'attention', hidden,
      mixer: new BitNetAttention(ctx, `${p}.self_attn`, c, ropeTab),
      ffn: new BitNetMlp(ctx, `${p}.mlp`, c),
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

export const bitnet: Family<BitNetConfig> = {
  types: ['bitnet'],
  // Quantized linears are read exactly (f32) and packed at build.
  keepF32: (name, config) => config.quantization_config != null && PROJ.test(name),
  parse: parseBitNet,
  build: buildBitNet,
};
