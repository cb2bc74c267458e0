// BitNet b1.58: the weight layouts transformers loads (BitLinear packed uint8, AutoBitLinear offline
// float or packed, AutoBitLinear online) give the same model, and unsupported configs are refused
// naming the field. Logits against transformers: the parity fixtures (test/fixtures/parity/bitnet-*).

import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { ConfigError } from '../src/formats/errors';
import { writeSafetensors } from '../src/formats/safetensors';
import { buildModel } from '../src/models/index';
import { parseBitNet } from '../src/models/bitnet';
import { randn, rng } from './helpers';

const V = 53, H = 32, I = 48, L = 2, NH = 4, NKV = 2, HD = 8;
const PROJ: [string, number, number][] = [
  ['self_attn.q_proj', NH * HD, H], ['self_attn.k_proj', NKV * HD, H], ['self_attn.v_proj', NKV * HD, H], ['self_attn.o_proj', H, H],
  ['mlp.gate_proj', I, H], ['mlp.up_proj', I, H], ['mlp.down_proj', H, I],
];

type Tensor = { name: string; dtype: 'f32' | 'u8'; shape: number[]; data: Uint8Array };
const f32t = (name: string, shape: number[], v: Float32Array): Tensor => ({ name, dtype: 'f32', shape, data: new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });

/** transformers' pack_weights: row r + i·rows/4 in bits 2i of packed row r, as t + 1. */
function hfPack(t: Int8Array, rows: number, cols: number): Uint8Array {
  const pr = rows / 4, out = new Uint8Array(pr * cols);
  for (let i = 0; i < 4; i++) for (let r = 0; r < pr; r++) for (let c = 0; c < cols; c++) out[r * cols + c] |= (t[(r + i * pr) * cols + c] + 1) << (2 * i);
  return out;
}

function config(quant: Record<string, unknown> | null, extra: Record<string, unknown> = {}) {
  return {
    model_type: 'bitnet', vocab_size: V, hidden_size: H, intermediate_size: I, num_hidden_layers: L, num_attention_heads: NH,
    num_key_value_heads: NKV, hidden_act: 'relu2', rms_norm_eps: 1e-5, max_position_embeddings: 128, tie_word_embeddings: false,
    rope_parameters: { rope_type: 'default', rope_theta: 10000 }, eos_token_id: 2, ...(quant ? { quantization_config: { quant_method: 'bitnet', ...quant } } : {}), ...extra,
  };
}

/** A random ternary model: the shared tensors, and each linear's ternary values with scale c (a power of two). */
function model(seed: number) {
  const r = rng(seed);
  const shared: Tensor[] = [f32t('model.embed_tokens.weight', [V, H], randn(V * H, r)), f32t('lm_head.weight', [V, H], randn(V * H, r, 0.2)), f32t('model.norm.weight', [H], randn(H, r, 0.1).map((v) => 1 + v))];
  const tern: { name: string; rows: number; cols: number; t: Int8Array; c: number }[] = [];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    for (const n of ['input_layernorm', 'post_attention_layernorm', 'self_attn.attn_sub_norm']) shared.push(f32t(`${p}.${n}.weight`, [H], randn(H, r, 0.1).map((v) => 1 + v)));
    shared.push(f32t(`${p}.mlp.ffn_sub_norm.weight`, [I], randn(I, r, 0.1).map((v) => 1 + v)));
    for (const [n, rows, cols] of PROJ) {
      tern.push({ name: `${p}.${n}`, rows, cols, t: Int8Array.from({ length: rows * cols }, () => Math.floor(r() * 3) - 1), c: 2 ** -Math.floor(1 + r() * 3) });
    }
  }
  return { shared, tern };
}

async function logits(cfg: Record<string, unknown>, tensors: Tensor[], ids: number[]): Promise<Float32Array> {
  const ckpt = await openCheckpoint({ files: { 'config.json': JSON.stringify(cfg), 'model.safetensors': writeSafetensors(tensors) } });
  const m = await buildModel(ckpt, { exact: true, maxChunk: 16, maxContext: 64 });
  const s = m.newSession();
  return s.forward(ids, true);
}

describe('bitnet', () => {
  const ids = [5, 17, 3, 44, 8, 29, 51, 12, 7, 33, 21, 9, 40, 2, 18, 26, 11, 36, 4, 47];

  it('BitLinear packed, AutoBitLinear offline (float and packed) and online give the same logits', async () => {
    const { shared, tern } = model(3);
    const scale = (v: number) => f32t('', [1], Float32Array.of(v)).data;
    const withScale = (name: string, v: number): Tensor => ({ name: `${name}.weight_scale`, dtype: 'f32', shape: [1], data: scale(v) });
    const packed = [...shared, ...tern.flatMap((w) => [{ name: `${w.name}.weight`, dtype: 'u8' as const, shape: [w.rows / 4, w.cols], data: hfPack(w.t, w.rows, w.cols) }, withScale(w.name, 1 / w.c)])];
    const offline = [...shared, ...tern.flatMap((w) => [f32t(`${w.name}.weight`, [w.rows, w.cols], Float32Array.from(w.t)), withScale(w.name, w.c)])];
    const offlinePacked = [...shared, ...tern.flatMap((w) => [{ name: `${w.name}.weight`, dtype: 'u8' as const, shape: [w.rows / 4, w.cols], data: hfPack(w.t, w.rows, w.cols) }, withScale(w.name, w.c)])];
    const a = await logits(config({ linear_class: 'bitlinear' }), packed, ids);
    const b = await logits(config({ linear_class: 'autobitlinear', quantization_mode: 'offline' }), offline, ids);
    const c = await logits(config({ linear_class: 'autobitlinear', quantization_mode: 'offline' }), offlinePacked, ids);
    expect(a.every(Number.isFinite)).toBe(true);
    expect(Array.from(b)).toEqual(Array.from(a));
    expect(Array.from(c)).toEqual(Array.from(a));
    // Online: W = t·c ternarizes back to t with scale mean|W| = c·(fraction of non-zeros), a power of
    // two times that fraction; the offline model with that scale is the same up to the f32 rounding of it.
    const online = [...shared, ...tern.map((w) => f32t(`${w.name}.weight`, [w.rows, w.cols], Float32Array.from(w.t, (t) => t * w.c)))];
    const meanScaled = [...shared, ...tern.flatMap((w) => {
      const nz = w.t.reduce((s, t) => s + Math.abs(t), 0) / w.t.length;
      return [f32t(`${w.name}.weight`, [w.rows, w.cols], Float32Array.from(w.t)), withScale(w.name, Math.fround(w.c * nz))];
    })];
    const d = await logits(config({ linear_class: 'autobitlinear', quantization_mode: 'online' }), online, ids);
    const e = await logits(config({ linear_class: 'autobitlinear', quantization_mode: 'offline' }), meanScaled, ids);
    let num = 0, den = 0;
    for (let i = 0; i < d.length; i++) {
      num = Math.max(num, Math.abs(d[i] - e[i]));
      den = Math.max(den, Math.abs(e[i]));
    }
    expect(num / den).toBeLessThan(1e-5);
  });

  it('refuses configs it does not implement, naming the field', () => {
    const bad = (cfg: Record<string, unknown>, field: RegExp) => {
      let err: unknown;
      try {
        parseBitNet(cfg);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as Error).message).toMatch(field);
    };
    bad(config({}, { quantization_config: { quant_method: 'gptq' } }), /quantization_config\.quant_method/);
    bad(config({ linear_class: 'fancy' }), /quantization_config\.linear_class/);
    bad(config({ linear_class: 'autobitlinear', quantization_mode: 'sometimes' }), /quantization_config\.quantization_mode/);
    bad(config(null, { head_dim: 16 }), /head_dim/);
    bad(config(null, { hidden_act: 'tanh' }), /hidden_act/);
  });

  it('refuses non-ternary offline weights and packed weights for online quantization, naming the tensor', async () => {
    const { shared, tern } = model(5);
    const one = Float32Array.of(1);
    const notTernary = [...shared, ...tern.flatMap((w, i) => [f32t(`${w.name}.weight`, [w.rows, w.cols], Float32Array.from(w.t, (t, j) => (i === 0 && j === 3 ? 0.5 : t))), f32t(`${w.name}.weight_scale`, [1], one)])];
    await expect(logits(config({ linear_class: 'autobitlinear' }), notTernary, ids)).rejects.toThrow(/q_proj\.weight.*ternary/);
    const packedOnline = [...shared, ...tern.map((w) => ({ name: `${w.name}.weight`, dtype: 'u8' as const, shape: [w.rows / 4, w.cols], data: hfPack(w.t, w.rows, w.cols) }))];
    await expect(logits(config({ linear_class: 'autobitlinear', quantization_mode: 'online' }), packedOnline, ids)).rejects.toThrow(/packed uint8/);
  });
});
