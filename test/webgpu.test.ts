// WebGPU kernels and the default model's WebGPU forward pass, checked under Deno (which has
// navigator.gpu; on CPU-only hosts through Mesa llvmpipe). These checks do not skip: a host
// without a WebGPU adapter fails them, naming the reason Deno gave.

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function deno(script: string): any {
  const r = spawnSync('npx', ['deno', 'run', '--allow-read', '--allow-env', '--unstable-sloppy-imports', script], { encoding: 'utf8', timeout: 240_000 });
  const line = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${script} printed no JSON (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  const out = JSON.parse(line);
  if (out.error) throw new Error(`no WebGPU device under Deno: ${out.error}`);
  return out;
}

describe('webgpu', () => {
  it('kernels match the WASM kernels and references on random data', () => {
    const r = deno('test/webgpu/kernel-checks.ts');
    const failed = r.results.filter((x: any) => !x.pass);
    expect(failed, JSON.stringify(failed)).toEqual([]);
    expect(r.results.length).toBeGreaterThanOrEqual(40);
  }, 240_000);

  it('the default model decodes on the GPU with the WASM logits (1e-5 relative)', () => {
    const r = deno('test/webgpu/model-check.ts');
    expect(r.maxRelErr).toBeLessThanOrEqual(1e-5);
    expect(r.argmaxAgree).toBe(r.tokens);
  }, 240_000);
});
