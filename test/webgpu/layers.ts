// One layer of a loaded model run alone on both executors: the WASM graph (planned for the layer)
// and a WebGPU recording, so checks can compare the same layer definition on the two backends.

import type { Graph, Tensor } from '../../src/graph/graph';
import { WasmGraph } from '../../src/graph/wasm';
import type { Model, Session } from '../../src/models/model';
import { GpuBuilder } from '../../src/webgpu/builder';
import { GpuGraph } from '../../src/webgpu/graph';
import type { GpuKernels } from '../../src/webgpu/ops';
import '../../src/graph/wasm-ops';
import '../../src/webgpu/graph-ops';

export type LayerFn = (g: Graph, x: Tensor, y: Tensor) => void;

/**
 * The layer on WASM: returns run(session, X, pos), feeding the rows of X ([T, D]) at positions
 * pos … and returning the layer's output rows.
 */
export function wasmLayer(model: Model, D: number, fn: LayerFn, maxChunk = model.maxChunk): (s: Session, X: Float32Array, pos: number) => Float32Array {
  const g = new WasmGraph(model.k, true, maxChunk, model.maxContext);
  let input: Float32Array = new Float32Array(0);
  const net = {
    forward: (gg: Graph) => {
      const x = gg.tmp(D), y = gg.tmp(D);
      if (!g.dry) g.f32(x).set(input);
      g.scope('layer', () => fn(gg, x, y));
      return y;
    },
  };
  g.plan(net);
  return (s, X, pos) => {
    input = X;
    const y = g.forward(net, s.state, new Int32Array(X.length / D), pos, true);
    return g.f32(y).slice();
  };
}

/**
 * The layer recorded for WebGPU over T rows (default 1): the builder (constants, state), the graph
 * (its dispatches `g.emits`, activation floats `g.act.high`) and the x / y offsets in `a`.
 */
export function gpuLayer(model: Model, K: GpuKernels, D: number, fn: LayerFn, label = 'layer', T = 1): { B: GpuBuilder; g: GpuGraph; x: number; y: number } {
  const B = new GpuBuilder(model, K);
  const g = new GpuGraph(B, true, { T });
  const x = g.tmp(D), y = g.tmp(D);
  g.scope(label, () => fn(g, x, y));
  return { B, g, x: x.off, y: y.off };
}
