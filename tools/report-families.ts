// Per-fixture figures for bench/RESULTS.md: parity errors, the error of Q8_0 / Q4_0 weights
// quantized on load (relative L2 of the logits against the transformers reference), and the
// snapshot size of a session after 0, 1k and 4k tokens of context.
//
//   node --import tsx tools/report-families.ts [dirs…]

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint } from '../src/formats/checkpoint';
import { buildModel } from '../src/models/index';
import { findFixtures, runFixture } from './parity-lib';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['test/fixtures/parity'];
const dirs = (await Promise.all(roots.map((r) => findFixtures(r, { diffusion: true })))).flat();
const kib = (b: number) => (b / 1024).toFixed(1);
console.log('| fixture | family | prefill err | decode err | greedy | Q8_0 rel. L2 | Q4_0 rel. L2 | snapshot @0 | @1k tokens | @4k tokens |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const dir of dirs) {
  const ref = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8'));
  const r = await runFixture(dir, { quantized: true });
  let sizes = ['-', '-', '-'];
  // A fixture whose config allows fewer than 4096 positions is loaded at its own maximum; the
  // snapshot layout gives the size at any position count all the same (marked ²).
  const src = ref.model_dir ? join(dir, ref.model_dir) : dir;
  for (const [opts, mark] of [[{ maxContext: 4096 }, ''], [{}, '²']] as const) {
    try {
      const m = await buildModel(await openCheckpoint(src), opts);
      sizes = [0, 1000, 4000].map((n) => kib(m.layout.snapshotFloats(n) * 4) + ' KiB' + (n > 0 ? mark : ''));
      m.dispose();
      break;
    } catch {
      /* unsupported family, or fewer positions than 4096 */
    }
  }
  const e = (x?: number) => (x === undefined || Number.isNaN(x) ? '-' : x.toExponential(1));
  console.log(`| ${dir.split('/').pop()} | ${ref.model_type} | ${e(r.prefillErr)} | ${e(r.decodeErr)} | ${r.greedyAgree}/${r.greedyTotal} | ${e(r.q8Err)} | ${e(r.q4Err)} | ${sizes.join(' | ')} |`);
}
