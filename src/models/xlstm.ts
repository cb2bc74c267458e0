// xLSTM (xLSTMForCausalLM, the xLSTM-7B "large" layout): a stack of mLSTM blocks, each
//   x += mLSTM(RMSNorm(x));  x += FFN(RMSNorm(x))
// then RMSNorm (out_norm), the LM head and a tanh soft cap of the logits (output_logit_soft_cap).
//
// mLSTM layer, H heads, q/k head size dk = qk_dim / H, value head size dv = v_dim / H
// (qk_dim = int(hidden · qk_dim_factor), v_dim = int(hidden · v_dim_factor)):
//   q, k, v, o = W_q x, W_k x, W_v x, W_o x                  (ogate_preact; biases with use_bias)
//   i, f = cap · tanh((W_i x + b_i) / cap), likewise f        (gate_soft_cap; gate biases always)
//   per head, stabiliser m (state), C [dk, dv], n [dk]:
//     m' = max(log σ(f) + m, i);  C ← e^{log σ(f) + m − m'} C + e^{i − m'} k vᵀ;  n likewise with k
//     h = (q̃ᵀC) / (max(|q̃·n|, e^{−m'}) + eps),  q̃ = q · dk^−½
//   out = out_proj( σ(o) ⊙ (LayerNorm_head(h) · w + b) )     (multihead_norm weight over v_dim)
// HF prefills with a chunkwise form (chunk_size) and the recurrence for the remainder and decode;
// both compute this recurrence, which is what runs here for prompts and steps alike.
// FFN: down(SiLU(up_gate x) ⊙ up x), width round_up(hidden · ffn_proj_factor, ffn_round_up_to_multiple_of).
// RMSNorms have a weight (and a bias with use_bias, except out_norm). weight_mode "fused" packs
// q|k|v|o, i|f and gate|up into single projections.

import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { add, addBias, linear, norm, softcap, type NormSpec } from '../graph/ops';
import { mlstm, mlstmOutput, mlstmStateFloats } from '../graph/ops-mlstm';
import type { Ctx, Ffn, Mixer } from '../layers/context';
import { GatedFfn, rowsOf } from '../layers/mlp';
import type { RegionSpec } from '../runtime/state';
import type { WeightStore } from '../runtime/weights';
import { bool, int, lmHead, num, rejectIf, type RawConfig } from './common';
import { DecoderNet, type Block } from './decoder';
import type { Family, Net } from './net';

export interface XlstmConfig {
  hidden: number;
  nLayers: number;
  vocab: number;
  H: number;
  /** int(hidden · qk_dim_factor), int(hidden · v_dim_factor) */
  qkDim: number;
  vDim: number;
  /** The FFN's inner width. */
  ffnDim: number;
  useBias: boolean;
  /** norm_eps (block, head and output norms) */
  normEps: number;
  /** eps of the recurrence's denominator */
  eps: number;
  /** gate_soft_cap, output_logit_soft_cap (null: none) */
  gateCap: number | null;
  logitCap: number | null;
  fused: boolean;
}

/** A nullable positive number field. */
function optCap(c: RawConfig, field: string, dflt: number): number | null {
  if (c[field] === null) return null;
  const v = num(c, field, dflt);
  rejectIf(!(v > 0), field, `must be > 0 or null, got ${v}`);
  return v;
}

export function parseXlstm(c: RawConfig): XlstmConfig {
  const hidden = c.hidden_size !== undefined && c.hidden_size !== null ? int(c, 'hidden_size') : int(c, 'embedding_dim');
  const nLayers = c.num_hidden_layers !== undefined && c.num_hidden_layers !== null ? int(c, 'num_hidden_layers') : int(c, 'num_blocks');
  const H = int(c, 'num_heads', 8);
  rejectIf(H < 1, 'num_heads', 'must be ≥ 1');
  const qkDim = Math.trunc(hidden * num(c, 'qk_dim_factor', 0.5));
  const vDim = Math.trunc(hidden * num(c, 'v_dim_factor', 1.0));
  rejectIf(qkDim < H || qkDim % H !== 0, 'qk_dim_factor', `qk_dim ${qkDim} is not a positive multiple of num_heads ${H}`);
  rejectIf(vDim < H || vDim % H !== 0, 'v_dim_factor', `v_dim ${vDim} is not a positive multiple of num_heads ${H}`);
  const mult = int(c, 'ffn_round_up_to_multiple_of', 64);
  rejectIf(mult < 1, 'ffn_round_up_to_multiple_of', 'must be ≥ 1');
  const ffnDim = Math.floor((hidden * num(c, 'ffn_proj_factor', 2.667) + mult - 1) / mult) * mult;
  const mode = c.weight_mode ?? 'single';
  rejectIf(mode !== 'single' && mode !== 'fused', 'weight_mode', `${JSON.stringify(mode)} is not single or fused`);
  return {
    hidden, nLayers, vocab: int(c, 'vocab_size'), H, qkDim, vDim, ffnDim,
    useBias: bool(c, 'use_bias', false),
    normEps: num(c, 'norm_eps', 1e-6),
    eps: num(c, 'eps', 1e-6),
    gateCap: optCap(c, 'gate_soft_cap', 15),
    logitCap: optCap(c, 'output_logit_soft_cap', 30),
    fused: mode === 'fused',
  };
}

/** A linear layer's weight and bias (0: none). */
interface Lin {
  w: Weight;
  b: number;
}

/** The mLSTM layer (see the file header). */
export class MlstmLayer implements Mixer {
  readonly q: Lin;
  readonly k: Lin;
  readonly v: Lin;
  readonly o: Lin;
  readonly i: Lin;
  readonly f: Lin;
  readonly out: Lin;
  /** Arena vectors [v_dim]: the head norm's weight and bias (0: none). */
  readonly normW: number;
  readonly normB: number;
  /** Session state: [C (H·dk·dv) | n (H·dk) | m (H)]. */
  readonly state: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: XlstmConfig) {
    const { ws } = ctx;
    const { hidden, H, qkDim: Q, vDim: V, useBias } = cfg;
    const bias = (name: string, n: number, on = useBias) => (on ? ws.vec(`${prefix}.${name}.bias`, n) : 0);
    if (cfg.fused) {
      const w = ws.mat(`${prefix}.qkv_opreact.weight`, 2 * Q + 2 * V, hidden), b = bias('qkv_opreact', 2 * Q + 2 * V);
      const part = (r0: number, n: number): Lin => ({ w: { ...rowsOf(w, r0, n), name: `${prefix}.qkv_opreact[${r0}:${r0 + n}]` }, b: b && b + r0 * 4 });
      this.q = part(0, Q);
      this.k = part(Q, Q);
      this.v = part(2 * Q, V);
      this.o = part(2 * Q + V, V);
      const gw = ws.mat(`${prefix}.ifgate_preact.weight`, 2 * H, hidden), gb = bias('ifgate_preact', 2 * H, true);
      this.i = { w: { ...rowsOf(gw, 0, H), name: `${prefix}.ifgate_preact[i]` }, b: gb };
      this.f = { w: { ...rowsOf(gw, H, H), name: `${prefix}.ifgate_preact[f]` }, b: gb + H * 4 };
    } else {
      const lin = (name: string, rows: number, on = useBias): Lin => ({ w: ws.mat(`${prefix}.${name}.weight`, rows, hidden), b: bias(name, rows, on) });
      this.q = lin('q', Q);
      this.k = lin('k', Q);
      this.v = lin('v', V);
      this.o = lin('ogate_preact', V);
      this.i = lin('igate_preact', H, true);
      this.f = lin('fgate_preact', H, true);
    }
    this.out = { w: ws.mat(`${prefix}.out_proj.weight`, hidden, V), b: useBias ? ws.vec(`${prefix}.out_proj.bias`, hidden) : 0 };
    this.normW = ws.vec(`${prefix}.multihead_norm.weight`, V);
    this.normB = useBias ? ws.vec(`${prefix}.multihead_norm.bias`, V) : 0;
    this.state = { name: `${prefix}.state`, kind: 'fixed', floats: mlstmStateFloats(H, Q / H, V / H) };
  }

  specs(): RegionSpec[] {
    return [this.state];
  }

  forward(g: Graph, x: Tensor, out: Tensor): void {
    const { H, qkDim: Q, vDim: V, gateCap } = this.cfg;
    const q = g.tmp(Q), k = g.tmp(Q), v = g.tmp(V), o = g.tmp(V), i = g.tmp(H), f = g.tmp(H), h = g.tmp(V);
    for (const [y, l] of [[q, this.q], [k, this.k], [v, this.v], [o, this.o], [i, this.i], [f, this.f]] as const) linear(g, y, x, l.w, l.b || undefined);
    if (gateCap !== null) {
      softcap(g, i, i, gateCap);
      softcap(g, f, f, gateCap);
    }
    mlstm(g, h, { q, k, v, i, f }, { H, dk: Q / H, dv: V / H, eps: this.cfg.eps, state: this.state });
    mlstmOutput(g, h, o, { w: this.normW, b: this.normB, H, dv: V / H, eps: this.cfg.normEps });
    linear(g, out, h, this.out.w, this.out.b || undefined);
  }
}

/** An xLSTM block: pre-norm residual mLSTM and FFN, the norms with an optional bias. */
class XlstmBlock implements Block {
  readonly kind = 'mlstm';
  constructor(readonly hidden: number, readonly mixer: Mixer, readonly ffn: Ffn, readonly n1: NormSpec, readonly n2: NormSpec) {}
  specs(maxContext: number): RegionSpec[] {
    return this.mixer.specs(maxContext);
  }
  forward(g: Graph, x: Tensor): void {
    const h = g.tmp(this.hidden), o = g.tmp(this.hidden);
    norm(g, { w: this.n1.w, eps: this.n1.eps }, h, x);
    addBias(g, h, this.n1.b);
    this.mixer.forward(g, h, o);
    add(g, x, x, o);
    norm(g, { w: this.n2.w, eps: this.n2.eps }, h, x);
    addBias(g, h, this.n2.b);
    this.ffn.forward(g, h, o);
    add(g, x, x, o);
  }
}

function rmsNorm(ws: WeightStore, name: string, n: number, eps: number, bias: boolean): NormSpec {
  return { w: ws.vec(`${name}.weight`, n), b: bias ? ws.vec(`${name}.bias`, n) : undefined, eps };
}

export function buildXlstm(ctx: Ctx, c: XlstmConfig): Net {
  const { ws } = ctx;
  const { hidden, vocab, ffnDim: I, useBias, normEps } = c;
  const blocks: Block[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `backbone.blocks.${l}`, fp = `${p}.ffn`;
    const fb = (name: string, n: number) => (useBias ? ws.vec(`${fp}.${name}.bias`, n) : 0);
    let gate: Weight, up: Weight, gateBias: number, upBias: number;
    if (c.fused) {
      const w = ws.mat(`${fp}.proj_up_gate_z.weight`, 2 * I, hidden), b = fb('proj_up_gate_z', 2 * I);
      gate = rowsOf(w, 0, I);
      up = rowsOf(w, I, I);
      gateBias = b;
      upBias = b && b + I * 4;
    } else {
      gate = ws.mat(`${fp}.proj_up_gate.weight`, I, hidden);
      up = ws.mat(`${fp}.proj_up.weight`, I, hidden);
      gateBias = fb('proj_up_gate', I);
      upBias = fb('proj_up', I);
    }
    const ffn = new GatedFfn({ gate, up, down: ws.mat(`${fp}.proj_down.weight`, hidden, I), gateBias, upBias, downBias: fb('proj_down', hidden) }, 'silu');
    blocks.push(new XlstmBlock(hidden, new MlstmLayer(ctx, `${p}.mlstm_layer`, c), ffn,
      rmsNorm(ws, `${p}.norm_mlstm`, hidden, normEps, useBias), rmsNorm(ws, `${p}.norm_ffn`, hidden, normEps, useBias)));
  }
  return new DecoderNet(ctx, {
    hidden, vocab, embed: ws.mat('backbone.embeddings.weight', vocab, hidden), blocks,
    // out_norm is built without a bias whatever use_bias (and whatever add_out_norm: HF always applies it).
    finalNorm: { w: ws.vec('backbone.out_norm.weight', hidden), eps: normEps },
    lmHead: lmHead(ws, !ws.has('lm_head.weight'), vocab, hidden, 'backbone.embeddings.weight'),
    finalSoftcap: c.logitCap ?? undefined,
  });
}

export const xlstm: Family<XlstmConfig> = {
  types: ['xlstm'],
  parse: parseXlstm,
  build: buildXlstm,
};
