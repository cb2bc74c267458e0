// The contract between a family (src/models/<family>.ts) and the model runtime (model.ts).

import type { Ctx } from '../layers/context';
import type { RegionSpec } from '../runtime/state';
import type { ForwardOutput, Graph, Tensor } from '../graph/graph';
import type { RawConfig } from './common';

export interface Net {
  readonly vocabSize: number;
  readonly hidden: number;
  /** Layer kinds in order, for `info` (e.g. ['attention', 'linear_attention', …]). */
  readonly layerKinds: string[];
  specs(maxContext: number): RegionSpec[];
  /**
   * Whether forward() takes output 'hidden': the net ends in a final norm whose output feeds the LM
   * head, so those rows are the final hidden states (embeddings are pooled from them).
   */
  readonly hiddenOutput: boolean;
  /**
   * The forward pass of the pass's tokens (graph.ts), updating the session state. Returns the
   * logits: [T, V] when `all`, else [1, V] for the last token (in a pass over several sequences, the
   * last of each); with output 'hidden' (only where hiddenOutput is set), the final hidden states
   * instead, [T, hidden] or [1, hidden], and no LM head runs.
   */
  forward(g: Graph, all: boolean, output?: ForwardOutput): Tensor;
}

/**
 * A model family: `parse` reads a config.json into the family's typed config C (validated, defaults
 * filled in; errors are ConfigErrors naming the field), and `build` makes the net from it and the
 * loaded weights.
 */
export interface Family<C = unknown> {
  /** HF `model_type` values this family implements. */
  types: string[];
  /** Tensors read as f32 whatever the load dtype (decay parameters, small matrices used by host code). */
  keepF32?: (name: string, config: RawConfig) => boolean;
  /** Tensor names present in checkpoints but never used (e.g. tied lm_head copies, rotary caches). */
  ignore?: (name: string, config: RawConfig) => boolean;
  /** The smallest maxChunk the family runs with (a pass it cannot split); the load default is raised to it. */
  minChunk?: (config: RawConfig) => number;
  parse(config: Record<string, unknown>): C;
  build(ctx: Ctx, c: C): Net;
}
