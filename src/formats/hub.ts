// Models on the Hugging Face hub by name: `org/name`, `org/name@revision`, `org/name/file.gguf`
// (optionally `…/file.gguf@revision` or `org/name@revision/file.gguf`) and `org/name:QUANT` (the one
// .gguf whose name contains QUANT, case-insensitive), downloaded into a local cache and opened from
// there like any local checkpoint.
//
// Hub: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN sent as "Authorization: Bearer" to
// that origin only (redirects to another host, as the hub does for LFS files, go without it). The
// file list comes from /api/models/<repo>/revision/<rev> (siblings[].rfilename), files from
// /<repo>/resolve/<rev>/<file>.
//
// Cache: SPARROW_CACHE, else $XDG_CACHE_HOME/sparrow, else ~/.cache/sparrow; one directory per
// repo and revision, <cache>/hub/<org>/<name>/<revision>/, holding the files under their hub names.
// A file is written to <name>.part and renamed once complete; a .part left by an interrupted run is
// resumed with a Range request. Once every file of a pick is in place a marker under .sparrow/
// records it, and later runs use the cache without contacting the hub (HF_HUB_OFFLINE=1 forbids
// the network altogether).
//
// Node, Bun and Deno: node:fs, node:os, node:path and fetch.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

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

const NAME = '[A-Za-z0-9](?:[\\w.-]*[A-Za-z0-9_])?';
const REF_RE = new RegExp(`^(${NAME})/(${NAME})(?:@([^\\s:@]+?))?(?:/([^\\s:@]+?\\.gguf))?(?:@([^\\s:@/]+))?(?::([\\w.-]+))?$`, 'i');

/**
 * A hub reference, or null when `s` does not have that form (paths with a leading / or ., URLs,
 * Windows drive paths, more than two segments without a trailing .gguf file, …).
 */
export function parseHubRef(s: string): HubRef | null {
  const m = REF_RE.exec(s.trim());
  if (!m) return null;
  const [, org, name, revA, file, revB, quant] = m;
  const revision = revA ?? revB ?? 'main';
  if (revision === '.' || revision === '..' || (revA && revB) || (file && quant)) return null;
  if (file && file.split('/').some((p) => p === '' || p === '.' || p === '..')) return null;
  return { repo: `${org}/${name}`, revision, file, quant };
}

export function hubEndpoint(env: Record<string, string | undefined> = process.env): string {
  return (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
}

export function hubCacheDir(env: Record<string, string | undefined> = process.env): string {
  if (env.SPARROW_CACHE) return env.SPARROW_CACHE;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'sparrow');
  return join(homedir(), '.cache', 'sparrow');
}

export interface HubProgress {
  /** A file download starts: `size` bytes in all (undefined when unknown), `from` of them already in a .part. */
  start?(file: string, size: number | undefined, from: number): void;
  /** Bytes of `file` on disk so far. */
  update?(file: string, done: number, size: number | undefined): void;
  /** The file is complete under its final name. */
  done?(file: string, size: number): void;
  /** Anything else worth a line (a resume after a dropped connection, …). */
  note?(message: string): void;
}

export interface HubOptions {
  env?: Record<string, string | undefined>;
  progress?: HubProgress;
  /** Retries of one file after a network failure, each resuming where the last stopped (default 3). */
  retries?: number;
  /** Milliseconds without a byte before a download counts as stalled and is retried (default 60 000). */
  stallMs?: number;
  /** The fetch to use (tests). */
  fetch?: typeof fetch;
}

export interface HubResolved {
  /** What to open: the revision directory (safetensors) or the .gguf file. */
  path: string;
  /** The revision's cache directory. */
  dir: string;
  /** Files of the pick, by their names in the repo. */
  files: string[];
  /** Whether everything came from the cache without contacting the hub. */
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

/** The cache directory of one repo revision. */
export function hubRevisionDir(ref: HubRef, env?: Record<string, string | undefined>): string {
  const [org, name] = ref.repo.split('/');
  return join(hubCacheDir(env), 'hub', org, name, encodeURIComponent(ref.revision));
}

function describe(ref: HubRef): string {
  return `${ref.repo}${ref.revision === 'main' ? '' : '@' + ref.revision}`;
}

/** The marker of one pick: which selector, which files, what to open. */
function markerPath(dir: string, ref: HubRef): string {
  const key = ref.file ? `file-${ref.file}` : ref.quant ? `quant-${ref.quant.toLowerCase()}` : 'weights';
  const h = createHash('sha256').update(key).digest('hex').slice(0, 16);
  return join(dir, '.sparrow', `${h}.json`);
}

interface Marker {
  key: string;
  files: string[];
  open: string;
}

function readMarker(dir: string, ref: HubRef): Marker | undefined {
  try {
    const m = JSON.parse(readFileSync(markerPath(dir, ref), 'utf8')) as Marker;
    if (!Array.isArray(m.files) || typeof m.open !== 'string') return undefined;
    for (const f of m.files) if (!existsSync(join(dir, f))) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

function writeMarker(dir: string, ref: HubRef, files: string[], openName: string): void {
  const p = markerPath(dir, ref);
  mkdirSync(dirname(p), { recursive: true });
  const tmp = `${p}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify({ key: ref.file ?? ref.quant ?? 'weights', files, open: openName }));
  renameSync(tmp, p);
}

function networkMessage(e: unknown): string {
  const err = e as { cause?: { code?: string; message?: string }; code?: string; message?: string; name?: string };
  const code = err?.cause?.code ?? err?.code;
  const detail = err?.cause?.message ?? err?.message ?? String(e);
  return code && !detail.includes(code) ? `${code}: ${detail}` : detail;
}

class Hub {
  readonly endpoint: string;
  private readonly origin: string;
  private readonly token?: string;
  private readonly fetch: typeof fetch;

  constructor(
    readonly ref: HubRef,
    private readonly o: HubOptions,
  ) {
    const env = o.env ?? process.env;
    this.endpoint = hubEndpoint(env);
    try {
      this.origin = new URL(this.endpoint).origin;
    } catch {
      throw new HubError(`HF_ENDPOINT is not a URL: ${this.endpoint}`);
    }
    this.token = env.HF_TOKEN || undefined;
    this.fetch = o.fetch ?? fetch;
  }

  /** GET with redirects followed by hand, so that the token goes to the hub's origin only. */
  async get(url: string, headers: Record<string, string> = {}, signal?: AbortSignal, seen?: { sha256?: string }): Promise<Response> {
    let u = url;
    for (let hop = 0; hop < 10; hop++) {
      const h: Record<string, string> = { ...headers };
      if (this.token && new URL(u).origin === this.origin) h.authorization = `Bearer ${this.token}`;
      let res: Response;
      try {
        res = await this.fetch(u, { headers: h, redirect: 'manual', signal });
      } catch (e) {
        if ((e as Error)?.name === 'AbortError') throw e;
        throw new HubError(`cannot reach the hub at ${new URL(u).origin} (${networkMessage(e)})${this.offlineHint()}`, 'network');
      }
      // The hub names an LFS file's SHA-256 in X-Linked-Etag on the answer that redirects to it.
      const etag = /^"?([0-9a-f]{64})"?$/i.exec(res.headers.get('x-linked-etag') ?? '');
      if (seen && etag) seen.sha256 = etag[1].toLowerCase();
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

  private offlineHint(): string {
    return `; ${describe(this.ref)} is not in the cache (${hubRevisionDir(this.ref, this.o.env)})`;
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
    throw new HubError(`${name}: the hub answered HTTP ${res.status} for ${what}${hubMsg ? `: ${hubMsg}` : ''}`);
  }

  async listFiles(): Promise<string[]> {
    const url = `${this.endpoint}/api/models/${encodePath(this.ref.repo)}/revision/${encodeURIComponent(this.ref.revision)}`;
    const res = await this.get(url, { accept: 'application/json' });
    if (!res.ok) return this.fail(res, 'the file list');
    let j: any;
    try {
      j = await res.json();
    } catch (e) {
      throw new HubError(`${describe(this.ref)}: the hub's file list is not JSON (${(e as Error).message})`, 'other');
    }
    const sib = j?.siblings;
    if (!Array.isArray(sib)) throw new HubError(`${describe(this.ref)}: the hub's file list has no siblings[]`);
    return sib.map((s: any) => s?.rfilename).filter((f: unknown): f is string => typeof f === 'string');
  }

  fileUrl(file: string): string {
    return `${this.endpoint}/${encodePath(this.ref.repo)}/resolve/${encodeURIComponent(this.ref.revision)}/${encodePath(file)}`;
  }

  /** Downloads one file into `dir` (resuming a .part), retrying network failures. */
  async download(dir: string, file: string): Promise<void> {
    const final = join(dir, file);
    if (existsSync(final)) return;
    mkdirSync(dirname(final), { recursive: true });
    const part = `${final}.part`;
    const retries = this.o.retries ?? 3;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.downloadOnce(file, final, part, attempt > 0);
        return;
      } catch (e) {
        const retryable = e instanceof RetryableError;
        if (!retryable || attempt >= retries) {
          if (e instanceof RetryableError) throw new HubError(`${describe(this.ref)}: downloading ${file} failed: ${e.message}`, 'network');
          throw e;
        }
        const have = existsSync(part) ? statSync(part).size : 0;
        this.o.progress?.note?.(`${file}: ${e.message}; resuming at byte ${have} (retry ${attempt + 1} of ${retries})`);
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 4000)));
      }
    }
  }

  /** Checks a finished .part against the SHA-256 the hub gave for it, if any; a mismatch removes it. */
  private async verify(file: string, part: string, sha256: string | undefined): Promise<void> {
    if (!sha256) return;
    const got = await sha256File(part);
    if (got === sha256) return;
    unlinkSync(part);
    throw new HubError(`${describe(this.ref)}: ${file} is corrupt (SHA-256 ${got}, the hub says ${sha256}); removed, run again to download it anew`, 'network');
  }

  private async downloadOnce(file: string, final: string, part: string, retry: boolean): Promise<void> {
    let have = existsSync(part) ? statSync(part).size : 0;
    const seen: { sha256?: string } = {};
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
      res = await this.get(this.fileUrl(file), have > 0 ? { range: `bytes=${have}-` } : {}, ctrl.signal, seen);
    } catch (e) {
      clearTimeout(timer);
      if (e instanceof HubError && e.kind === 'network' && retry) throw new RetryableError(e.message);
      if ((e as Error)?.name === 'AbortError') throw new RetryableError(`no answer in ${stallMs / 1000} s`);
      throw e;
    }
    let total: number | undefined;
    if (res.status === 416 && have > 0) {
      // The .part may already hold the whole file.
      const m = /\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
      await res.body?.cancel().catch(() => {});
      clearTimeout(timer);
      if (m && Number(m[1]) === have) {
        await this.verify(file, part, seen.sha256);
        renameSync(part, final);
        this.o.progress?.done?.(file, have);
        return;
      }
      unlinkSync(part);
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
        unlinkSync(part);
        throw new RetryableError('the hub answered another byte range than asked for; starting again');
      }
      append = true;
      total = m[3] === '*' ? undefined : Number(m[3]);
    } else {
      have = 0;
      const len = res.headers.get('content-length');
      total = len !== null && /^\d+$/.test(len) ? Number(len) : undefined;
    }
    this.o.progress?.start?.(file, total, have);
    const fh = await open(part, append ? 'a' : 'w');
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
    await this.verify(file, part, seen.sha256);
    renameSync(part, final);
    this.o.progress?.done?.(file, done);
  }
}

class RetryableError extends Error {}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
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

/** A relative path that stays inside the revision directory. */
function isSafeRepoPath(p: string): boolean {
  return p.length > 0 && !p.startsWith('/') && !p.includes('\\') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..') && !p.endsWith('.part');
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

/**
 * Resolves a hub reference to a local path, downloading what the cache lacks. A pick completed
 * before is used as it is, without the network.
 */
export async function resolveHubModel(ref: HubRef, o: HubOptions = {}): Promise<HubResolved> {
  const env = o.env ?? process.env;
  const dir = hubRevisionDir(ref, env);
  const cachedPick = readMarker(dir, ref);
  if (cachedPick) return { path: cachedPick.open === '.' ? dir : join(dir, cachedPick.open), dir, files: cachedPick.files, cached: true };
  if (/^(1|true|yes|on)$/i.test(env.HF_HUB_OFFLINE ?? '')) {
    throw new HubError(`${describe(ref)} is not in the cache (${dir}) and HF_HUB_OFFLINE forbids downloading it`, 'network');
  }
  const hub = new Hub(ref, o);
  const files = await hub.listFiles();
  const pick = pickFiles(ref, files);
  const want = [...pick.want];
  for (const f of pick.want) await hub.download(dir, f);
  if (pick.index) {
    const shards = indexShards(readFileSync(join(dir, pick.index), 'utf8'), describe(ref));
    const missing = shards.filter((s) => !files.includes(s));
    if (missing.length) throw new HubError(`${describe(ref)}: ${pick.index} names shards the repo lacks: ${missing.join(', ')}`, 'weights');
    for (const s of shards) {
      await hub.download(dir, s);
      want.push(s);
    }
  }
  writeMarker(dir, ref, want, pick.open);
  return { path: pick.open === '.' ? dir : join(dir, pick.open), dir, files: want, cached: false };
}
