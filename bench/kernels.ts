// Kernel benchmarks: memory-bandwidth probe, GEMV (decode) and batch-64 GEMM (prefill) per build.
//   npm run bench:kernels [-- --json] [-- --quick] [-- --passes N] [-- --quant]
// --quant times every weight type (relaxed build, 1 thread) and measures its errors instead (see quantBench).
// GEMV streams several copies of each weight matrix in turn (≥ 5× the 32 MiB L3 of the reference
// machine) so that weights come from DRAM, as they do for a whole model. Matmuls go through the
// facade, so the GEMV/GEMM times include the activation quantization of the integer paths.
import { statSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { encodeF32 } from '../src/formats/dtype';
import { isKQuant } from '../src/formats/kquants';
import { reserveKMatmulScratch, type KWeight } from '../src/kernels/kquant';
import { kmatmulRef, quantizeActKRef } from '../src/kernels/kquant.ref';
import { matmul, reserveMatmulScratch } from '../src/kernels/matmul';
import { attachPool, createPool, type Pool } from '../src/kernels/pool';
import { dequantActRef, dequantRef, matmulRef, quantizeActRef } from '../src/kernels/reference';
import { instantiate, type BuildName, type WasmInstance } from '../src/kernels/runtime';
import { rowBytes, type AnyWeightDType, type Weight, type WeightDType } from '../src/kernels/types';

const args = process.argv.slice(2);
const asJson = args.includes('--json');
const quick = args.includes('--quick');
const log = (s = '') => { if (!asJson) console.log(s); };

const SHAPES: [number, number][] = [[4096, 4096], [2048, 8192]];
const DTYPES: WeightDType[] = ['f32', 'f16', 'q8_0', 'q4_0'];
const STREAM_BYTES = (quick ? 48 : 160) * 2 ** 20;
const PROBE_BYTES = (quick ? 64 : 512) * 2 ** 20;
const GEMM_BATCH = 64;

/**
 * Best (minimum) seconds per call of fn over at least minTime seconds, after warm-up. The minimum
 * rather than the median: the reference machine is shared, and other processes only ever add time.
 */
function time(fn: (i: number) => void, minTime = quick ? 0.15 : 0.6, minIters = 5): number {
  for (let i = 0; i < 3; i++) fn(i);
  const ts: number[] = [];
  const t0 = performance.now();
  for (let i = 0; ts.length < minIters || performance.now() - t0 < minTime * 1000; i++) {
    const a = performance.now();
    fn(i);
    ts.push((performance.now() - a) / 1000);
  }
  return Math.min(...ts);
}

function fillRandom(k: WasmInstance, ptr: number, n: number, seed: number): void {
  const v = k.arena.f32(ptr, n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = (s / 4294967296 - 0.5) * 0.1;
  }
}

/** Copies of a [rows, cols] weight in dtype, together ≥ STREAM_BYTES. */
function makeWeights(k: WasmInstance, dtype: WeightDType, rows: number, cols: number): Weight[] {
  const bytes = rows * rowBytes(dtype, cols);
  const copies = Math.max(2, Math.ceil(STREAM_BYTES / bytes));
  const first = k.arena.alloc(bytes);
  const mark = k.arena.mark();
  const src = k.arena.alloc(rows * cols * 4);
  fillRandom(k, src, rows * cols, rows + cols);
  if (dtype === 'f32') k.arena.u8(first, bytes).set(k.arena.u8(src, bytes));
  else if (dtype === 'f16' || dtype === 'bf16') {
    const f = new Uint32Array(k.memory.buffer, src, rows * cols), h = k.arena.u16(first, rows * cols);
    // Truncated conversions: the values only need to be finite and of ordinary size.
    for (let i = 0; i < h.length; i++) h[i] = dtype === 'bf16' ? f[i] >>> 16 : ((f[i] >>> 16) & 0x8000) | 0x2000 | ((f[i] >>> 13) & 0x3ff);
  } else k.exports[dtype === 'q8_0' ? 'quantizeRowsQ8_0' : 'quantizeRowsQ4_0'](first, src, rows, cols);
  k.arena.release(mark);
  const out: Weight[] = [{ ptr: first, dtype, rows, cols }];
  for (let c = 1; c < copies; c++) {
    const p = k.arena.alloc(bytes);
    k.arena.u8(p, bytes).set(k.arena.u8(first, bytes));
    out.push({ ptr: p, dtype, rows, cols });
  }
  return out;
}

interface Row {
  build: string;
  shape: string;
  dtype: WeightDType;
  bytes: number;
  flops: number;
  gemv: number;
  gemm: number;
}

async function probe(k: WasmInstance, pool: Pool | null): Promise<number> {
  const chunk = 1 << 20;
  const n = PROBE_BYTES / chunk;
  const mark = k.arena.mark();
  const p = k.arena.alloc(PROBE_BYTES);
  k.arena.f32(p, PROBE_BYTES / 4).fill(1);
  const t = time(() => {
    if (pool) pool.run('readSum', [p, chunk], n);
    else k.exports.readSum(p, chunk, 0, n);
  });
  k.arena.release(mark);
  return PROBE_BYTES / t / 1e9;
}

async function runBuild(label: string, build: BuildName, threads: number): Promise<{ rows: Row[]; probe: number }> {
  const k = await instantiate({ build });
  let pool: Pool | null = null;
  if (threads > 1) {
    pool = await createPool(k, threads);
    attachPool(k, pool);
  }
  const ownProbe = await probe(k, pool);
  const rows: Row[] = [];
  reserveMatmulScratch(k, GEMM_BATCH, 8192);
  for (const [R, C] of SHAPES) {
    const x = k.arena.f32buf(GEMM_BATCH * C), y = k.arena.f32buf(GEMM_BATCH * R);
    fillRandom(k, x.ptr, GEMM_BATCH * C, 99);
    for (const dtype of DTYPES) {
      const mark = k.arena.mark();
      const ws = makeWeights(k, dtype, R, C);
      const gemv = time((i) => matmul(k, y.ptr, x.ptr, ws[i % ws.length], 1));
      const gemm = time((i) => matmul(k, y.ptr, x.ptr, ws[i % ws.length], GEMM_BATCH), quick ? 0.2 : 1, 3);
      rows.push({ build: label, shape: `${R}×${C}`, dtype, bytes: R * rowBytes(dtype, C), flops: 2 * R * C * GEMM_BATCH, gemv, gemm });
      k.arena.release(mark);
      if (!asJson) process.stderr.write('.');
    }
  }
  await pool?.destroy();
  return { rows, probe: ownProbe };
}

function table(head: string[], body: (string | number)[][]): string {
  const cells = body.map((r) => r.map((c) => (typeof c === 'number' ? c.toFixed(c >= 100 ? 0 : c >= 10 ? 1 : 2) : c)));
  const w = head.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (i < 3 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ')} |`;
  return [line(head), `|${w.map((n, i) => (i < 3 ? ':' : '-') + '-'.repeat(n) + (i < 3 ? '-' : ':')).join('|')}|`, ...cells.map(line)].join('\n');
}

const sizes = Object.fromEntries(['simd', 'relaxed', 'threads'].map((b) => [b, statSync(new URL(`../build/${b}.wasm`, import.meta.url)).size]));
const cpu = cpus()[0]?.model ?? 'unknown';
const machine = `${cpus().length}-core ${cpu}, ${process.release.name} ${process.version}`;
log(`sparrow kernel bench — ${new Date().toISOString().slice(0, 10)} — ${machine}`);
log(`wasm sizes: ${Object.entries(sizes).map(([b, s]) => `${b} ${(s / 1024).toFixed(1)} KB`).join(', ')}`);

const passesArg = args.indexOf('--passes');
const passes = passesArg >= 0 ? Math.max(1, Number(args[passesArg + 1]) || 1) : quick ? 1 : 2;

// ---------------------------------------------------------------------------------------------
// --quant: every weight type at decode (batch 1) and batch-64 shapes, relaxed build, 1 thread, and
// the error of each type. Error columns, on QUANT_ERR_BATCH activation rows:
//   ref      the kernel (default path) against its naive reference: kquant.ref.ts kmatmulRef for the
//            K-quants (same integer sums and f32 operations, so max |Δ| = 0 is expected); for f32, f16,
//            bf16, q8_0 and q4_0, kernels/reference.ts float64 sums of the decoded weights (and, for
//            q8_0/q4_0, of the quantized activations), which differ from f32 accumulation by rounding.
//   vs f32   relative L2 of the quantized product (default path) against the float64 product of the
//            original f32 weights: the quantization error of the type.
//   int/ex   relative L2 of the integer-dot (default) path against the exact path (dequantized
//            weights × f32 activations); '—' where the type has a single path.

const QUANT_SHAPES: [number, number][] = [[2048, 2048], [4096, 1024]];
const QUANT_DTYPES: AnyWeightDType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs', 'mxfp4'];
const QUANT_ERR_BATCH = 4;

/** Approximately normal values (sum of four uniforms), standard deviation sd, from seed. */
function gaussian(n: number, seed: number, sd: number): Float32Array {
  const v = new Float32Array(n);
  let s = seed >>> 0;
  const u = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296;
  for (let i = 0; i < n; i++) v[i] = (u() + u() + u() + u() - 2) * Math.sqrt(3) * sd;
  return v;
}

function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const sci = (v: number) => (v === 0 ? '0' : v.toExponential(1));

interface QuantRow {
  shape: string;
  dtype: AnyWeightDType;
  bitsPerWeight: number;
  weightBytes: number;
  gemvMs: number;
  gemvGBs: number;
  gemvGFlops: number;
  gemmMs: number;
  gemmGFlops: number;
  refKind: 'bit-exact' | 'f64';
  refMaxAbs: number;
  refMaxRel: number;
  relL2VsF32: number;
  relL2IntVsExact: number | null;
}

async function quantBench(): Promise<QuantRow[]> {
  const k = await instantiate({ build: 'relaxed' });
  reserveMatmulScratch(k, GEMM_BATCH, 4096);
  reserveKMatmulScratch(k, GEMM_BATCH, 4096);
  const out: QuantRow[] = [];
  for (const [R, C] of QUANT_SHAPES) {
    const wf = gaussian(R * C, R * 7 + C, 0.02);
    const xb = gaussian(GEMM_BATCH * C, 99 + C, 1);
    const xe = xb.subarray(0, QUANT_ERR_BATCH * C);
    const yf32 = matmulRef(xe, wf, QUANT_ERR_BATCH, R, C);
    const shapeMark = k.arena.mark();
    const x = k.arena.f32buf(GEMM_BATCH * C), y = k.arena.f32buf(GEMM_BATCH * R);
    for (const dtype of QUANT_DTYPES) {
      const wb = encodeF32(dtype, wf, R, C);
      const bytes = R * rowBytes(dtype, C);
      const mark = k.arena.mark();
      const copies = Math.max(2, Math.ceil(STREAM_BYTES / bytes));
      const ws: (Weight | KWeight)[] = [];
      for (let c = 0; c < copies; c++) {
        const p = k.arena.alloc(bytes);
        k.arena.u8(p, bytes).set(wb);
        ws.push({ ptr: p, dtype, rows: R, cols: C } as Weight | KWeight);
      }
      k.arena.f32(x.ptr, GEMM_BATCH * C).set(xb);
      let gemv = Infinity, gemm = Infinity;
      for (let p = 0; p < passes; p++) {
        gemv = Math.min(gemv, time((i) => matmul(k, y.ptr, x.ptr, ws[i % ws.length], 1)));
        gemm = Math.min(gemm, time((i) => matmul(k, y.ptr, x.ptr, ws[i % ws.length], GEMM_BATCH), quick ? 0.2 : 1, 3));
      }
      // Errors on the first QUANT_ERR_BATCH rows of X.
      matmul(k, y.ptr, x.ptr, ws[0], QUANT_ERR_BATCH);
      const yDef = k.arena.f32(y.ptr, QUANT_ERR_BATCH * R).slice();
      const single = dtype === 'f32' || dtype === 'f16' || dtype === 'bf16';
      let yEx = yDef;
      if (!single) {
        matmul(k, y.ptr, x.ptr, ws[0], QUANT_ERR_BATCH, { exact: true });
        yEx = k.arena.f32(y.ptr, QUANT_ERR_BATCH * R).slice();
      }
      let ref: ArrayLike<number>;
      let refKind: QuantRow['refKind'] = 'f64';
      if (isKQuant(dtype)) {
        ref = kmatmulRef(dtype, wb, quantizeActKRef(dtype, xe, QUANT_ERR_BATCH, C), QUANT_ERR_BATCH, R, C);
        refKind = 'bit-exact';
      } else {
        const dt = dtype as WeightDType;
        const xa = single ? xe : dequantActRef(quantizeActRef(xe, QUANT_ERR_BATCH, C), QUANT_ERR_BATCH, C);
        ref = matmulRef(xa, dequantRef(dt, wb, R, C), QUANT_ERR_BATCH, R, C);
      }
      let refScale = 0;
      for (let i = 0; i < ref.length; i++) refScale = Math.max(refScale, Math.abs(ref[i]));
      const refMaxAbs = maxAbsDiff(yDef, ref);
      out.push({
        shape: `${R}×${C}`, dtype, bitsPerWeight: (bytes * 8) / (R * C), weightBytes: bytes,
        gemvMs: gemv * 1e3, gemvGBs: bytes / gemv / 1e9, gemvGFlops: (2 * R * C) / gemv / 1e9,
        gemmMs: gemm * 1e3, gemmGFlops: (2 * R * C * GEMM_BATCH) / gemm / 1e9,
        refKind, refMaxAbs, refMaxRel: refMaxAbs / refScale,
        relL2VsF32: relL2(yDef, yf32), relL2IntVsExact: single ? null : relL2(yDef, yEx),
      });
      k.arena.release(mark);
      if (!asJson) process.stderr.write('.');
    }
    k.arena.release(shapeMark);
  }
  return out;
}

if (args.includes('--quant')) {
  const load0q = loadavg()[0];
  const rowsQ = await quantBench();
  const load1q = loadavg()[0];
  if (asJson) {
    console.log(JSON.stringify({ date: new Date().toISOString(), machine, loadAverage: [load0q, load1q], passes, build: 'relaxed', threads: 1, errBatch: QUANT_ERR_BATCH, rows: rowsQ }, null, 2));
  } else {
    log('\n');
    log(`weight types, relaxed build, 1 thread, best of ${passes} pass(es); load average ${load0q.toFixed(2)} → ${load1q.toFixed(2)}`);
    log(`GEMV: batch 1, weights streamed from ≥ ${STREAM_BYTES >> 20} MiB of copies; GB/s = weight bytes per call ÷ time. GEMM: batch ${GEMM_BATCH}.`);
    log(`errors on ${QUANT_ERR_BATCH} activation rows: ref = default path vs naive reference (K-quants: bit-exact kmatmulRef, max |Δ|; others: float64 reference, max |Δ| ÷ max |ref|);`);
    log('vs f32 = rel. L2 of the default path vs the product of the original f32 weights; int/ex = rel. L2 of the integer-dot path vs the exact path.');
    log('');
    log(table(
      ['W rows×cols', 'dtype', 'ref', 'bits/w', 'GEMV ms', 'GEMV GB/s', 'GEMV GFLOP/s', `b${GEMM_BATCH} ms`, `b${GEMM_BATCH} GFLOP/s`, 'kernel vs ref', 'vs f32 rel L2', 'int vs exact rel L2'],
      rowsQ.map((r) => [
        r.shape, r.dtype, r.refKind, r.bitsPerWeight, r.gemvMs, r.gemvGBs, r.gemvGFlops, r.gemmMs, r.gemmGFlops,
        r.refKind === 'bit-exact' ? `max|Δ| ${sci(r.refMaxAbs)}` : `rel ${sci(r.refMaxRel)}`,
        sci(r.relL2VsF32), r.relL2IntVsExact === null ? '—' : sci(r.relL2IntVsExact),
      ]),
    ));
  }
  process.exit(0);
}

const BUILDS: [string, BuildName, number][] = [['simd', 'simd', 1], ['relaxed', 'relaxed', 1], ['threads×2', 'threads', 2]];
const load0 = loadavg()[0];
// Every pass runs every build; the best time of any pass counts (see time()).
const best = new Map<string, Row>();
const probes: Record<string, number> = {};
for (let p = 0; p < passes; p++) {
  for (const [label, build, threads] of BUILDS) {
    const r = await runBuild(label, build, threads);
    probes[label] = Math.max(probes[label] ?? 0, r.probe);
    for (const row of r.rows) {
      const key = `${row.build} ${row.shape} ${row.dtype}`;
      const had = best.get(key);
      best.set(key, had ? { ...row, gemv: Math.min(had.gemv, row.gemv), gemm: Math.min(had.gemm, row.gemm) } : row);
    }
  }
}
const load1 = loadavg()[0];
const probe1 = probes.simd, probe2 = probes['threads×2'];
const all = [...best.values()];
const simdRow = (shape: string, dt: WeightDType) => all.find((r) => r.build === 'simd' && r.shape === shape && r.dtype === dt)!;
const rows = all.map((r) => {
  const gbs = r.bytes / r.gemv / 1e9;
  return {
    build: r.build, shape: r.shape, dtype: r.dtype,
    gemvMs: r.gemv * 1e3, gemvGBs: gbs, probeRatio: gbs / probe1,
    speedupVsSimd: simdRow(r.shape, r.dtype).gemv / r.gemv,
    gemmMs: r.gemm * 1e3, gemmGFlops: r.flops / r.gemm / 1e9,
  };
});
const q8 = (build: string) => rows.filter((r) => r.build === build && r.dtype === 'q8_0');
const targets = {
  q8SingleVsProbe: Math.max(...q8('simd').concat(q8('relaxed')).map((r) => r.probeRatio)),
  q8TwoThreadsVsSingle: Math.min(...q8('threads×2').map((r) => r.speedupVsSimd)),
};
const result = {
  date: new Date().toISOString(),
  machine,
  loadAverage: [load0, load1],
  passes,
  wasmBytes: sizes,
  probeGBs: { singleThread: probe1, twoThreads: probe2 },
  targets,
  rows,
};

if (asJson) {
  console.log(JSON.stringify(result, null, 2));
} else {
  log('\n');
  log(`load average ${load0.toFixed(2)} → ${load1.toFixed(2)}; best of ${passes} pass(es)`);
  log(`memory-bandwidth probe (WASM SIMD read-sum over ${PROBE_BYTES >> 20} MiB): ${probe1.toFixed(1)} GB/s single thread, ${probe2.toFixed(1)} GB/s with 2 threads`);
  log('');
  log(table(
    ['build', 'W rows×cols', 'dtype', 'GEMV ms', 'GEMV GB/s', '÷ probe', '× simd', `GEMM b${GEMM_BATCH} ms`, 'GEMM GFLOP/s'],
    rows.map((r) => [r.build, r.shape, r.dtype, r.gemvMs, r.gemvGBs, r.probeRatio, r.speedupVsSimd, r.gemmMs, r.gemmGFlops]),
  ));
  log('');
  log(`Q8_0 GEMV, best single-thread build ÷ probe: ${targets.q8SingleVsProbe.toFixed(2)} (target ≥ 0.6)`);
  log(`Q8_0 GEMV, threads×2 ÷ simd single thread (same kernels), worst shape: ${targets.q8TwoThreadsVsSingle.toFixed(2)}× (target ≥ 1.6×)`);
}
