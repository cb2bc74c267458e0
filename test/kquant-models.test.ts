// K-quant weights in models: quantize-on-load mixes (q4_k_m, q5_k_m, q6_k, …) against f32, GGUF
// conversion with a mix (per-tensor types as llama.cpp's llama-quantize chooses them, same logits as
// quantize-on-load), GGUF files holding every K-quant type, and the per-tensor mix rules.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGGUF } from '../src/convert';
import { openCheckpoint } from '../src/formats/checkpoint';
import { encodeF32, toF32 } from '../src/formats/dtype';
import { GGUFWriter, parseGGUF, setSparrowMetadata } from '../src/formats/gguf';
import { KQUANT_DTYPES, KQUANT_GGML_TYPE, quantizeKQuant } from '../src/formats/kquants';
import { writeSafetensors, type SafetensorsTensor } from '../src/formats/safetensors';
import { bufferSource } from '../src/formats/source';
import { loadModel, type LoadDType } from '../src/index';
import { mixModel, mixTensorDType } from '../src/runtime/quantmix';
import { randn, rng } from './helpers';

const work = mkdtempSync(join(tmpdir(), 'sparrow-kquant-models-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const H = 256, INTER = 512, LAYERS = 8, HEADS = 4, KV = 2, HD = 64, VOCAB = 300;

/** A llama checkpoint whose projections have rows of 256 and 512 (K-quant blocks fit), and one of 128 (they do not). */
function tinyLlama(dir: string, opts: { tied?: boolean; inter?: number; layers?: number } = {}): string {
  const inter = opts.inter ?? INTER, layers = opts.layers ?? LAYERS;
  mkdirSync(dir, { recursive: true });
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: H, intermediate_size: inter,
    num_hidden_layers: layers, num_attention_heads: HEADS, num_key_value_heads: KV, head_dim: HD,
    vocab_size: VOCAB, max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: !!opts.tied, hidden_act: 'silu', eos_token_id: 2, torch_dtype: 'float32',
  };
  const r = rng(11);
  const t: SafetensorsTensor[] = [];
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const a = randn(shape.reduce((x, y) => x * y, 1), r, scale);
    if (offset) for (let i = 0; i < a.length; i++) a[i] += offset;
    t.push({ name, dtype: 'f32', shape, data: new Uint8Array(a.buffer) });
  };
  add('model.embed_tokens.weight', [VOCAB, H], 1);
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    add(`${p}.input_layernorm.weight`, [H], 0.1, 1);
    add(`${p}.post_attention_layernorm.weight`, [H], 0.1, 1);
    add(`${p}.self_attn.q_proj.weight`, [HEADS * HD, H], 0.08);
    add(`${p}.self_attn.k_proj.weight`, [KV * HD, H], 0.08);
    add(`${p}.self_attn.v_proj.weight`, [KV * HD, H], 0.08);
    add(`${p}.self_attn.o_proj.weight`, [H, HEADS * HD], 0.06);
    add(`${p}.mlp.gate_proj.weight`, [inter, H], 0.06);
    add(`${p}.mlp.up_proj.weight`, [inter, H], 0.06);
    add(`${p}.mlp.down_proj.weight`, [H, inter], 0.04);
  }
  add('model.norm.weight', [H], 0.1, 1);
  if (!opts.tied) add('lm_head.weight', [VOCAB, H], 0.1);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  writeFileSync(join(dir, 'model.safetensors'), writeSafetensors(t));
  return dir;
}

/** llama.cpp's use_more_bits over 8 layers: layers 0, 3, 6, 7. */
const MORE_BITS = new Set([0, 3, 6, 7]);

/** The types llama-quantize gives the tensors of tinyLlama (8 layers, untied, inter 512) per file type. */
function expectedTypes(mix: 'q4_k_m' | 'q5_k_m' | 'q4_k_s' | 'q6_k', names: string[]): Record<string, string> {
  const base = mix === 'q4_k_m' || mix === 'q4_k_s' ? 'q4_k' : mix === 'q5_k_m' ? 'q5_k' : 'q6_k';
  const out: Record<string, string> = {};
  for (const n of names) {
    const layer = Number(/layers\.(\d+)\./.exec(n)?.[1] ?? -1);
    let t = base;
    if (n.endsWith('norm.weight')) t = 'f32';
    else if (n === 'lm_head.weight') t = 'q6_k';
    else if (n.endsWith('v_proj.weight') || n.endsWith('down_proj.weight')) {
      if ((mix === 'q4_k_m' || mix === 'q5_k_m') && MORE_BITS.has(layer)) t = 'q6_k';
      // Q4_K_S: the first 4 attn_v tensors, and ffn_down in layers < 8/8 = 1, get Q5_K.
      if (mix === 'q4_k_s' && (n.endsWith('v_proj.weight') ? layer < 4 : layer < 1)) t = 'q5_k';
    }
    out[n] = t;
  }
  return out;
}

const ids = Array.from({ length: 12 }, (_, i) => (i * 37 + 5) % VOCAB);

function relL2(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

async function logits(src: string, dtype?: LoadDType, exact = false) {
  const lm = await loadModel(src, { dtype, maxContext: 64, exact });
  try {
    return { logits: lm.model.newSession().forward(ids, true), bytes: lm.info().bytesByDType };
  } finally {
    lm.dispose();
  }
}

describe('quantize on load', () => {
  const src = tinyLlama(join(work, 'llama'));
  const names = async () => {
    const ck = await openCheckpoint(src);
    const n = [...ck.tensors.keys()];
    await ck.close();
    return n;
  };

  // rel. L2 of the logits against f32, with the bound each is held to.
  const BOUNDS = { q4_k_m: 0.15, q4_k_s: 0.15, q5_k_m: 0.08, q6_k: 0.05, q8_0: 0.02 } as const;
  const errs: Record<string, number> = {};
  for (const [mix, bound] of Object.entries(BOUNDS) as [keyof typeof BOUNDS, number][]) {
    it(`${mix}: logits close to f32`, async () => {
      const ref = await logits(src, 'f32');
      const q = await logits(src, mix);
      const e = relL2(q.logits, ref.logits);
      errs[mix] = e;
      const ex = relL2((await logits(src, mix, true)).logits, (await logits(src, 'f32', true)).logits);
      console.log(`[kquant-models] tiny llama ${mix}: rel. L2 of logits vs f32 = ${e.toExponential(3)} (exact dots: ${ex.toExponential(3)}); bytes ${JSON.stringify(q.bytes)}`);
      expect(ex).toBeLessThan(bound);
      expect(e).toBeLessThan(bound);
      expect(e).toBeGreaterThan(0);
      if (mix !== 'q8_0') expect(Object.keys(q.bytes)).toContain(mix === 'q5_k_m' ? 'q5_k' : mix === 'q6_k' ? 'q6_k' : 'q4_k');
    });
  }

  it('more bits, less error: q4_k_m > q5_k_m > q6_k > q8_0', () => {
    expect(errs.q4_k_m).toBeGreaterThan(errs.q5_k_m);
    expect(errs.q5_k_m).toBeGreaterThan(errs.q6_k);
    expect(errs.q6_k).toBeGreaterThan(errs.q8_0);
  });

  it('per-tensor types follow llama.cpp (untied, inter 512)', async () => {
    const n = await names();
    const ck = await openCheckpoint(src);
    const m = mixModel(ck.tensors.values(), ck.config);
    for (const mix of ['q4_k_m', 'q5_k_m', 'q4_k_s', 'q6_k'] as const) {
      const got = Object.fromEntries(n.map((name) => [name, mixTensorDType(name, ck.tensors.get(name)!.shape, mix, m)]));
      expect(got).toEqual(expectedTypes(mix, n));
    }
    await ck.close();
  });

  it('tied embeddings take the output type; rows not a multiple of 256 fall back', async () => {
    const dir = tinyLlama(join(work, 'llama-tied'), { tied: true, inter: 128 });
    const ck = await openCheckpoint(dir);
    const m = mixModel(ck.tensors.values(), ck.config);
    const ty = (name: string) => mixTensorDType(name, ck.tensors.get(name)!.shape, 'q4_k_m', m);
    expect(m.tied).toBe(true);
    expect(ty('model.embed_tokens.weight')).toBe('q6_k');
    // ffn_down rows of 128: Q6_K → Q8_0 and Q4_K → Q5_0 (Q5_K → Q5_1 under Q5_K_M), as llama.cpp.
    expect(ty('model.layers.0.mlp.down_proj.weight')).toBe('q8_0');
    expect(ty('model.layers.1.mlp.down_proj.weight')).toBe('q5_0');
    expect(ty('model.layers.1.mlp.up_proj.weight')).toBe('q4_k');
    expect(mixTensorDType('model.layers.1.mlp.down_proj.weight', [256, 128], 'q5_k_m', m)).toBe('q5_1');
    expect(mixTensorDType('model.layers.0.mlp.down_proj.weight', [256, 128], 'q4_k_s', m)).toBe('q5_1');
    // Rows of 48 (not a multiple of 32) get f16.
    expect(mixTensorDType('model.layers.1.mlp.down_proj.weight', [256, 48], 'q4_k_m', m)).toBe('f16');
    await ck.close();
    const f = await logits(dir, 'f32');
    const q = await logits(dir, 'q4_k_m');
    expect(Object.keys(q.bytes)).toContain('q5_0');
    const e = relL2(q.logits, f.logits);
    console.log(`[kquant-models] tiny llama (tied, inter 128) q4_k_m: rel. L2 of logits vs f32 = ${e.toExponential(3)}`);
    expect(e).toBeLessThan(0.15);
  });

  it('mixture-of-experts rules: 8 experts put attn_v / attn_k in q8_0, attn_output in q5_k', () => {
    const cfg = { model_type: 'mixtral', num_hidden_layers: 4, num_local_experts: 8, tie_word_embeddings: false };
    const ts: { name: string }[] = [{ name: 'model.embed_tokens.weight' }, { name: 'lm_head.weight' }];
    for (let i = 0; i < 4; i++) {
      for (const p of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) ts.push({ name: `model.layers.${i}.self_attn.${p}.weight` });
      for (let e = 0; e < 8; e++) for (const w of ['w1', 'w2', 'w3']) ts.push({ name: `model.layers.${i}.block_sparse_moe.experts.${e}.${w}.weight` });
    }
    const m = mixModel(ts, cfg);
    expect(m.nExpert).toBe(8);
    const ty = (name: string) => mixTensorDType(name, [1024, 1024], 'q4_k_m', m);
    expect(ty('model.layers.1.self_attn.v_proj.weight')).toBe('q8_0');
    expect(ty('model.layers.1.self_attn.k_proj.weight')).toBe('q8_0');
    expect(ty('model.layers.1.self_attn.q_proj.weight')).toBe('q4_k');
    expect(ty('model.layers.1.self_attn.o_proj.weight')).toBe('q5_k');
    // ffn_down_exps: the layer from the name; 4 layers: use_more_bits is true for layers 2 and 3 only.
    expect(ty('model.layers.0.block_sparse_moe.experts.5.w2.weight')).toBe('q4_k');
    expect(ty('model.layers.1.block_sparse_moe.experts.5.w2.weight')).toBe('q4_k');
    expect(ty('model.layers.2.block_sparse_moe.experts.5.w2.weight')).toBe('q6_k');
    expect(ty('model.layers.3.block_sparse_moe.experts.0.w2.weight')).toBe('q6_k');
    expect(ty('model.layers.1.block_sparse_moe.experts.5.w1.weight')).toBe('q4_k');
    expect(mixTensorDType('model.layers.1.self_attn.o_proj.weight', [1024, 1024], 'q5_k_m', m)).toBe('q5_k');
  });
});

describe('convert with a mix', () => {
  it('q4_k_m: the GGUF holds the expected per-tensor types and gives the logits of quantize-on-load', async () => {
    const src = tinyLlama(join(work, 'llama-conv'));
    const out = join(work, 'llama.q4_k_m.gguf');
    const r = await convertToGGUF(src, out, { dtype: 'q4_k_m' });
    const ck = await openCheckpoint(out);
    const types = Object.fromEntries([...ck.tensors.values()].map((t) => [t.name, t.dtype]));
    const names = Object.keys(types);
    await ck.close();
    expect(types).toEqual(expectedTypes('q4_k_m', names));
    expect(r.tensorsByDType).toEqual({ f32: 2 * LAYERS + 1, q4_k: 1 + 5 * LAYERS + 2 * 4, q6_k: 1 + 2 * 4 });
    const g = await parseGGUF(bufferSource(new Uint8Array(readFileSync(out))));
    expect(g.metadata['general.file_type']).toBe(15);
    const a = await logits(out);
    const b = await logits(src, 'q4_k_m');
    expect(a.logits).toEqual(b.logits);
    expect(a.bytes).toEqual(b.bytes);
  });

  it('llama.cpp layout takes a mix: Q4_K_M file type, and the same logits as the mix loaded from sparrow\'s layout', async () => {
    const src = tinyLlama(join(work, 'llama-conv2'));
    const out = join(work, 'x.gguf');
    await convertToGGUF(src, out, { dtype: 'q4_k_m', format: 'llama.cpp' });
    const g = await parseGGUF(bufferSource(new Uint8Array(readFileSync(out))));
    expect(g.metadata['general.file_type']).toBe(15);
    expect((await logits(out)).logits).toEqual((await logits(src, 'q4_k_m')).logits);
  });
});

describe('GGUF with every K-quant type', () => {
  it('writes and reads back each type with its ggml id, shape and bytes', async () => {
    const w = new GGUFWriter();
    const r = rng(5);
    const data = new Map<string, Uint8Array>();
    for (const d of KQUANT_DTYPES) {
      const rows = 3, cols = 512;
      const bytes = quantizeKQuant(d, randn(rows * cols, r, 1), rows, cols);
      data.set(d, bytes);
      w.addTensor(`t.${d}`, d, [rows, cols], bytes);
    }
    const file = w.toUint8Array();
    const g = await parseGGUF(bufferSource(file, 'all.gguf'));
    expect(g.tensors.map((t) => t.dtype)).toEqual(KQUANT_DTYPES);
    const dv = new DataView(file.buffer, file.byteOffset);
    for (const t of g.tensors) {
      const d = t.dtype as (typeof KQUANT_DTYPES)[number];
      expect(t.shape).toEqual([3, 512]);
      const got = file.subarray(t.byteOffset, t.byteOffset + t.byteLength);
      expect(got).toEqual(data.get(d));
      expect(toF32(d, got, 3 * 512)).toEqual(toF32(d, data.get(d)!, 3 * 512));
    }
    // The type ids in the header are ggml's.
    const ids: number[] = [];
    let o = 0;
    for (const d of KQUANT_DTYPES) {
      const name = new TextEncoder().encode(`t.${d}`);
      o = indexOfBytes(file, name, o);
      // name · u32 n_dims (2) · 2 × u64 dims · u32 type
      ids.push(dv.getUint32(o + name.length + 4 + 16, true));
    }
    expect(ids).toEqual(KQUANT_DTYPES.map((d) => KQUANT_GGML_TYPE[d]));
  });

  it('a model GGUF holding K-quant weights loads with dtype auto and runs them natively', async () => {
    const src = tinyLlama(join(work, 'llama-q6'));
    const out = join(work, 'llama.q6_k.gguf');
    await convertToGGUF(src, out, { dtype: 'q6_k' });
    const a = await logits(out, 'auto');
    expect(Object.keys(a.bytes).sort()).toEqual(['f32', 'q6_k']);
    const b = await logits(src, 'q6_k');
    expect(a.logits).toEqual(b.logits);
    // Loading it with dtype q8_0 keeps the K-quant blocks (quantized tensors never change format).
    const c = await logits(out, 'q8_0');
    expect(c.logits).toEqual(a.logits);
  });
});

describe('a model GGUF with weights in each K-quant type', () => {
  const src = tinyLlama(join(work, 'llama-2l'), { layers: 2 });
  for (const d of ['q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs', 'mxfp4', 'q4_1', 'q5_0', 'q5_1'] as const) {
    it(`${d}: runs natively with the logits of its dequantized weights`, async () => {
      const ck = await openCheckpoint(src);
      const w = new GGUFWriter();
      setSparrowMetadata(w, { config: ck.config, fileType: d });
      for (const t of ck.tensors.values()) {
        const f = await ck.readF32(t.name);
        const cols = t.shape[t.shape.length - 1];
        const dt = t.shape.length === 2 && !t.name.includes('norm') ? d : 'f32';
        w.addTensor(t.name, dt, t.shape, encodeF32(dt, f, f.length / cols, cols, t.name));
      }
      await ck.close();
      const out = join(work, `llama-2l.${d}.gguf`);
      writeFileSync(out, w.toUint8Array());
      const native = await logits(out, 'auto', true);
      expect(Object.keys(native.bytes).sort()).toEqual([d, 'f32'].sort());
      const deq = await logits(out, 'f32', true);
      expect(deq.bytes).toEqual({ f32: expect.any(Number) });
      const e = relL2(native.logits, deq.logits);
      expect(e).toBeLessThan(1e-5);
      // The integer path (activations quantized to Q8_K / Q8_0 blocks) stays close too.
      const fast = await logits(out, 'auto');
      const ef = relL2(fast.logits, deq.logits);
      console.log(`[kquant-models] ${d} weights: rel. L2 of logits vs their dequantized f32 = ${e.toExponential(2)} (exact dots), ${ef.toExponential(2)} (integer path)`);
      expect(ef).toBeLessThan(0.03);
    });
  }
});

function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from: number): number {
  outer: for (let i = Math.max(0, from); i <= hay.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
