// Checks shared by the tests of recurrent families on their committed fixture checkpoints: chunked
// prefill against token-by-token decode (logits and every state region), prefill pieces that
// compose, and snapshots that restore into a fresh model.

import { expect } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { buildModel, type Model } from '../src/models/index';
import { readSnapshotHeader } from '../src/runtime/state';
import { maxRelErr, rng } from './helpers';

/** The fixture in f32 with exact products, prompts fed in chunks of at most maxChunk tokens. */
export async function loadExact(dir: string, maxChunk: number): Promise<Model> {
  return buildModel(await openCheckpoint(dir), { exact: true, maxChunk, maxContext: 256, dtype: 'f32' });
}

/** n seeded token ids in [3, V). */
export function fixtureTokens(n: number, V: number, seed: number): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(r() * (V - 3)));
}

/** The f32 payload of a snapshot (every region, layout order). */
export function snapshotPayload(snap: Uint8Array): Float32Array {
  const { payloadOffset } = readSnapshotHeader(snap);
  const bytes = snap.slice(payloadOffset, snap.length - 4);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/**
 * A 90-token prompt in chunks of 64 against one token at a time, and in pieces of 5, 17, 1 and 67
 * tokens: logits and state within 1e-5 (matrix products over 64 rows and over one row accumulate in
 * different orders).
 */
export async function expectChunkedPrefillComposes(dir: string): Promise<void> {
  const chunked = await loadExact(dir, 64), stepwise = await loadExact(dir, 1);
  const V = chunked.net.vocabSize;
  const ids = fixtureTokens(90, V, 3);
  const a = chunked.newSession(), b = stepwise.newSession(), c = chunked.newSession();
  const la = a.forward(ids, true);
  const lb = new Float32Array(la.length);
  for (let t = 0; t < ids.length; t++) lb.set(b.forward([ids[t]]), t * V);
  expect(maxRelErr(la, lb)).toBeLessThan(1e-5);
  expect(maxRelErr(snapshotPayload(a.snapshot()), snapshotPayload(b.snapshot()))).toBeLessThan(1e-5);
  const lc = new Float32Array(la.length);
  let t = 0;
  for (const n of [5, 17, 1, 67]) {
    lc.set(c.forward(ids.slice(t, t + n), true), t * V);
    t += n;
  }
  expect(maxRelErr(lc, la)).toBeLessThan(1e-5);
  expect(maxRelErr(snapshotPayload(c.snapshot()), snapshotPayload(a.snapshot()))).toBeLessThan(1e-5);
}

/** A snapshot after 30 tokens restores into a fresh model and gives identical next-token logits; returns that model. */
export async function expectSnapshotRestores(dir: string): Promise<Model> {
  const m1 = await loadExact(dir, 16);
  const V = m1.net.vocabSize;
  const ids = fixtureTokens(31, V, 9);
  const s = m1.newSession();
  s.forward(ids.slice(0, 30));
  const snap = s.snapshot();
  const next = s.forward([ids[30]]);
  const m2 = await loadExact(dir, 16);
  const r = m2.restore(snap);
  expect(r.pos).toBe(30);
  expect(Array.from(r.forward([ids[30]]))).toEqual(Array.from(next));
  return m1;
}
