// Doge (DogeForCausalLM): a pre-norm decoder with dynamic mask attention and learned residual
// weights, and a dense SwiGLU MLP or a cross-domain mixture of experts (is_moe).
//
// Attention: q/k RMSNorm per head (q_norm, k_norm), RoPE, GQA; from the values of each position
// dt = dt_proj(v) [nKv] gives a key bias b = exp(A · softplus(dt)) per KV head, added to the scores
// of every query; when a query sees more than keep_window_size keys (causal, optional
// sliding_window) only the keep_window_size keys with the largest bias take part (graph/ops-dma.ts).
// Equal biases at the cut (a token repeated in the context gives equal layer-0 biases) go to the
// lower position; transformers' torch.topk leaves that order to its sort.
// Block: x = input_residual ⊙ x + attn(norm(x)); x = post_attention_residual ⊙ x + ffn(norm(x)).
//
// Cross-domain MoE: a SwiGLU MLP (gate/up/down_proj) plus num_experts single-unit experts, expert
// e = a·n + b (n = ⌊√num_experts⌋) scored s_a + s'_b from the router's two halves
// r = router_gate(x) = [s (n) | s' (n)]; the num_experts_per_tok best pairs are softmax-weighted,
// and expert e adds act(down_embed[e]·x) · w_e · up_embed[e]. Here the pair scores are one product
// with a precomputed [n², hidden] router (row a·n + b = rows a and n + b of router_gate), and each
// expert is a gated expert of one unit: gate down_embed[e], up 0·x + 1, down up_embed[e] as a column.
// Routing is per token, as transformers computes it for one token at a time (its forward over
// several tokens reshapes the router output across tokens, so its prefill differs).

import { ConfigError } from '../formats/errors';
import type { Weight } from '../kernels/types';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedMlp, parseActivation, type Activation, type GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import type { Graph, Tensor } from '../graph/graph';
import { add, kvAppend, linear, norm, rope, type NormSpec, type RopeSpec } from '../graph/ops';
import { dmaAttention, mulRow } from '../graph/ops-dma';
import type { RegionSpec } from '../runtime/state';
import { attentionShape, bool, int, lmHead, num, rejectIf, ropeParams, ropeSpec, tiedEmbeddings, type AttentionShape, type RawConfig, type RopeParams } from './common';
import { DecoderNet, type Block } from './decoder';
import type { Family, Net } from './net';

export interface DogeConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  attn: AttentionShape;
  inter: number;
  eps: number;
  act: Activation;
  /** attention_bias: q/k/v/o and dt_proj biases */
  attnBias: boolean;
  mlpBias: boolean;
  /** sliding_window (0: none) */
  window: number;
  /** keep_window_size */
  keep: number;
  rope: RopeParams;
  /** The cross-domain MoE (is_moe), or null for the dense MLP. */
  moe: { nExperts: number; nKeys: number; topk: number } | null;
  tieEmbeddings: boolean;
}

export function parseDoge(c: RawConfig): DogeConfig {
  const hidden = int(c, 'hidden_size');
  const window = c.sliding_window == null ? 0 : int(c, 'sliding_window');
  rejectIf(c.sliding_window != null && window < 1, 'sliding_window', 'must be ≥ 1 or null');
  const keep = int(c, 'keep_window_size', 2048);
  rejectIf(keep < 1, 'keep_window_size', 'must be ≥ 1');
  let moe: DogeConfig['moe'] = null;
  if (bool(c, 'is_moe', false)) {
    const nExperts = int(c, 'num_experts', 16384), nKeys = Math.floor(Math.sqrt(nExperts)), topk = int(c, 'num_experts_per_tok', 64);
    rejectIf(nKeys < 1, 'num_experts', 'must be ≥ 1');
    rejectIf(topk < 1 || topk > nKeys * nKeys, 'num_experts_per_tok', `${topk} must be in [1, ${nKeys * nKeys}]`);
    moe = { nExperts, nKeys, topk };
  }
  return {
    hidden,
    nLayers: int(c, 'num_hidden_layers'),
    vocab: int(c, 'vocab_size'),
    attn: attentionShape(c, hidden),
    inter: int(c, 'intermediate_size'),
    eps: num(c, 'rms_norm_eps', 1e-6),
    act: parseActivation(c.hidden_act ?? 'silu'),
    attnBias: bool(c, 'attention_bias', false),
    mlpBias: bool(c, 'mlp_bias', false),
    window, keep,
    rope: ropeParams(c),
    moe,
    tieEmbeddings: tiedEmbeddings(c, false),
  };
}

/** Dynamic mask attention with f32 caches of keys, values and dt. */
export class DogeAttention implements Mixer {
  readonly q: Weight;
  readonly k: Weight;
  readonly v: Weight;
  readonly o: Weight;
  readonly dt: Weight;
  readonly b: { q: number; k: number; v: number; o: number; dt: number };
  readonly qNorm: number;
  readonly kNorm: number;
  readonly A: number;
  readonly kState: RegionSpec;
  readonly vState: RegionSpec;
  readonly dtState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: { hidden: number; attn: AttentionShape; bias: boolean; eps: number; rope: RopeSpec; window: number; keep: number }) {
    const { ws } = ctx;
    const { hidden, bias } = cfg;
    const { nHeads: H, nKv, headDim: d } = cfg.attn;
    const p = prefix;
    this.q = ws.mat(`${p}.q_proj.weight`, H * d, hidden);
    this.k = ws.mat(`${p}.k_proj.weight`, nKv * d, hidden);
    this.v = ws.mat(`${p}.v_proj.weight`, nKv * d, hidden);
    this.o = ws.mat(`${p}.o_proj.weight`, hidden, H * d);
    this.dt = ws.mat(`${p}.dt_proj.weight`, nKv, nKv * d);
    const bv = (n: string, len: number) => (bias ? ws.vec(`${p}.${n}.bias`, len) : 0);
    this.b = { q: bv('q_proj', H * d), k: bv('k_proj', nKv * d), v: bv('v_proj', nKv * d), o: bv('o_proj', hidden), dt: bv('dt_proj', nKv) };
    this.qNorm = ws.vec(`${p}.q_norm.weight`, d);
    this.kNorm = ws.vec(`${p}.k_norm.weight`, d);
    this.A = ws.vec(`${p}.A`, nKv);
    this.kState = { name: `${p}.k`, kind: 'kv', perToken: nKv * d };
    this.vState = { name: `${p}.v`, kind: 'kv', perToken: nKv * d };
    this.dtState = { name: `${p}.dt`, kind: 'kv', perToken: nKv };
  }

  specs(_maxContext: number): RegionSpec[] {
    return [this.kState, this.vState, this.dtState];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { nHeads: H, nKv, headDim: d } = this.cfg.attn;
    const { eps, rope: r } = this.cfg;
    const q = g.tmp(H * d), k = g.tmp(nKv * d), v = g.tmp(nKv * d), dt = g.tmp(nKv), ao = g.tmp(H * d);
    linear(g, q, x, this.q, this.b.q);
    linear(g, k, x, this.k, this.b.k);
    linear(g, v, x, this.v, this.b.v);
    norm(g, { w: this.qNorm, eps }, q, q, d);
    norm(g, { w: this.kNorm, eps }, k, k, d);
    rope(g, q, H, d, r);
    rope(g, k, nKv, d, r);
    linear(g, dt, v, this.dt, this.b.dt);
    kvAppend(g, this.kState, k);
    kvAppend(g, this.vState, v);
    kvAppend(g, this.dtState, dt);
    dmaAttention(g, {
      y: ao, q, k: this.kState, v: this.vState, dt: this.dtState, A: this.A, nHeads: H, nKv, headDim: d, vDim: d,
      scale: 1 / Math.sqrt(d), window: this.cfg.window, keep: this.cfg.keep,
    });
    linear(g, out, ao, this.o, this.b.o);
  }
}

/** The Doge block: residual stream scaled by learned vectors before each branch is added. */
class DogeBlock implements Block {
  constructor(readonly kind: string, readonly hidden: number, readonly mixer: Mixer, readonly ffn: Ffn,
    readonly preMixer: NormSpec, readonly preFfn: NormSpec, readonly inRes: number, readonly postRes: number) {}
  specs(maxContext: number): RegionSpec[] {
    return this.mixer.specs(maxContext);
  }
  forward(g: Graph, x: Tensor): void {
    const h = g.tmp(this.hidden), o = g.tmp(this.hidden);
    norm(g, this.preMixer, h, x);
    this.mixer.forward(g, h, o);
    mulRow(g, x, x, this.inRes);
    add(g, x, x, o);
    norm(g, this.preFfn, h, x);
    this.ffn.forward(g, h, o);
    mulRow(g, x, x, this.postRes);
    add(g, x, x, o);
  }
}

/** The cross-domain MoE of one layer as the moe op (see the header). */
function dogeCdMoe(ctx: Ctx, p: string, c: DogeConfig, m: NonNullable<DogeConfig['moe']>, unit: { zero: Weight; one: number }): Moe {
  const { ws, k } = ctx;
  const { hidden: D, inter: I, mlpBias } = c;
  const n = m.nKeys, E = n * n;
  const rg = ws.mat(`${p}.router_gate.weight`, 2 * n, D);
  if (rg.dtype !== 'f32') throw new ConfigError(`tensors["${p}.router_gate.weight"]`, `is ${rg.dtype}; the pair router is built from f32 rows`);
  const src = ctx.f32(rg.ptr, 2 * n * D);
  const pairs = new Float32Array(E * D);
  for (let a = 0; a < n; a++) {
    for (let b = 0; b < n; b++) {
      const row = (a * n + b) * D;
      for (let i = 0; i < D; i++) pairs[row + i] = src[a * D + i] + src[(n + b) * D + i];
    }
  }
  const router: Weight = { name: `${p}.router_gate.weight (pairs)`, ptr: k.arena.putF32(pairs).ptr, dtype: 'f32', rows: E, cols: D };
  const downEmbed = ws.mat(`${p}.down_embed.weight`, m.nExperts, D);
  const upEmbed = ws.mat(`${p}.up_embed.weight`, m.nExperts, D);
  if (upEmbed.dtype !== 'f32') throw new ConfigError(`tensors["${p}.up_embed.weight"]`, `is ${upEmbed.dtype}; expert output columns are read as f32`);
  if (downEmbed.dtype !== 'f32') throw new ConfigError(`tensors["${p}.down_embed.weight"]`, `is ${downEmbed.dtype}; expert rows are read as f32`);
  const expert = (e: number): GatedWeights => ({
    gate: { ptr: downEmbed.ptr + e * D * 4, dtype: 'f32', rows: 1, cols: D },
    up: unit.zero, upBias: unit.one,
    down: { ptr: upEmbed.ptr + e * D * 4, dtype: 'f32', rows: D, cols: 1 },
  });
  const bv = (name: string, len: number) => (mlpBias ? ws.vec(`${p}.${name}.bias`, len) : 0);
  return new Moe(ctx, {
    name: p, hidden: D, nExperts: E, topk: m.topk, inter: 1, act: c.act,
    routing: { mode: 'topk_softmax' }, router, expert,
    shared: {
      inter: I, act: c.act,
      w: {
        gate: ws.mat(`${p}.gate_proj.weight`, I, D), up: ws.mat(`${p}.up_proj.weight`, I, D), down: ws.mat(`${p}.down_proj.weight`, D, I),
        gateBias: bv('gate_proj', I), upBias: bv('up_proj', I), downBias: bv('down_proj', D),
      },
    },
  });
}

export function buildDoge(ctx: Ctx, c: DogeConfig): Net {
  const { ws, k } = ctx;
  const { hidden, nLayers, vocab, eps } = c;
  const r = ropeSpec(c.rope, c.attn.headDim);
  const unit = c.moe ? { zero: { name: 'zero row', ptr: k.arena.putF32(new Float32Array(hidden)).ptr, dtype: 'f32' as const, rows: 1, cols: hidden }, one: k.arena.putF32(new Float32Array([1])).ptr } : null;
  const blocks: Block[] = [];
  for (let i = 0; i < nLayers; i++) {
    const p = `model.layers.${i}`;
    const attn = new DogeAttention(ctx, `${p}.self_attn`, { hidden, attn: c.attn, bias: c.attnBias, eps, rope: r, window: c.window, keep: c.keep });
    const ffn: Ffn = c.moe && unit ? dogeCdMoe(ctx, `${p}.mlp`, c, c.moe, unit) : new GatedMlp(ctx, `${p}.mlp`, hidden, c.inter, c.act, c.mlpBias);
    blocks.push(new DogeBlock(c.window ? 'sliding_attention' : 'attention', hidden, attn, ffn,
      { w: ws.vec(`${p}.input_layernorm.weight`, hidden), eps }, { w: ws.vec(`${p}.post_attention_layernorm.weight`, hidden), eps },
      ws.vec(`${p}.input_residual`, hidden), ws.vec(`${p}.post_attention_residual`, hidden)));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('model.embed_tokens.weight', vocab, hidden), blocks,
    finalNorm: { w: ws.vec('model.norm.weight', hidden), eps },
    lmHead: lmHead(ws, c.tieEmbeddings, vocab, hidden),
  });
}

export const doge: Family<DogeConfig> = {
  types: ['doge'],
  // The MoE's router halves, expert rows and expert columns are read on the host or as single rows.
  keepF32: (name) => name.endsWith('.router_gate.weight') || (name.includes('.mlp.') && name.endsWith('_embed.weight')),
  parse: parseDoge,
  build: buildDoge,
};
