// `npm run bpb` as the README gives it runs from the repository alone: the validation text ships as
// tools/corpus/valid.txt.gz (the file its README describes), and a few windows give a sane figure.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TEXT = join(ROOT, 'tools/corpus/valid.txt.gz');

function npm(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn('npm', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('npm run bpb', () => {
  it('the shipped validation text is the one its README describes', () => {
    const text = gunzipSync(readFileSync(TEXT));
    const readme = readFileSync(join(ROOT, 'tools/corpus/README.md'), 'utf8');
    expect(readme).toContain(`${text.length.toLocaleString('en-US')} bytes`);
    expect(readme).toContain(createHash('sha256').update(text).digest('hex'));
  });

  it.skipIf(!existsSync(join(ROOT, 'models/sparrow-mini/config.json')))('runs from the repository on the shipped text (--windows 2)', async () => {
    const r = await npm(['run', '--silent', 'bpb', '--', '--windows', '2']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res.text).toBe(TEXT);
    expect(res.tokens_total).toBe(456293);
    expect(res.windows).toBe(2);
    expect(res.tokens).toBe(2 * 511);
    expect(res.bpb).toBeGreaterThan(1);
    expect(res.bpb).toBeLessThan(2.5);
  });

  it('a missing --text file is one line naming it', async () => {
    const r = await npm(['run', '--silent', 'bpb', '--', '--text', '/no/such/valid.txt', '--windows', '1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('bpb: /no/such/valid.txt not found (--text takes a UTF-8 text file, or a .gz of one)\n');
  });
});
