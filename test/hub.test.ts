// `--model org/name` and loadModel('org/name') against a local stand-in for the Hugging Face hub
// (node:http on 127.0.0.1): the file list and commit from /api/models/<repo>/revision/<rev>, file
// metadata from HEAD /<repo>/resolve/<rev>/<file> (ETag = git blob SHA-1, or X-Linked-Etag =
// SHA-256 and a 302 for LFS files, X-Repo-Commit), bytes with Range support, an LFS transfer that
// breaks off mid-file, 404 / 401 / 403 answers, and several GGUF files in one repo. The cache is
// checked in the hub's own layout (models--org--name/blobs, snapshots/<commit> symlinks, refs), also
// as written by hand as another tool would. The CLI runs as a real process (Node through tsx) with
// HF_ENDPOINT pointed at the stand-in and HF_HUB_CACHE at a temporary directory; a second run works
// with the stand-in stopped.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGGUF } from '../src/convert';
import { HubError, hubCacheDir, hubRepoDir, parseHubRef, resolveHubModel, resolveModelSource, type HubRef } from '../src/formats/hub';
import { loadModel } from '../src/index';
import { tinyModelDir } from './tiny-models';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'src/cli.ts');

interface Logged {
  method: string;
  url: string;
  range?: string;
  auth?: string;
}

/** A repo: file name → bytes; `lfs` files are served through a redirect. */
interface FakeRepo {
  files: Record<string, Uint8Array>;
  lfs?: Set<string>;
  /** The commit `main` points to (40 hex digits). */
  commit?: string;
  /** Status and X-Error-Code answered for everything in the repo without the right token. */
  deny?: { status: number; code?: string; token?: string };
  /** Files in the listing that the resolve endpoint answers 404 for. */
  missing?: Set<string>;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
/** The git blob SHA-1 the hub gives as the ETag of a file kept in git. */
const gitSha = (b: Uint8Array) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const commitOf = (repo: FakeRepo) => repo.commit ?? 'c'.repeat(40);

/**
 * The stand-in hub. `dropOnce`: LFS paths whose first whole-file transfer is cut off after half of
 * the bytes. `lfsBase`: where LFS redirects point (another origin in the token test).
 */
class FakeHub {
  server!: Server;
  log: Logged[] = [];
  repos = new Map<string, FakeRepo>();
  dropOnce = new Set<string>();
  /** LFS files announced with a wrong SHA-256. */
  wrongEtag = new Set<string>();
  blobs = new Map<string, Uint8Array>();
  lfsBase = '';

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return this.url;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Content requests (not the listing, not HEADs). */
  get downloads(): string[] {
    return this.log.filter((l) => l.method === 'GET' && !l.url.startsWith('/api/')).map((l) => l.url);
  }

  private json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  private handle(req: IncomingMessage, res: ServerResponse) {
    const url = decodeURIComponent(req.url ?? '/');
    this.log.push({ method: req.method ?? 'GET', url, range: req.headers.range, auth: req.headers.authorization });
    const api = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url);
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url);
    const lfs = /^\/lfs-objects\/([0-9a-f]{64})$/.exec(url);
    if (lfs) return this.serveBytes(req, res, this.blobs.get(lfs[1]), url, {});
    const repoName = api?.[1] ?? resolve?.[1];
    const repo = repoName ? this.repos.get(repoName) : undefined;
    if (!repoName || !repo) return this.json(res, 404, { error: 'Repository not found' }, { 'x-error-code': 'RepoNotFound' });
    if (repo.deny && req.headers.authorization !== `Bearer ${repo.deny.token}`) {
      const error = repo.deny.code === 'GatedRepo' ? `Access to model ${repoName} is restricted and you are not in the authorized list.` : 'Invalid credentials in Authorization header';
      return this.json(res, repo.deny.status, { error }, repo.deny.code ? { 'x-error-code': repo.deny.code } : {});
    }
    const rev = (api ?? resolve)![2];
    const commit = commitOf(repo);
    if (rev !== 'main' && rev !== 'v1' && rev !== commit) return this.json(res, 404, { error: 'Invalid rev id' }, { 'x-error-code': 'RevisionNotFound' });
    if (api) return this.json(res, 200, { id: repoName, sha: commit, siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })) });
    const file = resolve![3];
    const bytes = repo.files[file];
    if (!bytes || repo.missing?.has(file)) return this.json(res, 404, { error: 'Entry not found' }, { 'x-error-code': 'EntryNotFound' });
    if (repo.lfs?.has(file)) {
      const sha = sha256(bytes);
      this.blobs.set(sha, bytes);
      const etag = this.wrongEtag.has(file) ? '0'.repeat(64) : sha;
      res.writeHead(302, { location: `${this.lfsBase}/lfs-objects/${sha}`, 'x-linked-size': String(bytes.length), 'x-linked-etag': `"${etag}"`, 'x-repo-commit': commit, etag: `"${gitSha(bytes)}"` });
      return res.end();
    }
    this.serveBytes(req, res, bytes, url, { etag: `"${gitSha(bytes)}"`, 'x-repo-commit': commit });
  }

  private serveBytes(req: IncomingMessage, res: ServerResponse, bytes: Uint8Array | undefined, url: string, headers: Record<string, string>) {
    if (!bytes) return this.json(res, 404, { error: 'no such object' });
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      if (start >= bytes.length) {
        res.writeHead(416, { 'content-range': `bytes */${bytes.length}` });
        return res.end();
      }
      res.writeHead(206, { ...headers, 'content-length': String(bytes.length - start), 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}`, 'accept-ranges': 'bytes' });
      return res.end(bytes.subarray(start));
    }
    res.writeHead(200, { ...headers, 'content-length': String(bytes.length), 'accept-ranges': 'bytes' });
    if (req.method === 'GET' && this.dropOnce.delete(url)) {
      // Half the file, then the connection goes away.
      res.write(bytes.subarray(0, bytes.length >> 1), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(bytes);
  }
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', SPARROW_WASM: 'simd', HF_TOKEN: '', HF_HUB_OFFLINE: '', HF_HUB_CACHE: '', SPARROW_CACHE: '', HF_HOME: '', ...env },
    });
    let stdout = '', stderr = '';
    p.stdout!.setEncoding('utf8').on('data', (d) => (stdout += d));
    p.stderr!.setEncoding('utf8').on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** Byte equality without an element-by-element diff (those are slow on large arrays). */
const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);

const read = (dir: string, names: string[]) => Object.fromEntries(names.map((n) => [n, new Uint8Array(readFileSync(join(dir, n)))]));

/** Every file under `dir`, relative, recursively. */
function walk(dir: string, pre = ''): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name), `${pre}${e.name}/`) : [`${pre}${e.name}`]));
}

let work: string;
let hub: FakeHub;
let tinyFiles: Record<string, Uint8Array>;
let ggufBytes: Uint8Array;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'sparrow-hub-'));
  const dir = tinyModelDir({ dir: join(work, 'tiny') });
  tinyFiles = read(dir, ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']);
  await convertToGGUF(dir, join(work, 'tiny-q8.gguf'), { dtype: 'q8_0' });
  ggufBytes = new Uint8Array(readFileSync(join(work, 'tiny-q8.gguf')));
  hub = new FakeHub();
  await hub.start();
  hub.lfsBase = hub.url;
  hub.repos.set('org/tiny', { files: { ...tinyFiles, 'README.md': new TextEncoder().encode('# tiny\n'), '.gitattributes': new Uint8Array(1) }, lfs: new Set(['model.safetensors']) });
  hub.repos.set('org/noweights', { files: { 'README.md': new Uint8Array(1), 'config.json': tinyFiles['config.json'] } });
  hub.repos.set('org/gated', { files: tinyFiles, deny: { status: 403, code: 'GatedRepo', token: 'granted' } });
  hub.repos.set('org/private', { files: tinyFiles, lfs: new Set(['model.safetensors']), deny: { status: 401, token: 'secret' } });
  hub.repos.set('org/quants', {
    files: { 'tiny-Q4_0.gguf': new Uint8Array(64), 'tiny-Q4_K_M.gguf': new Uint8Array(64), 'tiny-Q8_0.gguf': ggufBytes, 'README.md': new Uint8Array(1) },
    lfs: new Set(['tiny-Q4_0.gguf', 'tiny-Q4_K_M.gguf', 'tiny-Q8_0.gguf']),
  });
});

afterAll(async () => {
  await hub?.stop().catch(() => {});
  rmSync(work, { recursive: true, force: true });
});

/** The snapshot directory refs/<rev> of `repo` points to in `cache`. */
function snapshotOf(cache: string, repo: string, rev = 'main'): string {
  const dir = hubRepoDir(repo, { HF_HUB_CACHE: cache });
  return join(dir, 'snapshots', readFileSync(join(dir, 'refs', rev), 'utf8').trim());
}

/** Writes a repo into `cache` in the hub layout by hand, as huggingface_hub does. */
function prefill(cache: string, repo: string, commit: string, files: Record<string, Uint8Array>, lfs: Set<string>): void {
  const dir = join(cache, `models--${repo.replace('/', '--')}`);
  mkdirSync(join(dir, 'blobs'), { recursive: true });
  mkdirSync(join(dir, 'refs'), { recursive: true });
  writeFileSync(join(dir, 'refs', 'main'), commit);
  for (const [name, bytes] of Object.entries(files)) {
    const etag = lfs.has(name) ? sha256(bytes) : gitSha(bytes);
    writeFileSync(join(dir, 'blobs', etag), bytes);
    const pointer = join(dir, 'snapshots', commit, name);
    mkdirSync(dirname(pointer), { recursive: true });
    symlinkSync(`${'../'.repeat(name.split('/').length + 1)}blobs/${etag}`, pointer);
  }
}

async function deadEndpoint(): Promise<string> {
  const off = new FakeHub();
  await off.start();
  const url = off.url;
  await off.stop();
  return url;
}

describe('hub names', () => {
  it('parses org/name, @revision, /file.gguf and :quant; leaves paths alone', () => {
    expect(parseHubRef('Qwen/Qwen3-0.6B')).toEqual({ repo: 'Qwen/Qwen3-0.6B', revision: 'main', file: undefined, quant: undefined });
    expect(parseHubRef('Qwen/Qwen3-0.6B@v1.0')).toMatchObject({ repo: 'Qwen/Qwen3-0.6B', revision: 'v1.0' });
    expect(parseHubRef('org/m-GGUF/m-Q4_K_M.gguf')).toMatchObject({ repo: 'org/m-GGUF', file: 'm-Q4_K_M.gguf', revision: 'main' });
    expect(parseHubRef('org/m-GGUF/sub/m.gguf@abc123')).toMatchObject({ file: 'sub/m.gguf', revision: 'abc123' });
    expect(parseHubRef('org/m-GGUF@dev/m.gguf')).toMatchObject({ file: 'm.gguf', revision: 'dev' });
    expect(parseHubRef('org/m-GGUF:q4_k_m')).toMatchObject({ repo: 'org/m-GGUF', quant: 'q4_k_m' });
    expect(parseHubRef('org/m@refs/pr/1')).toMatchObject({ repo: 'org/m', revision: 'refs/pr/1' });
    for (const s of ['/abs/path', './rel/path', '../x/y', 'a/b/c', 'single', 'C:/x/y', 'http://x/y', 'org/name/x.safetensors', 'org/name@..', 'org/name@a/../../b', 'org/n/../x.gguf', 'org/name:Q4/x.gguf']) {
      expect(parseHubRef(s), s).toBeNull();
    }
  });

  it('cache location: HF_HUB_CACHE, SPARROW_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub', () => {
    expect(hubCacheDir({ HF_HUB_CACHE: '/h', SPARROW_CACHE: '/c', HF_HOME: '/home' })).toBe('/h');
    expect(hubCacheDir({ SPARROW_CACHE: '/c', HF_HOME: '/home', XDG_CACHE_HOME: '/x' })).toBe('/c');
    expect(hubCacheDir({ HF_HOME: '/home', XDG_CACHE_HOME: '/x' })).toBe('/home/hub');
    expect(hubCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub');
    expect(hubCacheDir({ HOME: '/u' })).toBe('/u/.cache/huggingface/hub');
    expect(hubRepoDir('o/n', { HF_HUB_CACHE: '/c' })).toBe('/c/models--o--n');
  });
});

describe('sparrow generate --model org/name', () => {
  let cache: string;
  let first: Run;
  const GEN = ['--prompt', 'Once upon a time', '--max-tokens', '12', '--temperature', '0'];
  const commit = commitOf({ files: {} });

  beforeAll(async () => {
    cache = join(work, 'cache-cli');
    hub.log = [];
    hub.dropOnce.add(`/lfs-objects/${sha256(tinyFiles['model.safetensors'])}`);
    first = await cli(['generate', '--model', 'org/tiny', ...GEN], { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache });
  });

  it('downloads the repo into the hub layout, resuming the weights after the dropped connection, and generates', () => {
    expect(first.stderr).not.toMatch(/error|failed/i);
    expect(first.status).toBe(0);
    expect(first.stdout.trim().length).toBeGreaterThan(0);
    expect(first.stderr).toMatch(/sparrow: downloading org\/tiny\/model\.safetensors \(\d+(\.\d)? KiB\)/);
    expect(first.stderr).toMatch(/model\.safetensors: connection lost .*resuming at byte \d+/);
    const urls = hub.log.map((l) => l.url);
    expect(urls[0]).toBe('/api/models/org/tiny/revision/main');
    expect(hub.log).toContainEqual(expect.objectContaining({ method: 'HEAD', url: `/org/tiny/resolve/${commit}/model.safetensors` }));
    expect(hub.downloads).toContain(`/org/tiny/resolve/${commit}/config.json`);
    expect(hub.log.some((l) => l.url.startsWith('/lfs-objects/') && /^bytes=[1-9]\d*-$/.test(l.range ?? ''))).toBe(true);
    // README.md and .gitattributes are not needed.
    expect(urls.some((u) => u.endsWith('/README.md'))).toBe(false);

    const repo = hubRepoDir('org/tiny', { HF_HUB_CACHE: cache });
    expect(readFileSync(join(repo, 'refs', 'main'), 'utf8')).toBe(commit);
    const snap = join(repo, 'snapshots', commit);
    expect(walk(snap).sort()).toEqual(Object.keys(tinyFiles).sort());
    const blobs: string[] = [];
    for (const [name, bytes] of Object.entries(tinyFiles)) {
      const etag = name === 'model.safetensors' ? sha256(bytes) : gitSha(bytes);
      blobs.push(etag);
      expect(lstatSync(join(snap, name)).isSymbolicLink(), name).toBe(true);
      expect(readlinkSync(join(snap, name)), name).toBe(`../../blobs/${etag}`);
      expect(sameBytes(readFileSync(join(snap, name)), bytes), name).toBe(true);
    }
    expect(walk(join(repo, 'blobs')).sort()).toEqual(blobs.sort());
  });

  it('runs again from the cache with the hub stopped, giving the same text', async () => {
    const again = await cli(['generate', '--model', 'org/tiny', ...GEN], { HF_ENDPOINT: await deadEndpoint(), HF_HUB_CACHE: cache });
    expect(again.status).toBe(0);
    expect(again.stdout).toBe(first.stdout);
    expect(again.stderr).not.toMatch(/downloading/);
    expect(again.stderr).toMatch(/cannot reach the hub .*; using the cached org\/tiny \(commit c{40}\)/);
  });

  it('online with main unchanged: only the file list is asked for', async () => {
    hub.log = [];
    const again = await cli(['generate', '--model', 'org/tiny', ...GEN], { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache });
    expect(again.status).toBe(0);
    expect(again.stdout).toBe(first.stdout);
    expect(hub.log.map((l) => `${l.method} ${l.url}`)).toEqual(['GET /api/models/org/tiny/revision/main']);
  });

  it('picks a GGUF by quant tag, case-insensitive', async () => {
    const r = await cli(['generate', '--model', 'org/quants:q8_0', ...GEN], { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache });
    expect(r.stderr).toMatch(/downloading org\/quants\/tiny-Q8_0\.gguf/);
    expect(r.status).toBe(0);
    expect(r.stdout.trim().length).toBeGreaterThan(0);
    expect(walk(snapshotOf(cache, 'org/quants'))).toEqual(['tiny-Q8_0.gguf']);
  });

  it('errors: one line each, exit status 1', async () => {
    const deadUrl = await deadEndpoint();
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(work, 'cache-errors') };
    const cases: [string, Record<string, string>, RegExp][] = [
      ['org/missing', env, /^sparrow: model not found: org\/missing: no such model repo on the hub \(http:\/\/127\.0\.0\.1:\d+, HTTP 404\), nor a local path$/],
      ['org/private', env, /^sparrow: org\/private needs authentication: set HF_TOKEN to a Hugging Face access token \(HTTP 401 for the file list\)$/],
      ['org/gated', env, /^sparrow: org\/gated is gated: accept its terms on the hub, then set HF_TOKEN .*\(HTTP 403 for the file list\)$/],
      ['org/noweights', env, /^sparrow: org\/noweights has no weights sparrow can load \(model\.safetensors, model\.safetensors\.index\.json or a \.gguf file\); it has: README\.md, config\.json$/],
      ['org/quants:Q4', env, /^sparrow: org\/quants: Q4 matches several \.gguf files: tiny-Q4_0\.gguf, tiny-Q4_K_M\.gguf; name one as org\/quants\/<file>\.gguf$/],
      ['org/quants', env, /^sparrow: org\/quants holds several \.gguf files: tiny-Q4_0\.gguf, tiny-Q4_K_M\.gguf, tiny-Q8_0\.gguf; pick one as org\/quants:<quant> or org\/quants\/<file>\.gguf$/],
      ['org/tiny@nope', env, /^sparrow: org\/tiny@nope: revision nope not found on the hub/],
      ['org/tiny', { ...env, HF_ENDPOINT: deadUrl }, /^sparrow: cannot reach the hub at http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED.*\); org\/tiny is not in the cache/],
      ['no/such/model', env, /^sparrow: model not found: no\/such\/model$/],
    ];
    const runs = await Promise.all(cases.map(([m, e]) => cli(['generate', '--model', m, '--max-tokens', '1'], e)));
    runs.forEach((r, i) => {
      const [m, , re] = cases[i];
      expect(r.status, m).toBe(1);
      expect(r.stdout, m).toBe('');
      expect(r.stderr.split('\n').filter(Boolean), m).toHaveLength(1);
      expect(r.stderr.trim(), m).toMatch(re);
    });
  });
});

describe('resolveHubModel', () => {
  const ref = (s: string): HubRef => parseHubRef(s)!;

  it('sends HF_TOKEN to the hub, not to the other origin a redirect leads to', async () => {
    const cdn = new FakeHub();
    await cdn.start();
    try {
      hub.lfsBase = cdn.url;
      const sha = sha256(tinyFiles['model.safetensors']);
      cdn.blobs.set(sha, tinyFiles['model.safetensors']);
      hub.log = [];
      // SPARROW_CACHE is an alias of HF_HUB_CACHE.
      const env = { HF_ENDPOINT: hub.url, SPARROW_CACHE: join(work, 'cache-token'), HF_TOKEN: 'secret' };
      const r = await resolveHubModel(ref('org/private'), { env });
      expect(r.cached).toBe(false);
      expect(r.dir).toBe(join(work, 'cache-token', 'models--org--private', 'snapshots', 'c'.repeat(40)));
      expect(sameBytes(readFileSync(join(r.path, 'model.safetensors')), tinyFiles['model.safetensors'])).toBe(true);
      expect(hub.log.length).toBeGreaterThan(0);
      for (const l of hub.log) expect(l.auth, `${l.method} ${l.url}`).toBe('Bearer secret');
      expect(cdn.log.map((l) => `${l.method} ${l.url}`)).toEqual([`GET /lfs-objects/${sha}`]);
      expect(cdn.log[0].auth).toBeUndefined();
      const wrong = await resolveHubModel(ref('org/private'), { env: { ...env, HF_TOKEN: 'wrong', SPARROW_CACHE: join(work, 'cache-token2') } }).catch((e) => e);
      expect(wrong).toBeInstanceOf(HubError);
      expect(wrong.message).toMatch(/refused the token in HF_TOKEN/);
    } finally {
      hub.lfsBase = hub.url;
      await cdn.stop();
    }
  });

  it('leaves no truncated blob, resumes blobs/<etag>.incomplete on the next call; cached main is checked by the api sha', async () => {
    const cache = join(work, 'cache-resume');
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache };
    const sha = sha256(ggufBytes);
    hub.dropOnce.add(`/lfs-objects/${sha}`);
    hub.log = [];
    const e = await resolveHubModel(ref('org/quants:Q8_0'), { env, retries: 0 }).catch((x) => x);
    expect(e).toBeInstanceOf(HubError);
    expect(e.kind).toBe('network');
    expect(e.message).toMatch(/downloading tiny-Q8_0\.gguf failed: connection lost/);
    const repo = hubRepoDir('org/quants', env);
    expect(existsSync(join(repo, 'blobs', sha))).toBe(false);
    expect(existsSync(join(repo, 'refs', 'main'))).toBe(false);
    expect(walk(join(repo, 'snapshots'))).toEqual([]);
    const partSize = readFileSync(join(repo, 'blobs', `${sha}.incomplete`)).length;
    expect(partSize).toBeGreaterThan(0);
    expect(partSize).toBeLessThan(ggufBytes.length);

    const starts: number[] = [];
    const r = await resolveHubModel(ref('org/quants:Q8_0'), { env, progress: { start: (_f, _size, from) => starts.push(from) } });
    expect(r.path).toBe(join(repo, 'snapshots', 'c'.repeat(40), 'tiny-Q8_0.gguf'));
    expect(r.cached).toBe(false);
    expect(starts).toEqual([partSize]);
    expect(hub.log.at(-1)).toMatchObject({ method: 'GET', url: `/lfs-objects/${sha}`, range: `bytes=${partSize}-` });
    expect(sameBytes(readFileSync(r.path), ggufBytes)).toBe(true);
    expect(readlinkSync(r.path)).toBe(`../../blobs/${sha}`);
    expect(walk(join(repo, 'blobs'))).toEqual([sha]);

    // Offline: no request at all.
    hub.log = [];
    const c = await resolveHubModel(ref('org/quants:q8_0'), { env: { ...env, HF_HUB_OFFLINE: '1' } });
    expect(c).toMatchObject({ cached: true, path: r.path });
    expect(hub.log).toEqual([]);
    const off = await resolveHubModel(ref('org/tiny'), { env: { ...env, HF_HUB_OFFLINE: '1' } }).catch((x) => x);
    expect(off.message).toMatch(/org\/tiny is not in the cache .* HF_HUB_OFFLINE/);

    // Online, main unchanged: the file list only.
    const o = await resolveHubModel(ref('org/quants:q8_0'), { env });
    expect(o).toMatchObject({ cached: true, path: r.path });
    expect(hub.log.map((l) => `${l.method} ${l.url}`)).toEqual(['GET /api/models/org/quants/revision/main']);
  });

  it('main moved: a new snapshot and ref; a file whose ETag names a blob in the cache is linked, not fetched', async () => {
    const cache = join(work, 'cache-moved');
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache };
    const repo = hub.repos.get('org/quants')!;
    const r1 = await resolveHubModel(ref('org/quants:Q8_0'), { env });
    const next = 'd'.repeat(40);
    repo.commit = next;
    try {
      hub.log = [];
      const r2 = await resolveHubModel(ref('org/quants:Q8_0'), { env });
      expect(r2).toMatchObject({ commit: next, cached: true });
      expect(r2.path).not.toBe(r1.path);
      expect(hub.log.map((l) => `${l.method} ${l.url}`)).toEqual(['GET /api/models/org/quants/revision/main', `HEAD /org/quants/resolve/${next}/tiny-Q8_0.gguf`]);
      const dir = hubRepoDir('org/quants', env);
      expect(readFileSync(join(dir, 'refs', 'main'), 'utf8')).toBe(next);
      expect(readlinkSync(r2.path)).toBe(`../../blobs/${sha256(ggufBytes)}`);
      expect(existsSync(r1.path)).toBe(true);
      // A revision named by its commit needs no ref.
      const r3 = await resolveHubModel(ref(`org/quants@${next}/tiny-Q8_0.gguf`), { env: { ...env, HF_HUB_OFFLINE: '1' } });
      expect(r3.path).toBe(r2.path);
    } finally {
      repo.commit = undefined;
    }
  });

  it('uses a cache another tool filled (hub layout written by hand) without the network', async () => {
    const cache = join(work, 'cache-prefilled');
    const commit = 'e'.repeat(40);
    const files = { ...tinyFiles, 'sub/x.gguf': ggufBytes };
    prefill(cache, 'other/tiny', commit, files, new Set(['model.safetensors', 'sub/x.gguf']));
    const snap = join(hubRepoDir('other/tiny', { HF_HUB_CACHE: cache }), 'snapshots', commit);
    for (const env of [{ HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' }, { HF_HUB_CACHE: cache, HF_ENDPOINT: await deadEndpoint() }]) {
      const notes: string[] = [];
      const r = await resolveHubModel(ref('other/tiny'), { env, progress: { note: (m) => notes.push(m) } });
      expect(r).toMatchObject({ path: snap, commit, cached: true });
      expect(r.files.sort()).toEqual(Object.keys(tinyFiles).sort());
      const g = await resolveHubModel(ref('other/tiny/sub/x.gguf'), { env });
      expect(g.path).toBe(join(snap, 'sub', 'x.gguf'));
      expect(sameBytes(readFileSync(g.path), ggufBytes)).toBe(true);
      if (!env.HF_HUB_OFFLINE) expect(notes[0]).toMatch(/cannot reach the hub .*; using the cached other\/tiny/);
    }
    const lm = await loadModel('other/tiny', { maxContext: 64, hub: { env: { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' } } });
    try {
      const out = await lm.generate('Once upon a time', { maxTokens: 4, temperature: 0, ignoreEos: true }).result();
      expect(out.tokens.length).toBe(4);
    } finally {
      lm.dispose();
    }
  });

  it('checks LFS files against the SHA-256 the hub announces', async () => {
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(work, 'cache-sha') };
    hub.wrongEtag.add('tiny-Q4_K_M.gguf');
    try {
      const e = await resolveHubModel(ref('org/quants:Q4_K_M'), { env }).catch((x) => x);
      expect(e).toBeInstanceOf(HubError);
      expect(e.message).toMatch(/^org\/quants: tiny-Q4_K_M\.gguf is corrupt \(SHA-256 [0-9a-f]{64}, the hub says 0{64}\)/);
      expect(walk(hubRepoDir('org/quants', env))).toEqual([]);
    } finally {
      hub.wrongEtag.clear();
    }
    const r = await resolveHubModel(ref('org/quants:Q4_K_M'), { env });
    expect(r.path.endsWith('tiny-Q4_K_M.gguf')).toBe(true);
  });

  it('fetches sharded safetensors: the index, then each shard it names', async () => {
    const st = tinyFiles['model.safetensors'];
    const index = { metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', c: 'model-00001-of-00002.safetensors' } };
    hub.repos.set('org/sharded', {
      files: {
        'config.json': tinyFiles['config.json'], 'special_tokens_map.json': new TextEncoder().encode('{}'),
        'model.safetensors.index.json': new TextEncoder().encode(JSON.stringify(index)),
        'model-00001-of-00002.safetensors': st.subarray(0, 100), 'model-00002-of-00002.safetensors': st.subarray(100, 200), 'unrelated.bin': new Uint8Array(3),
      },
    });
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(work, 'cache-sharded') };
    const r = await resolveHubModel(ref('org/sharded'), { env });
    expect(r.files.sort()).toEqual(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json', 'special_tokens_map.json']);
    expect(walk(r.path).sort()).toEqual(r.files);
    expect(existsSync(join(r.path, 'unrelated.bin'))).toBe(false);
    const off = await resolveHubModel(ref('org/sharded'), { env: { ...env, HF_HUB_OFFLINE: '1' } });
    expect(off.files.sort()).toEqual(r.files);
  });

  it('an explicit file, a missing one, and a 404 from the resolve endpoint naming the file', async () => {
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(work, 'cache-file') };
    const r = await resolveHubModel(ref('org/quants/tiny-Q4_0.gguf'), { env });
    expect(r.path.endsWith('tiny-Q4_0.gguf')).toBe(true);
    const e = await resolveHubModel(ref('org/quants/nope.gguf'), { env }).catch((x) => x);
    expect(e.message).toMatch(/^org\/quants: no file nope\.gguf in the repo \(its \.gguf files: tiny-Q4_0\.gguf, tiny-Q4_K_M\.gguf, tiny-Q8_0\.gguf\)$/);
    hub.repos.set('org/broken', { files: { 'm.gguf': ggufBytes }, lfs: new Set(['m.gguf']), missing: new Set(['m.gguf']) });
    const b = await resolveHubModel(ref('org/broken'), { env }).catch((x) => x);
    expect(b).toBeInstanceOf(HubError);
    expect(b.kind).toBe('not-found');
    expect(b.message).toBe('org/broken: m.gguf not found in the repo (HTTP 404)');
  });
});

describe("loadModel('org/name')", () => {
  it('resolves a hub name through HF_ENDPOINT into the hub cache', async () => {
    const keys = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'SPARROW_CACHE'] as const;
    const saved = keys.map((k) => process.env[k]);
    const cache = join(work, 'cache-library');
    Object.assign(process.env, { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '', HF_TOKEN: '' });
    try {
      const lm = await loadModel('org/tiny', { maxContext: 64 });
      try {
        const out = await lm.generate('Once upon a time', { maxTokens: 4, temperature: 0, ignoreEos: true }).result();
        expect(out.tokens.length).toBe(4);
      } finally {
        lm.dispose();
      }
      expect(walk(snapshotOf(cache, 'org/tiny')).sort()).toEqual(Object.keys(tinyFiles).sort());
      expect(await resolveModelSource('org/tiny')).toBe(snapshotOf(cache, 'org/tiny'));
      expect(await resolveModelSource(ROOT)).toBe(ROOT);
      expect(await resolveModelSource('https://x/y.gguf')).toBe('https://x/y.gguf');
      expect(await resolveModelSource('/no/such/model')).toBeUndefined();
    } finally {
      keys.forEach((k, i) => (saved[i] === undefined ? delete process.env[k] : (process.env[k] = saved[i])));
    }
  });

  it('without a file system (Cloudflare Workers), a hub name fails saying to pass a URL', async () => {
    const had = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
    Object.defineProperty(globalThis, 'navigator', { value: { userAgent: 'Cloudflare-Workers' }, configurable: true });
    try {
      const e = await loadModel('org/tiny', { hub: { env: { HF_ENDPOINT: 'https://hub.example' } } }).catch((x) => x);
      expect(e).toBeInstanceOf(HubError);
      expect(e.message).toMatch(/^org\/tiny: loading a Hugging Face hub name needs a file system .*pass the file's URL instead, e\.g\. https:\/\/hub\.example\/org\/tiny\/resolve\/main\/<file>$/);
    } finally {
      if (had) Object.defineProperty(globalThis, 'navigator', had);
      else delete (globalThis as any).navigator;
    }
  });
});
