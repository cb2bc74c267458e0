// Moves a checkpoint's tensors into the model arena in the dtype each one runs in.
// Which dtype each tensor is held in is decided by formats/dtype.ts storedDType (shared with conversion).

import type { Checkpoint, TensorInfo } from '../formats/checkpoint';
import { quantizeQ4_0, quantizeQ8_0, storedDType, type DType } from '../formats/dtype';
import { BudgetError, ConfigError } from '../formats/errors';
import type { K, Weight, WeightDType } from '../kernels/types';
import { rowBytes } from '../kernels/types';

export type LoadDType = 'auto' | 'f32' | 'q8_0' | 'q4_0';

export interface WeightOptions {
  dtype?: LoadDType;
  onProgress?: (done: number, total: number, name: string) => void;
}

/** The dtype a tensor is held in (formats/dtype.ts storedDType; the loader holds every tensor as a float type). */
function targetDType(info: TensorInfo, want: LoadDType, keepF32?: (name: string) => boolean): WeightDType {
  const d = storedDType(info.name, info.shape, info.dtype as DType, want, keepF32);
  return d === 'f32' || d === 'f16' || d === 'bf16' || d === 'q8_0' || d === 'q4_0' ? d : 'f32';
}

function storedBytes(dtype: WeightDType, shape: number[]): number {
  const cols = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return rows * rowBytes(dtype, cols);
}

export class WeightStore {
  private mats = new Map<string, { ptr: number; dtype: WeightDType; shape: number[] }>();
  readonly bytesByDType: Record<string, number> = {};
  paramCount = 0;
  /** Identity of the loaded weights: names, dtypes, shapes and the leading bytes of each tensor. */
  readonly digestParts: Uint8Array[] = [];

  constructor(readonly k: K, readonly ckpt: Checkpoint) {}

  /** Bytes the weights will take in the arena for a load dtype (for budget checks before allocation). */
  static plannedBytes(ckpt: Checkpoint, dtype: LoadDType, keepF32?: (name: string) => boolean, ignore?: (name: string) => boolean): number {
    let n = 0;
    for (const info of ckpt.tensors.values()) {
      if (ignore?.(info.name)) continue;
      n += storedBytes(targetDType(info, dtype, keepF32), info.shape) + 64;
    }
    return n;
  }

  /** Loads every tensor; `keepF32` names tensors the family reads as f32 whatever the load dtype. */
  async loadAll(opts: WeightOptions = {}, keepF32?: (name: string) => boolean, ignore?: (name: string) => boolean): Promise<void> {
    const want = opts.dtype ?? 'auto';
    // Tensors the family never reads (multi-token-prediction heads, precomputed tables) stay on disk.
    const infos = [...this.ckpt.tensors.values()].filter((i) => !ignore?.(i.name));
    const arena = this.k.arena;
    const need = WeightStore.plannedBytes(this.ckpt, want, keepF32, ignore);
    if (arena.top + need > arena.budget) {
      throw new BudgetError(need + arena.top, arena.budget);
    }
    let done = 0;
    for (const info of infos) {
      const dtype = targetDType(info, want, keepF32);
      const cols = info.shape[info.shape.length - 1];
      const rows = info.shape.slice(0, -1).reduce((a, b) => a * b, 1);
      if ((dtype === 'q8_0' || dtype === 'q4_0') && cols % 32 !== 0) {
        throw new ConfigError(`tensors["${info.name}"]`, `last dimension ${cols} is not a multiple of 32, cannot hold it as ${dtype}`);
      }
      let ptr: number;
      if (dtype === info.dtype) {
        const { bytes } = await this.ckpt.read(info.name);
        ptr = arena.put(bytes);
        this.digestParts.push(bytes.slice(0, 256));
      } else {
        const f = await this.ckpt.readF32(info.name);
        this.digestParts.push(new Uint8Array(f.buffer, f.byteOffset, Math.min(256, f.byteLength)).slice());
        if (dtype === 'f32') ptr = arena.put(new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
        else if (dtype === 'q8_0') ptr = arena.put(quantizeQ8_0(f, rows, cols));
        else if (dtype === 'q4_0') ptr = arena.put(quantizeQ4_0(f, rows, cols));
        else throw new ConfigError(`tensors["${info.name}"]`, `cannot convert ${info.dtype} to ${dtype} on load`);
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
      throw new ConfigError(`tensors["${name}"].shape`, `is [${m.shape}], expected [${rows}, ${cols}]`);
    }
    return { name, ptr: m.ptr, dtype: m.dtype, rows: r, cols: c };
  }

  /** Matrix `e` of a stacked 3-D tensor [E, rows, cols] (fused MoE experts). */
  slice(name: string, e: number, rows: number, cols: number): Weight {
    const m = this.get(name);
    const n = m.shape.reduce((a, b) => a * b, 1);
    if (m.shape[m.shape.length - 1] !== cols || n % (rows * cols) !== 0 || (e + 1) * rows * cols > n) {
      throw new ConfigError(`tensors["${name}"].shape`, `is [${m.shape}], cannot take matrix ${e} of [${rows}, ${cols}]`);
    }
    return { ptr: m.ptr + e * rows * rowBytes(m.dtype, cols), dtype: m.dtype, rows, cols };
  }

  /** An f32 vector (norm weights, biases, gates); checks its length when given. */
  vec(name: string, n?: number): number {
    const m = this.get(name);
    if (m.dtype !== 'f32') throw new ConfigError(`tensors["${name}"]`, `expected an f32 vector, holds ${m.dtype}`);
    const len = m.shape.reduce((a, b) => a * b, 1);
    if (n !== undefined && len !== n) throw new ConfigError(`tensors["${name}"].shape`, `has ${len} elements, expected ${n}`);
    return m.ptr;
  }

  /** An optional f32 vector: 0 when absent. */
  optVec(name: string, n?: number): number {
    return this.mats.has(name) ? this.vec(name, n) : 0;
  }
}
