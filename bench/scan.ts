// Recurrent-scan kernels: token-by-token decode steps vs one recurrent call vs the chunked prefill.
// Run: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/scan.ts [--build simd|relaxed] [--quick]
//
// GFLOP/s counts the nominal work of the per-token recurrence for every form, so the column compares
// wall time on the same job:
//   gated delta rule, per head and token: decay dk·dv, u = Sᵀk 2·dk·dv, rank-1 update 2·dk·dv, o 2·dk·dv → 7·dk·dv
//   Mamba-1 per channel and state:  exp + decay + input 3, read-out 2 → 5·dInner·N (exp counted as 1)
//   Mamba-2 per head: P·N·(decay 1 + input 2 + read-out 2) → 5·H·P·N
import { instantiate, type BuildName, type WasmInstance } from '../src/kernels/runtime';
import { linearAttention, linearAttentionScratchBytes } from '../src/kernels/linear_attention';
import { selectiveScan, ssdScan, ssdScanScratchBytes } from '../src/kernels/ssm';
import { randn, rng } from '../test/helpers';

const args = process.argv.slice(2);
const build = (args.includes('--build') ? args[args.indexOf('--build') + 1] : 'relaxed') as BuildName;
const quick = args.includes('--quick');

/**
 * Times the forms of one kernel round-robin (one run of each per round) and keeps each form's best
 * run: the box is shared, interference only ever adds time, and interleaving exposes every form to
 * the same load so the ratios stay fair.
 */
function timeForms(forms: Array<[string, () => void]>, rounds = quick ? 5 : 15): Array<[string, number]> {
  for (const [, fn] of forms) for (let i = 0; i < 2; i++) fn();
  const best = forms.map(() => Infinity);
  for (let r = 0; r < rounds; r++) {
    forms.forEach(([, fn], i) => {
      const t = performance.now();
      fn();
      best[i] = Math.min(best[i], performance.now() - t);
    });
  }
  return forms.map(([name], i) => [name, best[i]]);
}

interface Row { kernel: string; shape: string; form: string; ms: number; tokS: number; gflops: number; ratio?: number }

function l2rows(a: Float32Array, d: number): void {
  for (let r = 0; r < a.length / d; r++) {
    let s = 0;
    for (let i = 0; i < d; i++) s += a[r * d + i] ** 2;
    const inv = 1 / Math.sqrt(s + 1e-6);
    for (let i = 0; i < d; i++) a[r * d + i] *= inv;
  }
}

/** decay 'scalar' = Gated DeltaNet (Qwen3-Next); 'vector' = KDA (per-key-channel gates). */
function gatedDelta(K: WasmInstance, H: number, dk: number, dv: number, T: number, decay: 'scalar' | 'vector' = 'scalar'): Row[] {
  const r = rng(1);
  const a = K.arena;
  const q = randn(T * H * dk, r), k = randn(T * H * dk, r);
  l2rows(q, dk);
  l2rows(k, dk);
  const Q = a.putF32(q), Kb = a.putF32(k), V = a.putF32(randn(T * H * dv, r));
  const gPerTok = decay === 'vector' ? H * dk : H;
  const G = a.putF32(Float32Array.from({ length: T * gPerTok }, () => -0.5 * r()));
  const B = a.putF32(Float32Array.from({ length: T * H }, () => r()));
  const O = a.f32buf(T * H * dv), S = a.f32buf(H * dk * dv);
  const scr = a.alloc(linearAttentionScratchBytes(K, { dk, dv, decay, delta: true, chunk: 128 }));
  const base = { H, dk, dv, decay, scale: 1 / Math.sqrt(dk), scratch: scr };
  const flops = 7 * H * dk * dv * T;
  const rows: Row[] = [];
  const shape = `H=${H} dk=dv=${dk} T=${T}`;
  const name = decay === 'scalar' ? 'gated delta rule' : 'KDA (per-channel gates, delta)';
  const forms: Array<[string, () => void]> = [];
  forms.push(['token by token (T=1 calls)', () => {
    S.v.fill(0);
    for (let t = 0; t < T; t++) {
      linearAttention(K, O.ptr + t * H * dv * 4, S.ptr, Q.ptr + t * H * dk * 4, Kb.ptr + t * H * dk * 4, V.ptr + t * H * dv * 4,
        { ...base, T: 1, g: G.ptr + t * gPerTok * 4, beta: B.ptr + t * H * 4 });
    }
  }]);
  forms.push(['recurrent, one call', () => {
    S.v.fill(0);
    linearAttention(K, O.ptr, S.ptr, Q.ptr, Kb.ptr, V.ptr, { ...base, T, g: G.ptr, beta: B.ptr, mode: 'recurrent' });
  }]);
  for (const chunk of [16, 32, 64] as const) {
    forms.push([`chunked, chunk ${chunk}`, () => {
      S.v.fill(0);
      linearAttention(K, O.ptr, S.ptr, Q.ptr, Kb.ptr, V.ptr, { ...base, T, g: G.ptr, beta: B.ptr, mode: 'chunked', chunk });
    }]);
  }
  for (const [form, ms] of timeForms(forms)) rows.push({ kernel: name, shape, form, ms, tokS: T / ms * 1e3, gflops: flops / ms / 1e6 });
  const tbt = rows[0].ms;
  for (const row of rows) row.ratio = tbt / row.ms;
  return rows;
}

function mamba1(K: WasmInstance, dInner: number, N: number, T: number): Row[] {
  const r = rng(2);
  const a = K.arena;
  const X = a.putF32(randn(T * dInner, r)), Z = a.putF32(randn(T * dInner, r));
  const Dt = a.putF32(Float32Array.from({ length: T * dInner }, () => 0.001 + 0.1 * r()));
  const A = a.putF32(Float32Array.from({ length: dInner * N }, (_, i) => -(1 + (i % N))));
  const B = a.putF32(randn(T * N, r)), C = a.putF32(randn(T * N, r)), D = a.putF32(randn(dInner, r));
  const Y = a.f32buf(T * dInner), h = a.f32buf(dInner * N);
  const flops = 5 * dInner * N * T;
  const shape = `dInner=${dInner} N=${N} T=${T}`;
  const rows: Row[] = [];
  const forms: Array<[string, () => void]> = [];
  forms.push(['token by token (T=1 calls)', () => {
    h.v.fill(0);
    for (let t = 0; t < T; t++) {
      const o = t * dInner * 4;
      selectiveScan(K, Y.ptr + o, h.ptr, X.ptr + o, Dt.ptr + o, A.ptr, B.ptr + t * N * 4, C.ptr + t * N * 4, D.ptr, Z.ptr + o, { T: 1, dInner, N });
    }
  }]);
  forms.push(['one call over T', () => {
    h.v.fill(0);
    selectiveScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, Z.ptr, { T, dInner, N });
  }]);
  for (const [form, ms] of timeForms(forms)) rows.push({ kernel: 'Mamba-1 selective scan', shape, form, ms, tokS: T / ms * 1e3, gflops: flops / ms / 1e6 });
  for (const row of rows) row.ratio = rows[0].ms / row.ms;
  return rows;
}

function mamba2(K: WasmInstance, H: number, P: number, G: number, N: number, T: number): Row[] {
  const r = rng(3);
  const a = K.arena;
  const X = a.putF32(randn(T * H * P, r));
  const Dt = a.putF32(Float32Array.from({ length: T * H }, () => 0.001 + 0.1 * r()));
  const A = a.putF32(Float32Array.from({ length: H }, () => -(1 + 8 * r())));
  const B = a.putF32(randn(T * G * N, r)), C = a.putF32(randn(T * G * N, r)), D = a.putF32(randn(H, r));
  const Y = a.f32buf(T * H * P), h = a.f32buf(H * P * N);
  const scr = a.alloc(ssdScanScratchBytes(K, { P, N, chunk: 64 }));
  const flops = 5 * H * P * N * T;
  const shape = `H=${H} P=${P} N=${N} G=${G} T=${T}`;
  const rows: Row[] = [];
  const base = { H, P, G, N, scratch: scr };
  const forms: Array<[string, () => void]> = [];
  forms.push(['token by token (T=1 calls)', () => {
    h.v.fill(0);
    for (let t = 0; t < T; t++) {
      ssdScan(K, Y.ptr + t * H * P * 4, h.ptr, X.ptr + t * H * P * 4, Dt.ptr + t * H * 4, A.ptr, B.ptr + t * G * N * 4, C.ptr + t * G * N * 4, D.ptr, { ...base, T: 1 });
    }
  }]);
  forms.push(['recurrent, one call', () => {
    h.v.fill(0);
    ssdScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, { ...base, T, mode: 'recurrent' });
  }]);
  for (const chunk of [32, 64] as const) {
    forms.push([`chunked, chunk ${chunk}`, () => {
      h.v.fill(0);
      ssdScan(K, Y.ptr, h.ptr, X.ptr, Dt.ptr, A.ptr, B.ptr, C.ptr, D.ptr, { ...base, T, mode: 'chunked', chunk });
    }]);
  }
  for (const [form, ms] of timeForms(forms)) rows.push({ kernel: 'Mamba-2 SSD', shape, form, ms, tokS: T / ms * 1e3, gflops: flops / ms / 1e6 });
  for (const row of rows) row.ratio = rows[0].ms / row.ms;
  return rows;
}

const K = await instantiate({ build, budget: 1 << 30 });
const rows: Row[] = [];
rows.push(...gatedDelta(K, 8, 64, 64, 512));
rows.push(...gatedDelta(K, 8, 128, 128, 512));
rows.push(...gatedDelta(K, 8, 128, 128, 512, 'vector'));
rows.push(...mamba1(K, 1536, 16, 512));
rows.push(...mamba2(K, 24, 64, 1, 128, 512));

console.log(`build ${K.build}, node ${process.version}`);
console.log('| kernel | shape | form | ms | tokens/s | GFLOP/s | × token-by-token |');
console.log('|---|---|---|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(`| ${r.kernel} | ${r.shape} | ${r.form} | ${r.ms.toFixed(2)} | ${Math.round(r.tokS)} | ${r.gflops.toFixed(1)} | ${r.ratio!.toFixed(2)} |`);
}
