// State as a value across runtimes: a session of the hybrid default model snapshotted under Node
// restores under Bun, Deno and Node into a fresh model and gives bit-identical next-token logits
// (baseline SIMD build, whose f32 arithmetic is the same on every engine).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/index';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCRIPT = join(ROOT, 'test/scripts/restore-next.ts');
const MODEL = join(ROOT, 'models/sparrow-mini');
const BIN = (n: string) => join(ROOT, 'node_modules/.bin', n);
const dir = mkdtempSync(join(tmpdir(), 'sparrow-snap-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const RUNTIMES: Record<string, string[]> = {
  node: [process.execPath, '--import', 'tsx', SCRIPT],
  bun: [BIN('bun'), SCRIPT],
  deno: [BIN('deno'), 'run', '--allow-read', '--allow-env', SCRIPT],
};

describe('snapshot → restore in another runtime', () => {
  it('gives identical next-token logits under Node, Bun and Deno', async () => {
    const lm = await loadModel(MODEL, { build: 'simd' });
    const ids = lm.encode('The king had three daughters, and the youngest', false);
    const s = lm.model.newSession();
    s.forward(ids);
    const snap = s.snapshot();
    const file = join(dir, 'state.snap');
    writeFileSync(file, snap);
    const next = 262;
    const here = s.forward([next]);
    const expected = Buffer.from(here.buffer, here.byteOffset, here.byteLength).toString('base64');
    await lm.dispose();
    for (const [rt, cmd] of Object.entries(RUNTIMES)) {
      const r = spawnSync(cmd[0], [...cmd.slice(1), MODEL, file, String(next)], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
      expect(r.status, `${rt}: ${r.stderr}`).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
      expect(out.pos, rt).toBe(ids.length);
      expect(out.logits === expected, `${rt} logits differ`).toBe(true);
    }
  }, 120_000);
});
