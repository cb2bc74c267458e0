import { startWorker, postJson } from './edge-helpers';
const w = await startWorker();
console.log(w.url);
const res = await postJson(`${w.url}/v1/completions`, { prompt: 'Once', max_tokens: 1500, ignore_eos: true, stream: true });
const reader = res.body!.getReader();
await reader.read();
await reader.cancel();
const t0 = Date.now();
for (let i = 0; i < 40; i++) {
  await new Promise((r) => setTimeout(r, 250));
  const h = await (await fetch(`${w.url}/healthz`)).json();
  console.log(Date.now() - t0, h.queue.running, h.sessions_in_use);
  if (!h.queue.running) break;
}
await w.stop();
