// The mixture of experts with zero-computation experts (LongCat-Flash): the router scores real experts
// and identity ("zero") experts together, softmax over all of them; each token keeps the top-k by
// softmax probability plus a selection bias, weighted by its probability times a scaling factor; a
// picked real expert adds weight · FFN_e(x), a picked zero expert weight · x.
// Executors: src/graph/wasm-zeromoe.ts, src/webgpu/graph-zeromoe.ts.

import type { Weight } from '../kernels/types';
import { defineOp, type Graph, type Tensor } from './graph';
import type { GatedAct, GatedWeights } from './ops';

export interface ZeroMoeSpec {
  /** The layer's name in errors. */
  name: string;
  hidden: number;
  /** Experts with weights: ids 0 … nExperts − 1. */
  nExperts: number;
  /** Zero-computation experts after them: ids nExperts … nExperts + nZero − 1, output = input. */
  nZero: number;
  topk: number;
  /** Intermediate size of each real expert. */
  inter: number;
  act: GatedAct;
  /** Router [nExperts + nZero, hidden]; routerBias: arena vector added to its logits (0: none). */
  router: Weight;
  routerBias: number;
  /** Arena vector of nExperts + nZero selection biases (e_score_correction_bias; 0: none). */
  bias: number;
  /** routed_scaling_factor: every weight is probability · routedScaling. */
  routedScaling: number;
  expert: (e: number) => GatedWeights;
  /** Expert runs per real expert (WASM). */
  calls?: Int32Array;
}

export const ZERO_MOE = defineOp<{ y: Tensor; x: Tensor; spec: ZeroMoeSpec }>('zero_expert_moe');

/** y = the zero-expert MoE of x (see ZeroMoeSpec); y and x [rows, hidden], distinct. */
export function zeroMoe(g: Graph, y: Tensor, x: Tensor, spec: ZeroMoeSpec): void {
  g.run(ZERO_MOE, { y, x, spec });
}
