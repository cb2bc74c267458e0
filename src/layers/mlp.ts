// Gated feed-forward blocks: down(act(gate(x)) ⊙ up(x)).

import { geglu, relu2, swiglu } from '../kernels/act';
import { rowBytes, type Weight } from '../kernels/types';
import { ConfigError } from '../formats/errors';
import { addBias, type Ctx, type Ffn } from './context';

export type Activation = 'silu' | 'gelu_tanh' | 'gelu' | 'relu2';

/** HF `hidden_act` names → the activations the kernels implement. */
export function parseActivation(name: unknown, field = 'hidden_act'): Activation {
  switch (name) {
    case 'silu': case 'swish': return 'silu';
    case 'gelu_pytorch_tanh': case 'gelu_new': case 'gelu_fast': return 'gelu_tanh';
    case 'gelu': return 'gelu';
    case 'relu2': return 'relu2';
    default: throw new ConfigError(field, `activation ${JSON.stringify(name)} is not supported (silu, gelu, gelu_pytorch_tanh, relu2)`);
  }
}

/** Rows [r0, r0+n) of a weight, as a weight. */
export function rowsOf(w: Weight, r0: number, n: number): Weight {
  return { ptr: w.ptr + r0 * rowBytes(w.dtype, w.cols), dtype: w.dtype, rows: n, cols: w.cols };
}

export interface GatedWeights {
  gate: Weight;
  up: Weight;
  down: Weight;
  gateBias?: number;
  upBias?: number;
  downBias?: number;
}

/** y[T, hidden] = down(act(gate x) ⊙ up x); `tmpKey` names the scratch of size T × inter × 2. */
export function gatedFfn(ctx: Ctx, m: GatedWeights, act: Activation, x: number, y: number, T: number, tmpKey = 'mlp'): void {
  const { k } = ctx;
  const inter = m.gate.rows;
  const g = ctx.scratch.get(`${tmpKey}.g`), u = ctx.scratch.get(`${tmpKey}.u`);
  ctx.mm(g, x, m.gate, T);
  addBias(ctx, g, m.gateBias ?? 0, T, inter);
  ctx.mm(u, x, m.up, T);
  addBias(ctx, u, m.upBias ?? 0, T, inter);
  const n = T * inter;
  if (act === 'silu') swiglu(k, g, g, u, n);
  else if (act === 'gelu_tanh') geglu(k, g, g, u, n, 'tanh');
  else if (act === 'gelu') geglu(k, g, g, u, n, 'none');
  else {
    relu2(k, g, g, n);
    // relu² gating form: act(gate) ⊙ up
    const gv = ctx.f32(g, n), uv = ctx.f32(u, n);
    for (let i = 0; i < n; i++) gv[i] *= uv[i];
  }
  ctx.mm(y, g, m.down, T);
  addBias(ctx, y, m.downBias ?? 0, T, m.down.rows);
}

export function reserveGatedFfn(ctx: Ctx, inter: number, rows = ctx.maxChunk, tmpKey = 'mlp'): void {
  ctx.scratch.need(`${tmpKey}.g`, rows * inter);
  ctx.scratch.need(`${tmpKey}.u`, rows * inter);
}

/** The Llama-style MLP: `<prefix>.gate_proj`, `up_proj`, `down_proj` (optional biases). */
export class GatedMlp implements Ffn {
  readonly w: GatedWeights;
  constructor(readonly ctx: Ctx, prefix: string, hidden: number, inter: number, readonly act: Activation, bias = false) {
    const { ws } = ctx;
    this.w = {
      gate: ws.mat(`${prefix}.gate_proj.weight`, inter, hidden),
      up: ws.mat(`${prefix}.up_proj.weight`, inter, hidden),
      down: ws.mat(`${prefix}.down_proj.weight`, hidden, inter),
      gateBias: bias ? ws.vec(`${prefix}.gate_proj.bias`, inter) : 0,
      upBias: bias ? ws.vec(`${prefix}.up_proj.bias`, inter) : 0,
      downBias: bias ? ws.vec(`${prefix}.down_proj.bias`, hidden) : 0,
    };
    reserveGatedFfn(ctx, inter);
  }
  forward(x: number, out: number, T: number): void {
    gatedFfn(this.ctx, this.w, this.act, x, out, T);
  }
}
