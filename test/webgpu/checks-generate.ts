// Generation on the webgpu backend (LanguageModel over the GPU forward pass) against the same
// model on WASM: greedy text (argmax on the GPU, tokens read back in batches), a stop token in the
// middle of a batch (the state is cut back to the tokens kept), session reuse across turns of a
// hybrid model (checkpoint of the recurrent state), sampling and logprobs (host sampler over GPU
// logits), and backend 'auto' on a software adapter. Prints { adapter, results } or { error }.

import { loadModel } from '../../src/index';
import { probeGpu } from '../../src/webgpu/device';
import { Checks, printError, rel } from './harness';

const checks = new Checks();
const check = checks.ok;

try {
  const { gpu: dev, reason } = await probeGpu();
  if (!dev) throw new Error(reason);
  const dir = 'models/sparrow-mini';
  const wasm = await loadModel(dir, { exact: true, maxContext: 256 });
  const gpu = await loadModel(dir, { backend: 'webgpu', maxContext: 256 });
  check('backend is webgpu', gpu.backend === 'webgpu' && gpu.info().adapter === dev.adapterName, JSON.stringify(gpu.info()));
  const prompt = 'Once upon a time';

  // Greedy: the GPU's argmax chain gives WASM's tokens.
  const a = await wasm.generate(prompt, { maxTokens: 40, temperature: 0, ignoreEos: true }).result();
  const b = await gpu.generate(prompt, { maxTokens: 40, temperature: 0, ignoreEos: true }).result();
  check('greedy 40 tokens: same tokens as WASM', JSON.stringify(a.tokens) === JSON.stringify(b.tokens), `${a.text} | ${b.text}`);
  check('greedy: finish reason length, 40 tokens', b.finishReason === 'length' && b.tokens.length === 40, `${b.finishReason} ${b.tokens.length}`);

  // A stop token at index 9 (inside the third batch): the session then holds prompt + 9 tokens,
  // and its next logits are WASM's.
  const stopTok = a.tokens[9];
  const firstAt = a.tokens.indexOf(stopTok);
  const ws = wasm.session(), gs = gpu.session();
  const wa = await wasm.generate(prompt, { maxTokens: 40, temperature: 0, stopTokenIds: [stopTok], session: ws }).result();
  const ga = await gpu.generate(prompt, { maxTokens: 40, temperature: 0, stopTokenIds: [stopTok], session: gs }).result();
  check('stop token mid-batch: same text, finish stop', ga.text === wa.text && ga.finishReason === 'stop' && ga.tokens.length === firstAt + 1, `${ga.finishReason} ${ga.tokens.length} vs ${firstAt + 1}`);
  check('stop token mid-batch: session holds the same tokens', JSON.stringify(gs.tokens) === JSON.stringify(ws.tokens), `${gs.tokens.length} vs ${ws.tokens.length}`);
  const probe = [261, 536];
  const lw = ws.inner.forward(probe) as Float32Array;
  const lg = await gs.inner.forward(probe);
  check('after the cut: next logits match WASM (1e-5)', rel(lg, lw) <= 1e-5, `rel ${rel(lg, lw)}`);

  // Turns: the second prompt extends the first turn's tokens; the third goes back to the first
  // prompt (the recurrent state returns to the end-of-prompt checkpoint).
  const w2 = wasm.session(), g2 = gpu.session();
  const turns = ['The little dog', 'The little dog ran to the park and', 'The little dog'];
  for (const [i, t] of turns.entries()) {
    const x = await wasm.generate(t, { maxTokens: 12, temperature: 0, session: w2 }).result();
    const y = await gpu.generate(t, { maxTokens: 12, temperature: 0, session: g2 }).result();
    check(`session turn ${i + 1}: same text and cached tokens as WASM`, x.text === y.text && x.stats.cachedTokens === y.stats.cachedTokens, `${JSON.stringify(x.text)} (${x.stats.cachedTokens}) | ${JSON.stringify(y.text)} (${y.stats.cachedTokens})`);
  }

  // Sampling and logprobs run on the host over the GPU's logits.
  const s1 = await wasm.generate(prompt, { maxTokens: 16, temperature: 0.9, topP: 0.95, seed: 11 }).result();
  const s2 = await gpu.generate(prompt, { maxTokens: 16, temperature: 0.9, topP: 0.95, seed: 11 }).result();
  check('sampling, same seed: same text as WASM', s1.text === s2.text, `${s1.text} | ${s2.text}`);
  const lpw: number[] = [], lpg: number[] = [];
  for await (const e of wasm.generate(prompt, { maxTokens: 6, temperature: 0, logprobs: true })) lpw.push(e.logprob!);
  for await (const e of gpu.generate(prompt, { maxTokens: 6, temperature: 0, logprobs: true })) lpg.push(e.logprob!);
  check('logprobs match WASM (1e-4 abs)', lpw.length === 6 && lpw.every((v, i) => Math.abs(v - lpg[i]) < 1e-4), `${lpw} | ${lpg}`);

  // Snapshots are WASM-only and say so.
  let msg = '';
  try {
    gs.snapshot();
  } catch (e) {
    msg = (e as Error).message;
  }
  check('snapshot on webgpu: a clear error', /backend 'wasm'/.test(msg), msg);

  // auto: a CPU adapter is not taken; one line says why.
  const notes: string[] = [];
  const auto = await loadModel(dir, { backend: 'auto', onNotice: (m) => notes.push(m) });
  if (dev.software) check('auto on a software adapter: wasm, one notice', auto.backend === 'wasm' && notes.length === 1 && /CPU implementation/.test(notes[0]), JSON.stringify(notes));
  else check('auto on a hardware adapter: webgpu, no notice', auto.backend === 'webgpu' && notes.length === 0, JSON.stringify(notes));
  checks.print(dev.adapterName);
} catch (e) {
  printError(e, { results: checks.results });
}
