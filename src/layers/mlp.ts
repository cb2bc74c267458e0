// Gated feed-forward blocks: down(act(gate(x)) ⊙ up(x)).

import { rowBytes, type Weight } from '../kernels/types';
import { ConfigError } from '../formats/errors';
import type { Graph, Tensor } from '../graph/graph';
import { gatedFfn, type GatedAct, type GatedWeights } from '../graph/ops';
import type { Ctx, Ffn } from './context';

export type { GatedWeights };

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

/** A gated MLP over given weights (families whose tensors are named otherwise, or fused). */
export class GatedFfn implements Ffn {
  constructor(readonly w: GatedWeights, readonly act: GatedAct) {}
  forward(g: Graph, x: Tensor, out: Tensor): void {
    gatedFfn(g, this.w, this.act, x, out);
  }
}

/** The Llama-style MLP: `<prefix>.gate_proj`, `up_proj`, `down_proj` (optional biases). */
export class GatedMlp extends GatedFfn {
  constructor(ctx: Ctx, prefix: string, hidden: number, inter: number, act: GatedAct, bias = false) {
    const { ws } = ctx;
    super({
      gate: ws.mat(`${prefix}.gate_proj.weight`, inter, hidden),
      up: ws.mat(`${prefix}.up_proj.weight`, inter, hidden),
      down: ws.mat(`${prefix}.down_proj.weight`, hidden, inter),
      gateBias: bias ? ws.vec(`${prefix}.gate_proj.bias`, inter) : 0,
      upBias: bias ? ws.vec(`${prefix}.up_proj.bias`, inter) : 0,
      downBias: bias ? ws.vec(`${prefix}.down_proj.bias`, hidden) : 0,
    }, act);
  }
}
