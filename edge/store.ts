// Where conversation state lives between requests: the snapshot bytes of a session (recurrent and
// attention state, checksummed, naming the model) and the token ids they cover. A later request whose
// prompt begins with those tokens restores the bytes and runs only the new suffix.
//
// Stores here: an in-memory LRU bounded by entry count and bytes (every runtime), a directory of
// files (Deno, Bun, Node), and the two chained (memory in front of a directory). The Workers store,
// one Durable Object per session id, is in worker.ts.

export interface StoredSession {
  id: string;
  /** Model id the state belongs to (the snapshot also names the model's hash and is checked on restore). */
  model: string;
  /** Token ids the state has consumed, in order. */
  tokens: number[];
  /** ModelSession.snapshot() bytes. */
  bytes: Uint8Array;
  createdAt: number;
  updatedAt: number;
}

export interface SessionMeta {
  id: string;
  model: string;
  tokens: number;
  bytes: number;
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
  return { id: s.id, model: s.model, tokens: s.tokens.length, bytes: s.bytes.byteLength, createdAt: s.createdAt, updatedAt: s.updatedAt };
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

// A session file: "SPRWSESS" · u32 version · u32 JSON length · JSON (metadata and tokens) · snapshot bytes.
const FILE_MAGIC = 'SPRWSESS';

export function encodeSessionFile(s: StoredSession): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify({ id: s.id, model: s.model, tokens: s.tokens, createdAt: s.createdAt, updatedAt: s.updatedAt }));
  const out = new Uint8Array(16 + json.length + s.bytes.byteLength);
  for (let i = 0; i < 8; i++) out[i] = FILE_MAGIC.charCodeAt(i);
  const dv = new DataView(out.buffer);
  dv.setUint32(8, 1, true);
  dv.setUint32(12, json.length, true);
  out.set(json, 16);
  out.set(s.bytes, 16 + json.length);
  return out;
}

/** Null for anything that is not a whole, readable session file (it is then treated as absent). */
export function decodeSessionFile(b: Uint8Array): StoredSession | null {
  if (b.length < 16) return null;
  for (let i = 0; i < 8; i++) if (b[i] !== FILE_MAGIC.charCodeAt(i)) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(8, true) !== 1) return null;
  const n = dv.getUint32(12, true);
  if (16 + n > b.length) return null;
  try {
    const m = JSON.parse(new TextDecoder().decode(b.subarray(16, 16 + n)));
    if (typeof m?.id !== 'string' || typeof m.model !== 'string' || !Array.isArray(m.tokens)) return null;
    return { id: m.id, model: m.model, tokens: m.tokens, createdAt: Number(m.createdAt) || 0, updatedAt: Number(m.updatedAt) || 0, bytes: b.slice(16 + n) };
  } catch {
    return null;
  }
}

/** One file per session in a directory (Deno needs --allow-read and --allow-write for it). */
export class DirSessionStore implements SessionStore {
  constructor(readonly dir: string) {}

  private path(id: string): string {
    if (!SESSION_ID.test(id)) throw new Error(`bad session id ${JSON.stringify(id)}`);
    return `${this.dir.replace(/\/+$/, '')}/${id}.session`;
  }

  private async fs() {
    return import('node:fs/promises');
  }

  async get(id: string): Promise<StoredSession | null> {
    const fs = await this.fs();
    try {
      const s = decodeSessionFile(new Uint8Array(await fs.readFile(this.path(id))));
      return s && s.id === id ? s : null;
    } catch (e) {
      if ((e as any)?.code === 'ENOENT' || (e as any)?.name === 'NotFound') return null;
      throw e;
    }
  }

  async meta(id: string): Promise<SessionMeta | null> {
    const s = await this.get(id);
    return s ? metaOf(s) : null;
  }

  async put(s: StoredSession): Promise<void> {
    const fs = await this.fs();
    await fs.mkdir(this.dir, { recursive: true });
    // Write then rename: a reader never sees half a file.
    const p = this.path(s.id);
    const tmp = `${p}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`;
    await fs.writeFile(tmp, encodeSessionFile(s));
    await fs.rename(tmp, p);
  }

  async delete(id: string): Promise<boolean> {
    const fs = await this.fs();
    try {
      await fs.unlink(this.path(id));
      return true;
    } catch (e) {
      if ((e as any)?.code === 'ENOENT' || (e as any)?.name === 'NotFound') return false;
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
