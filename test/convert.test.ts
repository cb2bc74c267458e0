// convert → GGUF → loadModel gives bit-identical logits to loading the source directory quantized on
// load with the same dtype (both hold the same bytes), on the tiny checkpoints and on parity fixtures.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGGUF } from '../src/convert';
import { loadModel, supportedModelTypes } from '../src/index';
import { openCheckpoint } from '../src/formats/checkpoint';
import { tinyModelDir } from './tiny-models';

const work = mkdtempSync(join(tmpdir(), 'sparrow-convert-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const MINI = fileURLToPath(new URL('../models/sparrow-mini/model.q8_0.gguf', import.meta.url));
const PARITY = fileURLToPath(new URL('./fixtures/parity/', import.meta.url));
/** Small parity fixtures of implemented families, llama first (all of them would not fit the time of one test file). */
function parityDirs(max = 4): string[] {
  if (!existsSync(PARITY)) return [];
  const supported = new Set(supportedModelTypes());
  const dirs = readdirSync(PARITY)
    .map((d) => join(PARITY, d))
    .filter((d) => existsSync(join(d, 'config.json')) && existsSync(join(d, 'model.safetensors')) && statSync(join(d, 'model.safetensors')).size < 16 << 20)
    .filter((d) => supported.has(JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')).model_type))
    .sort((a, b) => Number(!/llama/.test(a)) - Number(!/llama/.test(b)) || a.localeCompare(b));
  return dirs.slice(0, max);
}

const SOURCES: [string, () => string][] = [
  ['tiny llama', () => tinyModelDir({ dir: join(work, 'llama') })],
  ['tiny mamba', () => tinyModelDir({ arch: 'mamba', dir: join(work, 'mamba') })],
  ...parityDirs().map((d): [string, () => string] => [`parity ${d.split('/').pop()}`, () => d]),
  // A GGUF source: blocks already quantized are copied, never re-quantized (as on load).
  ...(existsSync(MINI) ? [['models/sparrow-mini (GGUF)', () => MINI] as [string, () => string]] : []),
];

describe.each(SOURCES)('%s', (_label, make) => {
  for (const dtype of ['q8_0', 'q4_0', 'f32'] as const) {
    it(`${dtype}: same logits as the source loaded with dtype ${dtype}`, async () => {
      const src = make();
      const out = join(work, `${_label.replace(/\W+/g, '_')}.${dtype}.gguf`);
      const r = await convertToGGUF(src, out, { dtype });
      const ck = await openCheckpoint(out);
      expect(ck.format).toBe('gguf');
      expect(ck.tensors.size).toBe(r.tensors);
      await ck.close();
      const a = await loadModel(out, { maxContext: 64 });
      const b = await loadModel(src, { dtype, maxContext: 64 });
      const V = a.model.net.vocabSize;
      const ids = Array.from({ length: 12 }, (_, i) => (i * 37 + 5) % V);
      const la = a.model.newSession().forward(ids, true);
      const lb = b.model.newSession().forward(ids, true);
      expect(la).toEqual(lb);
      expect(a.info().bytesByDType).toEqual(b.info().bytesByDType);
      a.dispose();
      b.dispose();
    });
  }
});
