// llama.cpp's GGUF layout: every parity fixture of a covered architecture converted to llama.cpp's
// layout opens as the same checkpoint (the config the family reads, tensors under their HF names,
// shapes and values) and gives the reference logits; malformed files name what is wrong.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGGUF } from '../src/convert';
import { openCheckpoint } from '../src/formats/checkpoint';
import { GGUFWriter, parseGGUF } from '../src/formats/gguf';
import { LLAMACPP_ARCHS, LLAMACPP_MODEL_TYPES } from '../src/formats/llamacpp';
import { bufferSource } from '../src/formats/source';
import { buildModel, familyFor } from '../src/models/index';
import { relMaxErr, TOLERANCE } from '../tools/parity-lib';

const work = mkdtempSync(join(tmpdir(), 'sparrow-llamacpp-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const PARITY = fileURLToPath(new URL('./fixtures/parity/', import.meta.url));
const fixtures = existsSync(PARITY)
  ? readdirSync(PARITY).sort().map((d) => join(PARITY, d)).filter((d) => existsSync(join(d, 'config.json')))
    .filter((d) => LLAMACPP_MODEL_TYPES.includes(JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')).model_type))
  : [];

/** Tensors whose stored values go through exp/log or ±1 and so may differ in the last bits. */
const inexact = (name: string) => /A_log$|norm\.weight$/.test(name);

describe('llama.cpp layout round trip', () => {
  it('covers a fixture of every architecture it writes', () => {
    const types = new Set(fixtures.map((d) => JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')).model_type));
    expect(types.size).toBeGreaterThanOrEqual(15);
  });

  for (const dir of fixtures) {
    const label = dir.split('/').pop()!;
    it(`${label}: same config, tensors and reference logits`, async () => {
      const out = join(work, `${label}.gguf`);
      await convertToGGUF(dir, out, { dtype: 'f32', format: 'llama.cpp' });
      const g = await parseGGUF(await import('../src/formats/source').then((m) => m.fileSource(out)));
      expect(g.metadata['sparrow.hf_config']).toBeUndefined();
      expect(LLAMACPP_ARCHS).toContain(g.metadata['general.architecture']);
      expect(g.tensors.some((t) => t.name === 'token_embd.weight')).toBe(true);
      await g.source.close?.();

      const a = await openCheckpoint(dir);
      const b = await openCheckpoint(out);
      try {
        expect(b.config.model_type).toBe(a.config.model_type);
        const fam = familyFor(a.config);
        expect(fam.parse(b.config)).toEqual(fam.parse(a.config));
        const ignored = (n: string) => fam.ignore?.(n, a.config) ?? false;
        const want = [...a.tensors.keys()].filter((n) => !ignored(n) && !(n === 'lm_head.weight' && a.config.tie_word_embeddings === true)).sort();
        expect([...b.tensors.keys()].sort()).toEqual(want);
        for (const name of want) {
          expect(b.tensors.get(name)!.shape, name).toEqual(a.tensors.get(name)!.shape);
          const x = await a.readF32(name);
          const y = await b.readF32(name);
          if (inexact(name)) {
            for (let i = 0; i < x.length; i++) expect(Math.abs(x[i] - y[i]), `${name}[${i}]`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(x[i])));
          } else {
            expect(Buffer.from(y.buffer, y.byteOffset, y.byteLength).equals(Buffer.from(x.buffer, x.byteOffset, x.byteLength)), name).toBe(true);
          }
        }

        const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
        const [T, V] = ref.logits_shape;
        const buf = readFileSync(join(dir, 'reference_logits.f32'));
        const refLogits = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + T * V * 4));
        const model = await buildModel(b, { exact: true, maxContext: ref.input_ids.length + 8 });
        const s = model.newSession();
        const logits = s.forward(ref.input_ids, true);
        expect(relMaxErr(logits, refLogits)).toBeLessThanOrEqual(TOLERANCE);
        s.dispose();
        model.dispose?.();
      } finally {
        await a.close();
        await b.close();
      }
    }, 120_000);
  }
});

describe('malformed llama.cpp files', () => {
  const embd = new Uint8Array(4 * 8 * 4);
  const file = (name: string, build: (w: GGUFWriter) => void): string => {
    const w = new GGUFWriter();
    build(w);
    w.addTensor('token_embd.weight', 'f32', [4, 8], embd);
    const p = join(work, name);
    writeFileSync(p, w.toUint8Array());
    return p;
  };

  it('a missing hyperparameter is named', async () => {
    const p = file('no-block-count.gguf', (w) => {
      w.set('general.architecture', 'llama', 'string');
      w.set('llama.embedding_length', 8, 'u32');
    });
    await expect(openCheckpoint(p)).rejects.toThrow(/llama\.block_count.*is required/);
    const q = file('no-heads.gguf', (w) => {
      w.set('general.architecture', 'qwen2', 'string');
      w.set('qwen2.block_count', 1, 'u32');
      w.set('qwen2.embedding_length', 8, 'u32');
    });
    await expect(openCheckpoint(q)).rejects.toThrow(/qwen2\.attention\.layer_norm_rms_epsilon.*is required for llama\.cpp architecture "qwen2"/);
  });

  it('an unknown architecture lists the supported ones', async () => {
    const p = file('unknown-arch.gguf', (w) => w.set('general.architecture', 'bloom', 'string'));
    const e = await openCheckpoint(p).then(() => null, (x) => x);
    expect(String(e?.message)).toMatch(/"bloom" is not supported/);
    for (const a of ['llama', 'qwen3moe', 'mamba2', 'deepseek2', 'gpt-oss', 'qwen3next']) expect(e.message).toContain(a);
  });

  it('a missing architecture key says so', async () => {
    const p = file('no-arch.gguf', () => {});
    await expect(openCheckpoint(p)).rejects.toThrow(/general\.architecture.*missing/);
  });

  it('a missing half of a split tensor is named', async () => {
    const dir = fixtures.find((d) => d.endsWith('deepseekv3-mla'));
    if (!dir) return;
    const out = join(work, 'dsv3.gguf');
    await convertToGGUF(dir, out, { dtype: 'f32', format: 'llama.cpp' });
    const g = await parseGGUF(bufferSource(readFileSync(out)));
    const w = new GGUFWriter();
    for (const [k, v] of Object.entries(g.metadata)) w.set(k, v, g.types[k]);
    for (const t of g.tensors) {
      if (t.name === 'blk.0.attn_v_b.weight') continue;
      w.addTensor(t.name, t.dtype, t.shape, await t.source.read(t.byteOffset, t.byteLength));
    }
    const p = join(work, 'dsv3-broken.gguf');
    writeFileSync(p, w.toUint8Array());
    await expect(openCheckpoint(p)).rejects.toThrow(/blk\.0\.attn_v_b\.weight.*missing/);
  });

  it('a model type without a llama.cpp layout is refused before anything is written', async () => {
    const dir = join(PARITY, 'rwkv4-rescale');
    if (!existsSync(dir)) return;
    const out = join(work, 'rwkv.gguf');
    await expect(convertToGGUF(dir, out, { dtype: 'f32', format: 'llama.cpp' })).rejects.toThrow(/"rwkv" cannot be written in llama\.cpp's layout \(supported: llama/);
    expect(existsSync(out)).toBe(false);
  });
});

describe('llama.cpp layout with quantized weights', () => {
  it('q8_0: the converted file loads and stays close to the f32 logits', async () => {
    const dir = fixtures.find((d) => d.endsWith('llama-llama3rope-bias'));
    if (!dir) return;
    const out = join(work, 'llama-q8.gguf');
    const r = await convertToGGUF(dir, out, { dtype: 'q8_0', format: 'llama.cpp' });
    expect(r.tensorsByDType.q8_0).toBeGreaterThan(0);
    const ck = await openCheckpoint(out);
    expect(ck.tensors.get('model.layers.0.self_attn.q_proj.weight')!.dtype).toBe('q8_0');
    const model = await buildModel(ck, { maxContext: 32 });
    const a = model.newSession().forward([1, 2, 3, 4], true);
    const ref = await buildModel(await openCheckpoint(dir), { maxContext: 32, dtype: 'q8_0' });
    const b = ref.newSession().forward([1, 2, 3, 4], true);
    expect(relMaxErr(a, b)).toBeLessThan(1e-5);
    await ck.close();
  }, 60_000);
});
