// Config reading shared by families: required/optional fields with typed errors, RoPE specs,
// layer-type lists, and the tied LM head.

import { ConfigError } from '../formats/errors';
import { ropeTables, type RopeScaling } from '../kernels/rope';
import type { Weight } from '../kernels/types';
import type { RopeSpec } from '../layers/attention';
import type { WeightStore } from '../runtime/weights';

/** A config.json object as parsed, before a family reads it into its typed config. */
export type RawConfig = Record<string, unknown>;

export function req(config: RawConfig, field: string): unknown {
  const v = config[field];
  if (v === undefined || v === null) throw new ConfigError(`config.${field}`, 'is required');
  return v;
}

export function int(config: RawConfig, field: string, dflt?: number): number {
  const v = config[field] ?? dflt;
  if (v === undefined) throw new ConfigError(`config.${field}`, 'is required');
  if (!Number.isInteger(v) || (v as number) < 0) throw new ConfigError(`config.${field}`, `must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v as number;
}

export function num(config: RawConfig, field: string, dflt?: number): number {
  const v = config[field] ?? dflt;
  if (v === undefined) throw new ConfigError(`config.${field}`, 'is required');
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`config.${field}`, `must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

export function bool(config: RawConfig, field: string, dflt: boolean): boolean {
  const v = config[field] ?? dflt;
  if (typeof v !== 'boolean') throw new ConfigError(`config.${field}`, `must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** A nested config object (rope_parameters, rope_scaling, …): the value when it is an object, else {}. */
export function obj(v: unknown): RawConfig {
  return v !== null && typeof v === 'object' ? (v as RawConfig) : {};
}

/** Rejects a field whose value changes the math in a way this runtime does not implement. */
export function rejectIf(cond: boolean, field: string, why: string): void {
  if (cond) throw new ConfigError(`config.${field}`, why);
}

/**
 * Whether the LM head is the embedding matrix: tie_word_embeddings, `dflt` when absent (the
 * family's config class default). Any truthy value ties.
 */
export function tiedEmbeddings(config: RawConfig, dflt: boolean, field = 'tie_word_embeddings'): boolean {
  return Boolean(config[field] ?? dflt);
}

/** The RoPE of a config as read: θ, the scaling entry (null = default RoPE) and the position count. */
export interface RopeParams {
  theta: number;
  scaling: RopeScaling | null;
  /** max_position_embeddings (yarn, longrope and dynamic scaling read it). */
  maxPositions?: number;
}

/**
 * The RoPE parameters of a config (transformers v5 `rope_parameters`, or the older `rope_theta` +
 * `rope_scaling`). `layerType` picks the entry of per-layer-type parameter maps (Gemma3).
 */
export function ropeParams(config: RawConfig, layerType?: string): RopeParams {
  const mp = config.max_position_embeddings;
  const maxPositions = typeof mp === 'number' ? mp : undefined;
  let rp = config.rope_parameters as RawConfig | null | undefined;
  if (rp && layerType && rp[layerType] && typeof rp[layerType] === 'object') rp = rp[layerType] as RawConfig;
  if (rp && typeof rp === 'object' && ('rope_theta' in rp || 'rope_type' in rp)) {
    const theta = rp.rope_theta ?? config.rope_theta;
    if (typeof theta !== 'number') throw new ConfigError('config.rope_parameters.rope_theta', 'is required');
    return { theta, scaling: rp as RopeScaling, maxPositions };
  }
  const theta = config.rope_theta ?? 10000;
  if (typeof theta !== 'number') throw new ConfigError('config.rope_theta', `must be a number, got ${JSON.stringify(theta)}`);
  const scaling = config.rope_scaling;
  return { theta, scaling: scaling !== null && typeof scaling === 'object' ? (scaling as RopeScaling) : null, maxPositions };
}

/** The RoPE tables of a head: `rotaryDim` leading dims of `headDim` rotate. */
export function ropeSpec(p: RopeParams, headDim: number, rotaryDim = headDim, style: 'neox' | 'interleaved' = 'neox'): RopeSpec {
  const { invFreq, attentionFactor } = ropeTables({ headDim, rotaryDim, theta: p.theta, scaling: p.scaling, maxPositions: p.maxPositions });
  return { invFreq, rotaryDim, style, attentionFactor };
}

/** config.layer_types, validated against the allowed names, or built from a default rule. */
export function layerTypes<T extends string>(config: RawConfig, n: number, allowed: readonly T[], dflt: (i: number) => T): T[] {
  const lt = config.layer_types;
  const types: unknown[] = Array.isArray(lt) ? lt : Array.from({ length: n }, (_, i) => dflt(i));
  if (types.length !== n) throw new ConfigError('config.layer_types', `has ${types.length} entries for ${n} layers`);
  types.forEach((t, i) => {
    if (!allowed.includes(t as T)) throw new ConfigError(`config.layer_types[${i}]`, `${JSON.stringify(t)} is not one of ${allowed.join(', ')}`);
  });
  return types as T[];
}

/** lm_head, or the embedding matrix when tied (or the head is absent). */
export function lmHead(ws: WeightStore, tied: boolean, vocab: number, hidden: number, prefix = 'model.embed_tokens.weight'): Weight {
  if (!tied && ws.has('lm_head.weight')) return ws.mat('lm_head.weight', vocab, hidden);
  if (!tied) throw new ConfigError('tensors["lm_head.weight"]', 'missing while tie_word_embeddings is false');
  return ws.mat(prefix, vocab, hidden);
}

/** Softmax attention heads: query heads, key/value heads (dividing them), head width. */
export interface AttentionShape {
  nHeads: number;
  nKv: number;
  headDim: number;
}

/**
 * Attention heads from the config: num_attention_heads, num_key_value_heads (default: the same,
 * and it must divide the heads), head_dim (default hidden / heads, or `headDimDefault`).
 */
export function attentionShape(c: RawConfig, hidden: number, headDimDefault = Math.floor(hidden / int(c, 'num_attention_heads'))): AttentionShape {
  const nHeads = int(c, 'num_attention_heads');
  const nKv = int(c, 'num_key_value_heads', nHeads);
  const headDim = int(c, 'head_dim', headDimDefault);
  rejectIf(nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
  return { nHeads, nKv, headDim };
}
