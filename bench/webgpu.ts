// Decode speed, WebGPU vs WASM, on this machine.
//   deno run -A --unstable-sloppy-imports bench/webgpu.ts [--synthetic-large] [--dtype q8_0|q4_0] [--tokens N] [--prefill N] [--runs N] [--profile] [--model DIR] [--tile RxT] [--gemm BMxBNxTMxTN,…[@S]|none] [--gemm-also G;G…]
// Default: the embedded model (models/sparrow-mini). --synthetic-large: a Llama-style model of
// ~333M parameters with random bf16 weights built in memory (no files), quantized to Q8_0 on load.
// Both backends run the same prompt (--prefill N tokens, default 128) and greedy continuation. The
// GPU runs the prompt three ways: one submission per token; one submission replaying the
// one-position recording for every position; one submission of T-token passes (the prefill chunk
// recordings, 128 tokens per pass), with the passes' matrix products as a tiled GEMM (--gemm
// BMxBNxTMxTN,… or none; default on hardware adapters; --gemm-also adds other shapes) and, for
// comparison, as the exact kernels: tiled 4x8 and one invocation per output. It decodes two ways: as generation runs greedy decoding (argmax on the GPU, tokens read back in
// batches of up to 32 with two batches in flight), and reading back each token's logits (sampling).

import { openCheckpoint } from '../src/formats/checkpoint';
import { buildModel } from '../src/models/index';
import { acquireGpu } from '../src/webgpu/device';
import { gpuModel } from '../src/webgpu/model';
import { parseGemmShape, type GemmShape } from '../src/webgpu/kernels/gemm.wgsl';

const args = (globalThis as any).Deno?.args ?? (globalThis as any).process?.argv.slice(2) ?? [];
const opt = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const large = args.includes('--synthetic-large');
const dtype = opt('--dtype', 'q8_0') as 'q8_0' | 'q4_0';
const nTok = Number(opt('--tokens', large ? '64' : '128'));
const runs = Number(opt('--runs', '3'));

/** A safetensors file of bf16 tensors. */
function safetensors(tensors: { name: string; shape: number[]; fill: (u: Uint16Array) => void }[]): Uint8Array {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    header[t.name] = { dtype: 'BF16', shape: t.shape, data_offsets: [off, off + 2 * n] };
    off += 2 * n;
  }
  let h = new TextEncoder().encode(JSON.stringify(header));
  const pad = (8 - (h.length % 8)) % 8;
  h = new TextEncoder().encode(JSON.stringify(header) + ' '.repeat(pad));
  const out = new Uint8Array(8 + h.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  let o = 8 + h.length;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    t.fill(new Uint16Array(out.buffer, o, n));
    o += 2 * n;
  }
  return out;
}

function syntheticLlama() {
  const c = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 16,
    num_attention_heads: 16, num_key_value_heads: 4, head_dim: 64, vocab_size: 32000, rms_norm_eps: 1e-5, rope_theta: 10000,
    max_position_embeddings: 2048, tie_word_embeddings: false, hidden_act: 'silu', bos_token_id: 1, eos_token_id: 2,
  };
  let s = 0x9e3779b9;
  // bf16 of N(0, ~0.02)-like uniform values: sign, exponent around 2^-6, random mantissa.
  const rand = (u: Uint16Array) => {
    for (let i = 0; i < u.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      u[i] = ((s >>> 31) << 15) | ((0x78 + ((s >>> 28) & 3)) << 7) | ((s >>> 8) & 0x7f);
    }
  };
  const ones = (u: Uint16Array) => u.fill(0x3f80);
  const D = c.hidden_size, I = c.intermediate_size, H = c.num_attention_heads, Hk = c.num_key_value_heads, hd = c.head_dim, V = c.vocab_size;
  const t: { name: string; shape: number[]; fill: (u: Uint16Array) => void }[] = [{ name: 'model.embed_tokens.weight', shape: [V, D], fill: rand }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    t.push(
      { name: `${p}.input_layernorm.weight`, shape: [D], fill: ones },
      { name: `${p}.post_attention_layernorm.weight`, shape: [D], fill: ones },
      { name: `${p}.self_attn.q_proj.weight`, shape: [H * hd, D], fill: rand },
      { name: `${p}.self_attn.k_proj.weight`, shape: [Hk * hd, D], fill: rand },
      { name: `${p}.self_attn.v_proj.weight`, shape: [Hk * hd, D], fill: rand },
      { name: `${p}.self_attn.o_proj.weight`, shape: [D, H * hd], fill: rand },
      { name: `${p}.mlp.gate_proj.weight`, shape: [I, D], fill: rand },
      { name: `${p}.mlp.up_proj.weight`, shape: [I, D], fill: rand },
      { name: `${p}.mlp.down_proj.weight`, shape: [D, I], fill: rand },
    );
  }
  t.push({ name: 'model.norm.weight', shape: [D], fill: ones }, { name: 'lm_head.weight', shape: [V, D], fill: rand });
  const params = t.reduce((a, x) => a + x.shape.reduce((p, q) => p * q, 1), 0);
  return { files: { 'config.json': JSON.stringify(c), 'model.safetensors': safetensors(t) }, params };
}

function argmax(a: Float32Array): number {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i;
  return b;
}

const t0 = performance.now();
let source: any, label: string;
if (large) {
  const s = syntheticLlama();
  source = { files: s.files };
  label = `synthetic Llama-style, ${(s.params / 1e6).toFixed(0)}M params, ${dtype.toUpperCase()}`;
} else {
  source = opt('--model', 'models/sparrow-mini');
  label = `${source} (Q8_0 file)`;
}
const model = await buildModel(await openCheckpoint(source), { dtype, maxContext: 512, maxSessions: 2 });
const tLoad = performance.now() - t0;
const nPrefill = Number(opt('--prefill', '128'));
const prompt = Array.from({ length: nPrefill }, (_, i) => (i * 7919 + 13) % Math.min(model.net.vocabSize, 2000));
const secs = (t: number) => (performance.now() - t) / 1000;

// WASM (default integer-dot path, one thread): prefill of the prompt, then greedy decode.
const ws = model.newSession();
let t = performance.now();
let logits = ws.forward(prompt);
const wasmPrefill = prompt.length / secs(t);
let tok = argmax(logits);
const wasmToks: number[] = [];
t = performance.now();
for (let i = 0; i < nTok; i++) {
  wasmToks.push(tok);
  logits = ws.forward([tok]);
  tok = argmax(logits);
}
const wasmTps = nTok / secs(t);

const rows: [string, number, number][] = [];
let note = 'webgpu: unavailable';
try {
  const gpu = await acquireGpu();
  // Validation errors are reported here with their message (a failed submit otherwise shows only as a failed read).
  (gpu.device as any).addEventListener?.('uncapturederror', (ev: any) => console.error(`webgpu: ${ev.error?.message}`));
  const tu = performance.now();
  const tileArg = opt('--tile', '');
  const tile = tileArg ? { rows: Number(tileArg.split('x')[0]), tokens: Number(tileArg.split('x')[1]) } : undefined;
  // --gemm BMxBNxTMxTN, several comma-separated (tried in order), or none for the exact kernels alone.
  const gemmArg = opt('--gemm', '');
  const parseGemm = parseGemmShape;
  // A list may end in @S: split the columns of products towards S workgroups (@0: never split).
  const parseGemms = (arg: string) => {
    const [list, split] = arg.split('@');
    return { shapes: list.split(',').map(parseGemm), split: split === undefined ? undefined : Number(split) };
  };
  const gemmSpec = gemmArg && gemmArg !== 'none' ? parseGemms(gemmArg) : undefined;
  const gemm = gemmArg === 'none' ? null : gemmSpec?.shapes;
  const gemmName = (g: readonly GemmShape[], split?: number) =>
    g.map((s) => `${s.vec ? 'vector ' : ''}${s.bm}×${s.bn} by ${s.tm}×${s.tn}`).join(', then ') + (split === undefined ? '' : split ? `, columns split towards ${split} workgroups` : ', columns not split');
  const gm = gpuModel(model, gpu, { matmulTile: tile, matmulGemm: gemm, matmulGemmSplit: gemmSpec?.split });
  const tUp = secs(tu);
  // Warm-up: pipelines compile lazily on some drivers; the chunk recordings are made on first use.
  const warm = gm.newSession();
  await warm.forward(prompt);
  await warm.submitGreedy(4, 1);
  warm.dispose();

  // Best of `runs` fresh sessions: prefill of the prompt, then greedy decode as generation runs it
  // (batches of up to 32 steps, two in flight).
  let gpuPrefill = 0, gpuPrefillPerToken = 0, gpuPrefillReplay = 0, gpuTps = 0;
  let toks: number[] = [];
  for (let r = 0; r < runs; r++) {
    // Prefill as one submission per token, for comparison with the one submission of the prompt.
    const ts = gm.newSession();
    ts.stepsPerSubmission = 1;
    t = performance.now();
    await ts.forward(prompt);
    gpuPrefillPerToken = Math.max(gpuPrefillPerToken, prompt.length / secs(t));
    ts.dispose();
    // One submission replaying the one-position recording for every position of the prompt.
    const rs = gm.newSession();
    rs.chunkedPrefill = false;
    t = performance.now();
    await rs.forward(prompt);
    gpuPrefillReplay = Math.max(gpuPrefillReplay, prompt.length / secs(t));
    if (rs.submissions !== 1 || rs.chunkPasses !== 0) throw new Error(`replayed prefill took ${rs.submissions} submissions, ${rs.chunkPasses} chunk passes`);
    rs.dispose();
    // One submission of T-token passes.
    const gs = gm.newSession();
    const sub0 = gs.submissions;
    t = performance.now();
    const gl = await gs.forward(prompt);
    gpuPrefill = Math.max(gpuPrefill, prompt.length / secs(t));
    if (gs.submissions - sub0 !== 1) throw new Error(`prefill took ${gs.submissions - sub0} submissions`);
    if (prompt.length >= 128 && gs.chunkPasses === 0) throw new Error(`prefill ran no chunk passes (${[...gm.chunkErrors.values()].join('; ')})`);
    const first = argmax(gl);
    const got: number[] = [first];
    t = performance.now();
    for await (const batch of gs.greedy(first, nTok - 1)) got.push(...batch);
    gpuTps = Math.max(gpuTps, (nTok - 1) / secs(t));
    toks = got;
    gs.dispose();
  }
  // The T-token passes with the exact matrix products (one invocation per output; the tiled
  // kernel), same weights, same run.
  const prefillWith = async (o: { matmulTile?: { rows: number; tokens: number } | null; matmulGemm?: ReturnType<typeof parseGemm>[] | null; matmulGemmSplit?: number }) => {
    const g2 = gpuModel(model, gpu, { matmulGemm: null, ...o });
    const ow = g2.newSession();
    await ow.forward(prompt);
    ow.dispose();
    let best = 0;
    for (let r = 0; r < runs; r++) {
      const os = g2.newSession();
      t = performance.now();
      await os.forward(prompt);
      best = Math.max(best, prompt.length / secs(t));
      os.dispose();
    }
    return best;
  };
  const gpuPrefillOut = await prefillWith({ matmulTile: null });
  const gpuPrefillTile = gm.K.gemm ? await prefillWith({ matmulTile: { rows: 4, tokens: 8 } }) : 0;
  // Other GEMM shapes (--gemm-also A;B, each as --gemm takes it), same run.
  const also: [string, number][] = [];
  for (const g of opt('--gemm-also', '').split(';').filter(Boolean)) {
    const { shapes, split } = parseGemms(g);
    also.push([gemmName(shapes, split), await prefillWith({ matmulGemm: shapes, matmulGemmSplit: split })]);
  }
  // Decode reading back every token's logits (sampling on the host).
  const gs2 = gm.newSession();
  let l2 = await gs2.forward(prompt);
  const nLog = Math.min(nTok, 32);
  t = performance.now();
  for (let i = 0; i < nLog; i++) l2 = await gs2.forward([argmax(l2)]);
  const gpuLogitTps = nLog / secs(t);
  if (args.includes('--profile')) {
    // Where a token's time goes: encoding its dispatches on the host, encoding and submitting,
    // and the device finishing a queue of already-submitted tokens.
    const ps: any = gm.newSession();
    await ps.forward(prompt.slice(0, 8));
    const dev = gpu.device, list = ps.list as unknown[], N = 64;
    let t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      gm.K.encode(pass, list as any);
      pass.end();
      enc.finish();
    }
    const encodeMs = (performance.now() - t0) / N;
    await dev.queue.onSubmittedWorkDone();
    t0 = performance.now();
    ps.submitSteps(8, N, list);
    const submitMs = (performance.now() - t0) / N;
    await dev.queue.onSubmittedWorkDone();
    const totalMs = (performance.now() - t0) / N;
    console.log(`profile (${list.length} dispatches/token): encode ${encodeMs.toFixed(3)} ms/token; encode + submit ${submitMs.toFixed(3)} ms/token; submitted → done ${totalMs.toFixed(3)} ms/token`);
    ps.dispose();
  }
  if (args.includes('--profile')) {
    // Where a T-token pass's time goes: each kernel's dispatches of the 128-token recording alone,
    // the pass repeated `reps` times in one submission (the inputs are whatever the buffers hold;
    // shapes and grids are the pass's), less an empty submission's time.
    const ps: any = gm.newSession();
    await ps.forward(prompt);
    const run = ps.chunkRuns.get('128');
    if (run) {
      const dev = gpu.device, reps = 10, list = run.list as { key: string }[];
      const time = async (l: unknown[]) => {
        let best = Infinity;
        for (let r = 0; r < 3; r++) {
          const enc = dev.createCommandEncoder();
          const pass = enc.beginComputePass();
          for (let i = 0; i < reps; i++) gm.K.encode(pass, l as any);
          pass.end();
          await dev.queue.onSubmittedWorkDone();
          const t1 = performance.now();
          dev.queue.submit([enc.finish()]);
          await dev.queue.onSubmittedWorkDone();
          best = Math.min(best, (performance.now() - t1) / reps);
        }
        return best;
      };
      const empty = await time([]), whole = await time(list) - empty;
      const groups = new Map<string, unknown[]>();
      for (const d of list) groups.set(d.key, [...(groups.get(d.key) ?? []), d]);
      const rowsP: [string, number, number][] = [];
      for (const [key, l] of groups) rowsP.push([key, l.length, (await time(l)) - empty]);
      rowsP.sort((x, y) => y[2] - x[2]);
      console.log(`profile of a 128-token pass (${list.length} dispatches): ${whole.toFixed(2)} ms in one pass (${(128 / whole * 1000).toFixed(0)} tok/s), empty submission ${empty.toFixed(2)} ms`);
      console.log('| kernel | dispatches | ms per pass | share |\n|---|---:|---:|---:|');
      for (const [key, n, ms] of rowsP) console.log(`| ${key} | ${n} | ${ms.toFixed(3)} | ${(100 * ms / whole).toFixed(1)} % |`);
    }
    ps.dispose();
    // Where a prompt forward's wall time goes beyond the passes themselves: a fresh session (its
    // chunk recordings bound on first use) against the same session again, and in the latter the
    // host's staging and encoding, the submit, and the wait until the logits are mapped, next to
    // the wait for onSubmittedWorkDone.
    const fs: any = gm.newSession();
    let tf = performance.now();
    await fs.forward(prompt);
    const freshMs = performance.now() - tf;
    const parts = { stage: Infinity, submit: Infinity, map: Infinity, done: Infinity, total: Infinity };
    for (let r = 0; r < 5; r++) {
      fs.reset();
      await gpu.device.queue.onSubmittedWorkDone();
      tf = performance.now();
      const { rd, encode } = fs.stageForward(prompt, false);
      const enc = gpu.device.createCommandEncoder();
      encode(enc);
      const cb = enc.finish();
      const t1 = performance.now();
      gpu.device.queue.submit([cb]);
      const t2 = performance.now();
      const useDone = r % 2 === 1;
      if (useDone) await gpu.device.queue.onSubmittedWorkDone();
      else await rd.mapAsync(1);
      const t3 = performance.now();
      if (useDone) await rd.mapAsync(1);
      rd.unmap();
      rd.destroy();
      parts.stage = Math.min(parts.stage, t1 - tf);
      parts.submit = Math.min(parts.submit, t2 - t1);
      if (useDone) parts.done = Math.min(parts.done, t3 - t2);
      else parts.map = Math.min(parts.map, t3 - t2);
      parts.total = Math.min(parts.total, performance.now() - tf);
    }
    console.log(`prompt forward (${prompt.length} tokens): fresh session ${freshMs.toFixed(2)} ms; same session again ${parts.total.toFixed(2)} ms = stage + encode ${parts.stage.toFixed(2)} + submit ${parts.submit.toFixed(2)} + wait for the mapped logits ${parts.map.toFixed(2)} (onSubmittedWorkDone ${parts.done.toFixed(2)})`);
    fs.dispose();
  }
  const agree = toks.findIndex((x, i) => x !== wasmToks[i]);
  rows.push(
    ['prefill, one submission per token (tokens/s)', wasmPrefill, gpuPrefillPerToken],
    ['prefill, one submission, replayed per position (tokens/s)', wasmPrefill, gpuPrefillReplay],
    ['prefill, one submission of T-token passes, products of one invocation per output (tokens/s)', wasmPrefill, gpuPrefillOut],
    ...(gm.K.gemm ? [['prefill, one submission of T-token passes, tiled exact products 4×8 (tokens/s)', wasmPrefill, gpuPrefillTile] as [string, number, number]] : []),
    ...also.map(([name, v]) => [`prefill, one submission of T-token passes, GEMM ${name} (tokens/s)`, wasmPrefill, v] as [string, number, number]),
    [`prefill, one submission of T-token passes, ${gm.K.gemm ? `GEMM ${gemmName(gm.K.gemm, gm.K.gemmSplit)}` : gm.K.tile ? `tiled products ${gm.K.tile.rows}×${gm.K.tile.tokens}` : 'the same kernel'} (tokens/s)`, wasmPrefill, gpuPrefill], ['decode, greedy on the GPU (tokens/s)', wasmTps, gpuTps], ['decode, logits read back per token (tokens/s)', wasmTps, gpuLogitTps],
  );
  const chunks = gm.info().chunkRecordings.map((r) => `T=${r.T}: ${r.dispatches} dispatches, ${(r.activationBytes / 2 ** 20).toFixed(1)} MiB activations`).join(', ');
  note = `webgpu: ${gpu.adapterName}; ${gm.info().dispatchesPerToken} dispatches/token; chunk recordings ${chunks || 'none'}; ${(gm.info().weightBytes / 2 ** 20).toFixed(0)} MiB uploaded in ${tUp.toFixed(1)} s; greedy tokens ${agree < 0 ? 'identical to WASM' : `diverge from WASM at step ${agree} (WASM uses int8 activation dots, GPU f32)`}`;
} catch (e) {
  note = `webgpu: unavailable (${(e as Error).message})`;
  console.error((e as Error).stack);
}
console.log(`model: ${label}; load ${(tLoad / 1000).toFixed(1)} s; ${prompt.length}-token prompt, ${nTok} decoded tokens; wasm ${model.k.build}, 1 thread; WebGPU best of ${runs} runs`);
console.log(note);
if (rows.length) {
  console.log('| | WASM | WebGPU | WebGPU / WASM |\n|---|---:|---:|---:|');
  for (const [name, w, g] of rows) console.log(`| ${name} | ${w.toFixed(1)} | ${g.toFixed(1)} | ${(g / w).toFixed(2)}× |`);
}
