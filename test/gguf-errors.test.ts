// Bad GGUF files fail cleanly: files built in memory (a tiny Llama converted to the sparrow and
// llama.cpp layouts, rewritten through GGUFWriter, then with bytes corrupted) are opened with
// openCheckpoint / loadModel and must be refused with a FormatError or ConfigError whose message
// names the key or tensor at fault.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGGUF } from '../src/convert';
import { openCheckpoint } from '../src/formats/checkpoint';
import { tensorByteSize } from '../src/formats/dtype';
import { ConfigError, FormatError } from '../src/formats/errors';
import { GGUFWriter, parseGGUF, type GGUFFile } from '../src/formats/gguf';
import { bufferSource } from '../src/formats/source';
import { loadModel } from '../src/index';
import { tinyModelDir } from './tiny-models';

const work = mkdtempSync(join(tmpdir(), 'sparrow-gguf-errors-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

let sparrow: GGUFFile;
let llama: GGUFFile;

beforeAll(async () => {
  const dir = tinyModelDir({ dir: join(work, 'hf'), tokenizer: null, layers: 1, vocab: 64 });
  const s = join(work, 'sparrow.gguf'), l = join(work, 'llama.gguf');
  await convertToGGUF(dir, s, { dtype: 'f32' });
  await convertToGGUF(dir, l, { dtype: 'f32', format: 'llama.cpp' });
  sparrow = await parseGGUF(bufferSource(readFileSync(s)));
  llama = await parseGGUF(bufferSource(readFileSync(l)));
}, 60_000);

interface Edit {
  /** Metadata to set (a value) or drop (undefined). */
  meta?: Record<string, { value: unknown; type?: string } | undefined>;
  drop?: string[];
  /** Tensors stored under another shape (their data cut or zero-padded to it). */
  shapes?: Record<string, number[]>;
}

/** g rewritten with the edits, as file bytes. */
async function rewrite(g: GGUFFile, e: Edit = {}): Promise<Uint8Array> {
  const w = new GGUFWriter({ alignment: g.alignment });
  for (const [k, v] of Object.entries(g.metadata)) {
    if (k === 'general.alignment' || (e.meta && k in e.meta)) continue;
    w.set(k, v, g.types[k]);
  }
  for (const [k, v] of Object.entries(e.meta ?? {})) if (v) w.set(k, v.value as never, v.type);
  for (const t of g.tensors) {
    if (e.drop?.includes(t.name)) continue;
    const shape = e.shapes?.[t.name] ?? t.shape;
    const data = new Uint8Array(tensorByteSize(t.dtype, shape));
    data.set((await t.source.read(t.byteOffset, t.byteLength)).subarray(0, data.length));
    w.addTensor(t.name, t.dtype, shape, data);
  }
  return w.toUint8Array();
}

/** Offset of the ggml type id in the tensor info of `name`. */
function typeOffset(bytes: Uint8Array, name: string): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const enc = new TextEncoder().encode(name);
  for (let i = 24; i + 8 + enc.length < bytes.length; i++) {
    if (Number(dv.getBigUint64(i, true)) !== enc.length) continue;
    if (!enc.every((b, j) => bytes[i + 8 + j] === b)) continue;
    const p = i + 8 + enc.length;
    const nDims = dv.getUint32(p, true);
    if (nDims < 1 || nDims > 4) continue;
    return p + 4 + 8 * nDims;
  }
  throw new Error(`no tensor info for ${name}`);
}

/** Offset of the value of metadata key `key` (right after its u32 value type). */
function valueOffset(bytes: Uint8Array, key: string): number {
  const enc = new TextEncoder().encode(key);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 24; i + 8 + enc.length < bytes.length; i++) {
    if (Number(dv.getBigUint64(i, true)) === enc.length && enc.every((b, j) => bytes[i + 8 + j] === b)) return i + 8 + enc.length + 4;
  }
  throw new Error(`no metadata key ${key}`);
}

/** Opens bytes with openCheckpoint and loadModel; both must fail with a FormatError or ConfigError matching every pattern. */
async function expectRefused(bytes: Uint8Array, ...patterns: RegExp[]): Promise<Error> {
  let first: Error | undefined;
  for (const open of [
    async () => {
      const ck = await openCheckpoint(bytes);
      await ck.close();
    },
    async () => {
      const m = await loadModel(bytes, { maxContext: 16 });
      await m.dispose?.();
    },
  ]) {
    let err: unknown;
    try {
      await open();
    } catch (e) {
      err = e;
    }
    if (err === undefined) continue;
    expect(err instanceof FormatError || err instanceof ConfigError, String(err)).toBe(true);
    for (const p of patterns) expect((err as Error).message).toMatch(p);
    first ??= err as Error;
  }
  expect(first, 'the file was accepted').toBeDefined();
  return first!;
}

describe('the unmodified files load', () => {
  it.each(['sparrow', 'llama'] as const)('%s layout', async (which) => {
    const bytes = await rewrite(which === 'sparrow' ? sparrow : llama);
    const m = await loadModel(bytes, { maxContext: 16 });
    expect(m).toBeDefined();
    await m.dispose?.();
  });
});

describe('bad GGUF files are refused naming the key or tensor', () => {
  it('an unknown general.architecture names the supported ones', async () => {
    const bytes = await rewrite(llama, { meta: { 'general.architecture': { value: 'bloom', type: 'string' } } });
    const e = await expectRefused(bytes, /general\.architecture/, /"bloom"/);
    for (const a of ['llama', 'qwen2', 'mamba2']) expect(e.message).toContain(a);
  });

  it.each([16, 255])('an unknown or unsupported ggml type id %i on a tensor names the tensor and the type', async (id) => {
    for (const [g, name] of [[llama, 'blk.0.attn_q.weight'], [sparrow, 'model.layers.0.self_attn.q_proj.weight']] as const) {
      const bytes = await rewrite(g);
      new DataView(bytes.buffer).setUint32(typeOffset(bytes, name), id, true);
      await expectRefused(bytes, new RegExp(name.replace(/\./g, '\\.')), new RegExp(`\\b${id}\\b`));
    }
  });

  it('tensor dimensions that overflow or do not fit the file name the tensor', async () => {
    const name = 'blk.0.attn_q.weight';
    for (const dims of [[1n << 40n, 1n << 40n], [1n << 60n, 1n], [64n, 4096n]]) {
      const bytes = await rewrite(llama);
      const dv = new DataView(bytes.buffer);
      const o = typeOffset(bytes, name);
      dv.setBigUint64(o - 16, dims[0], true);
      dv.setBigUint64(o - 8, dims[1], true);
      await expectRefused(bytes, /blk\.0\.attn_q\.weight/);
    }
  });

  it('a tensor the model needs that is missing is named', async () => {
    await expectRefused(await rewrite(llama, { drop: ['blk.0.ffn_down.weight'] }), /blk\.0\.ffn_down\.weight|model\.layers\.0\.mlp\.down_proj\.weight/);
    await expectRefused(await rewrite(sparrow, { drop: ['model.layers.0.mlp.down_proj.weight'] }), /model\.layers\.0\.mlp\.down_proj\.weight/);
    await expectRefused(await rewrite(sparrow, { drop: ['model.norm.weight'] }), /model\.norm\.weight/);
  });

  it('a tensor with the wrong shape names it and both shapes', async () => {
    // q_proj [64, 64] stored as [32, 128]; down_proj [64, 128] stored as [128, 64].
    await expectRefused(await rewrite(sparrow, { shapes: { 'model.layers.0.self_attn.q_proj.weight': [32, 128] } }),
      /model\.layers\.0\.self_attn\.q_proj\.weight/, /\[32, 128\]/, /\[64, 64\]/);
    await expectRefused(await rewrite(sparrow, { shapes: { 'model.layers.0.mlp.down_proj.weight': [128, 64] } }),
      /model\.layers\.0\.mlp\.down_proj\.weight/, /\[128, 64\]/, /\[64, 128\]/);
    await expectRefused(await rewrite(llama, { shapes: { 'blk.0.ffn_down.weight': [128, 64] } }),
      /ffn_down\.weight|mlp\.down_proj\.weight/, /\[128, 64\]/, /\[64, 128\]/);
    await expectRefused(await rewrite(sparrow, { shapes: { 'model.layers.0.input_layernorm.weight': [32] } }),
      /model\.layers\.0\.input_layernorm\.weight/, /\[32\]/, /\[64\]/);
  });

  it('a data section shorter than the tensors need names the tensor', async () => {
    const bytes = await rewrite(llama);
    const last = llama.tensors.reduce((a, t) => (t.byteOffset > a.byteOffset ? t : a));
    await expectRefused(bytes.subarray(0, bytes.length - 100), new RegExp(last.name.replace(/\./g, '\\.')), /beyond data section/);
    await expectRefused(bytes.subarray(0, llama.dataOffset + 16), /gguf\.tensors\[/);
  });

  it('a truncated header is refused at the field it stops in', async () => {
    const bytes = await rewrite(sparrow);
    for (const n of [4, 10, 20, 40, 200, sparrow.dataOffset - 60]) {
      await expectRefused(bytes.subarray(0, n), /gguf\./, /file ends at|remain|cannot fit|GGUF|beyond/);
    }
  });

  it('an array length past the file end names the key', async () => {
    const bytes = await rewrite(llama, { meta: { 'test.values': { value: [1, 2, 3], type: 'array<u32>' } } });
    const dv = new DataView(bytes.buffer);
    const o = valueOffset(bytes, 'test.values');
    // Elements past the end of the file, past the array length limit, and past 2^53.
    for (const n of [BigInt(bytes.length), 1n << 40n, (1n << 64n) - 1n]) {
      dv.setBigUint64(o + 4, n, true);
      await expectRefused(bytes, /test\.values/, /count/);
    }
  });

  it('a llama.cpp-layout file missing a required hyperparameter names the key', async () => {
    for (const key of ['llama.attention.head_count', 'llama.block_count', 'llama.embedding_length', 'llama.attention.layer_norm_rms_epsilon']) {
      await expectRefused(await rewrite(llama, { meta: { [key]: undefined } }), new RegExp(key.replace(/\./g, '\\.')));
    }
  });

  it('a llama.cpp hyperparameter of the wrong kind names the key', async () => {
    await expectRefused(await rewrite(llama, { meta: { 'llama.block_count': { value: 'one', type: 'string' } } }), /llama\.block_count/);
    await expectRefused(await rewrite(llama, { meta: { 'llama.block_count': { value: 2, type: 'u32' } } }), /layers\.1\./, /missing/);
  });

  it('a sparrow-layout file with a broken sparrow.hf_config JSON names the key', async () => {
    await expectRefused(await rewrite(sparrow, { meta: { 'sparrow.hf_config': { value: '{"model_type": "llama",', type: 'string' } } }), /sparrow\.hf_config/, /JSON/);
    await expectRefused(await rewrite(sparrow, { meta: { 'sparrow.hf_config': { value: '[1, 2]', type: 'string' } } }), /sparrow\.hf_config/);
    await expectRefused(await rewrite(sparrow, { meta: { 'sparrow.hf_config': { value: 42, type: 'u32' } } }), /sparrow\.hf_config/);
  });
});
