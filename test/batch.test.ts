// Several sessions in one pass (Model.forwardBatch): for every committed fixture family, prompts of
// different lengths prefilled together and then decoded one token per session per pass give the
// logits each session gets alone, before and after the batched steps (so the states agree). Covers every op that
// runs per sequence (caches and rings, scans, convolutions, latent and sparse attention) beside the
// ops that run over all rows at once.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { findFixtures, loadFixtureModel, relMaxErr } from '../tools/parity-lib';

const fixtures = [...(await findFixtures('test/fixtures/parity')), ...(await findFixtures('models'))];

/** Deterministic token ids below V. */
function tokens(n: number, seed: number, V: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) >>> 0;
    return (s >>> 8) % V;
  });
}

describe('forwardBatch: several sessions per pass', () => {
  it('finds the fixtures', () => expect(fixtures.length).toBeGreaterThanOrEqual(20));
  for (const dir of fixtures) {
    const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
    it(`${dir.split('/').slice(-2).join('/')} (${ref.model_type})`, async () => {
      // maxChunk 8: the three prompts (5 + 11 + 3 tokens) take several passes, one of them split.
      const model = await loadFixtureModel(dir, ref, { maxChunk: 8, maxContext: 64 });
      const V = model.net.vocabSize;
      const prompts = [tokens(5, 1, V), tokens(11, 2, V), tokens(3, 3, V)];
      const steps = [0, 1, 2, 3].map((i) => tokens(3, 10 + i, V));

      const alone = prompts.map(() => model.newSession());
      const together = prompts.map(() => model.newSession());
      let worst = 0;
      const first = model.forwardBatch(prompts.map((ids, i) => ({ session: together[i], ids })));
      prompts.forEach((ids, i) => {
        worst = Math.max(worst, relMaxErr(first[i], alone[i].forward(ids)));
      });
      for (const step of steps) {
        const got = model.forwardBatch(step.map((id, i) => ({ session: together[i], ids: [id] })));
        step.forEach((id, i) => {
          worst = Math.max(worst, relMaxErr(got[i], alone[i].forward([id])));
        });
      }
      // Every row's logits, sessions of different lengths in one call.
      const extra = [tokens(2, 20, V), tokens(1, 21, V), tokens(4, 22, V)];
      const all = model.forwardBatch(extra.map((ids, i) => ({ session: together[i], ids })), true);
      extra.forEach((ids, i) => {
        expect(all[i].length).toBe(ids.length * V);
        worst = Math.max(worst, relMaxErr(all[i], alone[i].forward(ids, true)));
      });
      expect(worst).toBeLessThanOrEqual(1e-5);
      together.forEach((s, i) => expect(s.tokens).toEqual(alone[i].tokens));
      for (const s of [...alone, ...together]) s.dispose();
      model.dispose();
    }, 120_000);
  }

  it('refuses a session twice, another model, no tokens, and tokens past the context', async () => {
    const [dir] = fixtures.filter((d) => d.endsWith('llama-mqa-yarn-tied'));
    const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
    const model = await loadFixtureModel(dir, ref, { maxChunk: 8, maxContext: 16 });
    const other = await loadFixtureModel(dir, ref, { maxChunk: 8, maxContext: 16 });
    const a = model.newSession(), b = model.newSession(), c = other.newSession();
    expect(() => model.forwardBatch([{ session: a, ids: [1] }, { session: a, ids: [2] }])).toThrow(/appears twice/);
    expect(() => model.forwardBatch([{ session: a, ids: [1] }, { session: c, ids: [2] }])).toThrow(/another model/);
    expect(() => model.forwardBatch([{ session: a, ids: [1] }, { session: b, ids: [] }])).toThrow(/at least one token/);
    expect(() => model.forwardBatch([{ session: a, ids: [1] }, { session: b, ids: new Array(17).fill(1) }])).toThrow(/context full/);
    // Nothing was fed by the refused calls.
    expect(a.pos + b.pos).toBe(0);
    expect(model.forwardBatch([])).toEqual([]);
    model.dispose();
    other.dispose();
  });
});
