// MoE routing: expert ids and weights per token from router logits, exactly as the HF routers do.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

export interface RouteOptions {
  /**
   * 'softmax_topk': p = softmax(logits), top-k of p, renormalised when `renormalize`
   *   (Mixtral always; Qwen2/3-MoE and OLMoE per norm_topk_prob).
   * 'topk_softmax': top-k of the logits, softmax over those k (gpt-oss, GraniteMoe, JetMoE).
   * 'sigmoid': DeepSeek-V3 noaux_tc: s = sigmoid(logits); selection on s + bias, limited to the
   *   topkGroup groups (of nGroup) with the largest sum of their two best biased scores; experts of the
   *   other groups get `maskFill` for selection; weights = s of the picks, divided by (Σ + 1e-20)
   *   when `renormalize` (norm_topk_prob).
   * Every mode multiplies the weights by routedScaling (default 1).
   */
  mode: 'softmax_topk' | 'topk_softmax' | 'sigmoid';
  renormalize?: boolean;
  /** Pointer to f32[E]: e_score_correction_bias (selection only; sigmoid mode). */
  bias?: number;
  nGroup?: number;
  topkGroup?: number;
  /** routed_scaling_factor */
  routedScaling?: number;
  /** Selection value of experts outside the kept groups: HF DeepseekV3 uses 0.0 (default), GLM-MoE-DSA −Infinity. */
  maskFill?: number;
}

const MODES = { softmax_topk: 0, topk_softmax: 1, sigmoid: 2 } as const;

/**
 * outIds i32[T·topk], outW f32[T·topk]: per token the chosen experts in descending weight order
 * (ties: lowest expert id). logits [T, E] f32.
 */
export function route(k: K, outIds: number, outW: number, logits: number, T: number, E: number, topk: number, o: RouteOptions): void {
  checkInt('route', 'T', T, 0);
  checkInt('route', 'E', E);
  checkInt('route', 'topk', topk);
  if (topk > E) throw new KernelError('route', `topk ${topk} > E ${E}`);
  const mode = MODES[o.mode];
  if (mode === undefined) throw new KernelError('route', `mode must be softmax_topk, topk_softmax or sigmoid, got ${o.mode}`);
  const nGroup = o.nGroup ?? 1, topkGroup = o.topkGroup ?? nGroup;
  checkInt('route', 'nGroup', nGroup);
  if (nGroup > 1) {
    if (mode !== 2) throw new KernelError('route', 'nGroup > 1 needs mode sigmoid');
    if (nGroup > 64) throw new KernelError('route', `nGroup ${nGroup} > 64`);
    if (E % nGroup !== 0 || E / nGroup < 2) throw new KernelError('route', `E ${E} must split into nGroup ${nGroup} groups of ≥ 2`);
    checkInt('route', 'topkGroup', topkGroup);
    if (topkGroup > nGroup) throw new KernelError('route', `topkGroup ${topkGroup} > nGroup ${nGroup}`);
    if (topkGroup * (E / nGroup) < topk) throw new KernelError('route', `topkGroup ${topkGroup} groups of ${E / nGroup} hold fewer than topk ${topk} experts`);
  }
  const bias = o.bias ?? 0;
  if (bias !== 0) {
    if (mode !== 2) throw new KernelError('route', 'bias needs mode sigmoid');
    checkBuf(k, 'route', 'bias', bias, E * 4);
  }
  const scaling = o.routedScaling ?? 1;
  if (!Number.isFinite(scaling)) throw new KernelError('route', `routedScaling must be finite, got ${scaling}`);
  if (T === 0) return;
  checkBuf(k, 'route', 'outIds', outIds, T * topk * 4);
  checkBuf(k, 'route', 'outW', outW, T * topk * 4);
  checkBuf(k, 'route', 'logits', logits, T * E * 4);
  k.exports.routeF32(outIds, outW, logits, T, E, topk, mode, o.renormalize ? 1 : 0, bias, nGroup, topkGroup, scaling, o.maskFill ?? 0);
}
