// Parity against HF transformers on every committed fixture (test/fixtures/parity, and the shipped
// model's fixture under models/): full-sequence logits and token-by-token decode within 1e-4
// relative, identical greedy continuation. A fixture whose model_type has no family must fail with
// the "not supported" ConfigError, so that adding the family turns it into a parity check.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { supportedModelTypes } from '../src/models/index';
import { findFixtures, runFixture, TOLERANCE } from '../tools/parity-lib';

const fixtures = [...(await findFixtures('test/fixtures/parity', { diffusion: true })), ...(await findFixtures('models'))];

describe('parity with transformers', () => {
  it('finds the committed fixtures', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(20);
  });
  for (const dir of fixtures) {
    const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
    const supported = supportedModelTypes().includes(ref.model_type);
    it(`${dir.split('/').slice(-2).join('/')} (${ref.model_type})`, async () => {
      const r = await runFixture(dir);
      if (!supported) {
        expect(r.error).toMatch(/is not supported; supported model types/);
        return;
      }
      expect(r.error).toBeUndefined();
      expect(r.prefillErr).toBeLessThanOrEqual(TOLERANCE);
      expect(r.decodeErr).toBeLessThanOrEqual(TOLERANCE);
      expect(r.greedyAgree).toBe(r.greedyTotal);
    }, 120_000);
  }
});
