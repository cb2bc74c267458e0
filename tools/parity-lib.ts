// Parity of sparrow against HF transformers reference fixtures (format: docs/parity-fixtures.md).
// For each fixture: full-sequence logits, token-by-token logits through the cache, greedy
// continuation (EOS masked as with min_new_tokens), and the error of Q8_0 / Q4_0 on-load weights.

import { readFile, readdir, stat } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { join, resolve } from 'node:path';
import { openCheckpoint } from '../src/formats/checkpoint';
import { buildModel, type Model } from '../src/models/index';
import '../src/models/index';
import { runDiffusionFixture, type DiffusionReference } from './parity-diffusion';

export interface FixtureReference {
  family: string;
  model_type: string;
  transformers: string;
  seed: number;
  reference_dtype: string;
  input_ids: number[];
  logits_shape: [number, number];
  greedy_prompt: number[];
  greedy_tokens: number[];
  /** Weights live elsewhere (a shipped model): a path relative to the fixture directory. */
  model_dir?: string;
}

export interface ParityResult {
  name: string;
  family: string;
  prefillErr: number;
  decodeErr: number;
  greedyAgree: number;
  greedyTotal: number;
  q8Err?: number;
  q4Err?: number;
  pass: boolean;
  error?: string;
}

export const TOLERANCE = 1e-4;

/**
 * Fixture directories under `root`. Diffusion fixtures (a denoiser trajectory instead of
 * autoregressive logits: reference.json row kind "diffusion", marked by diffusion_logits.f32) are
 * left out unless `o.diffusion`; the checks that feed input_ids to a model skip them that way.
 */
export async function findFixtures(root: string, o: { diffusion?: boolean } = {}): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string, depth: number) {
    let entries: Dirent[];
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    if (entries.some((e) => e.isFile() && e.name === 'reference.json')) {
      if (o.diffusion || !entries.some((e) => e.isFile() && e.name === 'diffusion_logits.f32')) out.push(d);
      return;
    }
    if (depth > 3) return;
    for (const e of entries) if (e.isDirectory() && !e.name.startsWith('.')) await walk(join(d, e.name), depth + 1);
  }
  await walk(resolve(root), 0);
  return out.sort();
}

/** max |a − b| / max |b| */
export function relMaxErr(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!Number.isFinite(d)) return Infinity;
    if (d > num) num = d;
    const m = Math.abs(b[i]);
    if (m > den) den = m;
  }
  return den ? num / den : num;
}

/** ‖a − b‖₂ / ‖b‖₂ */
export function relL2(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function eosIds(model: Model): number[] {
  const ids = new Set<number>();
  const add = (v: any) => (Array.isArray(v) ? v : v == null ? [] : [v]).forEach((x: any) => Number.isInteger(x) && ids.add(x));
  add(model.config.eos_token_id);
  add(model.checkpoint.generationConfig?.eos_token_id);
  return [...ids];
}

function argmax(a: Float32Array, masked: number[]): number {
  let best = -1, bv = -Infinity;
  for (let i = 0; i < a.length; i++) {
    if (masked.includes(i)) continue;
    if (a[i] > bv) {
      bv = a[i];
      best = i;
    }
  }
  return best;
}

export async function loadFixtureModel(dir: string, ref: FixtureReference, opts: Parameters<typeof buildModel>[1] = {}): Promise<Model> {
  const modelDir = ref.model_dir ? resolve(dir, ref.model_dir) : dir;
  const ckpt = await openCheckpoint(modelDir);
  return buildModel(ckpt, { exact: true, maxContext: Math.max(ref.input_ids.length, ref.greedy_prompt.length + ref.greedy_tokens.length) + 8, ...opts });
}

/** A session of either backend (the WebGPU one resolves its logits asynchronously). */
interface AnySession {
  forward(ids: ArrayLike<number>, all?: boolean): Float32Array | Promise<Float32Array>;
  dispose(): void;
}

export async function runFixture(dir: string, opts: { quantized?: boolean; build?: 'auto' | 'simd' | 'relaxed'; dtype?: 'auto' | 'f32'; backend?: 'wasm' | 'webgpu' } = {}): Promise<ParityResult> {
  const name = dir.split('/').pop()!;
  let ref: FixtureReference;
  try {
    ref = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
  } catch (e) {
    return { name, family: '?', prefillErr: NaN, decodeErr: NaN, greedyAgree: 0, greedyTotal: 0, pass: false, error: `reference.json: ${(e as Error).message}` };
  }
  if ((ref as { diffusion?: unknown }).diffusion) return runDiffusionFixture(dir, name, ref as unknown as DiffusionReference, opts);
  const res: ParityResult = { name, family: ref.family ?? ref.model_type, prefillErr: NaN, decodeErr: NaN, greedyAgree: 0, greedyTotal: ref.greedy_tokens.length, pass: false };
  try {
    const buf = await readFile(join(dir, 'reference_logits.f32'));
    const [T, V] = ref.logits_shape;
    if (buf.byteLength !== T * V * 4) throw new Error(`reference_logits.f32 has ${buf.byteLength} bytes, expected ${T * V * 4}`);
    const refLogits = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    const model = await loadFixtureModel(dir, ref, { build: opts.build, dtype: opts.dtype ?? 'auto' });
    if (model.net.vocabSize !== V) throw new Error(`vocab ${model.net.vocabSize} != reference ${V}`);
    let newSession: () => AnySession = () => model.newSession();
    if (opts.backend === 'webgpu') {
      const { acquireGpu } = await import('../src/webgpu/device');
      const { gpuModel } = await import('../src/webgpu/model');
      const gm = gpuModel(model, await acquireGpu());
      newSession = () => gm.newSession();
    }

    const s1 = newSession();
    const full = await s1.forward(ref.input_ids, true);
    res.prefillErr = relMaxErr(full, refLogits);
    s1.dispose();

    const s2 = newSession();
    const dec = new Float32Array(T * V);
    for (let t = 0; t < T; t++) dec.set(await s2.forward([ref.input_ids[t]]), t * V);
    res.decodeErr = relMaxErr(dec, refLogits);
    s2.dispose();

    const eos = eosIds(model);
    const s3 = newSession();
    let logits = await s3.forward(ref.greedy_prompt);
    for (let i = 0; i < ref.greedy_tokens.length; i++) {
      const tok = argmax(logits, eos);
      if (tok !== ref.greedy_tokens[i]) break;
      res.greedyAgree++;
      if (i + 1 < ref.greedy_tokens.length) logits = await s3.forward([tok]);
    }
    s3.dispose();
    model.dispose();

    if (opts.quantized) {
      for (const dt of ['q8_0', 'q4_0'] as const) {
        try {
          const qm = await loadFixtureModel(dir, ref, { dtype: dt, exact: false, build: opts.build });
          const s = qm.newSession();
          const q = s.forward(ref.input_ids, true);
          if (dt === 'q8_0') res.q8Err = relL2(q, refLogits);
          else res.q4Err = relL2(q, refLogits);
          s.dispose();
          qm.dispose();
        } catch {
          /* a family whose shapes cannot be quantized reports no figure */
        }
      }
    }
    res.pass = res.prefillErr <= TOLERANCE && res.decodeErr <= TOLERANCE && res.greedyAgree === res.greedyTotal;
  } catch (e) {
    res.error = (e as Error).message;
  }
  return res;
}

export function formatRow(r: ParityResult): string {
  const f = (x: number | undefined) => (x === undefined ? '     -  ' : Number.isNaN(x) ? '    n/a ' : x.toExponential(2).padStart(8));
  return `${r.name.padEnd(28)} ${r.family.padEnd(18)} ${f(r.prefillErr)} ${f(r.decodeErr)} ${`${r.greedyAgree}/${r.greedyTotal}`.padStart(6)} ${f(r.q8Err)} ${f(r.q4Err)}  ${r.pass ? 'pass' : 'FAIL'}${r.error ? `  ${r.error}` : ''}`;
}

export const HEADER = `${'fixture'.padEnd(28)} ${'family'.padEnd(18)} ${'prefill'.padStart(8)} ${'decode'.padStart(8)} ${'greedy'.padStart(6)} ${'q8_0 L2'.padStart(8)} ${'q4_0 L2'.padStart(8)}  result`;

export async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}
