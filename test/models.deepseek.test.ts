// DeepSeek-V3 (MLA with the compressed latent cache + sigmoid group-limited MoE) and DeepSeek-V3.2 (DSA):
//  - parity against the HF transformers fixtures (prefill, token-by-token decode, greedy);
//  - the cache holds only the latent per token (kv_lora_rank + qk_rope_head_dim, + index_head_dim for DSA);
//  - chunked prefill (chunks straddling index_topk) = one-shot prefill;
//  - snapshot → restore into a fresh Model gives identical next-token logits;
//  - DSA decode reads only the index_topk selected latent rows: NaN-poisoning every other row
//    leaves the logits bit-identical, poisoning a selected one does not;
//  - the configuration paths the fixtures do not take (plain q_proj, attention_bias, rotate-half MLA
//    RoPE, no rope scaling, one expert group, two shared experts) run and stay self-consistent.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import type { DecoderNet, PreNormBlock } from '../src/models/decoder';
import { DsaAttention } from '../src/models/deepseek_v32';
import { MlaAttention } from '../src/models/deepseek_v3';
import { buildModel, type Model } from '../src/models/index';
import { loadFixtureModel, relMaxErr, runFixture, type FixtureReference } from '../tools/parity-lib';
import { rng } from './helpers';

const V3 = 'test/fixtures/parity/deepseekv3-mla';
const V32 = 'test/fixtures/parity/deepseekv32-dsa';
const have = existsSync(join(V3, 'reference.json')) && existsSync(join(V32, 'reference.json'));

async function fixture(dir: string, opts: Parameters<typeof buildModel>[1] = {}): Promise<{ ref: FixtureReference; model: Model }> {
  const ref: FixtureReference = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
  return { ref, model: await loadFixtureModel(dir, ref, { dtype: 'f32', ...opts }) };
}

function mixers<T>(model: Model, cls: new (...a: any[]) => T): T[] {
  const out = (model.net as DecoderNet).d.blocks.map((b) => (b as PreNormBlock).s.mixer);
  expect(out.every((m) => m instanceof cls)).toBe(true);
  return out as T[];
}

describe.runIf(have)('DeepSeek HF parity fixtures', () => {
  for (const dir of [V3, V32]) {
    it(dir.split('/').pop()!, async () => {
      const r = await runFixture(dir);
      expect(r.error).toBeUndefined();
      expect(r.prefillErr).toBeLessThanOrEqual(1e-4);
      expect(r.decodeErr).toBeLessThanOrEqual(1e-4);
      expect(r.greedyAgree).toBe(r.greedyTotal);
    }, 120_000);
  }
});

describe.runIf(have)('DeepSeek latent cache', () => {
  it('caches kv_lora_rank + qk_rope_head_dim floats per token and layer (+ index_head_dim for DSA)', async () => {
    for (const dir of [V3, V32]) {
      const { model } = await fixture(dir);
      const c = model.config;
      const perLayer = c.kv_lora_rank + c.qk_rope_head_dim + (c.model_type === 'deepseek_v32' ? c.index_head_dim : 0);
      expect(model.info().stateBytesPerToken).toBe(4 * c.num_hidden_layers * perLayer);
      expect(model.info().stateBytesFixed).toBe(0);
      model.dispose();
    }
  });

  it('chunked prefill (chunks straddling index_topk) matches one-shot prefill', async () => {
    for (const dir of [V3, V32]) {
      const { ref, model } = await fixture(dir);
      const full = model.newSession().forward(ref.input_ids, true);
      for (const maxChunk of [1, 5, 7]) {
        const { model: m } = await fixture(dir, { maxChunk });
        const got = m.newSession().forward(ref.input_ids, true);
        expect(relMaxErr(got, full)).toBeLessThanOrEqual(1e-5);
        m.dispose();
      }
      model.dispose();
    }
  }, 120_000);

  it('snapshot → restore into a fresh model gives identical next-token logits', async () => {
    for (const dir of [V3, V32]) {
      const { ref, model } = await fixture(dir);
      const ids = ref.input_ids;
      const s = model.newSession();
      s.forward(ids.slice(0, 30));
      const snap = s.snapshot();
      const next = s.forward(ids.slice(30, 33));
      const { model: fresh } = await fixture(dir);
      const r = fresh.restore(snap);
      expect(r.pos).toBe(30);
      expect(Array.from(r.forward(ids.slice(30, 33)))).toEqual(Array.from(next));
      model.dispose();
      fresh.dispose();
    }
  }, 60_000);
});

describe.runIf(have)('DeepSeek-V3.2 sparse attention', () => {
  it('decode attends to exactly index_topk latent rows and reads no other', async () => {
    const { ref, model } = await fixture(V32);
    const topk = model.config.index_topk;
    const ids = ref.input_ids;
    const n = 40;
    expect(n).toBeGreaterThan(topk);
    const a = model.newSession();
    a.forward(ids.slice(0, n));
    const snap = a.snapshot();
    const want = a.forward([ids[n]]);
    const layers = mixers(model, DsaAttention);
    const picks = layers.map((m) => Array.from(m.lastSelected));
    for (const p of picks) {
      expect(p.length).toBe(topk);
      expect(new Set(p).size).toBe(topk);
      expect(p.every((x) => x >= 0 && x <= n)).toBe(true);
    }
    // The layers do not all pick the same rows, and none picks just the most recent ones.
    const recent = Array.from({ length: topk }, (_, i) => n - topk + 1 + i);
    expect(picks.some((p) => p.join() !== recent.join())).toBe(true);

    const poisoned = (keep: (layer: number, pos: number) => boolean): Float32Array => {
      const b = model.restore(snap);
      layers.forEach((m, i) => {
        const L = m.latentDim;
        const lat = b.state.arena.f32(b.state.ptr(m.latentState), n * L);
        for (let pos = 0; pos < n; pos++) if (!keep(i, pos)) lat.fill(NaN, pos * L, (pos + 1) * L);
      });
      const out = b.forward([ids[n]]);
      b.dispose();
      return out;
    };
    const got = poisoned((i, pos) => picks[i].includes(pos));
    expect(got.every(Number.isFinite)).toBe(true);
    expect(Array.from(got)).toEqual(Array.from(want));
    // Control: poisoning one selected cached row of the last layer does reach the logits.
    const last = layers.length - 1, victim = picks[last].find((p) => p < n)!;
    const hit = poisoned((i, pos) => !(i === last && pos === victim));
    expect(relMaxErr(hit, want)).toBeGreaterThan(1e-3);
    model.dispose();
  }, 60_000);

  it('prefill rows past index_topk attend to their own top-k only', async () => {
    // The last prefill row selects the same rows as the same token decoded alone.
    const { ref, model } = await fixture(V32);
    const ids = ref.input_ids.slice(0, 33);
    const a = model.newSession();
    a.forward(ids);
    const prefillPicks = mixers(model, DsaAttention).map((m) => Array.from(m.lastSelected));
    const b = model.newSession();
    b.forward(ids.slice(0, 32));
    b.forward(ids.slice(32));
    const decodePicks = mixers(model, DsaAttention).map((m) => Array.from(m.lastSelected));
    expect(prefillPicks).toEqual(decodePicks);
    expect(prefillPicks[0].length).toBe(model.config.index_topk);
    model.dispose();
  }, 60_000);
});

// ---- a random DeepSeek-V3 checkpoint on the paths the fixture does not take ------------------------

function safetensors(t: Map<string, { shape: number[]; data: Float32Array }>): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const [name, { shape, data }] of t) {
    header[name] = { dtype: 'F32', shape, data_offsets: [off, off + data.byteLength] };
    off += data.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8) json += ' ';
  const hb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  let o = 8 + hb.length;
  for (const { data } of t.values()) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), o);
    o += data.byteLength;
  }
  return out;
}

function plainQConfig() {
  const D = 48, H = 3, R = 32, dn = 8, dr = 4, dv = 12, E = 4, I = 16, Vb = 61, Ls = 3;
  const config = {
    model_type: 'deepseek_v3', hidden_size: D, num_attention_heads: H, num_key_value_heads: H, num_hidden_layers: Ls,
    vocab_size: Vb, intermediate_size: 40, moe_intermediate_size: I, n_routed_experts: E, num_experts_per_tok: 2,
    n_shared_experts: 2, n_group: 1, topk_group: 1, first_k_dense_replace: 1, norm_topk_prob: false,
    routed_scaling_factor: 1.5, q_lora_rank: null, kv_lora_rank: R, qk_nope_head_dim: dn, qk_rope_head_dim: dr,
    v_head_dim: dv, rope_interleave: false, attention_bias: true, rms_norm_eps: 1e-5, max_position_embeddings: 128,
    rope_parameters: { rope_type: 'default', rope_theta: 10000 }, tie_word_embeddings: true,
  };
  const r = rng(7);
  const t = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = offset + (r() * 2 - 1) * scale;
    t.set(name, { shape, data });
  };
  add('model.embed_tokens.weight', [Vb, D], 1);
  add('model.norm.weight', [D], 0.2, 1);
  for (let i = 0; i < Ls; i++) {
    const p = `model.layers.${i}`, a = `${p}.self_attn`;
    add(`${p}.input_layernorm.weight`, [D], 0.2, 1);
    add(`${p}.post_attention_layernorm.weight`, [D], 0.2, 1);
    add(`${a}.q_proj.weight`, [H * (dn + dr), D], 0.3);
    add(`${a}.kv_a_proj_with_mqa.weight`, [R + dr, D], 0.3);
    add(`${a}.kv_a_proj_with_mqa.bias`, [R + dr], 0.1);
    add(`${a}.kv_a_layernorm.weight`, [R], 0.2, 1);
    add(`${a}.kv_b_proj.weight`, [H * (dn + dv), R], 0.3);
    add(`${a}.o_proj.weight`, [D, H * dv], 0.3);
    add(`${a}.o_proj.bias`, [D], 0.1);
    const m = `${p}.mlp`;
    if (i === 0) {
      add(`${m}.gate_proj.weight`, [40, D], 0.2);
      add(`${m}.up_proj.weight`, [40, D], 0.2);
      add(`${m}.down_proj.weight`, [D, 40], 0.2);
      continue;
    }
    add(`${m}.gate.weight`, [E, D], 0.3);
    add(`${m}.gate.e_score_correction_bias`, [E], 0.1);
    add(`${m}.experts.gate_up_proj`, [E, 2 * I, D], 0.2);
    add(`${m}.experts.down_proj`, [E, D, I], 0.2);
    add(`${m}.shared_experts.gate_proj.weight`, [2 * I, D], 0.2);
    add(`${m}.shared_experts.up_proj.weight`, [2 * I, D], 0.2);
    add(`${m}.shared_experts.down_proj.weight`, [D, 2 * I], 0.2);
  }
  return { config, files: { files: { 'config.json': JSON.stringify(config), 'model.safetensors': safetensors(t) } } };
}

describe('DeepSeek-V3 configuration paths', () => {
  it('plain q_proj, biases, rotate-half RoPE, fused experts: prefill = decode = chunked, finite', async () => {
    const { files } = plainQConfig();
    const load = async (maxChunk: number) => buildModel(await openCheckpoint(files), { exact: true, maxContext: 64, maxChunk });
    const model = await load(64);
    mixers(model, MlaAttention);
    const ids = Array.from({ length: 20 }, (_, i) => (i * 17 + 3) % 61);
    const full = model.newSession().forward(ids, true);
    expect(full.every(Number.isFinite)).toBe(true);
    const s = model.newSession();
    const dec = new Float32Array(full.length);
    for (let t = 0; t < ids.length; t++) dec.set(s.forward([ids[t]]), t * 61);
    expect(relMaxErr(dec, full)).toBeLessThanOrEqual(1e-5);
    const chunked = (await load(3)).newSession().forward(ids, true);
    expect(relMaxErr(chunked, full)).toBeLessThanOrEqual(1e-5);
  });

  it('rejects what it does not implement, naming the field', async () => {
    const { config, files } = plainQConfig();
    const bad = async (patch: any) => {
      const f = { files: { ...files.files, 'config.json': JSON.stringify({ ...config, ...patch }) } };
      return buildModel(await openCheckpoint(f), { maxContext: 16 });
    };
    await expect(bad({ num_key_value_heads: 1 })).rejects.toThrow(/num_key_value_heads/);
    await expect(bad({ n_group: 3 })).rejects.toThrow(/n_group/);
    await expect(bad({ mlp_layer_types: ['dense', 'sparse'] })).rejects.toThrow(/mlp_layer_types/);
  });
});
