// Moves a checkpoint's tensors into the model arena in the dtype each one runs in.
// Which dtype each tensor is held in is decided by formats/dtype.ts storedDType, or for a
// quantization mix by runtime/quantmix.ts mixStoredDType (both shared with conversion).

import type { Checkpoint } from '../formats/checkpoint';
import { blockSize, encodeF32, isQuantMix, storedDType, type DType, type QuantMix } from '../formats/dtype';
import { BudgetError, ConfigError } from '../formats/errors';
import { isKQuant } from '../formats/kquants';
import type { AnyWeightDType, K, Weight } from '../kernels/types';
import { rowBytes } from '../kernels/types';
import { mixModel, mixStoredDType } from './quantmix';

/**
 * The dtype weights are held in: 'auto' keeps the file's types where the kernels take them (f16,
 * bf16, Q8_0, Q4_0, K-quants), 'f32' / 'q8_0' / 'q4_0' quantize (formats/dtype.ts quantPolicy), a
 * QuantMix chooses per tensor as llama.cpp's file types do (runtime/quantmix.ts).
 */
export type LoadDType = 'auto' | 'f32' | 'q8_0' | 'q4_0' | QuantMix;
export const LOAD_DTYPES: readonly LoadDType[] = ['auto', 'f32', 'q8_0', 'q4_0', 'q4_k_m', 'q4_k_s', 'q5_k_m', 'q5_k_s', 'q6_k', 'q4_k', 'q5_k'];

export interface WeightOptions {
  dtype?: LoadDType;
  onProgress?: (done: number, total: number, name: string) => void;
}

function runnable(d: DType): d is AnyWeightDType {
  return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'q8_0' || d === 'q4_0' || (isKQuant(d) && d !== 'q8_k');
}

/**
 * The dtype of every tensor of `ckpt` held for `want` (skipping `ignore`d ones): storedDType, or
 * mixStoredDType for a mix; a type the kernels do not take (integers, f64, q8_k) is held as f32.
 */
export function plannedDTypes(ckpt: Checkpoint, want: LoadDType, keepF32?: (name: string) => boolean, ignore?: (name: string) => boolean): Map<string, AnyWeightDType> {
  const infos = [...ckpt.tensors.values()].filter((i) => !ignore?.(i.name));
  const mix = isQuantMix(want) ? mixModel(infos, ckpt.config, ignore) : undefined;
  const out = new Map<string, AnyWeightDType>();
  for (const info of infos) {
    const d = mix
      ? mixStoredDType(info.name, info.shape, info.dtype as DType, want as QuantMix, mix, keepF32)
      : storedDType(info.name, info.shape, info.dtype as DType, want as 'auto' | 'f32' | 'q8_0' | 'q4_0', keepF32);
    out.set(info.name, runnable(d) ? d : 'f32');
  }
  return out;
}

function storedBytes(dtype: AnyWeightDType, shape: number[]): number {
  const cols = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return rows * rowBytes(dtype, cols);
}

export class WeightStore {
  private mats = new Map<string, { ptr: number; dtype: AnyWeightDType; shape: number[] }>();
  readonly bytesByDType: Record<string, number> = {};
  paramCount = 0;
  /** Identity of the loaded weights: names, dtypes, shapes and the leading bytes of each tensor. */
  readonly digestParts: Uint8Array[] = [];

  constructor(readonly k: K, readonly ckpt: Checkpoint) {}

  /** Bytes the weights will take in the arena for a load dtype (for budget checks before allocation). */
  static plannedBytes(ckpt: Checkpoint, dtype: LoadDType, keepF32?: (name: string) => boolean, ignore?: (name: string) => boolean): number {
    let n = 0;
    for (const [name, d] of plannedDTypes(ckpt, dtype, keepF32, ignore)) n += storedBytes(d, ckpt.tensors.get(name)!.shape) + 64;
    return n;
  }

  /** Loads every tensor; `keepF32` names tensors the family reads as f32 whatever the load dtype. */
  async loadAll(opts: WeightOptions = {}, keepF32?: (name: string) => boolean, ignore?: (name: string) => boolean): Promise<void> {
    const want = opts.dtype ?? 'auto';
    // Tensors the family never reads (multi-token-prediction heads, precomputed tables) stay on disk.
    const infos = [...this.ckpt.tensors.values()].filter((i) => !ignore?.(i.name));
    const arena = this.k.arena;
    const plan = plannedDTypes(this.ckpt, want, keepF32, ignore);
    let need = 0;
    for (const info of infos) need += storedBytes(plan.get(info.name)!, info.shape) + 64;
    if (arena.top + need > arena.budget) {
      throw new BudgetError(need + arena.top, arena.budget);
    }
    let done = 0;
    for (const info of infos) {
      const dtype = plan.get(info.name)!;
      const cols = info.shape[info.shape.length - 1];
      const rows = info.shape.slice(0, -1).reduce((a, b) => a * b, 1);
      if (cols % blockSize(dtype) !== 0) {
        throw new ConfigError(`tensors["${info.name}"]`, `last dimension ${cols} is not a multiple of ${blockSize(dtype)}, cannot hold it as ${dtype}`);
      }
      let ptr: number;
      if (dtype === info.dtype) {
        const { bytes } = await this.ckpt.read(info.name);
        ptr = arena.put(bytes);
        this.digestParts.push(bytes.slice(0, 256));
      } else {
        const f = await this.ckpt.readF32(info.name);
        this.digestParts.push(new Uint8Array(f.buffer, f.byteOffset, Math.min(256, f.byteLength)).slice());
        if (dtype === 'bf16') throw new ConfigError(`tensors["${info.name}"]`, `cannot convert ${info.dtype} to ${dtype} on load`);
        ptr = arena.put(encodeF32(dtype, f, rows, cols, info.name));
      }
      this.mats.set(info.name, { ptr, dtype, shape: info.shape });
      this.digestParts.push(new TextEncoder().encode(`${info.name}:${dtype}:${info.shape.join('x')}`));
      this.bytesByDType[dtype] = (this.bytesByDType[dtype] ?? 0) + storedBytes(dtype, info.shape);
      this.paramCount += rows * cols;
      opts.onProgress?.(++done, infos.length, info.name);
    }
  }

  has(name: string): boolean {
    return this.mats.has(name);
  }

  private get(name: string) {
    const m = this.mats.get(name);
    if (!m) throw new ConfigError(`tensors["${name}"]`, 'missing from the checkpoint');
    return m;
  }

  shape(name: string): number[] {
    return this.get(name).shape;
  }

  /** A 2-D weight [rows, cols]; checks the shape when given. */
  mat(name: string, rows?: number, cols?: number): Weight {
    const m = this.get(name);
    const c = m.shape[m.shape.length - 1];
    const r = m.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    if ((rows !== undefined && rows !== r) || (cols !== undefined && cols !== c)) {
      throw new ConfigError(`tensors["${name}"].shape`, `is [${m.shape.join(', ')}], expected [${rows ?? r}, ${cols ?? c}]`);
    }
    return { name, ptr: m.ptr, dtype: m.dtype, rows: r, cols: c };
  }

  /** Matrix `e` of a stacked 3-D tensor [E, rows, cols] (fused MoE experts). */
  slice(name: string, e: number, rows: number, cols: number): Weight {
    const m = this.get(name);
    const n = m.shape.reduce((a, b) => a * b, 1);
    if (m.shape[m.shape.length - 1] !== cols || n % (rows * cols) !== 0 || (e + 1) * rows * cols > n) {
      throw new ConfigError(`tensors["${name}"].shape`, `is [${m.shape.join(', ')}], cannot take matrix ${e} of [${rows}, ${cols}]`);
    }
    return { ptr: m.ptr + e * rows * rowBytes(m.dtype, cols), dtype: m.dtype, rows, cols };
  }

  /** An f32 vector (norm weights, biases, gates); checks its length when given. */
  vec(name: string, n?: number): number {
    const m = this.get(name);
    if (m.dtype !== 'f32') throw new ConfigError(`tensors["${name}"]`, `expected an f32 vector, holds ${m.dtype}`);
    const len = m.shape.reduce((a, b) => a * b, 1);
    if (n !== undefined && len !== n) throw new ConfigError(`tensors["${name}"].shape`, `is [${m.shape.join(', ')}] (${len} elements), expected [${n}]`);
    return m.ptr;
  }

  /** An optional f32 vector: 0 when absent. */
  optVec(name: string, n?: number): number {
    return this.mats.has(name) ? this.vec(name, n) : 0;
  }
}
