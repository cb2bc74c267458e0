// A context that a model cannot serve is refused when it loads, with the numbers: beyond the model's
// positions, or session state that cannot fit beside the weights (memory budget or the 4 GiB a
// WebAssembly memory addresses). Nothing is allocated for it first.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadModel } from '../src/index';
import { tinyModelDir } from './tiny-models';

const dirs: string[] = [];
function tiny(o: Parameters<typeof tinyModelDir>[0] = {}, positions?: number): string {
  const d = tinyModelDir(o);
  dirs.push(d);
  if (positions !== undefined) {
    const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
    cfg.max_position_embeddings = positions;
    writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
  }
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function refusal(p: Promise<unknown>): Promise<ConfigError> {
  const e = await p.then(() => null, (x) => x);
  expect(e).toBeInstanceOf(ConfigError);
  return e as ConfigError;
}

describe('maxContext at load', () => {
  it('beyond the model\'s positions: refused naming both numbers', async () => {
    const e = await refusal(loadModel(tiny({ arch: 'llama' }), { maxContext: 999_999 }));
    expect(e.message).toMatch(/maxContext.*999999.*512 positions/);
    const lm = await loadModel(dirs[dirs.length - 1], { maxContext: 512 });
    expect(lm.maxContext).toBe(512);
    await lm.dispose();
  });

  it('state that cannot fit a WebAssembly memory: refused with the largest context that fits', async () => {
    const dir = tiny({ arch: 'llama' }, 1 << 30);
    const e = await refusal(loadModel(dir, { maxContext: 100_000_000 }));
    expect(e.message).toMatch(/100000000/);
    expect(e.message).toMatch(/WebAssembly memory/);
    const fits = Number(/at most about (\d+) positions fit/.exec(e.message)?.[1]);
    // 512 bytes of cache per position (2 layers × K and V × 2 heads × 16 × 4 bytes) in 4 GiB.
    expect(fits).toBeGreaterThan(8_000_000);
    expect(fits).toBeLessThan(8_400_000);
  });

  it('state for every concurrent session beyond the memory budget: refused with the numbers', async () => {
    const dir = tiny({ arch: 'llama' }, 1 << 20);
    const budget = 64 << 20;
    const e = await refusal(loadModel(dir, { maxContext: 200_000, memoryBudget: budget, maxSessions: 5 }));
    expect(e.message).toMatch(/5 sessions of [\d.]+ MiB state each/);
    expect(e.message).toMatch(/more than the memory budget holds \(64\.0 MiB\)/);
    const fits = Number(/at most about (\d+) positions fit/.exec(e.message)?.[1]);
    // The number it names does fit: every session can be opened and run.
    const lm = await loadModel(dir, { maxContext: fits, memoryBudget: budget, maxSessions: 5 });
    const sessions = Array.from({ length: 5 }, () => lm.session());
    await lm.generate('Once upon a time', { maxTokens: 2, session: sessions[4] }).result();
    for (const s of sessions) s.dispose();
    await lm.dispose();
  });

  it('recurrent state has no positions to run out of: a long context loads', async () => {
    const lm = await loadModel(tiny({ arch: 'mamba' }), { maxContext: 1_000_000 });
    expect(lm.maxContext).toBe(1_000_000);
    await lm.dispose();
  });
});
