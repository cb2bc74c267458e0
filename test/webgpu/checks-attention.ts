// WebGPU attention checks: the decode attention kernel (sliding window, logit soft-capping, sink
// logits, GQA/MQA, head dims up to the 512 limit, query rows of a multi-token pass) against the
// float64 reference, the clamp kernel, the refusal of unsupported head dims, and whole Attention
// layers of the parity fixtures (biases, full-width q/k norm, clip, windows, soft-capping, sinks)
// recorded for the GPU against the same layer on the WASM executor (`exact`, decoding one token at
// a time through a ring-buffer cache) over more positions than the window. Buffers start as NaN so
// a read of anything not written shows. Prints one JSON line: { adapter, results: [{ name, err, tol,
// pass }] } or { error }.

import { clamp, decodeAttention } from '../../src/webgpu/dispatch/attention';
import { attentionRef } from '../../src/kernels/attention.ref';
import { openCheckpoint } from '../../src/formats/checkpoint';
import { buildModel } from '../../src/models/index';
import { Attention } from '../../src/layers/attention';
import { Checks, gpuBench, nan, rel, rng, withGpu } from './harness';
import { gpuLayer, wasmLayer } from './layers';

const { randn } = rng(4242);
const checks = new Checks();
const { check } = checks;

await withGpu(async (gpu) => {
  const { K, mk, put, run, setStep } = gpuBench(gpu);

  // --- decode attention kernel against the float64 reference -----------------------------------
  type Case = { nHeads: number; nKv: number; D: number; Dv: number; n: number; window?: number; softcap?: number; sinks?: boolean };
  const cases: Case[] = [
    { nHeads: 6, nKv: 2, D: 40, Dv: 24, n: 45, window: 7 },
    { nHeads: 6, nKv: 2, D: 40, Dv: 24, n: 5, window: 7 },
    { nHeads: 6, nKv: 2, D: 40, Dv: 24, n: 7, window: 7 },
    { nHeads: 6, nKv: 2, D: 40, Dv: 24, n: 8, window: 7 },
    { nHeads: 5, nKv: 5, D: 33, Dv: 33, n: 70, window: 1 },
    { nHeads: 4, nKv: 1, D: 16, Dv: 16, n: 29, softcap: 0.7 },
    { nHeads: 4, nKv: 2, D: 48, Dv: 20, n: 131, softcap: 50 },
    { nHeads: 7, nKv: 1, D: 24, Dv: 40, n: 37, sinks: true },
    { nHeads: 4, nKv: 2, D: 16, Dv: 16, n: 3, sinks: true },
    { nHeads: 6, nKv: 3, D: 20, Dv: 28, n: 77, window: 13, softcap: 3, sinks: true },
    { nHeads: 2, nKv: 1, D: 512, Dv: 72, n: 19, window: 11, sinks: true },
  ];
  for (const cs of cases) {
    const { nHeads, nKv, D, Dv, n } = cs;
    const scale = 1.7 / Math.sqrt(D);
    const q = randn(nHeads * D), Kc = randn(n * nKv * D), Vc = randn(n * nKv * Dv);
    // Sinks large enough to matter: a few units around the score range.
    const sinks = cs.sinks ? randn(nHeads, 3) : undefined;
    const maxN = n + 9, vOff = 4 + n * nKv * D + 16;
    const b = mk(16384 + nHeads * maxN, vOff + n * nKv * Dv + 64, sinks ? Float32Array.from([0, 0, 0, 0, ...sinks]) : undefined);
    put(b.a, 0, q);
    put(b.st, 4, Kc);
    put(b.st, vOff, Vc);
    setStep(b, n - 1);
    const oOff = 8192;
    const got = await run([decodeAttention(K, b, oOff, 0, 4, vOff, {
      nHeads, nKv, headDim: D, vDim: Dv, scale, scores: 16384, maxN, window: cs.window, softcap: cs.softcap, sinks: sinks ? 4 : undefined,
    })], b.a, oOff, nHeads * Dv);
    const want = attentionRef(q, Kc, Vc, { T: 1, qPos0: n - 1, nHeads, nKv, headDim: D, vDim: Dv, scale, window: cs.window, softcap: cs.softcap, sinks });
    const tags = [cs.window ? `window ${cs.window}` : '', cs.softcap ? `softcap ${cs.softcap}` : '', cs.sinks ? 'sinks' : ''].filter(Boolean).join(', ');
    check(`attention ${nHeads}/${nKv} D ${D} Dv ${Dv} n=${n}${tags ? ` (${tags})` : ''}`, rel(got, want), 1e-5);
  }

  // --- query rows of a pass: rows r0 … r0 + R − 1 of T at positions step.pos + r, rows strided -----
  for (const cs of [{ window: 7, softcap: 3, sinks: true }, {}] as { window?: number; softcap?: number; sinks?: boolean }[]) {
    const nHeads = 6, nKv = 2, D = 40, Dv = 24, T = 9, pos0 = 30, r0 = 3, R = 5, n = pos0 + T;
    const qStride = nHeads * D + 8, oStride = nHeads * Dv + 4;
    const scale = 1 / Math.sqrt(D);
    const Q = randn(T * qStride), Kc = randn(n * nKv * D), Vc = randn(n * nKv * Dv);
    const sinks = cs.sinks ? randn(nHeads, 3) : undefined;
    const maxN = n + 3, vOff = 4 + n * nKv * D + 16, sOff = 65536, oOff = 32768;
    const b = mk(sOff + R * nHeads * maxN, vOff + n * nKv * Dv + 64, sinks ? Float32Array.from([0, 0, 0, 0, ...sinks]) : undefined);
    put(b.a, 0, Q);
    put(b.st, 4, Kc);
    put(b.st, vOff, Vc);
    setStep(b, pos0);
    const got = await run([decodeAttention(K, b, oOff + r0 * oStride, r0 * qStride, 4, vOff, {
      nHeads, nKv, headDim: D, vDim: Dv, scale, scores: sOff, maxN, window: cs.window, softcap: cs.softcap, sinks: sinks ? 4 : undefined,
      rows: R, row0: r0, qRowStride: qStride, oRowStride: oStride,
    })], b.a, oOff + r0 * oStride, R * oStride);
    const q = new Float32Array(R * nHeads * D);
    for (let r = 0; r < R; r++) q.set(Q.subarray((r0 + r) * qStride, (r0 + r) * qStride + nHeads * D), r * nHeads * D);
    const want = attentionRef(q, Kc, Vc, { T: R, qPos0: pos0 + r0, nHeads, nKv, headDim: D, vDim: Dv, scale, window: cs.window, softcap: cs.softcap, sinks });
    const sel = new Float32Array(R * nHeads * Dv);
    for (let r = 0; r < R; r++) sel.set(got.subarray(r * oStride, r * oStride + nHeads * Dv), r * nHeads * Dv);
    check(`attention, rows ${r0} … ${r0 + R - 1} of a ${T}-token pass at ${pos0}${cs.window ? ' (window, softcap, sinks)' : ''}`, rel(sel, want), 1e-5);
  }

  // --- clamp --------------------------------------------------------------------------------------
  for (const n of [1, 257, 1031]) {
    const X = randn(n, 3), lim = 1.25;
    const b = mk(4096, 16);
    put(b.a, 0, X);
    const got = await run([clamp(K, b, 2048, 0, n, lim)], b.a, 2048, n);
    check(`clamp n=${n} to ±${lim}`, rel(got, X.map((v) => Math.min(Math.max(v, -lim), lim))), 0);
  }

  // --- limits: head dims over the kernel's bound are refused -------------------------------------
  {
    const b = mk(16, 16);
    let msg = '';
    try {
      decodeAttention(K, b, 0, 0, 0, 0, { nHeads: 2, nKv: 1, headDim: 513, vDim: 16, scale: 1, scores: 0, maxN: 4 });
    } catch (e) {
      msg = (e as Error).message;
    }
    check('attention refuses headDim 513 with a message', /headDim 513/.test(msg) ? 0 : 1, 0);
  }

  // --- whole Attention layers of the parity fixtures: GPU vs WASM, one token per step -------------
  const fixtures = ['gemma2-softcap-swa', 'gemma3-text', 'gptoss-sinks', 'olmoe-clipqkv', 'mistral-swa', 'llama-llama3rope-bias', 'qwen2moe-shared'];
  const steps = 27, maxContext = 32;
  for (const name of fixtures) {
    const model = await buildModel(await openCheckpoint(`test/fixtures/parity/${name}`), { exact: true, maxContext, maxChunk: 1 });
    const blocks = (model.net as any).d.blocks as any[];
    const D = (model.net as any).d.hidden as number;
    for (let li = 0; li < blocks.length; li++) {
      const attn = blocks[li].s?.mixer;
      if (!(attn instanceof Attention)) continue;
      const { B, g, x, y } = gpuLayer(model, K, D, (g, xx, yy) => attn.forward(g, xx, yy), `layer ${li}`);
      const b = mk(g.act.high, B.stateFloats, B.packConsts());
      const list = g.emits.flatMap((e) => e(b));
      const session = model.newSession();
      const wasm = wasmLayer(model, D, (g, xx, yy) => attn.forward(g, xx, yy), 1);
      let worst = 0;
      for (let pos = 0; pos < steps; pos++) {
        const X = randn(D);
        const want = wasm(session, X, pos);
        put(b.a, x, X);
        put(b.a, y, nan(D));
        setStep(b, pos);
        const got = await run(list, b.a, y, D);
        worst = Math.max(worst, rel(got, want));
      }
      session.dispose();
      const c = attn.cfg;
      const tags = [c.qkvBias ? 'qkv bias' : '', c.oBias ? 'o bias' : '', c.qkNorm ? (c.qkNorm.full ? 'full q/k norm' : 'q/k norm') : '', c.clip !== undefined ? `clip ${c.clip}` : '',
        c.window ? `window ${c.window}` : '', c.softcap ? `softcap ${c.softcap}` : '', c.sinks ? 'sinks' : ''].filter(Boolean).join(', ');
      check(`${name} layer ${li} attention, ${steps} decode steps, GPU vs WASM${tags ? ` (${tags})` : ''}`, worst, 1e-5);
    }
    model.dispose();
  }
  checks.print(gpu.adapterName);
});
