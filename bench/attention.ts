// Attention kernels: decode over a KV cache (dense GQA, sliding window, sparse top-k over selected
// slots), causal prefill, and the O(n) top-k selection. Prints a table per build.
// Run: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/attention.ts [--build simd|relaxed]
//
// GFLOP/s counts q·k and p·v: 2·Hq·n·(D + Dv) per query token over n visible keys.
import { attendSelected, attention, topkSelect } from '../src/kernels/attention';
import { instantiate, type BuildName } from '../src/kernels/runtime';
import { randn, rng } from '../test/helpers';

const args = process.argv.slice(2);
const build = (args.includes('--build') ? args[args.indexOf('--build') + 1] : 'relaxed') as BuildName;

function best(fn: () => void, rounds = 15): number {
  for (let i = 0; i < 3; i++) fn();
  let b = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t = performance.now();
    fn();
    b = Math.min(b, performance.now() - t);
  }
  return b;
}

const k = await instantiate({ build });
const r = rng(7);
const rows: string[] = [];
const row = (kernel: string, shape: string, ms: number, tokens: number, flops: number) =>
  rows.push(`| ${kernel} | ${shape} | ${ms.toFixed(3)} | ${Math.round(tokens / (ms / 1000))} | ${(flops / (ms / 1000) / 1e9).toFixed(1)} |`);

for (const [Hq, Hkv, D, ctx] of [[32, 8, 128, 4096], [16, 16, 64, 4096], [8, 1, 256, 4096], [14, 2, 64, 32768]]) {
  const kc = k.arena.putF32(randn(ctx * Hkv * D, r)), vc = k.arena.putF32(randn(ctx * Hkv * D, r));
  const q = k.arena.putF32(randn(Hq * D, r)), out = k.arena.f32buf(Hq * D);
  const o = { T: 1, qPos0: ctx - 1, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 1 / Math.sqrt(D) };
  const ms = best(() => attention(k, out.ptr, q.ptr, kc.ptr, vc.ptr, o));
  row('decode, dense GQA', `Hq ${Hq} Hkv ${Hkv} D ${D}, ${ctx} keys`, ms, 1, 2 * Hq * ctx * 2 * D);
  const W = 1024;
  const msw = best(() => attention(k, out.ptr, q.ptr, kc.ptr, vc.ptr, { ...o, window: W }));
  row('decode, sliding window', `same, window ${W}`, msw, 1, 2 * Hq * W * 2 * D);
  const sel = 2048 < ctx ? 2048 : ctx >> 1;
  const scores = k.arena.putF32(randn(ctx, r));
  const idx = k.arena.alloc(sel * 4);
  const mst = best(() => topkSelect(k, idx, scores.ptr, ctx, sel));
  row('top-k select', `${sel} of ${ctx}`, mst, 1, 0);
  const mss = best(() => attendSelected(k, out.ptr, q.ptr, kc.ptr, vc.ptr, idx, sel, { nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 1 / Math.sqrt(D) }));
  row('decode, sparse top-k', `same, ${sel} selected keys`, mss, 1, 2 * Hq * sel * 2 * D);
}
{
  const [Hq, Hkv, D, T] = [16, 4, 64, 512];
  const kc = k.arena.putF32(randn(T * Hkv * D, r)), vc = k.arena.putF32(randn(T * Hkv * D, r));
  const q = k.arena.putF32(randn(T * Hq * D, r)), out = k.arena.f32buf(T * Hq * D);
  const ms = best(() => attention(k, out.ptr, q.ptr, kc.ptr, vc.ptr, { T, qPos0: 0, nHeads: Hq, nKv: Hkv, headDim: D, vDim: D, scale: 0.125 }), 5);
  row('prefill, causal', `Hq ${Hq} Hkv ${Hkv} D ${D}, T ${T}`, ms, T, 2 * Hq * (T * (T + 1)) / 2 * 2 * D);
}
console.log(`attention kernels, ${build} build, ${process.version}`);
console.log('| kernel | shape | ms | tokens/s | GFLOP/s |');
console.log('|---|---|---:|---:|---:|');
for (const x of rows) console.log(x);
