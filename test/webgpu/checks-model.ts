// The default model (models/sparrow-mini, Qwen3-Next Q8_0) through the WebGPU forward pass against
// the WASM one (both `exact`): logits of a short prompt fed token by token, then one more decode
// step. Prints one JSON line: { adapter, results: [{ name, err, tol, pass }] } or { error }.

import { openCheckpoint } from '../../src/formats/checkpoint';
import { buildModel } from '../../src/models/index';
import { acquireGpu } from '../../src/webgpu/device';
import { gpuModel } from '../../src/webgpu/model';

const ids = [1873, 604, 261, 536, 14, 445, 310, 261];
try {
  const gpu = await acquireGpu();
  const model = await buildModel(await openCheckpoint('models/sparrow-mini'), { exact: true, maxContext: 64 });
  const gm = gpuModel(model, gpu);
  const V = model.net.vocabSize;
  const ws = model.newSession(), gs = gm.newSession();
  const want = ws.forward(ids, true);
  const got = await gs.forward(ids, true);
  let num = 0, den = 0, agree = 0;
  for (let t = 0; t < ids.length; t++) {
    let ai = 0, bi = 0;
    for (let v = 0; v < V; v++) {
      const i = t * V + v;
      num = Math.max(num, Math.abs(got[i] - want[i]));
      den = Math.max(den, Math.abs(want[i]));
      if (got[i] > got[t * V + ai]) ai = v;
      if (want[i] > want[t * V + bi]) bi = v;
    }
    if (ai === bi) agree++;
  }
  const results = [
    { name: 'sparrow-mini logits, GPU vs WASM (max rel)', err: num / den, tol: 1e-5, pass: num / den <= 1e-5 },
    { name: 'sparrow-mini argmax agrees at every position', err: ids.length - agree, tol: 0, pass: agree === ids.length },
  ];
  console.log(JSON.stringify({ adapter: gpu.adapterName, info: gm.info(), results }));
} catch (e) {
  console.log(JSON.stringify({ error: `${(e as Error).name}: ${(e as Error).message}` }));
}
