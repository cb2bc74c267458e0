// Config reading shared by families: required/optional fields with typed errors, RoPE specs,
// layer-type lists, and the tied LM head.

import { ConfigError } from '../formats/errors';
import { ropeTables } from '../kernels/rope';
import type { Weight } from '../kernels/types';
import type { RopeSpec } from '../layers/attention';
import type { WeightStore } from './weights';

export function req(config: any, field: string): any {
  const v = config[field];
  if (v === undefined || v === null) throw new ConfigError(`config.${field}`, 'is required');
  return v;
}

export function int(config: any, field: string, dflt?: number): number {
  const v = config[field] ?? dflt;
  if (v === undefined) throw new ConfigError(`config.${field}`, 'is required');
  if (!Number.isInteger(v) || v < 0) throw new ConfigError(`config.${field}`, `must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

export function num(config: any, field: string, dflt?: number): number {
  const v = config[field] ?? dflt;
  if (v === undefined) throw new ConfigError(`config.${field}`, 'is required');
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`config.${field}`, `must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

export function bool(config: any, field: string, dflt: boolean): boolean {
  const v = config[field] ?? dflt;
  if (typeof v !== 'boolean') throw new ConfigError(`config.${field}`, `must be a boolean, got ${JSON.stringify(v)}`);
  return v;
}

/** Rejects a field whose value changes the math in a way this runtime does not implement. */
export function rejectIf(cond: boolean, field: string, why: string): void {
  if (cond) throw new ConfigError(`config.${field}`, why);
}

/**
 * The RoPE parameters of a config (transformers v5 `rope_parameters`, or the older `rope_theta` +
 * `rope_scaling`). `layerType` picks the entry of per-layer-type parameter maps (Gemma3).
 */
export function ropeParams(config: any, layerType?: string): { theta: number; scaling: any } {
  let rp = config.rope_parameters;
  if (rp && layerType && rp[layerType] && typeof rp[layerType] === 'object') rp = rp[layerType];
  if (rp && typeof rp === 'object' && ('rope_theta' in rp || 'rope_type' in rp)) {
    const theta = rp.rope_theta ?? config.rope_theta;
    if (typeof theta !== 'number') throw new ConfigError('config.rope_parameters.rope_theta', 'is required');
    return { theta, scaling: rp };
  }
  const theta = config.rope_theta ?? 10000;
  return { theta, scaling: config.rope_scaling ?? null };
}

export function ropeSpec(config: any, headDim: number, rotaryDim = headDim, layerType?: string, style: 'neox' | 'interleaved' = 'neox'): RopeSpec {
  const { theta, scaling } = ropeParams(config, layerType);
  const maxPositions = config.max_position_embeddings;
  const { invFreq, attentionFactor } = ropeTables({ headDim, rotaryDim, theta, scaling, maxPositions });
  return { invFreq, rotaryDim, style, attentionFactor };
}

/** config.layer_types, validated against the allowed names, or built from a default rule. */
export function layerTypes(config: any, n: number, allowed: string[], dflt: (i: number) => string): string[] {
  const lt = config.layer_types;
  const types = Array.isArray(lt) ? lt : Array.from({ length: n }, (_, i) => dflt(i));
  if (types.length !== n) throw new ConfigError('config.layer_types', `has ${types.length} entries for ${n} layers`);
  types.forEach((t, i) => {
    if (!allowed.includes(t)) throw new ConfigError(`config.layer_types[${i}]`, `${JSON.stringify(t)} is not one of ${allowed.join(', ')}`);
  });
  return types;
}

/** lm_head, or the embedding matrix when the config ties them (or the head is absent). */
export function lmHead(ws: WeightStore, config: any, vocab: number, hidden: number, prefix = 'model.embed_tokens.weight'): Weight {
  const tied = config.tie_word_embeddings ?? true;
  if (!tied && ws.has('lm_head.weight')) return ws.mat('lm_head.weight', vocab, hidden);
  if (ws.has('lm_head.weight') && !tied) return ws.mat('lm_head.weight', vocab, hidden);
  if (!tied) throw new ConfigError('tensors["lm_head.weight"]', 'missing while tie_word_embeddings is false');
  return ws.mat(prefix, vocab, hidden);
}

/**
 * Attention heads from the config: num_attention_heads, num_key_value_heads (default: the same,
 * and it must divide the heads), head_dim (default hidden / heads, or `headDimDefault`).
 */
export function attentionShape(c: any, hidden: number, headDimDefault = Math.floor(hidden / int(c, 'num_attention_heads'))): { nHeads: number; nKv: number; headDim: number } {
  const nHeads = int(c, 'num_attention_heads');
  const nKv = int(c, 'num_key_value_heads', nHeads);
  const headDim = int(c, 'head_dim', headDimDefault);
  rejectIf(nHeads % nKv !== 0, 'num_key_value_heads', `${nKv} does not divide num_attention_heads ${nHeads}`);
  return { nHeads, nKv, headDim };
}
