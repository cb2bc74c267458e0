// llama.cpp's GGUF layout: every parity fixture of a covered architecture converted to llama.cpp's
// layout opens as the same checkpoint (the config the family reads, tensors under their HF names,
// shapes and values) and gives the reference logits; malformed files name what is wrong.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGGUF } from '../src/convert';
import { openCheckpoint } from '../src/formats/checkpoint';
import { GGUFWriter, parseGGUF } from '../src/formats/gguf';
import { LLAMACPP_ARCHS, LLAMACPP_MODEL_TYPES, llamaCppWriterFor } from '../src/formats/llamacpp';
import { writeSafetensors, type SafetensorsTensor } from '../src/formats/safetensors';
import { bufferSource } from '../src/formats/source';
import { buildModel, familyFor } from '../src/models/index';
import { relMaxErr, TOLERANCE } from '../tools/parity-lib';
import { randn, rng } from './helpers';

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

describe('llama.cpp layout with K-quant mixes', () => {
  // A random Llama whose rows are all multiples of 256 (hidden 256, FFN 768, 4 layers, vocab 512,
  // untied head), so that every K-quant block fits and no fallback type is involved.
  const H = 256, F = 768, L = 4, V = 512, HEADS = 4, KV = 2, HD = 64;
  const hfDir = (dir: string): string => {
    mkdirSync(dir, { recursive: true });
    const r = rng(21);
    const t: SafetensorsTensor[] = [];
    const add = (name: string, shape: number[], scale: number, offset = 0) => {
      const a = randn(shape.reduce((x, y) => x * y, 1), r, scale);
      if (offset) for (let i = 0; i < a.length; i++) a[i] += offset;
      t.push({ name, dtype: 'f32', shape, data: new Uint8Array(a.buffer) });
    };
    add('model.embed_tokens.weight', [V, H], 1);
    for (let i = 0; i < L; i++) {
      const p = `model.layers.${i}`;
      add(`${p}.input_layernorm.weight`, [H], 0.1, 1);
      add(`${p}.post_attention_layernorm.weight`, [H], 0.1, 1);
      add(`${p}.self_attn.q_proj.weight`, [HEADS * HD, H], 0.06);
      add(`${p}.self_attn.k_proj.weight`, [KV * HD, H], 0.06);
      add(`${p}.self_attn.v_proj.weight`, [KV * HD, H], 0.06);
      add(`${p}.self_attn.o_proj.weight`, [H, HEADS * HD], 0.06);
      add(`${p}.mlp.gate_proj.weight`, [F, H], 0.06);
      add(`${p}.mlp.up_proj.weight`, [F, H], 0.06);
      add(`${p}.mlp.down_proj.weight`, [H, F], 0.04);
    }
    add('model.norm.weight', [H], 0.1, 1);
    add('lm_head.weight', [V, H], 0.5);
    const config = {
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: H, intermediate_size: F, num_hidden_layers: L,
      num_attention_heads: HEADS, num_key_value_heads: KV, head_dim: HD, vocab_size: V, max_position_embeddings: 256,
      rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, hidden_act: 'silu', torch_dtype: 'float32',
    };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    writeFileSync(join(dir, 'model.safetensors'), writeSafetensors(t));
    return dir;
  };

  /**
   * What llama.cpp's llama-quantize Q4_K_M (no importance matrix) picks for this model, from
   * llama_tensor_get_type_impl in src/llama-quant.cpp. Default type: Q4_K (llama_ftype_get_default_type).
   * use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2; with n = 4: n/8 = 0, 7n/8 = 3,
   * so it holds for i = 2 ((2 − 0) % 3 == 2) and i = 3 (≥ 3).
   */
  const expectedQ4KM = (): Record<string, string> => {
    const want: Record<string, string> = {
      // category OUTPUT: ne[0] = 256 is a multiple of Q4_K's 256, so Q6_K.
      'output.weight': 'q6_k',
      // category TOKEN_EMBD with an output.weight present (not tied): no Q4_K_M rule, the default Q4_K.
      'token_embd.weight': 'q4_k',
      // tensor_allows_quantization: 1-D tensors and `_norm.weight` are never quantized.
      'output_norm.weight': 'f32',
    };
    for (let i = 0; i < L; i++) {
      const more = i === 2 || i === 3;
      Object.assign(want, {
        [`blk.${i}.attn_norm.weight`]: 'f32',
        [`blk.${i}.ffn_norm.weight`]: 'f32',
        // ATTENTION_Q, ATTENTION_K (n_expert != 8), ATTENTION_OUTPUT (n_expert != 8), FFN_GATE, FFN_UP:
        // no Q4_K_M rule, the default Q4_K.
        [`blk.${i}.attn_q.weight`]: 'q4_k',
        [`blk.${i}.attn_k.weight`]: 'q4_k',
        [`blk.${i}.attn_output.weight`]: 'q4_k',
        [`blk.${i}.ffn_gate.weight`]: 'q4_k',
        [`blk.${i}.ffn_up.weight`]: 'q4_k',
        // attn-v (ATTENTION_V): Q6_K where use_more_bits(i_attention_wv, n_attention_wv), n_attention_wv = 4;
        // the LLM_TYPE_70B bump needs an 80-layer model, the Q8_0 bump 8 experts.
        [`blk.${i}.attn_v.weight`]: more ? 'q6_k' : 'q4_k',
        // FFN_DOWN, dense (n_expert ≤ 1: i_layer = i_ffn_down, n_layer = n_ffn_down = 4), not Falcon:
        // Q6_K where use_more_bits(i_layer, n_layer); ne[0] = 768 is a multiple of 256 (no fallback).
        [`blk.${i}.ffn_down.weight`]: more ? 'q6_k' : 'q4_k',
      });
    }
    return want;
  };

  it('q4_k_m: each tensor in the type llama-quantize Q4_K_M gives it, general.file_type 15, same values as the sparrow layout', async () => {
    const dir = hfDir(join(work, 'llama256'));
    const out = join(work, 'llama256.q4_k_m.gguf');
    const r = await convertToGGUF(dir, out, { dtype: 'q4_k_m', format: 'llama.cpp' });
    const g = await parseGGUF(bufferSource(readFileSync(out)));
    const types = Object.fromEntries(g.tensors.map((t) => [t.name, t.dtype]));
    expect(types).toEqual(expectedQ4KM());
    expect(g.metadata['general.file_type']).toBe(15);
    expect(r.tensorsByDType).toEqual({ f32: 2 * L + 1, q4_k: 1 + 5 * L + 2 * 2, q6_k: 1 + 2 * 2 });

    // The sparrow-layout file of the same mix holds the same values under the HF names.
    const sp = join(work, 'llama256.q4_k_m.sparrow.gguf');
    await convertToGGUF(dir, sp, { dtype: 'q4_k_m' });
    const a = await openCheckpoint(sp);
    const b = await openCheckpoint(out);
    try {
      expect([...b.tensors.keys()].sort()).toEqual([...a.tensors.keys()].sort());
      for (const [name, info] of a.tensors) {
        expect(b.tensors.get(name)!.dtype, name).toBe(info.dtype);
        const x = await a.readF32(name);
        const y = await b.readF32(name);
        expect(Buffer.from(y.buffer, y.byteOffset, y.byteLength).equals(Buffer.from(x.buffer, x.byteOffset, x.byteLength)), name).toBe(true);
      }
    } finally {
      await a.close();
      await b.close();
    }
  }, 60_000);

  it('q2_k (single type): every quantized tensor in Q2_K, general.file_type 10; a q4_k_m source keeps its blocks', async () => {
    const dir = join(work, 'llama256');
    if (!existsSync(join(dir, 'config.json'))) hfDir(dir);
    const ck = await openCheckpoint(dir);
    const out = join(work, 'llama256.q2_k.gguf');
    try {
      const { writer } = llamaCppWriterFor(ck, { dtype: 'q2_k' });
      await writer.writeTo(out);
    } finally {
      await ck.close();
    }
    const g = await parseGGUF(bufferSource(readFileSync(out)));
    for (const t of g.tensors) expect(t.dtype, t.name).toBe(t.shape.length > 1 ? 'q2_k' : 'f32');
    expect(g.metadata['general.file_type']).toBe(10);

    // Converting the Q4_K_M llama.cpp file again copies its blocks (no re-quantization).
    const src = join(work, 'llama256.q4_k_m.gguf');
    if (!existsSync(src)) return;
    const again = join(work, 'llama256.q4_k_m.again.gguf');
    const r = await convertToGGUF(src, again, { dtype: 'q6_k', format: 'llama.cpp' });
    expect(r.keptQuantized).toEqual({ q4_k: 1 + 5 * L + 2 * 2 });
    const x = await parseGGUF(bufferSource(readFileSync(src)));
    const y = await parseGGUF(bufferSource(readFileSync(again)));
    for (const t of x.tensors) {
      const u = y.tensors.find((v) => v.name === t.name)!;
      expect(u.dtype, t.name).toBe(t.dtype);
      expect(Buffer.from(await u.source.read(u.byteOffset, u.byteLength)).equals(Buffer.from(await t.source.read(t.byteOffset, t.byteLength))), t.name).toBe(true);
    }
  }, 60_000);
});
