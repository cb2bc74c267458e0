// Config readers and weight helpers used by more than one family: expert counts and expert weight
// layouts of the MoE families, per-layer sliding windows and sparse-layer rules, the SSM families'
// activation, time-step-rank and Mamba-2 mixer fields, and the DeepSeek f32 tensors.

import { ConfigError } from '../formats/errors';
import { timeStepLimit, type Mamba2Config } from '../layers/mamba';
import { rowsOf, type GatedWeights } from '../layers/mlp';
import type { WeightStore } from '../runtime/weights';
import { bool, int, layerTypes, num, rejectIf, type RawConfig } from './common';

// ---- MoE -----------------------------------------------------------------------------------------

/** Number of experts: transformers names it num_local_experts (Mixtral, gpt-oss) or num_experts. */
export function expertCount(c: RawConfig, dflt: number): number {
  return c.num_local_experts !== undefined ? int(c, 'num_local_experts') : int(c, 'num_experts', dflt);
}

/**
 * The experts of one MoE block, in whichever layout the checkpoint holds:
 * transformers v5 fused `experts.gate_up_proj` [E, 2I, D] (gate rows first) + `experts.down_proj`
 * [E, D, I], or Granite's `input_linear` / `output_linear` of the same shapes; Mixtral's per-expert `experts.N.w1` (gate) / `w3` (up) / `w2` (down); or the per-expert
 * `experts.N.gate_proj` / `up_proj` / `down_proj` of Qwen-MoE and OLMoE checkpoints.
 */
export function expertWeights(ws: WeightStore, moe: string, E: number, I: number, D: number): (e: number) => GatedWeights {
  // Fused [E, 2I, D] gate-then-up and [E, D, I] down: transformers v5 names, or Granite's
  // block_sparse_moe.input_linear / output_linear as save_pretrained writes them.
  const fused = ws.has(`${moe}.experts.gate_up_proj`)
    ? [`${moe}.experts.gate_up_proj`, `${moe}.experts.down_proj`]
    : ws.has(`${moe}.input_linear.weight`) ? [`${moe}.input_linear.weight`, `${moe}.output_linear.weight`] : null;
  if (fused) {
    const [gu, down] = fused;
    const shape = ws.shape(gu);
    if (shape.length !== 3 || shape[0] !== E || shape[1] !== 2 * I || shape[2] !== D) {
      throw new ConfigError(`tensors["${gu}"].shape`, `is [${shape}], expected [${E}, ${2 * I}, ${D}]`);
    }
    return (e) => {
      const w = ws.slice(gu, e, 2 * I, D);
      return { gate: rowsOf(w, 0, I), up: rowsOf(w, I, I), down: ws.slice(down, e, D, I) };
    };
  }
  if (ws.has(`${moe}.experts.0.w1.weight`)) {
    return (e) => ({
      gate: ws.mat(`${moe}.experts.${e}.w1.weight`, I, D),
      up: ws.mat(`${moe}.experts.${e}.w3.weight`, I, D),
      down: ws.mat(`${moe}.experts.${e}.w2.weight`, D, I),
    });
  }
  if (ws.has(`${moe}.experts.0.gate_proj.weight`)) {
    return (e) => ({
      gate: ws.mat(`${moe}.experts.${e}.gate_proj.weight`, I, D),
      up: ws.mat(`${moe}.experts.${e}.up_proj.weight`, I, D),
      down: ws.mat(`${moe}.experts.${e}.down_proj.weight`, D, I),
    });
  }
  throw new ConfigError(`tensors["${moe}.experts.gate_up_proj"]`, 'missing from the checkpoint (nor per-expert w1/w2/w3 or gate_proj/up_proj/down_proj tensors)');
}

/** Qwen-MoE's decoder_sparse_step / mlp_only_layers rule: whether each layer's feed-forward is sparse. */
export function qwenSparseLayers(c: RawConfig, nLayers: number, nExperts: number): boolean[] {
  const step = int(c, 'decoder_sparse_step', 1);
  rejectIf(step < 1, 'decoder_sparse_step', 'must be ≥ 1');
  const only = c.mlp_only_layers ?? [];
  rejectIf(!Array.isArray(only) || !only.every((x: unknown) => Number.isInteger(x)), 'mlp_only_layers', 'must be a list of layer indices');
  const dense = only as number[];
  return Array.from({ length: nLayers }, (_, i) => !dense.includes(i) && nExperts > 0 && (i + 1) % step === 0);
}

// ---- Sliding windows -----------------------------------------------------------------------------

/** config.sliding_window: a window in tokens, or 0 when null / absent (full attention). */
export function slidingWindow(c: RawConfig): number {
  const window = c.sliding_window ?? 0;
  rejectIf(!Number.isInteger(window) || (window as number) < 0, 'sliding_window', `must be a non-negative integer or null, got ${JSON.stringify(c.sliding_window)}`);
  return window as number;
}

/** Each layer's window from `layer_types` (sliding layers get `window`, the others 0), validated. */
export function slidingByType(c: RawConfig, nLayers: number, window: number): number[] {
  const types = layerTypes(c, nLayers, ['full_attention', 'sliding_attention'], () => 'full_attention');
  return types.map((t) => (t === 'sliding_attention' ? window : 0));
}

// ---- SSM -----------------------------------------------------------------------------------------

/** The conv / gate activation: HF applies config.hidden_act after conv1d; the kernel implements SiLU. */
export function requireSilu(c: RawConfig, field = 'hidden_act'): void {
  const act = c[field] ?? 'silu';
  rejectIf(act !== 'silu' && act !== 'swish', field, `${JSON.stringify(act)} is not supported after the SSM conv (silu only)`);
}

/** time_step_rank: an integer, or "auto" = ceil(hidden / 16). */
export function dtRank(c: RawConfig, field: string, hidden: number): number {
  const v = c[field] ?? 'auto';
  return v === 'auto' ? Math.ceil(hidden / 16) : int(c, field);
}

/** The Mamba-2 mixer of the hybrids' `mamba_*` config fields (BambaMixer, GraniteMoeHybridMambaLayer). */
export function hybridMamba2Config(c: RawConfig, hidden: number): Mamba2Config {
  const H = int(c, 'mamba_n_heads', 128);
  const expand = int(c, 'mamba_expand', 2);
  const P = (c.mamba_d_head ?? 'auto') === 'auto' ? Math.floor((expand * hidden) / H) : int(c, 'mamba_d_head');
  rejectIf(H * P !== expand * hidden, 'mamba_d_head', `mamba_n_heads · mamba_d_head (${H * P}) must equal mamba_expand · hidden_size (${expand * hidden})`);
  requireSilu(c);
  return {
    hidden, H, P, G: int(c, 'mamba_n_groups', 1), N: int(c, 'mamba_d_state', 256), W: int(c, 'mamba_d_conv', 4),
    projBias: bool(c, 'mamba_proj_bias', false), convBias: bool(c, 'mamba_conv_bias', true),
    normEps: num(c, 'rms_norm_eps', 1e-5), dtLimit: timeStepLimit(c),
  };
}

// ---- DeepSeek ------------------------------------------------------------------------------------

/** kv_b_proj is read on the host at load (transposed W_UK), so it stays f32 under quantized loads. */
export const keepKvbF32 = (name: string): boolean => name.endsWith('.kv_b_proj.weight');
