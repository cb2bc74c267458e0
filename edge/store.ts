// Where conversation state lives between requests: the snapshot bytes of a session (recurrent and
// attention state, checksummed, naming the model) and the token ids they cover. A later request whose
// prompt begins with those tokens restores the bytes and runs only the new suffix.
//
// Stores here: an in-memory LRU bounded by entry count and bytes (every runtime), a directory of
// files bounded by bytes (Deno, Bun, Node), and the two chained (memory in front of a directory). The
// Workers store, one Durable Object per session id, is in worker.ts. Each session records its owner
// (a hash of the API key that created it), which the app checks.

import { ContainerError, decodeContainer, decodeHeader, encodeContainer, PREFIX_BYTES, readPrefix, type Container, type ContainerKind } from '../src/runtime/container';

export interface StoredSession {
  id: string;
  /** Model id the state belongs to (the snapshot also names the model's hash and is checked on restore). */
  model: string;
  /** Token ids the state has consumed, in order. */
  tokens: number[];
  /** ModelSession.snapshot() bytes (none for a session created but not yet used). */
  bytes: Uint8Array;
  /**
   * Who may use the session: a hash of the API key that created it, or '' when the server had no
   * keys (absent counts as ''). Only requests with the same owner see it.
   */
  owner?: string;
  createdAt: number;
  updatedAt: number;
}

export interface SessionMeta {
  id: string;
  model: string;
  tokens: number;
  bytes: number;
  owner: string;
  createdAt: number;
  updatedAt: number;
}

export interface SessionStore {
  get(id: string): Promise<StoredSession | null>;
  put(s: StoredSession): Promise<void>;
  /** True when something was deleted. */
  delete(id: string): Promise<boolean>;
  /** Metadata without reading the bytes, where the store can. */
  meta(id: string): Promise<SessionMeta | null>;
}

/** Session ids are used as file names and object names: a plain, bounded alphabet. */
export const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function metaOf(s: StoredSession): SessionMeta {
  return { id: s.id, model: s.model, tokens: s.tokens.length, bytes: s.bytes.byteLength, owner: s.owner ?? '', createdAt: s.createdAt, updatedAt: s.updatedAt };
}

export interface MemoryStoreOptions {
  /** Most sessions kept (default 256). */
  maxEntries?: number;
  /** Most snapshot bytes kept in total (default 256 MiB). */
  maxBytes?: number;
  /** Called with each entry pushed out by the bounds (e.g. to write it to a slower store). */
  onEvict?: (s: StoredSession) => void;
}

/** Least-recently-used sessions in memory; the oldest go first when a bound is passed. */
export class MemorySessionStore implements SessionStore {
  private readonly map = new Map<string, StoredSession>();
  private total = 0;
  readonly maxEntries: number;
  readonly maxBytes: number;

  constructor(private readonly opts: MemoryStoreOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 256;
    this.maxBytes = opts.maxBytes ?? 256 * 1024 * 1024;
  }

  get size(): number {
    return this.map.size;
  }

  get bytes(): number {
    return this.total;
  }

  async get(id: string): Promise<StoredSession | null> {
    const s = this.map.get(id);
    if (!s) return null;
    // Re-insertion moves the entry to the young end of the Map's order.
    this.map.delete(id);
    this.map.set(id, s);
    return s;
  }

  async meta(id: string): Promise<SessionMeta | null> {
    const s = this.map.get(id);
    return s ? metaOf(s) : null;
  }

  async put(s: StoredSession): Promise<void> {
    await this.delete(s.id);
    // An entry larger than the whole budget is not kept at all.
    if (s.bytes.byteLength > this.maxBytes) return;
    this.map.set(s.id, s);
    this.total += s.bytes.byteLength;
    while (this.map.size > this.maxEntries || this.total > this.maxBytes) {
      const [oldId, old] = this.map.entries().next().value as [string, StoredSession];
      this.map.delete(oldId);
      this.total -= old.bytes.byteLength;
      this.opts.onEvict?.(old);
    }
  }

  async delete(id: string): Promise<boolean> {
    const s = this.map.get(id);
    if (!s) return false;
    this.map.delete(id);
    this.total -= s.bytes.byteLength;
    return true;
  }
}

// A session file is a container (src/runtime/container.ts) of magic "SPRWSESS": the header holds the
// metadata and tokens, the payload the snapshot bytes. Version 2 adds the owner to the header;
// version 1 files (no owner) are read as owned by ''. Version 2 exists so that a server that knows
// nothing of owners refuses these files rather than ignoring the owner.
const SESSION_FILE: ContainerKind = { magic: 'SPRWSESS', version: 2, readable: [1, 2] };

export function encodeSessionFile(s: StoredSession): Uint8Array {
  return encodeContainer(SESSION_FILE, { id: s.id, model: s.model, owner: s.owner ?? '', tokens: s.tokens, createdAt: s.createdAt, updatedAt: s.updatedAt }, s.bytes);
}

/** A session file's header: everything but the snapshot bytes; null when it lacks what a session needs. */
function sessionHeader(m: Record<string, unknown>): Omit<StoredSession, 'bytes'> | null {
  if (typeof m.id !== 'string' || typeof m.model !== 'string' || !Array.isArray(m.tokens)) return null;
  return { id: m.id, model: m.model, owner: typeof m.owner === 'string' ? m.owner : '', tokens: m.tokens, createdAt: Number(m.createdAt) || 0, updatedAt: Number(m.updatedAt) || 0 };
}

/** Null for anything that is not a whole, readable session file (it is then treated as absent). */
export function decodeSessionFile(b: Uint8Array): StoredSession | null {
  let c: Container;
  try {
    c = decodeContainer(SESSION_FILE, b);
  } catch (e) {
    if (e instanceof ContainerError) return null;
    throw e;
  }
  const m = sessionHeader(c.header);
  return m && { ...m, bytes: c.payload.slice() };
}

export interface DirStoreOptions {
  /** Most bytes of session files kept in the directory (default 1 GiB); the least recently used go first. */
  maxBytes?: number;
  /** Where files that cannot be removed are reported (default: not reported). */
  log?: (msg: string, err?: unknown) => void;
}

const notFound = (e: unknown) => (e as any)?.code === 'ENOENT' || (e as any)?.name === 'NotFound';

/** The temporary files put() writes (`<id>.session.<random>.tmp`) and open()'s write probe. */
const TMP_FILE = /^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.session\.[a-z0-9]+|\.sparrow-probe-[a-z0-9]+)\.tmp$/;

/**
 * One file per session in a directory (Deno needs --allow-read and --allow-write for it), at most
 * `maxBytes` of them: past that the least recently used files are removed. Use is a read or a write,
 * kept as the file's modification time, so the order survives a restart.
 *
 * open() (called by every method, and by the local servers at start so that problems show there)
 * creates the directory, checks that it can write there, removes the temporary files a crash left
 * behind, measures the files and trims them to the bound. The directory belongs to one server.
 */
export class DirSessionStore implements SessionStore {
  readonly maxBytes: number;
  /** id → file bytes, least recently used first (the Map's order). */
  private readonly index = new Map<string, number>();
  private total = 0;
  private opening: Promise<void> | null = null;
  private readonly log: (msg: string, err?: unknown) => void;

  constructor(readonly dir: string, opts: DirStoreOptions = {}) {
    this.maxBytes = opts.maxBytes ?? 1024 * 1024 * 1024;
    if (!(this.maxBytes > 0)) throw new RangeError(`maxBytes must be > 0, got ${this.maxBytes}`);
    this.log = opts.log ?? (() => {});
  }

  /** Bytes of session files in the directory (as of open() and this store's own writes). */
  get bytes(): number {
    return this.total;
  }

  /** Session files in the directory. */
  get size(): number {
    return this.index.size;
  }

  private base(): string {
    return this.dir.replace(/\/+$/, '') || '/';
  }

  private path(id: string): string {
    if (!SESSION_ID.test(id)) throw new Error(`bad session id ${JSON.stringify(id)}`);
    return `${this.base()}/${id}.session`;
  }

  private async fs() {
    return import('node:fs/promises');
  }

  open(): Promise<void> {
    if (!this.opening) {
      this.opening = this.scan();
      // A failed open is tried again by the next call.
      this.opening.catch(() => (this.opening = null));
    }
    return this.opening;
  }

  private async scan(): Promise<void> {
    const fs = await this.fs();
    const base = this.base();
    await fs.mkdir(base, { recursive: true });
    const probe = `${base}/.sparrow-probe-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`;
    await fs.writeFile(probe, 'sparrow');
    await fs.unlink(probe);
    const found: { id: string; bytes: number; used: number }[] = [];
    for (const name of await fs.readdir(base)) {
      if (TMP_FILE.test(name)) {
        await fs.unlink(`${base}/${name}`).catch((e) => notFound(e) || this.log(`could not remove ${base}/${name}`, e));
        continue;
      }
      const id = name.endsWith('.session') ? name.slice(0, -'.session'.length) : '';
      if (!SESSION_ID.test(id)) continue;
      const st = await fs.stat(`${base}/${name}`).catch(() => null);
      if (st?.isFile()) found.push({ id, bytes: st.size, used: st.mtimeMs });
    }
    found.sort((a, b) => a.used - b.used);
    this.index.clear();
    this.total = 0;
    for (const f of found) this.note(f.id, f.bytes);
    await this.trim();
  }

  /** Records a file as just used. */
  private note(id: string, bytes: number): void {
    this.forget(id);
    this.index.set(id, bytes);
    this.total += bytes;
  }

  private forget(id: string): boolean {
    const had = this.index.get(id);
    if (had === undefined) return false;
    this.index.delete(id);
    this.total -= had;
    return true;
  }

  /** Removes the least recently used files until the rest fit the bound. */
  private async trim(): Promise<void> {
    const fs = await this.fs();
    while (this.total > this.maxBytes && this.index.size > 0) {
      const id = this.index.keys().next().value as string;
      this.forget(id);
      await fs.unlink(this.path(id)).catch((e) => notFound(e) || this.log(`could not remove ${this.path(id)}`, e));
    }
  }

  async get(id: string): Promise<StoredSession | null> {
    await this.open();
    const fs = await this.fs();
    const p = this.path(id);
    let b: Uint8Array;
    try {
      b = new Uint8Array(await fs.readFile(p));
    } catch (e) {
      if (notFound(e)) {
        this.forget(id);
        return null;
      }
      throw e;
    }
    const s = decodeSessionFile(b);
    if (!s || s.id !== id) return null;
    this.note(id, b.byteLength);
    const now = new Date();
    await fs.utimes(p, now, now).catch(() => {});
    return s;
  }

  /** Reads the file's metadata part only. */
  async meta(id: string): Promise<SessionMeta | null> {
    await this.open();
    const fs = await this.fs();
    let fh: Awaited<ReturnType<typeof fs.open>>;
    try {
      fh = await fs.open(this.path(id), 'r');
    } catch (e) {
      if (notFound(e)) return null;
      throw e;
    }
    try {
      const size = (await fh.stat()).size;
      const head = new Uint8Array(PREFIX_BYTES);
      if ((await fh.read(head, 0, PREFIX_BYTES, 0)).bytesRead < PREFIX_BYTES) return null;
      let m: Omit<StoredSession, 'bytes'> | null;
      let n: number;
      try {
        n = readPrefix(SESSION_FILE, head).headerBytes;
        if (PREFIX_BYTES + n > size) return null;
        const json = new Uint8Array(n);
        if ((await fh.read(json, 0, n, PREFIX_BYTES)).bytesRead < n) return null;
        m = sessionHeader(decodeHeader(json));
      } catch (e) {
        if (e instanceof ContainerError) return null;
        throw e;
      }
      if (!m || m.id !== id) return null;
      return { id, model: m.model, tokens: m.tokens.length, bytes: size - PREFIX_BYTES - n, owner: m.owner ?? '', createdAt: m.createdAt, updatedAt: m.updatedAt };
    } finally {
      await fh.close().catch(() => {});
    }
  }

  async put(s: StoredSession): Promise<void> {
    await this.open();
    const fs = await this.fs();
    const data = encodeSessionFile(s);
    // A session larger than the whole bound is not kept at all.
    if (data.byteLength > this.maxBytes) {
      await this.delete(s.id);
      return;
    }
    // Write then rename: a reader never sees half a file.
    const p = this.path(s.id);
    const tmp = `${p}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`;
    try {
      await fs.writeFile(tmp, data);
      await fs.rename(tmp, p);
    } catch (e) {
      await fs.unlink(tmp).catch(() => {});
      throw e;
    }
    this.note(s.id, data.byteLength);
    await this.trim();
  }

  async delete(id: string): Promise<boolean> {
    await this.open();
    const fs = await this.fs();
    this.forget(id);
    try {
      await fs.unlink(this.path(id));
      return true;
    } catch (e) {
      if (notFound(e)) return false;
      throw e;
    }
  }
}

/** A fast store in front of a durable one: reads fall through and fill the front; writes go to both. */
export class TieredSessionStore implements SessionStore {
  constructor(readonly front: SessionStore, readonly back: SessionStore) {}

  async get(id: string): Promise<StoredSession | null> {
    const hit = await this.front.get(id);
    if (hit) return hit;
    const s = await this.back.get(id);
    if (s) await this.front.put(s);
    return s;
  }

  async meta(id: string): Promise<SessionMeta | null> {
    return (await this.front.meta(id)) ?? (await this.back.meta(id));
  }

  async put(s: StoredSession): Promise<void> {
    await Promise.all([this.front.put(s), this.back.put(s)]);
  }

  async delete(id: string): Promise<boolean> {
    const [a, b] = await Promise.all([this.front.delete(id), this.back.delete(id)]);
    return a || b;
  }
}
