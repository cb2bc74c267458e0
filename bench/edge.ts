// Edge serving figures for the default model, per runtime, measured over real HTTP on loopback:
// start-up (process start → listening with the model loaded; for the Worker, workerd ready → end of
// the first request, which loads the model: its cold start), time to first token and decode speed
// of streamed completions, and memory in use (process RSS, WebAssembly memory).
//   npm run bench:edge [-- --runs 9] [-- --tokens 128] [-- --write] [-- --json] [-- --only node,bun]
// --write appends the table to bench/RESULTS.md under an "Edge" heading.

import { appendFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../src/index';
import { ROOT, startProcess, startWorker, stopAll, type RuntimeKind, type Server } from '../test/edge-helpers';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = opt('runs', 9);
const TOKENS = opt('tokens', 128);
const asJson = args.includes('--json');
const onlyArg = args.indexOf('--only');
const KINDS: RuntimeKind[] = onlyArg >= 0 ? (args[onlyArg + 1].split(',') as RuntimeKind[]) : ['node', 'bun', 'deno', 'workers'];
const PROMPT = 'Once upon a time, in a small village by the sea, there lived an old fisherman who';
const log = (s: string) => { if (!asJson) console.error(s); };
let promptTokens = 0;

interface Row {
  runtime: string;
  startMs: number;
  firstTtftMs: number;
  firstRequestMs: number;
  ttftMs: number;
  ttftMinMs: number;
  decodeTokPerS: number;
  rssMiB: number | null;
  wasmMiB: number | null;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r1 = (x: number) => Math.round(x * 10) / 10;

/** One streamed completion: ms to the first text chunk, and decode tokens/s after it. */
async function streamed(url: string): Promise<{ ttft: number; tokPerS: number; total: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`status ${res.status}: ${await res.text()}`);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '', first = 0, last = 0, tokens = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const m = JSON.parse(ev.slice(6));
      if (m.usage) {
        tokens = m.usage.completion_tokens;
        promptTokens = m.usage.prompt_tokens;
      }
      if (m.choices?.[0]?.text) {
        const t = performance.now();
        if (!first) first = t;
        last = t;
      }
    }
  }
  return { ttft: first - t0, tokPerS: tokens > 1 ? ((tokens - 1) / (last - first)) * 1000 : 0, total: performance.now() - t0 };
}

/** RSS of a process, or of the largest workerd process started under this one. */
function rssMiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) if (pp === p) {
      out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

/** The largest RSS among a process and its descendants (a launcher may sit in front of the server). */
function treeRss(pid: number): number | null {
  const all = [pid, ...descendants(pid)].map(rssMiB).filter((x): x is number => x !== null);
  return all.length ? Math.max(...all) : null;
}

function workerdRss(): number | null {
  let best: number | null = null;
  for (const pid of descendants(process.pid)) {
    let name = '';
    try {
      name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch { continue; }
    if (!name.startsWith('workerd')) continue;
    const r = rssMiB(pid);
    if (r !== null && (best === null || r > best)) best = r;
  }
  return best;
}

interface Started {
  kind: RuntimeKind;
  server: Server;
  startMs: number;
  firstTtftMs: number;
  firstRequestMs: number;
  runs: { ttft: number; tokPerS: number; total: number }[];
}

/** Starts a server and times its first request (for the Worker, the request that loads the model). */
async function start(kind: RuntimeKind): Promise<Started> {
  const t0 = performance.now();
  const server = kind === 'workers' ? await startWorker() : await startProcess(kind);
  const startMs = performance.now() - t0;
  const first = await streamed(server.url);
  return { kind, server, startMs, firstTtftMs: first.ttft, firstRequestMs: first.total, runs: [] };
}

async function finish(s: Started): Promise<Row> {
  const h = await (await fetch(`${s.server.url}/healthz`)).json();
  return {
    runtime: h.runtime,
    startMs: r1(s.startMs),
    firstTtftMs: r1(s.firstTtftMs),
    firstRequestMs: r1(s.firstRequestMs),
    ttftMs: r1(median(s.runs.map((r) => r.ttft))),
    ttftMinMs: r1(Math.min(...s.runs.map((r) => r.ttft))),
    decodeTokPerS: r1(median(s.runs.map((r) => r.tokPerS))),
    rssMiB: s.kind === 'workers' ? workerdRss() : s.server.pid ? treeRss(s.server.pid) : null,
    wasmMiB: h.memory ? h.memory.wasm_bytes / 1048576 : null,
  };
}

/** The library alone in this Node process: the same generation without HTTP, for reference. */
async function inProcess(): Promise<Row> {
  const t0 = performance.now();
  const lm = await loadModel(join(ROOT, 'models/sparrow-mini'), { build: 'simd' });
  const startMs = performance.now() - t0;
  const ttfts: number[] = [], rates: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const g = lm.generate(PROMPT, { maxTokens: TOKENS, temperature: 0, ignoreEos: true });
    await g.result();
    if (i === 0) continue;
    ttfts.push(g.stats.ttftMs);
    rates.push(((g.stats.generatedTokens - 1) / g.stats.decodeMs) * 1000);
  }
  const wasm = lm.status().wasmBytes / 1048576;
  await lm.dispose();
  return { runtime: `library in-process (node ${process.versions.node}, no HTTP)`, startMs: r1(startMs), firstTtftMs: NaN, firstRequestMs: NaN, ttftMs: r1(median(ttfts)), ttftMinMs: r1(Math.min(...ttfts)), decodeTokPerS: r1(median(rates)), rssMiB: null, wasmMiB: wasm };
}

/** "SCHED_FIFO" when started under `chrt -f` (children inherit it), else null. */
function realtimePolicy(): string | null {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const policy = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]);
    return policy === 1 ? 'SCHED_FIFO' : policy === 2 ? 'SCHED_RR' : null;
  } catch {
    return null;
  }
}

async function main() {
  const rows: Row[] = [];
  const loadBefore = loadavg()[0];
  try {
    // Start-up and first request one runtime at a time; then the timed runs take turns across the
    // runtimes, so that load from elsewhere on the machine falls on all of them alike.
    const started: Started[] = [];
    for (const k of KINDS) {
      log(`starting ${k} …`);
      started.push(await start(k));
    }
    for (const s of started) await streamed(s.server.url);
    for (let i = 0; i < RUNS; i++) {
      log(`round ${i + 1}/${RUNS}`);
      for (const s of started) s.runs.push(await streamed(s.server.url));
    }
    for (const s of started) rows.push(await finish(s));
    await stopAll();
    rows.push(await inProcess());
  } finally {
    await stopAll();
  }
  const cpu = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const machine = `${cpus().length}-core ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.versions.node}, Linux`;
  if (asJson) {
    console.log(JSON.stringify({ date: new Date().toISOString(), machine, runs: RUNS, tokens: TOKENS, promptTokens, rows }));
    return;
  }
  const f = (x: number | null, d = 1) => (x === null || Number.isNaN(x) ? '–' : x.toFixed(d));
  const table = [
    '| runtime | ready (ms) | first request: TTFT / total (ms) | TTFT median (min) (ms) | decode (tok/s) | RSS (MiB) | WASM memory (MiB) |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.runtime} | ${f(r.startMs, 0)} | ${f(r.firstTtftMs, 0)} / ${f(r.firstRequestMs, 0)} | ${f(r.ttftMs)} (${f(r.ttftMinMs)}) | ${f(r.decodeTokPerS)} | ${f(r.rssMiB, 0)} | ${f(r.wasmMiB)} |`),
  ].join('\n');
  const section = `
## Edge

${new Date().toISOString().slice(0, 10)} · ${machine} · \`npm run bench:edge\` (bench/edge.ts) · 1-min load average
${loadBefore.toFixed(1)} before, ${loadavg()[0].toFixed(1)} after (a shared machine: other work ran alongside)${realtimePolicy() ? `; run under ${realtimePolicy()}
(\`chrt -f 10 npm run bench:edge\`), which the servers inherit, to keep that work from interleaving with the timings` : ''}

Default model (models/sparrow-mini, Qwen3-Next hybrid, Q8_0, simd build on every runtime), served by the one Hono app
(edge/app.ts) on each runtime and measured over HTTP on 127.0.0.1. Streamed \`/v1/completions\`, a ${promptTokens}-token prompt, ${TOKENS} tokens greedy
(EOS ignored), one warm-up, then ${RUNS} rounds in which the runtimes take turns; medians.

- **ready**: process start → listening with the model loaded (Node, Bun, Deno load it at start-up); for the Worker,
  \`unstable_startWorker\` → workerd ready (bundling included), the model not yet loaded.
- **first request**: time to first token and total time of the first streamed completion after ready. For the Worker this
  is its cold start: the isolate reads the GGUF and tokenizer from static assets and loads the model inside the request.
  For the others the model is already loaded and it shows the JIT warming up.
- **TTFT**: request sent → first text chunk received (prefill, first token, HTTP and SSE).
- **decode**: tokens after the first ÷ time from the first to the last text chunk.
- **RSS**: resident memory of the server process after the runs (for the Worker, its largest workerd process).
  **WASM memory**: the model's linear memory (weights, scratch, session slots touched so far).

${table}
`;
  console.log(section);
  if (args.includes('--write')) {
    const path = join(ROOT, 'bench', 'RESULTS.md');
    if (!existsSync(path)) appendFileSync(path, '# Benchmark results\n');
    appendFileSync(path, section);
    log(`appended to ${path}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
