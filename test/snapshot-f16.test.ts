// Snapshots with the state stored as f16: half the bytes of an f32 snapshot (plus header), and
// the next-token logits after restoring stay close to those of the f32 state. The measured error per
// family kind is printed for bench/RESULTS.md.
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/formats/checkpoint';
import { buildModel } from '../src/models/index';
import { SnapshotError } from '../src/runtime/state';

const CASES: [string, string][] = [
  ['hybrid (qwen3_next, sparrow-mini)', 'models/sparrow-mini'],
  ['recurrent (mamba)', 'test/fixtures/parity/mamba1'],
  ['recurrent (rwkv)', 'test/fixtures/parity/rwkv4-rescale'],
  ['attention (llama)', 'test/fixtures/parity/llama-mqa-yarn-tied'],
];

function relL2(a: Float32Array, b: Float32Array): number {
  let n = 0, d = 0;
  for (let i = 0; i < a.length; i++) {
    n += (a[i] - b[i]) ** 2;
    d += b[i] ** 2;
  }
  return Math.sqrt(n / d);
}

describe('f16 snapshots', () => {
  for (const [label, dir] of CASES) {
    it(label, async () => {
      const m = await buildModel(await openCheckpoint(dir), { maxContext: 128, build: 'simd' });
      const V = m.net.vocabSize;
      const ids = Array.from({ length: 40 }, (_, i) => (i * 7 + 3) % V);
      const s = m.newSession();
      s.forward(ids);
      const f32 = s.snapshot();
      const f16 = s.snapshot({ dtype: 'f16' });
      const ref = s.forward([5]);
      const a = m.restore(f32).forward([5]);
      const b = m.restore(f16).forward([5]);
      expect(a).toEqual(ref);
      const err = relL2(b, ref);
      console.log(`f16 snapshot ${label}: ${f32.length} → ${f16.length} bytes, next-token logits rel. L2 ${err.toExponential(2)}`);
      expect(err).toBeGreaterThan(0);
      expect(err).toBeLessThan(1e-2);
      expect(f16.length).toBeLessThan(f32.length * 0.55 + 4096);
      expect(() => m.restore(new Uint8Array(f16.subarray(0, f16.length - 9)))).toThrow(SnapshotError);
      m.dispose();
    });
  }
});

describe('f16 snapshot range', () => {
  it('refuses state values outside the f16 range with a SnapshotError naming the region', async () => {
    // a state value beyond f16's largest finite value (65504)
    const m = await buildModel(await openCheckpoint('test/fixtures/parity/rwkv4-rescale'), { maxContext: 16 });
    const s = m.newSession();
    s.forward([3]);
    const st = s.state;
    const r = st.layout.regions.find((x) => x.kind === 'fixed')!;
    m.k.arena.f32(st.base + r.offset, 1)[0] = 1e6;
    expect(() => s.snapshot({ dtype: 'f16' })).toThrow(/outside the f16 range/);
    expect(s.snapshot().length).toBeGreaterThan(0);
    m.dispose();
  });
});
