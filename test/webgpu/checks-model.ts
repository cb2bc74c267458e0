// The default model (models/sparrow-mini, Qwen3-Next Q8_0) through the WebGPU forward pass against
// the WASM one (both `exact`): logits of a short prompt fed token by token, then one more decode
// step; prompts of 128, 133 and 256 tokens in one submission (whole chunks through the 128-token
// recording, the rest position by position) against the same tokens fed one by one; several
// sessions in one submission. Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] }
// or { error }.

import { openCheckpoint } from '../../src/formats/checkpoint';
import { buildModel } from '../../src/models/index';
import { forwardBatch, gpuModel } from '../../src/webgpu/model';
import { Checks, rel, withGpu } from './harness';

const ids = [1873, 604, 261, 536, 14, 445, 310, 261];
const checks = new Checks();
await withGpu(async (gpu) => {
  const model = await buildModel(await openCheckpoint('models/sparrow-mini'), { exact: true, maxContext: 272 });
  const gm = gpuModel(model, gpu);
  const V = model.net.vocabSize;
  const ws = model.newSession(), gs = gm.newSession();
  const want = ws.forward(ids, true);
  const got = await gs.forward(ids, true);
  let agree = 0;
  for (let t = 0; t < ids.length; t++) {
    let ai = 0, bi = 0;
    for (let v = 0; v < V; v++) {
      const i = t * V + v;
      if (got[i] > got[t * V + ai]) ai = v;
      if (want[i] > want[t * V + bi]) bi = v;
    }
    if (ai === bi) agree++;
  }
  checks.check('sparrow-mini logits, GPU vs WASM (max rel)', rel(got, want), 1e-5);
  checks.check('sparrow-mini argmax agrees at every position', ids.length - agree, 0);
  // A 128-token prompt is one submission, one pass of the 128-token recording, with the logits of a
  // token-by-token run.
  const long256 = Array.from({ length: 256 }, (_, i) => ids[i % ids.length] + (i >> 3));
  const long = long256.slice(0, 128);
  const s1 = gm.newSession(), s2 = gm.newSession();
  const before = s1.submissions, passes = s1.chunkPasses;
  const one = await s1.forward(long);
  checks.check('128-token prefill: submissions', s1.submissions - before - 1, 0);
  checks.check('128-token prefill: passes of the 128-token recording', s1.chunkPasses - passes - 1, 0);
  const byToken: Float32Array[] = [];
  for (const id of long256) byToken.push(await s2.forward([id]));
  checks.check('token by token: no chunk passes', s2.chunkPasses, 0);
  const last = byToken[127];
  checks.check('128-token prefill in one submission = token by token (max rel)', rel(one, last), 1e-6);
  checks.check('128-token prefill = WASM (max rel)', rel(one, model.newSession().forward(long)), 1e-5);
  // 128 + 5 tokens: one chunk, five positions; 256: two chunks. Every position's logits.
  for (const n of [133, 256]) {
    const s = gm.newSession();
    const got = await s.forward(long256.slice(0, n), true);
    checks.check(`${n}-token prefill: submissions, chunk passes`, Math.abs(s.submissions - 1) + Math.abs(s.chunkPasses - Math.floor(n / 128)), 0);
    const want = new Float32Array(n * V);
    for (let t = 0; t < n; t++) want.set(byToken[t], t * V);
    checks.check(`${n}-token prefill in one submission = token by token, every position (max rel)`, rel(got, want), 1e-5);
    s.dispose();
  }
  // Three sequences fed in one submission match each fed alone; their states stay apart.
  const prompts = [long.slice(0, 37), ids.slice(0, 1), long.slice(50, 55)];
  const batch = prompts.map(() => gm.newSession());
  const subs = batch.map((s) => s.submissions);
  const outs = await forwardBatch(batch.map((session, i) => ({ session, ids: prompts[i] })));
  checks.check('3 sequences in one submission: one submission each', batch.reduce((a, s, i) => a + Math.abs(s.submissions - subs[i] - 1), 0), 0);
  let worst = 0;
  for (let i = 0; i < prompts.length; i++) worst = Math.max(worst, rel(outs[i], await gm.newSession().forward(prompts[i])));
  checks.check('3 sequences in one submission = each alone (max rel)', worst, 1e-6);
  const next = await forwardBatch(batch.map((session, i) => ({ session, ids: [ids[i + 2]] })));
  worst = 0;
  for (let i = 0; i < prompts.length; i++) worst = Math.max(worst, rel(next[i], model.newSession().forward([...prompts[i], ids[i + 2]])));
  checks.check('a second batched step = WASM over the whole sequence (max rel)', worst, 1e-5);
  checks.print(gpu.adapterName, { info: gm.info() });
});
