// Ops of block-diffusion denoisers (models/diffusion_gemma.ts): rows the host supplies for a pass
// (the self-conditioning distribution of the previous denoising step).

import { defineOp, type Graph, type Tensor } from './graph';

/** y ← `data` (y.rows · y.width floats, row-major), supplied by the host for this pass. */
export const HOST_ROWS = defineOp<{ y: Tensor; data: Float32Array }>('host_rows');

export function hostRows(g: Graph, y: Tensor, data: Float32Array): void {
  g.run(HOST_ROWS, { y, data });
}
