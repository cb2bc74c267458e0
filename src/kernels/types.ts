import { KQUANT_LAYOUT, type KQuantDType } from '../formats/kquants';
import type { WasmInstance } from './runtime';

export type WeightDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
/** Every dtype a weight matrix may be held in: the dense and Q8_0/Q4_0 kernels' types and the K-quants (kernels/kquant.ts). */
export type AnyWeightDType = WeightDType | KQuantDType;

/** A 2-D weight matrix [rows, cols] (HF Linear layout: out × in) resident in the arena. */
export interface Weight {
  /** The checkpoint tensor it comes from, where known (for errors). */
  name?: string;
  ptr: number;
  dtype: AnyWeightDType;
  rows: number;
  cols: number;
}

/** The kernel context every facade function takes first. */
export type K = WasmInstance;

/** Bytes one row of `cols` elements takes in `dtype` (K-quants: whole blocks, see formats/kquants.ts). */
export function rowBytes(dtype: WeightDType | KQuantDType, cols: number): number {
  switch (dtype) {
    case 'f32': return cols * 4;
    case 'f16': case 'bf16': return cols * 2;
    case 'q8_0': return (cols / 32) * 34;
    case 'q4_0': return (cols / 32) * 18;
    default: return (cols / KQUANT_LAYOUT[dtype].block) * KQUANT_LAYOUT[dtype].bytes;
  }
}
