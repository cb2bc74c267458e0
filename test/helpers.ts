// Shared test utilities: seeded random data, poisoned buffers, error metrics.
import { openCheckpoint } from '../src/formats/checkpoint';
import { writeSafetensors } from '../src/formats/safetensors';
import { instantiate, type BuildName, type WasmInstance } from '../src/kernels/runtime';
import { buildModel, type Model } from '../src/models/index';

/** mulberry32: small, fast, seedable; same sequence on every runtime (the sampler's PRNG). */
export { mulberry32 as rng } from '../src/generate/sampler';

/** Uniform in [-scale, scale). */
export function randn(n: number, r: () => number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

/** Fills with NaN so that any element a kernel fails to write shows up. */
export function poison(a: Float32Array): void {
  a.fill(NaN);
}

/** max |a−b| / max |b|, NaN-propagating (a NaN anywhere gives Infinity). */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!Number.isFinite(a[i]) || !Number.isFinite(d)) return Infinity;
    num = Math.max(num, d);
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}

export const BUILDS: BuildName[] = ['simd', 'relaxed'];

export async function kernels(build: BuildName): Promise<WasmInstance> {
  return instantiate({ build });
}

/**
 * A model built from an in-memory checkpoint: `config` plus f32 tensors, loaded exactly (f32, exact
 * dot products) with the given prefill chunk and a 128-position context.
 */
export async function modelFromTensors(config: any, tensors: { name: string; shape: number[]; data: Float32Array }[], maxChunk = 64): Promise<Model> {
  const st = writeSafetensors(tensors.map((t) => ({ name: t.name, dtype: 'f32' as const, shape: t.shape, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) })));
  const ckpt = await openCheckpoint({ files: { 'config.json': JSON.stringify(config), 'model.safetensors': st } });
  return buildModel(ckpt, { exact: true, maxChunk, maxContext: 128, dtype: 'f32' });
}
