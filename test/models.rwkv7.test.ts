// RWKV-7 (model_type "rwkv7"): on the committed fixture checkpoints, chunked prefill equals
// token-by-token decode (logits and every state region), prefill pieces compose, snapshots round
// trip, the state is constant-size; and config.json fields are read as fla's RWKV7Config reads
// them, unsupported values rejected naming the field. Parity against the float64 reference:
// test/parity.test.ts.

import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/formats/errors';
import { parseRwkv7 } from '../src/models/rwkv7';
import { expectChunkedPrefillComposes, expectSnapshotRestores, fixtureTokens, loadExact } from './recurrent-checks';

const FIXTURES = ['test/fixtures/parity/rwkv7-goose', 'test/fixtures/parity/rwkv7-vdim-tied'];

describe.each(FIXTURES)('rwkv7 on %s', (dir) => {
  it('chunked prefill equals token-by-token decode (logits and state), and prefill pieces compose', async () => {
    // The WKV kernel itself is bit-identical across splits (test/kernels.rwkv7.test.ts).
    await expectChunkedPrefillComposes(dir);
  });

  it('snapshot → restore into a fresh model gives identical next-token logits; the state is constant-size', async () => {
    const m1 = await expectSnapshotRestores(dir);
    expect(m1.info().stateBytesPerToken).toBe(0);
    const c = parseRwkv7(JSON.parse(await (await import('node:fs/promises')).readFile(`${dir}/config.json`, 'utf8')));
    // Per layer: two token-shift vectors and the WKV state [H, dk, dv].
    expect(m1.layout.snapshotFloats(0)).toBe(c.nLayers * (2 * c.hidden + c.H * c.dk * c.dv));
    expect(m1.layout.snapshotFloats(4000)).toBe(m1.layout.snapshotFloats(0));
  });

  it('a reset session forgets the previous sequence', async () => {
    const m = await loadExact(dir, 16);
    const V = m.net.vocabSize;
    const s = m.newSession();
    const first = s.forward(fixtureTokens(10, V, 1), true);
    s.reset();
    s.forward(fixtureTokens(7, V, 2));
    s.reset();
    expect(Array.from(s.forward(fixtureTokens(10, V, 1), true))).toEqual(Array.from(first));
  });
});

describe('rwkv7 config.json', () => {
  const base = { model_type: 'rwkv7', hidden_size: 768, num_hidden_layers: 12, vocab_size: 65536, head_dim: 64 };

  it('fills fla defaults: LoRA ranks from hidden_size and head_dim, intermediate from hidden_ratio, fuse_norm', () => {
    // RWKV7Config's own defaults (64 / 128 / 64 / 16) when the fields are absent.
    const d = parseRwkv7(base);
    expect([d.decayRank, d.gateRank, d.aRank, d.vRank]).toEqual([64, 128, 64, 16]);
    // Null ranks: RWKV7Attention's formulas (the 0.1B checkpoints' 64 / 128 / 64 / 32).
    const n = parseRwkv7({ ...base, decay_low_rank_dim: null, gate_low_rank_dim: null, a_low_rank_dim: null, v_low_rank_dim: null });
    expect([n.decayRank, n.gateRank, n.aRank, n.vRank]).toEqual([64, 128, 64, 32]);
    expect([d.H, d.dk, d.dv, d.inter]).toEqual([12, 64, 64, 3072]);
    expect(parseRwkv7({ ...base, hidden_ratio: 3.5 }).inter).toBe(2688);
    expect(parseRwkv7({ ...base, hidden_size: 96, head_dim: 32, hidden_ratio: 2.75 }).inter).toBe(288);
    expect(parseRwkv7({ ...base, intermediate_size: 1000 }).inter).toBe(1000);
    expect(d.kappaNorm).toEqual({ mode: 'add', eps: 1e-6 });
    expect(parseRwkv7({ ...base, fuse_norm: false }).kappaNorm).toEqual({ mode: 'clamp', eps: 1e-12 });
    // head_dim wins over num_heads (fla's configs often carry an unrelated num_heads); num_heads only when head_dim is null.
    expect(parseRwkv7({ ...base, num_heads: 32 }).H).toBe(12);
    expect(parseRwkv7({ ...base, head_dim: null, num_heads: 8 }).dk).toBe(96);
    expect(parseRwkv7({ ...base, value_dim: [1536, ...Array(11).fill(1536)] }).dv).toBe(128);
    expect(parseRwkv7({ ...base, value_dim: 768 }).dv).toBe(64);
  });

  it.each([
    [{ hidden_act: 'relu' }, 'config.hidden_act'],
    [{ attn: { layers: [1], num_heads: 4 } }, 'config.attn'],
    [{ attn_mode: 'parallel' }, 'config.attn_mode'],
    [{ head_dim: 100 }, 'config.head_dim'],
    [{ head_dim: null }, 'config.head_dim'],
    [{ head_dim: null, num_heads: 5 }, 'config.num_heads'],
    [{ value_dim: [768, 1536, ...Array(10).fill(768)] }, 'config.value_dim'],
    [{ value_dim: [768] }, 'config.value_dim'],
    [{ value_dim: 100 }, 'config.value_dim'],
    [{ norm_eps: 0 }, 'config.norm_eps'],
    [{ hidden_ratio: -1 }, 'config.hidden_ratio'],
    [{ fuse_norm: 'yes' }, 'config.fuse_norm'],
  ])('rejects %j naming %s', (patch, field) => {
    let err: unknown;
    try {
      parseRwkv7({ ...base, ...patch });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain(field);
  });
});
