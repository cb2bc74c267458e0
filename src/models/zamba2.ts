// Zamba2 (Zamba2ForCausalLM, model_type "zamba2"): a Mamba-2 backbone, x += Mamba2(RMSNorm(x)) per
// layer, where the "hybrid" layers first run a shared transformer block on the concatenation of x
// and the original embeddings e:
//   c = RMSNorm([x, e])                                       (width 2·hidden)
//   a = W_o Attn(W_q c + Bq Aq c, W_k c + Bk Ak c, W_v c + Bv Av c)   head_dim 2·hidden / heads,
//       scale (head_dim / 2)^-0.5, RoPE only with use_mem_rope, LoRA adapters (A, B) per use of the
//       block only with use_shared_attention_adapter
//   f = down(act(gate) ⊙ up), [gate; up] = W_gu a' + B_gu A_gu a',  a' = RMSNorm(a)   (adapter always)
//   x += Mamba2(RMSNorm(x + W_lin f))                        (W_lin: the layer's own `linear`)
// The num_mem_blocks shared blocks serve the hybrid layers in turn (hybrid layer k uses block
// k mod num_mem_blocks, and its adapters k); each use keeps its own KV cache (and, with the load
// option attention { mode: 'topk' }, its own page key bounds). Tied copies of a block
// are stored once, under the first hybrid layer that uses it. The Mamba-2 mixer's gated RMSNorm
// normalises each of mamba_ngroups slices of d_inner (eps 1e-5), Δ ≥ time_step_min, conv bias always.

import type { Weight } from '../kernels/types';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import { add, attention, copy, embed, gatedAct, kvAppend, linear, matmul, norm, rope, type NormSpec, type RopeSpec } from '../graph/ops';
import { attentionPages, pageBoundsState, type PageState } from '../layers/attention';
import type { Ctx, Mixer } from '../layers/context';
import { ssmKeepF32 } from '../layers/mamba';
import { parseActivation, rowsOf, type Activation } from '../layers/mlp';
import { kvCacheRegion, type RegionSpec } from '../runtime/state';
import { bool, int, layerTypes, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type RawConfig, type RopeParams } from './common';
import { HybridMamba2Mixer, type HybridMamba2Config } from './mamba2_hybrid';
import type { Family, Net } from './net';

export interface Zamba2Config {
  hidden: number;
  vocab: number;
  /** rms_norm_eps */
  eps: number;
  /** true: hybrid layer (shared block + Mamba-2), false: Mamba-2 layer */
  hybrid: boolean[];
  nHeads: number;
  nKv: number;
  /** attention_head_dim = 2·hidden / heads */
  headDim: number;
  inter: number;
  act: Activation;
  bias: boolean;
  memBlocks: number;
  attnAdapters: boolean;
  adapterRank: number;
  /** RoPE of the shared attention (use_mem_rope), else null. */
  rope: RopeParams | null;
  mamba: HybridMamba2Config;
  tieEmbeddings: boolean;
}

/** Zamba2Config's default layers_block_type (54 layers). */
function defaultTypes(): string[] {
  const six = ['linear_attention', 'linear_attention', 'linear_attention', 'linear_attention', 'linear_attention', 'hybrid'];
  return [
    'linear_attention', ...Array.from({ length: 7 }, () => six).flat(),
    'linear_attention', 'linear_attention', 'linear_attention', 'linear_attention', 'hybrid',
    'linear_attention', 'linear_attention', 'linear_attention', 'hybrid', 'linear_attention', 'linear_attention',
  ];
}

export function parseZamba2(c: RawConfig): Zamba2Config {
  const hidden = int(c, 'hidden_size');
  const given = c.layers_block_type ?? c.layer_types;
  const n = Array.isArray(given) ? given.length : 54;
  const field = c.layers_block_type !== undefined ? { layer_types: c.layers_block_type } : c.layer_types !== undefined ? { layer_types: c.layer_types } : { layer_types: defaultTypes() };
  const types = layerTypes(field, n, ['linear_attention', 'mamba', 'hybrid'], () => 'linear_attention');
  const hybrid = types.map((t) => t === 'hybrid');

  const nHeads = int(c, 'num_attention_heads', 32);
  const nKv = int(c, 'num_key_value_heads', nHeads);
  rejectIf(nKv === 0 || nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
  const headDim = Math.floor((2 * hidden) / nHeads);
  if (c.attention_head_dim !== undefined && c.attention_head_dim !== null) {
    rejectIf(c.attention_head_dim !== headDim, 'attention_head_dim', `${JSON.stringify(c.attention_head_dim)} differs from 2 · hidden_size / num_attention_heads = ${headDim}`);
  }
  const attnAdapters = bool(c, 'use_shared_attention_adapter', false);
  // The q/k/v adapters add a 2·hidden output to each projection.
  rejectIf(attnAdapters && (nHeads * headDim !== 2 * hidden || nKv * headDim !== 2 * hidden), 'use_shared_attention_adapter', `needs the q, k and v projections 2 · hidden_size wide (heads ${nHeads}, kv heads ${nKv}, head_dim ${headDim})`);

  const H = int(c, 'n_mamba_heads', 8);
  const dInner = Math.floor(num(c, 'mamba_expand', 2) * hidden);
  const P = Math.floor(dInner / H);
  rejectIf(H * P !== dInner, 'n_mamba_heads', `${H} heads do not divide the Mamba d_inner ${dInner}`);
  const G = int(c, 'mamba_ngroups', 1);
  rejectIf(G < 1 || H % G !== 0, 'mamba_ngroups', `${G} does not divide n_mamba_heads ${H}`);
  const bias = bool(c, 'add_bias_linear', false);
  const mamba: HybridMamba2Config = {
    hidden, H, P, G, N: int(c, 'mamba_d_state', 64), W: int(c, 'mamba_d_conv', 4),
    inBias: bias, outBias: bias, convBias: true,
    dtLimit: [num(c, 'time_step_min', 0.001), Infinity],
    out: 'norm_after_gate', normGroups: G, normEps: 1e-5,
  };
  const memBlocks = int(c, 'num_mem_blocks', 1);
  rejectIf(memBlocks < 1, 'num_mem_blocks', 'must be ≥ 1');
  return {
    hidden, vocab: int(c, 'vocab_size'), eps: num(c, 'rms_norm_eps', 1e-5), hybrid, nHeads, nKv, headDim,
    inter: int(c, 'intermediate_size', 4 * hidden),
    act: parseActivation(c.hidden_act ?? 'gelu'),
    bias, memBlocks, attnAdapters, adapterRank: int(c, 'adapter_rank', 128),
    rope: bool(c, 'use_mem_rope', false) ? ropeParams(c) : null,
    mamba,
    tieEmbeddings: tiedEmbeddings(c, true),
  };
}

/** A LoRA adapter B·(A·x): A [rank, in], B [out, rank]. */
interface Adapter {
  a: Weight;
  b: Weight;
}

/**
 * The shared attention of one hybrid layer: shared q/k/v/o, this use's adapters, KV cache and (with
 * the load option attention { mode: 'topk' }) page key bounds.
 */
class Zamba2Attention implements Mixer {
  kState!: RegionSpec;
  vState!: RegionSpec;
  pageState: PageState | null = null;
  private declaredFor = -1;
  constructor(
    readonly ctx: Ctx, readonly name: string, readonly c: Zamba2Config,
    readonly q: Weight, readonly k: Weight, readonly v: Weight, readonly o: Weight,
    readonly adapters: [Adapter, Adapter, Adapter] | null, readonly rope: RopeSpec | null,
  ) {}
  specs(maxContext: number): RegionSpec[] {
    if (maxContext !== this.declaredFor) {
      this.kState = kvCacheRegion(`${this.name}.k`, this.c.nKv, this.c.headDim, this.ctx.kvCache);
      this.vState = kvCacheRegion(`${this.name}.v`, this.c.nKv, this.c.headDim, this.ctx.kvCache);
      this.pageState = pageBoundsState(this.ctx, this.name, this.c.nKv, this.c.headDim, maxContext);
      this.declaredFor = maxContext;
    }
    return this.pageState ? [this.kState, this.vState, this.pageState.spec] : [this.kState, this.vState];
  }
  private project(g: Graph, y: Tensor, x: Tensor, w: Weight, ad: Adapter | undefined, low: Tensor | null): void {
    matmul(g, y, x, w);
    if (!ad || !low) return;
    const t = g.tmp(y.width);
    matmul(g, low, x, ad.a);
    matmul(g, t, low, ad.b);
    add(g, y, y, t);
  }
  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { nHeads, nKv, headDim } = this.c;
    const q = g.tmp(nHeads * headDim), kk = g.tmp(nKv * headDim), v = g.tmp(nKv * headDim), ao = g.tmp(nHeads * headDim);
    const ad = this.adapters;
    const low = ad ? g.tmp(this.c.adapterRank) : null;
    this.project(g, q, x, this.q, ad?.[0], low);
    this.project(g, kk, x, this.k, ad?.[1], low);
    this.project(g, v, x, this.v, ad?.[2], low);
    if (this.rope) {
      rope(g, q, nHeads, headDim, this.rope);
      rope(g, kk, nKv, headDim, this.rope);
    }
    kvAppend(g, this.kState, kk);
    kvAppend(g, this.vState, v);
    const pages = attentionPages(this.ctx, this.pageState, kk);
    attention(g, { y: ao, q, k: this.kState, v: this.vState, nHeads, nKv, headDim, vDim: headDim, scale: 1 / Math.sqrt(headDim / 2), ...(pages ? { pages } : {}) });
    matmul(g, out, ao, this.o);
  }
}

/** The shared block's MLP at one hybrid layer: gate_up_proj (+ bias) + this use's adapter, then down. */
class Zamba2Mlp {
  constructor(
    readonly inter: number, readonly act: Activation,
    readonly gate: Weight, readonly up: Weight, readonly down: Weight,
    readonly bg: number, readonly bu: number, readonly bd: number,
    readonly ad: { a: Weight; bGate: Weight; bUp: Weight } | null,
  ) {}
  forward(g: Graph, x: Tensor, out: Tensor): void {
    const gt = g.tmp(this.inter), up = g.tmp(this.inter);
    linear(g, gt, x, this.gate, this.bg);
    linear(g, up, x, this.up, this.bu);
    if (this.ad) {
      const low = g.tmp(this.ad.a.rows), t = g.tmp(this.inter);
      matmul(g, low, x, this.ad.a);
      matmul(g, t, low, this.ad.bGate);
      add(g, gt, gt, t);
      matmul(g, t, low, this.ad.bUp);
      add(g, up, up, t);
    }
    gatedAct(g, gt, gt, up, this.act);
    linear(g, out, gt, this.down, this.bd);
  }
}

interface Zamba2Layer {
  kind: string;
  specs(maxContext: number): RegionSpec[];
  /** Updates x [T, hidden] in place; e: the original embeddings. */
  forward(g: Graph, x: Tensor, e: Tensor): void;
}

class MambaLayer implements Zamba2Layer {
  readonly kind = 'mamba2';
  constructor(readonly hidden: number, readonly n: NormSpec, readonly mixer: HybridMamba2Mixer) {}
  specs(): RegionSpec[] {
    return this.mixer.specs();
  }
  /** x += Mamba2(RMSNorm(x + t)) (t: the shared block's output, hybrid layers only). */
  run(g: Graph, x: Tensor, t: Tensor | null): void {
    const h = g.tmp(this.hidden), o = g.tmp(this.hidden);
    if (t) {
      add(g, h, x, t);
      norm(g, this.n, h, h);
    } else {
      norm(g, this.n, h, x);
    }
    this.mixer.forward(g, h, o);
    add(g, x, x, o);
  }
  forward(g: Graph, x: Tensor): void {
    this.run(g, x, null);
  }
}

export class HybridLayer implements Zamba2Layer {
  readonly kind = 'hybrid';
  constructor(
    readonly hidden: number, readonly inNorm: NormSpec, readonly ffNorm: NormSpec,
    readonly attn: Zamba2Attention, readonly mlp: Zamba2Mlp, readonly linear: Weight, readonly mamba: MambaLayer,
  ) {}
  specs(maxContext: number): RegionSpec[] {
    return [...this.attn.specs(maxContext), ...this.mamba.specs()];
  }
  forward(g: Graph, x: Tensor, e: Tensor): void {
    const D = this.hidden;
    const c = g.tmp(2 * D), a = g.tmp(D), f = g.tmp(D), t = g.tmp(D);
    copy(g, c, x, { chunks: 1, len: D });
    copy(g, c, e, { chunks: 1, len: D, yOff: D });
    norm(g, this.inNorm, c, c);
    this.attn.forward(g, c, a);
    norm(g, this.ffNorm, a, a);
    this.mlp.forward(g, a, f);
    matmul(g, t, f, this.linear);
    this.mamba.run(g, x, t);
  }
}

export class Zamba2Net implements Net {
  readonly vocabSize: number;
  readonly hidden: number;
  readonly layerKinds: string[];
  readonly hiddenOutput = true;
  private readonly labels: string[];
  constructor(
    readonly ctx: Ctx, readonly d: { hidden: number; vocab: number; embed: Weight; layers: Zamba2Layer[]; finalNorm: NormSpec; lmHead: Weight },
  ) {
    this.vocabSize = d.vocab;
    this.hidden = d.hidden;
    this.layerKinds = d.layers.map((l) => l.kind);
    this.labels = d.layers.map((_, i) => `layer ${i}`);
  }
  specs(maxContext: number): RegionSpec[] {
    return this.d.layers.flatMap((l) => l.specs(maxContext));
  }
  forward(g: Graph, all: boolean, output: ForwardOutput = 'logits'): Tensor {
    const { d } = this;
    const x = g.tmp(d.hidden), e = g.tmp(d.hidden);
    embed(g, e, d.embed, 1);
    copy(g, x, e, { chunks: 1, len: d.hidden });
    for (let i = 0; i < d.layers.length; i++) g.scope(this.labels[i], () => d.layers[i].forward(g, x, e));
    const xs = all ? x : g.last(x);
    norm(g, d.finalNorm, xs, xs);
    if (output === 'hidden') return xs;
    const logits = g.tmp(d.vocab, xs.rows);
    matmul(g, logits, xs, d.lmHead);
    return logits;
  }
}

export function buildZamba2(ctx: Ctx, c: Zamba2Config): Net {
  const { ws } = ctx;
  const { hidden: D, vocab, eps, nHeads, nKv, headDim, inter: I, adapterRank: r } = c;
  const rope = c.rope ? ropeSpec(c.rope, headDim) : null;
  const hybridIds = c.hybrid.flatMap((h, i) => (h ? [i] : []));
  const layers: Zamba2Layer[] = [];
  const mambaLayer = (p: string) => new MambaLayer(D, { w: ws.vec(`${p}.input_layernorm.weight`, D), eps }, new HybridMamba2Mixer(ctx, `${p}.mamba`, c.mamba));
  for (let i = 0; i < c.hybrid.length; i++) {
    const p = `model.layers.${i}`;
    if (!c.hybrid[i]) {
      layers.push(mambaLayer(p));
      continue;
    }
    const k = hybridIds.indexOf(i);
    // The block's tensors: this layer's copy if stored, else those of the first layer using the block.
    const src = `model.layers.${hybridIds[k % c.memBlocks]}.shared_transformer`;
    const own = `${p}.shared_transformer`;
    const st = (s: string) => (ws.has(`${own}.${s}`) ? `${own}.${s}` : `${src}.${s}`);
    const mat = (s: string, rows: number, cols: number) => ws.mat(st(s), rows, cols);
    const adapter = (list: string, out: number, inp: number): Adapter => ({ a: mat(`${list}.${k}.0.weight`, r, inp), b: mat(`${list}.${k}.1.weight`, out, r) });
    const attnAd: [Adapter, Adapter, Adapter] | null = c.attnAdapters
      ? [adapter('self_attn.linear_q_adapter_list', 2 * D, 2 * D), adapter('self_attn.linear_k_adapter_list', 2 * D, 2 * D), adapter('self_attn.linear_v_adapter_list', 2 * D, 2 * D)]
      : null;
    const attn = new Zamba2Attention(
      ctx, `${p}.shared_transformer.self_attn`, c,
      mat('self_attn.q_proj.weight', nHeads * headDim, 2 * D), mat('self_attn.k_proj.weight', nKv * headDim, 2 * D),
      mat('self_attn.v_proj.weight', nKv * headDim, 2 * D), mat('self_attn.o_proj.weight', D, nHeads * headDim),
      attnAd, rope,
    );
    const gu = mat('feed_forward.gate_up_proj.weight', 2 * I, D);
    const guB = c.bias ? ws.vec(st('feed_forward.gate_up_proj.bias'), 2 * I) : 0;
    const mlpAd = adapter('feed_forward.gate_up_proj_adapter_list', 2 * I, D);
    const mlp = new Zamba2Mlp(
      I, c.act, rowsOf(gu, 0, I), rowsOf(gu, I, I), mat('feed_forward.down_proj.weight', D, I),
      guB, guB && guB + I * 4, c.bias ? ws.vec(st('feed_forward.down_proj.bias'), D) : 0,
      { a: mlpAd.a, bGate: rowsOf(mlpAd.b, 0, I), bUp: rowsOf(mlpAd.b, I, I) },
    );
    layers.push(new HybridLayer(
      D, { w: ws.vec(st('input_layernorm.weight'), 2 * D), eps }, { w: ws.vec(st('pre_ff_layernorm.weight'), D), eps },
      attn, mlp, ws.mat(`${p}.linear.weight`, D, D), mambaLayer(`${p}.mamba_decoder`),
    ));
  }
  return new Zamba2Net(ctx, {
    hidden: D, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, D), layers,
    finalNorm: { w: ws.vec('model.final_layernorm.weight', D), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, D),
  });
}

export const zamba2: Family<Zamba2Config> = {
  types: ['zamba2'],
  keepF32: (name) => ssmKeepF32(name),
  parse: parseZamba2,
  build: buildZamba2,
};

