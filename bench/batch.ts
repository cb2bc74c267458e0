// Decoding several sessions together (Model.forwardBatch) against the same sessions one after
// another, on the WASM backend, one thread. Each of B sessions holds a 16-token prompt, then
// decodes --tokens steps (fixed tokens, no sampling); rounds alternate the two ways, medians.
// --invariant runs the matrix products batch-invariant (kernels/matmul.ts setBatchInvariant), as the
// step batcher's decode passes do.
// Run: node --experimental-wasm-relaxed-simd --no-liftoff --import tsx bench/batch.ts [--model DIR] [--dtype q8_0|q4_0|f32] [--tokens N] [--rounds N] [--batch 1,2,4,8] [--invariant]
import { openCheckpoint } from '../src/formats/checkpoint';
import { setBatchInvariant } from '../src/kernels/matmul';
import { buildModel } from '../src/models/index';
import type { Session } from '../src/models/model';

const args = process.argv.slice(2);
const opt = (name: string, def: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : def);
const dir = opt('--model', 'models/sparrow-mini');
const steps = Number(opt('--tokens', '32'));
const rounds = Number(opt('--rounds', '5'));
const sizes = opt('--batch', '1,2,4,8').split(',').map(Number);
const dtype = opt('--dtype', 'auto') as 'auto' | 'q8_0' | 'q4_0' | 'f32';

const model = await buildModel(await openCheckpoint(dir), { dtype, maxChunk: 64, maxContext: 16 + steps + 1 });
const invariant = args.includes('--invariant');
setBatchInvariant(model.k, invariant);
const V = model.net.vocabSize;
const tok = (i: number) => (i * 7919 + 13) % V;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

function prepared(B: number): Session[] {
  return Array.from({ length: B }, (_, b) => {
    const s = model.newSession();
    s.forward(Array.from({ length: 16 }, (_, i) => tok(b * 16 + i)));
    return s;
  });
}

/** Tokens per second over B sessions × steps decode steps. */
function run(B: number, together: boolean): number {
  const ss = prepared(B);
  const t = performance.now();
  for (let i = 0; i < steps; i++) {
    if (together) model.forwardBatch(ss.map((session, b) => ({ session, ids: [tok(i + b)] })));
    else ss.forEach((s, b) => s.forward([tok(i + b)]));
  }
  const tps = (B * steps) / ((performance.now() - t) / 1000);
  for (const s of ss) s.dispose();
  return tps;
}

console.log(`model: ${dir} (${model.modelType}, ${Object.keys(model.info().bytesByDType).join('/')}); wasm ${model.k.build}, 1 thread${invariant ? ', batch-invariant products' : ''}; ${steps} decode steps per session after a 16-token prompt; median of ${rounds} interleaved rounds`);
console.log('| sessions | one after another (tok/s) | one pass for all (tok/s) | ratio |\n|---:|---:|---:|---:|');
for (const B of sizes) {
  run(B, false);
  run(B, true);
  const a: number[] = [], b: number[] = [];
  for (let r = 0; r < rounds; r++) {
    a.push(run(B, false));
    b.push(run(B, true));
  }
  console.log(`| ${B} | ${median(a).toFixed(1)} | ${median(b).toFixed(1)} | ${(median(b) / median(a)).toFixed(2)}× |`);
}
