// Ops of BitNet b1.58 (BitLinear): a product with a packed ternary weight whose input rows are
// quantized to int8 per row, as transformers' BitLinear / AutoBitLinear compute it (kernels/ternary.ts).

import type { TernaryWeight } from '../kernels/ternary';
import { defineOp, type Graph, type Tensor } from './graph';

export type { TernaryWeight };

export const BIT_LINEAR = defineOp<{ y: Tensor; x: Tensor; w: TernaryWeight }>('bit_linear');

/**
 * y[rows, w.rows] = f32(Σ q·t) · (a · w.scale) per row of x: q = round-half-even(x·s) clamped to
 * [−128, 127], s = 127 / max(max|x|, 1e-5) per row, a = 1/s; t the ternary weights.
 */
export function bitLinear(g: Graph, y: Tensor, x: Tensor, w: TernaryWeight): void {
  g.run(BIT_LINEAR, { y, x, w });
}
