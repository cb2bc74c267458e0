// WebGPU checks, run under Deno (which has navigator.gpu; on CPU-only hosts through Mesa llvmpipe):
// every test/webgpu/checks-*.ts script (kernels against the WASM kernels and references, the default
// model's logits, generation on the webgpu backend), and the parity suite on the webgpu backend.
// These checks do not skip: a host without a WebGPU adapter fails them, naming the reason.

import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const DENO = ['run', '--allow-read', '--allow-env', '--unstable-sloppy-imports'];

function deno(args: string[]): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync('npx', ['deno', ...DENO, ...args], { encoding: 'utf8', timeout: 560_000, maxBuffer: 64 << 20 });
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', status: r.status };
}

function json(script: string): any {
  const r = deno([script]);
  const line = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${script} printed no JSON (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  const out = JSON.parse(line);
  if (out.error) throw new Error(`${script}: ${out.error}`);
  return out;
}

/** Fixtures whose families have no WebGPU path yet (the parity run must fail them with that reason). */
const NO_GPU_PATH = new Set<string>([
]);

describe('webgpu', () => {
  const scripts = readdirSync('test/webgpu').filter((f) => /^checks-.*\.ts$/.test(f)).sort();
  it('has check scripts', () => expect(scripts.length).toBeGreaterThanOrEqual(3));
  for (const f of scripts) {
    it(`${f}: every check passes`, () => {
      const r = json(`test/webgpu/${f}`);
      const failed = r.results.filter((x: any) => !x.pass);
      expect(failed, JSON.stringify(failed)).toEqual([]);
      expect(r.results.length).toBeGreaterThan(0);
    }, 600_000);
  }

  it('the parity suite on the webgpu backend: every family with a GPU path matches transformers', () => {
    const r = deno(['tools/parity.ts', '--backend', 'webgpu']);
    const rows = r.stdout.split('\n').filter((l) => / (pass|FAIL)\b/.test(l));
    expect(rows.length, r.stderr.slice(-2000)).toBeGreaterThanOrEqual(26);
    const passed = rows.filter((l) => / pass$/.test(l)).map((l) => l.split(/\s+/)[0]);
    const failed = rows.filter((l) => /\bFAIL\b/.test(l));
    for (const row of failed) {
      const name = row.split(/\s+/)[0];
      expect(NO_GPU_PATH.has(name), `unexpected failure: ${row}`).toBe(true);
      expect(row).toMatch(/has no WebGPU path yet/);
    }
    // A family that gained a GPU path leaves the list.
    for (const name of passed) expect(NO_GPU_PATH.has(name), `${name} passes: remove it from NO_GPU_PATH`).toBe(false);
  }, 600_000);
});
