// Models on the Hugging Face hub by name: `org/name`, `org/name@revision`, `org/name/file.gguf`
// (optionally `…/file.gguf@revision` or `org/name@revision/file.gguf`) and `org/name:QUANT` (the one
// .gguf whose name contains QUANT, case-insensitive), downloaded into the hub's own cache and opened
// from there like any local checkpoint. resolveModelSource is the one place that decides what a
// model string names (URL, local path, hub name); loadModel, the CLI and the local server use it.
//
// Hub: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN sent as "Authorization: Bearer" to
// that origin only (redirects to another host, as the hub does for LFS files, go without it). The
// file list and the commit come from /api/models/<repo>/revision/<rev> (siblings[].rfilename, sha);
// each file's metadata from a HEAD of /<repo>/resolve/<commit>/<file> (ETag, or X-Linked-Etag and
// Location for LFS files), its bytes from the resolve URL or the Location it redirects to.
//
// Cache, the layout huggingface_hub and transformers use, so files fetched by either are reused and
// the other way round: HF_HUB_CACHE, else SPARROW_CACHE (an alias), else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. Per repo, models--<org>--<name>/:
//   blobs/<etag>               a file's bytes, named by its ETag without quotes and W/ (the SHA-256
//                              for LFS files, the git blob SHA-1 otherwise)
//   blobs/<etag>.incomplete    a download in progress, resumed with a Range request
//   snapshots/<commit>/<path>  a relative symlink to ../../blobs/<etag> (a copy where symlinks fail)
//   refs/<revision>            the commit the revision pointed to when last resolved
// A blob is renamed from .incomplete only when complete, after its SHA-256 is checked (LFS files).
// Online, the api's sha says which snapshot is current; files already in that snapshot are not
// fetched again and a file whose ETag names a blob already present is linked without a download.
// Offline (HF_HUB_OFFLINE=1, or the hub unreachable) refs/<revision> leads to the snapshot, which
// is used when it holds the files the pick needs.
//
// Node, Bun and Deno: node:fs, node:crypto (loaded on first use, so that bundles for Workers and
// browsers carry no static node: import) and fetch. Elsewhere a hub name fails with an error that
// says to pass a URL.

import type * as NodeFs from 'node:fs';
import type * as NodeFsPromises from 'node:fs/promises';
import type * as NodeCrypto from 'node:crypto';
import type * as NodeOs from 'node:os';
import { isUrl } from './source';

/** What went wrong: the repo, revision or file is missing; access refused; the network; the repo's contents. */
export type HubErrorKind = 'not-found' | 'auth' | 'network' | 'weights' | 'ambiguous' | 'other';

export class HubError extends Error {
  constructor(
    message: string,
    readonly kind: HubErrorKind = 'other',
  ) {
    super(message);
    this.name = 'HubError';
  }
}

export interface HubRef {
  /** `org/name`. */
  repo: string;
  /** Branch, tag or commit; `main` unless given. */
  revision: string;
  /** A .gguf file of the repo, by its path in the repo. */
  file?: string;
  /** A quantization tag (Q4_K_M, Q8_0, …) picking the one .gguf whose name contains it. */
  quant?: string;
}

type Env = Record<string, string | undefined>;

const NAME = '[A-Za-z0-9](?:[\\w.-]*[A-Za-z0-9_])?';
const REF_RE = new RegExp(`^(${NAME})/(${NAME})(?:@([^\\s:@]+?))?(?:/([^\\s:@]+?\\.gguf))?(?:@([^\\s:@/]+))?(?::([\\w.-]+))?$`, 'i');
const COMMIT_RE = /^[0-9a-f]{40}$/;

const badSegments = (p: string) => p.split('/').some((s) => s === '' || s === '.' || s === '..');

/**
 * A hub reference, or null when `s` does not have that form (paths with a leading / or ., URLs,
 * Windows drive paths, more than two segments without a trailing .gguf file, …).
 */
export function parseHubRef(s: string): HubRef | null {
  const m = REF_RE.exec(s.trim());
  if (!m) return null;
  const [, org, name, revA, file, revB, quant] = m;
  const revision = revA ?? revB ?? 'main';
  if (badSegments(revision) || (revA && revB) || (file && quant)) return null;
  if (file && badSegments(file)) return null;
  return { repo: `${org}/${name}`, revision, file, quant };
}

function processEnv(): Env {
  return ((globalThis as any).process?.env as Env | undefined) ?? {};
}

export function hubEndpoint(env: Env = processEnv()): string {
  return (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
}

/** `parts` joined with /, without doubled separators. */
function pjoin(...parts: string[]): string {
  const [first, ...rest] = parts;
  const head = first.replace(/[\\/]+$/, '');
  const tail = rest.map((p) => p.replace(/^[\\/]+|[\\/]+$/g, '')).filter(Boolean);
  return [head, ...tail].join('/') || '/';
}

const parentOf = (p: string) => p.replace(/[\\/]+[^\\/]*$/, '') || '/';

/** The hub cache: HF_HUB_CACHE, SPARROW_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. */
export function hubCacheDir(env: Env = processEnv()): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.SPARROW_CACHE) return env.SPARROW_CACHE;
  if (env.HF_HOME) return pjoin(env.HF_HOME, 'hub');
  if (env.XDG_CACHE_HOME) return pjoin(env.XDG_CACHE_HOME, 'huggingface', 'hub');
  const real = processEnv();
  const home = env.HOME || env.USERPROFILE || real.HOME || real.USERPROFILE || nodeMods?.os.homedir() || '.';
  return pjoin(home, '.cache', 'huggingface', 'hub');
}

/** A repo's directory in the cache: <cache>/models--<org>--<name>. */
export function hubRepoDir(repo: string, env?: Env): string {
  return pjoin(hubCacheDir(env), `models--${repo.split('/').join('--')}`);
}

export interface HubProgress {
  /** A download of `file` of `repo` starts: `size` bytes in all (undefined when unknown), `from` of them already in blobs/<etag>.incomplete. */
  start?(file: string, size: number | undefined, from: number, repo: string): void;
  /** Bytes of `file` on disk so far. */
  update?(file: string, done: number, size: number | undefined): void;
  /** The file is complete in the cache. */
  done?(file: string, size: number): void;
  /** Anything else worth a line (a resume after a dropped connection, the cache used while the hub is unreachable, …). */
  note?(message: string): void;
}

export interface HubOptions {
  env?: Env;
  progress?: HubProgress;
  /** Retries of one file after a network failure, each resuming where the last stopped (default 3). */
  retries?: number;
  /** Milliseconds without a byte before a download counts as stalled and is retried (default 60 000). */
  stallMs?: number;
  /** Milliseconds the file list and each file's metadata may take (default HF_HUB_ETAG_TIMEOUT seconds, else 10 000). */
  metaTimeoutMs?: number;
  /** The fetch to use (tests). */
  fetch?: typeof fetch;
}

export interface HubResolved {
  /** What to open: the snapshot directory (safetensors) or the .gguf file in it. */
  path: string;
  /** The snapshot directory, <cache>/models--<org>--<name>/snapshots/<commit>. */
  dir: string;
  /** The commit the revision resolved to. */
  commit: string;
  /** Files of the pick, by their names in the repo. */
  files: string[];
  /** Whether nothing was downloaded (every file was in the cache). */
  cached: boolean;
}

/** Side files taken along with safetensors weights, when the repo has them. */
export const HUB_SIDE_FILES = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'chat_template.jinja', 'chat_template.json',
];

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

function encodePath(p: string): string {
  return p.split('/').map(encodeURIComponent).join('/');
}

function describe(ref: HubRef): string {
  return `${ref.repo}${ref.revision === 'main' ? '' : '@' + ref.revision}`;
}

const truthy = (v: string | undefined) => /^(1|true|yes|on)$/i.test(v ?? '');

// ---------------------------------------------------------------------------------------------
// node: modules, loaded on first use

interface NodeMods {
  fs: typeof NodeFs;
  fsp: typeof NodeFsPromises;
  crypto: typeof NodeCrypto;
  os: typeof NodeOs;
}

let nodeMods: NodeMods | undefined;

async function node(): Promise<NodeMods> {
  if (!nodeMods) {
    const [fs, fsp, crypto, os] = await Promise.all([import('node:fs'), import('node:fs/promises'), import('node:crypto'), import('node:os')]);
    nodeMods = { fs, fsp, crypto, os };
  }
  return nodeMods;
}

/** Node, Bun and Deno have a file system for the cache; browsers and Cloudflare Workers do not. */
export function hasFileSystem(): boolean {
  const g = globalThis as any;
  if (g.navigator?.userAgent === 'Cloudflare-Workers') return false;
  return typeof g.Deno !== 'undefined' || !!g.process?.versions?.bun || !!g.process?.versions?.node;
}

// ---------------------------------------------------------------------------------------------
// The cache

/** One repo's directory in the hub cache. */
class RepoCache {
  constructor(
    readonly dir: string,
    private readonly m: NodeMods,
  ) {}

  refPath(revision: string): string {
    return pjoin(this.dir, 'refs', revision);
  }

  /** The commit a revision names: the revision itself when it is a commit hash, else refs/<revision>. */
  commitOf(revision: string): string | undefined {
    if (COMMIT_RE.test(revision)) return revision;
    try {
      const c = this.m.fs.readFileSync(this.refPath(revision), 'utf8').trim();
      return c && !badSegments(c) && !c.includes('\\') ? c : undefined;
    } catch {
      return undefined;
    }
  }

  writeRef(revision: string, commit: string): void {
    if (revision === commit) return;
    const p = this.refPath(revision);
    try {
      if (this.m.fs.readFileSync(p, 'utf8').trim() === commit) return;
    } catch {
      // not written yet
    }
    this.m.fs.mkdirSync(parentOf(p), { recursive: true });
    const tmp = `${p}.${(globalThis as any).process?.pid ?? 0}.tmp`;
    this.m.fs.writeFileSync(tmp, commit);
    this.m.fs.renameSync(tmp, p);
  }

  snapshot(commit: string): string {
    return pjoin(this.dir, 'snapshots', commit);
  }

  blob(etag: string): string {
    return pjoin(this.dir, 'blobs', etag);
  }

  /** Whether the snapshot has `file` (a link whose blob is gone does not count). */
  has(commit: string, file: string): boolean {
    return this.m.fs.existsSync(pjoin(this.snapshot(commit), file));
  }

  /** Points snapshots/<commit>/<file> at blobs/<etag>: a relative symlink, else a copy. */
  link(commit: string, file: string, etag: string): void {
    const { fs } = this.m;
    const pointer = pjoin(this.snapshot(commit), file);
    fs.mkdirSync(parentOf(pointer), { recursive: true });
    try {
      fs.lstatSync(pointer);
      fs.unlinkSync(pointer);
    } catch {
      // nothing there
    }
    const target = `${'../'.repeat(file.split('/').length + 1)}blobs/${etag}`;
    try {
      fs.symlinkSync(target, pointer);
    } catch (e) {
      if ((e as { code?: string }).code === 'EEXIST' && fs.existsSync(pointer)) return;
      fs.copyFileSync(this.blob(etag), pointer);
    }
  }

  /** The files of a snapshot, relative to it, links followed (broken ones left out). */
  list(commit: string): string[] {
    const { fs } = this.m;
    const out: string[] = [];
    const walk = (dir: string, pre: string) => {
      let names: string[];
      try {
        names = fs.readdirSync(dir);
      } catch {
        return;
      }
      for (const n of names) {
        let st: NodeFs.Stats;
        try {
          st = fs.statSync(pjoin(dir, n));
        } catch {
          continue;
        }
        if (st.isDirectory()) walk(pjoin(dir, n), `${pre}${n}/`);
        else out.push(`${pre}${n}`);
      }
    };
    walk(this.snapshot(commit), '');
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// The hub

function networkMessage(e: unknown): string {
  const err = e as { cause?: { code?: string; message?: string }; code?: string; message?: string; name?: string };
  const code = err?.cause?.code ?? err?.code;
  const detail = err?.cause?.message ?? err?.message ?? String(e);
  return code && !detail.includes(code) ? `${code}: ${detail}` : detail;
}

/** An ETag as a blob name: quotes and W/ dropped. */
function etagName(v: string | null): string | undefined {
  if (!v) return undefined;
  const t = v.trim().replace(/^W\//i, '').replace(/^"(.*)"$/, '$1');
  return /^[\w.-]+$/.test(t) && !/^\.+$/.test(t) ? t : undefined;
}

/** What a HEAD of a file's resolve URL tells. */
interface FileMeta {
  etag: string;
  size?: number;
  /** Where the bytes are: the Location of an LFS redirect, else the resolve URL. */
  url: string;
}

class Hub {
  readonly endpoint: string;
  private readonly origin: string;
  private readonly token?: string;
  private readonly fetch: typeof fetch;
  private readonly metaMs: number;

  constructor(
    readonly ref: HubRef,
    private readonly o: HubOptions,
    private readonly cache: RepoCache,
    private readonly m: NodeMods,
  ) {
    const env = o.env ?? processEnv();
    this.endpoint = hubEndpoint(env);
    try {
      this.origin = new URL(this.endpoint).origin;
    } catch {
      throw new HubError(`HF_ENDPOINT is not a URL: ${this.endpoint}`);
    }
    this.token = env.HF_TOKEN || undefined;
    this.fetch = o.fetch ?? fetch;
    const t = Number(env.HF_HUB_ETAG_TIMEOUT);
    this.metaMs = o.metaTimeoutMs ?? (t > 0 ? t * 1000 : 10_000);
  }

  private headersFor(u: string, headers: Record<string, string>): Record<string, string> {
    const h: Record<string, string> = { ...headers };
    if (this.token && new URL(u).origin === this.origin) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  private async send(u: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetch(u, init);
    } catch (e) {
      const name = (e as Error)?.name;
      if (name === 'AbortError') throw e;
      if (name === 'TimeoutError') throw new HubError(`no answer from the hub at ${new URL(u).origin} in ${this.metaMs / 1000} s`, 'network');
      throw new HubError(`cannot reach the hub at ${new URL(u).origin} (${networkMessage(e)})`, 'network');
    }
  }

  /** GET with redirects followed by hand, so that the token goes to the hub's origin only. */
  async get(url: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    let u = url;
    for (let hop = 0; hop < 10; hop++) {
      const res = await this.send(u, { headers: this.headersFor(u, headers), redirect: 'manual', signal });
      const loc = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && loc) {
        await res.body?.cancel().catch(() => {});
        u = new URL(loc, u).toString();
        continue;
      }
      return res;
    }
    throw new HubError(`too many redirects from ${url}`, 'network');
  }

  /** Turns a failed response into the error a user can act on. */
  async fail(res: Response, what: string): Promise<never> {
    let body = '';
    try {
      body = (await res.text()).slice(0, 300);
    } catch {
      // the status says enough
    }
    const hubMsg = (() => {
      try {
        const j = JSON.parse(body);
        return typeof j?.error === 'string' ? j.error : '';
      } catch {
        return '';
      }
    })();
    const name = describe(this.ref);
    const errCode = res.headers.get('x-error-code') ?? '';
    // The hub answers 401 RepoNotFound for a repo that does not exist or is private to others.
    if (errCode === 'RepoNotFound' || (res.status === 404 && !errCode && what === 'the file list')) {
      const priv = res.status === 401 ? (this.token ? '; if it is private, the token in HF_TOKEN has no access to it' : '; if it is private, set HF_TOKEN') : '';
      throw new HubError(`${name}: no such model repo on the hub (${this.endpoint}, HTTP ${res.status}${priv})`, 'not-found');
    }
    if (res.status === 401 || res.status === 403 || errCode === 'GatedRepo') {
      const gated = errCode === 'GatedRepo' || /\bgated\b/i.test(hubMsg);
      const why = gated ? 'is gated: accept its terms on the hub, then set HF_TOKEN to a token of that account' : this.token
        ? 'refused the token in HF_TOKEN (is it valid, and does it have access to this repo?)'
        : 'needs authentication: set HF_TOKEN to a Hugging Face access token';
      throw new HubError(`${name} ${why} (HTTP ${res.status} for ${what})`, 'auth');
    }
    if (res.status === 404) {
      if (errCode === 'RevisionNotFound' || /revision/i.test(hubMsg)) throw new HubError(`${name}: revision ${this.ref.revision} not found on the hub (${this.endpoint})`, 'not-found');
      if (errCode === 'EntryNotFound' || what !== 'the file list') throw new HubError(`${name}: ${what} not found in the repo (HTTP 404)`, 'not-found');
    }
    const kind = res.status >= 500 || res.status === 429 ? 'network' : 'other';
    throw new HubError(`${name}: the hub answered HTTP ${res.status} for ${what}${hubMsg ? `: ${hubMsg}` : ''}`, kind);
  }

  /** The repo's files at the revision, and the commit the revision points to. */
  async listFiles(): Promise<{ files: string[]; sha?: string }> {
    const url = `${this.endpoint}/api/models/${encodePath(this.ref.repo)}/revision/${encodeURIComponent(this.ref.revision)}`;
    const res = await this.get(url, { accept: 'application/json' }, AbortSignal.timeout(this.metaMs));
    if (!res.ok) return this.fail(res, 'the file list');
    let j: any;
    try {
      j = await res.json();
    } catch (e) {
      throw new HubError(`${describe(this.ref)}: the hub's file list is not JSON (${(e as Error).message})`, 'other');
    }
    const sib = j?.siblings;
    if (!Array.isArray(sib)) throw new HubError(`${describe(this.ref)}: the hub's file list has no siblings[]`);
    const files = sib.map((s: any) => s?.rfilename).filter((f: unknown): f is string => typeof f === 'string');
    const sha = typeof j?.sha === 'string' && /^[\w.-]+$/.test(j.sha) ? j.sha : undefined;
    return { files, sha };
  }

  fileUrl(commit: string, file: string): string {
    return `${this.endpoint}/${encodePath(this.ref.repo)}/resolve/${encodeURIComponent(commit)}/${encodePath(file)}`;
  }

  /**
   * HEAD of a file's resolve URL: relative redirects (a renamed repo) are followed, a redirect to
   * another host (LFS storage) is where the bytes are.
   */
  async head(commit: string, file: string): Promise<FileMeta> {
    let u = this.fileUrl(commit, file);
    for (let hop = 0; hop < 10; hop++) {
      const res = await this.send(u, { method: 'HEAD', headers: this.headersFor(u, { 'accept-encoding': 'identity' }), redirect: 'manual', signal: AbortSignal.timeout(this.metaMs) });
      const loc = res.headers.get('location');
      const redirect = res.status >= 300 && res.status < 400 && !!loc;
      if (redirect && !/^[a-z][a-z0-9+.-]*:/i.test(loc!)) {
        u = new URL(loc!, u).toString();
        continue;
      }
      if (!redirect && !res.ok) return this.fail(res, file);
      const etag = etagName(res.headers.get('x-linked-etag')) ?? etagName(res.headers.get('etag'));
      if (!etag) throw new HubError(`${describe(this.ref)}: the hub sent no ETag for ${file} (HTTP ${res.status}); is HF_ENDPOINT (${this.endpoint}) a Hugging Face hub?`);
      const len = res.headers.get('x-linked-size') ?? (redirect ? null : res.headers.get('content-length'));
      return { etag, size: len !== null && /^\d+$/.test(len) ? Number(len) : undefined, url: redirect ? new URL(loc!, u).toString() : u };
    }
    throw new HubError(`too many redirects from ${this.fileUrl(commit, file)}`, 'network');
  }

  /**
   * Puts `file` of `commit` into the snapshot: nothing to do when it is there, a link when its blob
   * is (another revision or another tool fetched it), else a download. True when bytes were fetched.
   */
  async fetchFile(commit: string, file: string): Promise<boolean> {
    if (this.cache.has(commit, file)) return false;
    const meta = await this.head(commit, file);
    const blob = this.cache.blob(meta.etag);
    let fetched = false;
    if (!this.m.fs.existsSync(blob)) {
      await this.download(file, meta, blob);
      fetched = true;
    }
    this.cache.link(commit, file, meta.etag);
    return fetched;
  }

  /** Downloads one blob (resuming its .incomplete), retrying network failures. */
  private async download(file: string, meta: FileMeta, blob: string): Promise<void> {
    const { fs } = this.m;
    fs.mkdirSync(parentOf(blob), { recursive: true });
    const part = `${blob}.incomplete`;
    const retries = this.o.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.downloadOnce(file, meta, blob, part, attempt > 0);
        return;
      } catch (e) {
        if (!(e instanceof RetryableError) || attempt >= retries) {
          if (e instanceof RetryableError) throw new HubError(`${describe(this.ref)}: downloading ${file} failed: ${e.message}`, 'network');
          throw e;
        }
        const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
        this.o.progress?.note?.(`${file}: ${e.message}; resuming at byte ${have} (retry ${attempt + 1} of ${retries})`);
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 4000)));
      }
    }
  }

  /** Checks a finished .incomplete against the SHA-256 an LFS file's ETag is; a mismatch removes it. */
  private async verify(file: string, part: string, etag: string): Promise<void> {
    if (!/^[0-9a-f]{64}$/i.test(etag)) return;
    const got = await sha256File(this.m, part);
    if (got === etag.toLowerCase()) return;
    this.m.fs.unlinkSync(part);
    throw new HubError(`${describe(this.ref)}: ${file} is corrupt (SHA-256 ${got}, the hub says ${etag}); removed, run again to download it anew`, 'network');
  }

  private async finish(file: string, part: string, blob: string, etag: string, size: number): Promise<void> {
    await this.verify(file, part, etag);
    this.m.fs.renameSync(part, blob);
    this.o.progress?.done?.(file, size);
  }

  private async downloadOnce(file: string, meta: FileMeta, blob: string, part: string, retry: boolean): Promise<void> {
    const { fs } = this.m;
    let have = fs.existsSync(part) ? fs.statSync(part).size : 0;
    if (have > 0 && meta.size !== undefined && have === meta.size) {
      await this.finish(file, part, blob, meta.etag, have);
      return;
    }
    const ctrl = new AbortController();
    const stallMs = this.o.stallMs ?? 60_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => ctrl.abort(), stallMs);
    };
    arm();
    let res: Response;
    try {
      res = await this.get(meta.url, have > 0 ? { range: `bytes=${have}-`, 'accept-encoding': 'identity' } : { 'accept-encoding': 'identity' }, ctrl.signal);
    } catch (e) {
      clearTimeout(timer);
      if (e instanceof HubError && e.kind === 'network' && retry) throw new RetryableError(e.message);
      if ((e as Error)?.name === 'AbortError') throw new RetryableError(`no answer in ${stallMs / 1000} s`);
      throw e;
    }
    let total: number | undefined;
    if (res.status === 416 && have > 0) {
      // The .incomplete may already hold the whole file.
      const m = /\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      await res.body?.cancel().catch(() => {});
      clearTimeout(timer);
      if (m && Number(m[1]) === have) {
        await this.finish(file, part, blob, meta.etag, have);
        return;
      }
      fs.unlinkSync(part);
      throw new RetryableError('the partial download does not match the file on the hub; starting again');
    }
    if (!res.ok) {
      clearTimeout(timer);
      if (res.status >= 500 || res.status === 429) {
        await res.body?.cancel().catch(() => {});
        throw new RetryableError(`HTTP ${res.status}`);
      }
      return this.fail(res, file);
    }
    let append = false;
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have) {
        await res.body?.cancel().catch(() => {});
        clearTimeout(timer);
        fs.unlinkSync(part);
        throw new RetryableError('the hub answered another byte range than asked for; starting again');
      }
      append = true;
      total = m[3] === '*' ? undefined : Number(m[3]);
    } else {
      have = 0;
      const len = res.headers.get('content-length');
      total = len !== null && /^\d+$/.test(len) ? Number(len) : meta.size;
    }
    this.o.progress?.start?.(file, total, have, this.ref.repo);
    const fh = await this.m.fsp.open(part, append ? 'a' : 'w');
    let done = have;
    try {
      if (!res.body) throw new RetryableError('empty response body');
      const reader = res.body.getReader();
      for (;;) {
        let r: Awaited<ReturnType<typeof reader.read>>;
        try {
          r = await reader.read();
        } catch (e) {
          throw new RetryableError(ctrl.signal.aborted ? `stalled for ${stallMs / 1000} s` : `connection lost (${networkMessage(e)})`);
        }
        if (r.done) break;
        arm();
        let off = 0;
        while (off < r.value.length) {
          const { bytesWritten } = await fh.write(r.value, off, r.value.length - off);
          off += bytesWritten;
        }
        done += r.value.length;
        this.o.progress?.update?.(file, done, total);
      }
    } finally {
      clearTimeout(timer);
      await fh.close();
    }
    if (total !== undefined && done !== total) throw new RetryableError(`connection closed at byte ${done} of ${total}`);
    await this.finish(file, part, blob, meta.etag, done);
  }
}

class RetryableError extends Error {}

async function sha256File(m: NodeMods, path: string): Promise<string> {
  const h = m.crypto.createHash('sha256');
  const fh = await m.fsp.open(path, 'r');
  try {
    const buf = new Uint8Array(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** A relative path that stays inside the snapshot directory. */
function isSafeRepoPath(p: string): boolean {
  return p.length > 0 && !p.startsWith('/') && !p.includes('\\') && !badSegments(p);
}

/** Which files of the repo to fetch, and which of them to open. */
export function pickFiles(ref: HubRef, allFiles: string[]): { want: string[]; open: string; index?: string } {
  const name = describe(ref);
  const files = allFiles.filter(isSafeRepoPath);
  const ggufs = files.filter((f) => /\.gguf$/i.test(f)).sort();
  if (ref.file) {
    if (!files.includes(ref.file)) {
      throw new HubError(`${name}: no file ${ref.file} in the repo${ggufs.length ? ` (its .gguf files: ${ggufs.join(', ')})` : ''}`, 'not-found');
    }
    return { want: [ref.file], open: ref.file };
  }
  if (ref.quant) {
    const q = ref.quant.toLowerCase();
    let hits = ggufs.filter((f) => f.split('/').pop()!.toLowerCase().includes(q));
    if (hits.length > 1) {
      // Prefer the files whose name ends with the tag (model-Q4_K.gguf over model-Q4_K_M.gguf).
      const exact = hits.filter((f) => f.toLowerCase().endsWith(`${q}.gguf`) && !/[a-z0-9]/i.test(f[f.length - 6 - q.length] ?? '-'));
      if (exact.length === 1) hits = exact;
    }
    if (hits.length === 0) {
      throw new HubError(`${name}: no .gguf file matches ${ref.quant}${ggufs.length ? ` (its .gguf files: ${ggufs.join(', ')})` : ' (the repo has no .gguf files)'}`, 'not-found');
    }
    if (hits.length > 1) throw new HubError(`${name}: ${ref.quant} matches several .gguf files: ${hits.join(', ')}; name one as ${ref.repo}/<file>.gguf`, 'ambiguous');
    return { want: [hits[0]], open: hits[0] };
  }
  const side = HUB_SIDE_FILES.filter((f) => files.includes(f));
  if (files.includes(INDEX)) return { want: [...side, INDEX], open: '.', index: INDEX };
  if (files.includes(SINGLE)) return { want: [...side, SINGLE], open: '.' };
  if (ggufs.length === 1) return { want: [ggufs[0]], open: ggufs[0] };
  if (ggufs.length > 1) throw new HubError(`${name} holds several .gguf files: ${ggufs.join(', ')}; pick one as ${ref.repo}:<quant> or ${ref.repo}/<file>.gguf`, 'ambiguous');
  const shown = files.length > 20 ? `${files.slice(0, 20).join(', ')}, … (${files.length} files)` : files.join(', ');
  throw new HubError(`${name} has no weights sparrow can load (${SINGLE}, ${INDEX} or a .gguf file); it has: ${shown || 'no files'}`, 'weights');
}
/** The shard file names of a model.safetensors.index.json. */
export function indexShards(text: string, where: string): string[] {
  let j: any;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new HubError(`${where}: ${INDEX} is not JSON (${(e as Error).message})`);
  }
  const map = j?.weight_map;
  if (!map || typeof map !== 'object') throw new HubError(`${where}: ${INDEX} has no weight_map`);
  const shards = [...new Set(Object.values(map).filter((v): v is string => typeof v === 'string'))].sort();
  for (const s of shards) if (!isSafeRepoPath(s)) throw new HubError(`${where}: ${INDEX} names a shard outside the repo: ${s}`, 'weights');
  return shards;
}

/** The pick of `ref` from a snapshot already in the cache, when it holds every file the pick needs. */
function fromCache(ref: HubRef, cache: RepoCache, m: NodeMods): HubResolved | undefined {
  const commit = cache.commitOf(ref.revision);
  if (!commit) return undefined;
  const dir = cache.snapshot(commit);
  let pick: ReturnType<typeof pickFiles>;
  try {
    pick = pickFiles(ref, cache.list(commit));
  } catch (e) {
    if (e instanceof HubError && e.kind === 'ambiguous') throw e;
    return undefined;
  }
  const files = [...pick.want];
  if (pick.index) {
    try {
      files.push(...indexShards(m.fs.readFileSync(pjoin(dir, pick.index), 'utf8'), describe(ref)));
    } catch {
      return undefined;
    }
  }
  if (!files.every((f) => cache.has(commit, f))) return undefined;
  return { path: pick.open === '.' ? dir : pjoin(dir, pick.open), dir, commit, files, cached: true };
}

/**
 * Resolves a hub reference to a local path in the hub cache, downloading what the cache lacks.
 * Online, the revision's current commit comes from the hub and only files missing from its
 * snapshot are fetched; with HF_HUB_OFFLINE=1, or when the hub cannot be reached, the snapshot
 * refs/<revision> names is used.
 */
export async function resolveHubModel(ref: HubRef, o: HubOptions = {}): Promise<HubResolved> {
  const env = o.env ?? processEnv();
  const m = await node();
  const cache = new RepoCache(hubRepoDir(ref.repo, env), m);
  if (truthy(env.HF_HUB_OFFLINE)) {
    const r = fromCache(ref, cache, m);
    if (r) return r;
    throw new HubError(`${describe(ref)} is not in the cache (${cache.dir}) and HF_HUB_OFFLINE forbids downloading it`, 'network');
  }
  const hub = new Hub(ref, o, cache, m);
  let listing: { files: string[]; sha?: string };
  try {
    listing = await hub.listFiles();
  } catch (e) {
    if (!(e instanceof HubError) || e.kind !== 'network') throw e;
    const r = fromCache(ref, cache, m);
    if (r) {
      o.progress?.note?.(`${e.message}; using the cached ${describe(ref)} (commit ${r.commit})`);
      return r;
    }
    throw new HubError(`${e.message}; ${describe(ref)} is not in the cache (${cache.dir})`, 'network');
  }
  const commit = listing.sha ?? (COMMIT_RE.test(ref.revision) ? ref.revision : undefined);
  if (!commit) throw new HubError(`${describe(ref)}: the hub's file list names no commit (sha); is HF_ENDPOINT (${hub.endpoint}) a Hugging Face hub?`);
  const pick = pickFiles(ref, listing.files);
  const dir = cache.snapshot(commit);
  const want = [...pick.want];
  let fetched = false;
  for (const f of pick.want) fetched = (await hub.fetchFile(commit, f)) || fetched;
  if (pick.index) {
    const shards = indexShards(m.fs.readFileSync(pjoin(dir, pick.index), 'utf8'), describe(ref));
    const missing = shards.filter((s) => !listing.files.includes(s));
    if (missing.length) throw new HubError(`${describe(ref)}: ${pick.index} names shards the repo lacks: ${missing.join(', ')}`, 'weights');
    for (const s of shards) {
      fetched = (await hub.fetchFile(commit, s)) || fetched;
      want.push(s);
    }
  }
  // The ref moves only once its snapshot holds the whole pick, so that offline use finds it complete.
  cache.writeRef(ref.revision, commit);
  return { path: pick.open === '.' ? dir : pjoin(dir, pick.open), dir, commit, files: want, cached: !fetched };
}

/**
 * What a model string names, as something openCheckpoint opens: an http(s) URL or an existing
 * local path as it is; else a hub name (see parseHubRef) as the local path of its cached download,
 * fetched if need be. Undefined when `s` is none of these. On runtimes without a file system
 * (browsers, Cloudflare Workers) a hub name is a HubError saying to pass a URL.
 */
export async function resolveModelSource(s: string, o: HubOptions = {}): Promise<string | undefined> {
  if (isUrl(s)) return s;
  const ref = parseHubRef(s);
  if (!hasFileSystem()) {
    if (!ref) return s;
    const at = `${hubEndpoint(o.env ?? processEnv())}/${ref.repo}/resolve/${ref.revision}/${ref.file ?? '<file>'}`;
    throw new HubError(`${s}: loading a Hugging Face hub name needs a file system for the cache (Node, Deno, Bun), which this runtime lacks; pass the file's URL instead, e.g. ${at}`, 'other');
  }
  const m = await node();
  if (m.fs.existsSync(s)) return s;
  if (!ref) return undefined;
  return (await resolveHubModel(ref, o)).path;
}
