// convert → GGUF → loadModel gives bit-identical logits to loading the source directory quantized on
// load with the same dtype (both hold the same bytes), on the tiny checkpoints and on parity fixtures.
// The output never overwrites a file the conversion reads, and a failed conversion leaves no partial
// file; tensors already quantized in the source are reported when they keep their type.
import { createHash } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ConvertError, convertToGGUF } from '../src/convert';
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

describe('output safety', () => {
  const digest = (dir: string) => Object.fromEntries(readdirSync(dir).sort().map((f) => [f, createHash('sha256').update(readFileSync(join(dir, f))).digest('hex')]));

  it('an output that is one of the input files (any spelling, symbolic or hard link) is refused and nothing is written', async () => {
    const dir = tinyModelDir({ dir: join(work, 'safety-in') });
    const outDir = join(work, 'safety-out');
    rmSync(outDir, { recursive: true, force: true });
    mkdirSync(outDir);
    symlinkSync(join(dir, 'model.safetensors'), join(outDir, 'link.gguf'));
    linkSync(join(dir, 'model.safetensors'), join(outDir, 'hard.gguf'));
    const before = digest(dir);
    const st = join(dir, 'model.safetensors');
    const cases: [string, string][] = [
      [st, st],                                            // the safetensors file onto itself
      [dir, st],                                           // an HF directory onto its weights
      [dir, join(dir, 'config.json')],                     // … onto a side file it reads
      [dir, join(dir, 'tokenizer.json')],
      [st, join(dir, 'config.json')],                      // a safetensors file reads its directory's config
      [dir, `${dir}/../safety-in/./model.safetensors`],    // another spelling
      [dir, join(outDir, 'link.gguf')],                    // a symbolic link to the weights
      [dir, join(outDir, 'hard.gguf')],                    // a hard link to the weights
    ];
    for (const [input, output] of cases) {
      const e = await convertToGGUF(input, output, { dtype: 'q8_0' }).then(() => null, (x) => x);
      expect(e, `${input} → ${output}`).toBeInstanceOf(ConvertError);
      expect(e.message).toMatch(/is the input file .*choose another output path/);
    }
    expect(digest(dir)).toEqual(before);
    expect(readdirSync(outDir).sort()).toEqual(['hard.gguf', 'link.gguf']);
    // A GGUF input onto itself, too.
    const gguf = join(outDir, 'x.q8_0.gguf');
    await convertToGGUF(dir, gguf, { dtype: 'q8_0' });
    const g = readFileSync(gguf);
    await expect(convertToGGUF(gguf, gguf, { dtype: 'f16' })).rejects.toThrow(/is the input file/);
    expect(readFileSync(gguf).equals(g)).toBe(true);
  });

  it('a conversion failing midway leaves an existing output as it was and no temporary file', async () => {
    const dir = tinyModelDir({ dir: join(work, 'fail-in') });
    const outDir = mkdtempSync(join(work, 'fail-out-'));
    const out = join(outDir, 'model.gguf');
    writeFileSync(out, 'an older file the user keeps');
    const stop = new Error('stopped at the third tensor');
    await expect(convertToGGUF(dir, out, {
      dtype: 'q8_0',
      onProgress: (done) => {
        if (done === 3) throw stop;
      },
    })).rejects.toBe(stop);
    expect(readFileSync(out, 'utf8')).toBe('an older file the user keeps');
    expect(readdirSync(outDir)).toEqual(['model.gguf']);
    // Aborted through the signal: the same, and a new output is not created at all.
    const ac = new AbortController();
    const fresh = join(outDir, 'fresh.gguf');
    await expect(convertToGGUF(dir, fresh, { dtype: 'q8_0', signal: ac.signal, onProgress: (d) => d === 2 && ac.abort() })).rejects.toThrow(/interrupted; .*fresh\.gguf was not written/);
    expect(readdirSync(outDir)).toEqual(['model.gguf']);
    // Completed, it replaces the older file.
    const r = await convertToGGUF(dir, out, { dtype: 'q8_0' });
    expect(statSync(out).size).toBe(r.bytes);
    expect(readdirSync(outDir)).toEqual(['model.gguf']);
  });

  it('tensors quantized in the source that keep their type are counted', async () => {
    const dir = tinyModelDir({ dir: join(work, 'kept-in') });
    const q8 = join(work, 'kept.q8_0.gguf');
    const a = await convertToGGUF(dir, q8, { dtype: 'q8_0' });
    expect(a.keptQuantized).toEqual({});
    const nQ8 = a.tensorsByDType.q8_0;
    expect(nQ8).toBeGreaterThan(0);
    const f16 = await convertToGGUF(q8, join(work, 'kept.f16.gguf'), { dtype: 'f16' });
    expect(f16.keptQuantized).toEqual({ q8_0: nQ8 });
    expect(f16.tensorsByDType.q8_0).toBe(nQ8);
    expect((await convertToGGUF(q8, join(work, 'kept.q4_0.gguf'), { dtype: 'q4_0' })).keptQuantized).toEqual({ q8_0: nQ8 });
    const f32 = await convertToGGUF(q8, join(work, 'kept.f32.gguf'), { dtype: 'f32' });
    expect(f32.keptQuantized).toEqual({});
    expect(Object.keys(f32.tensorsByDType)).toEqual(['f32']);
  });
});
