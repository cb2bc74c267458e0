// Random-access byte sources for checkpoint files: a local file (positional reads, never the whole
// file at once), an in-memory buffer, or a URL (HTTP Range reads when the server honours them).
// Runtime-agnostic: node:fs is reached only through a dynamic import inside the file source, so this
// module loads on Cloudflare Workers, where only buffers and URLs are available.

import { FormatError } from './errors';

export interface ByteSource {
  /** Total length in bytes. */
  readonly size: number;
  /** File path, URL or label, used in error messages. */
  readonly name: string;
  /**
   * `length` bytes starting at `offset`. A buffer source returns a view of its buffer (no copy):
   * callers must not write into the result.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Reads `dst.length` bytes starting at `offset` straight into `dst` (e.g. a view of WASM memory). */
  readInto?(offset: number, dst: Uint8Array): Promise<void>;
  close?(): Promise<void> | void;
}

export type ProgressFn = (loaded: number, total: number) => void;

/** Throws a FormatError unless [offset, offset + length) lies inside a source of `size` bytes. */
export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new FormatError('read', `invalid range offset ${offset}, length ${length}`, name);
  }
  if (offset + length > size) {
    throw new FormatError('read', `range [${offset}, ${offset + length}) beyond size ${size}`, name);
  }
}

// ---------------------------------------------------------------------------------------------
// In-memory

/** A source over bytes already in memory; reads are views, not copies. close() drops the reference to them. */
export function bufferSource(data: ArrayBuffer | ArrayBufferView, name = 'buffer'): ByteSource {
  let bytes: Uint8Array | null = data instanceof Uint8Array
    ? data
    : ArrayBuffer.isView(data)
      ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      : new Uint8Array(data);
  const open = (): Uint8Array => {
    if (!bytes) throw new FormatError('read', 'source is closed', name);
    return bytes;
  };
  return {
    size: bytes.length,
    name,
    async read(offset, length) {
      const b = open();
      checkRange(name, b.length, offset, length);
      return b.subarray(offset, offset + length);
    },
    async readInto(offset, dst) {
      const b = open();
      checkRange(name, b.length, offset, dst.length);
      dst.set(b.subarray(offset, offset + dst.length));
    },
    close() {
      bytes = null;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Local files (Node, Bun, Deno)

type FsPromises = typeof import('node:fs/promises');
let fsModule: Promise<FsPromises> | undefined;

/**
 * node:fs/promises, loaded on first use. The specifier is held in a variable so that bundlers for
 * Workers and browsers leave it alone; where it does not exist the import fails and the caller gets
 * a FormatError naming the path.
 */
export async function nodeFs(path: string): Promise<FsPromises> {
  const spec = 'node:fs/promises';
  fsModule ??= import(/* @vite-ignore */ spec) as Promise<FsPromises>;
  try {
    return await fsModule;
  } catch {
    fsModule = undefined;
    throw new FormatError('path', 'reading local files needs node:fs (Node, Bun, Deno); pass a URL, bytes or { files } instead', path);
  }
}

/** The largest single positional read; Node refuses reads of 2 GiB or more. */
const MAX_READ_CHUNK = 1 << 30;

function isNotFound(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === 'ENOENT' || code === 'ENOTDIR' || (e as { name?: unknown })?.name === 'NotFound';
}

/** Opens a local file for positional reads. A missing file is a FormatError naming the path. */
export async function fileSource(path: string | URL): Promise<ByteSource> {
  const name = String(path);
  const fs = await nodeFs(name);
  let fh: Awaited<ReturnType<FsPromises['open']>>;
  try {
    fh = await fs.open(path, 'r');
  } catch (e) {
    if (isNotFound(e)) throw new FormatError('path', 'file not found', name);
    throw new FormatError('path', `cannot open: ${(e as Error).message}`, name);
  }
  let size: number;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new FormatError('path', 'is not a regular file', name);
    size = st.size;
  } catch (e) {
    await fh.close().catch(() => {});
    throw e;
  }
  let closed = false;
  const readInto = async (offset: number, dst: Uint8Array) => {
    checkRange(name, size, offset, dst.length);
    if (closed) throw new FormatError('read', 'source is closed', name);
    let done = 0;
    while (done < dst.length) {
      const want = Math.min(dst.length - done, MAX_READ_CHUNK);
      const { bytesRead } = await fh.read(dst, done, want, offset + done);
      // The file shrank after it was opened.
      if (bytesRead === 0) throw new FormatError('read', `unexpected end of file at ${offset + done} (size was ${size})`, name);
      done += bytesRead;
    }
  };
  return {
    size,
    name,
    async read(offset, length) {
      checkRange(name, size, offset, length);
      const dst = new Uint8Array(length);
      await readInto(offset, dst);
      return dst;
    },
    readInto,
    async close() {
      if (closed) return;
      closed = true;
      await fh.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// URLs

export interface UrlSourceOptions {
  onProgress?: ProgressFn;
  /** Replaces the global fetch (tests, auth wrappers, service bindings). */
  fetch?: typeof fetch;
  headers?: Record<string, string>;
}

/** Bytes fetched by the first request; they also answer header reads when the server honours Range. */
const PROBE_BYTES = 1 << 16;

/** Parses `bytes a-b/total` or `bytes * /total`; total is null when the server sends `*`. */
function parseContentRange(v: string | null): { start: number; end: number; total: number | null } | null {
  if (!v) return null;
  const m = /^bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)$/i.exec(v.trim());
  if (!m) return null;
  const total = m[3] === '*' ? null : Number(m[3]);
  return { start: m[1] ? Number(m[1]) : -1, end: m[2] ? Number(m[2]) : -1, total };
}

function httpError(url: string, res: Response): FormatError {
  return new FormatError('http', `status ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`, url);
}

/**
 * A source over a URL. The first request asks for a byte range: a 206 answer means ranged reads
 * (one request per read, nothing else kept in memory); a 200 answer means the server ignores Range,
 * and the body is streamed once into a single buffer, reporting `(loaded, total)` as it arrives.
 */
export async function urlSource(url: string | URL, opts: UrlSourceOptions = {}): Promise<ByteSource> {
  const name = String(url);
  const doFetch = opts.fetch ?? globalThis.fetch;
  let res: Response;
  try {
    res = await doFetch(name, { headers: { ...opts.headers, Range: `bytes=0-${PROBE_BYTES - 1}` } });
  } catch (e) {
    throw new FormatError('http', `fetch failed: ${(e as Error).message}`, name);
  }
  if (res.status === 416) {
    const cr = parseContentRange(res.headers.get('content-range'));
    await res.body?.cancel();
    if (cr?.total === 0) return bufferSource(new Uint8Array(0), name);
    throw httpError(name, res);
  }
  if (res.status === 206) {
    const cr = parseContentRange(res.headers.get('content-range'));
    if (cr && cr.total !== null && cr.start === 0 && Number.isSafeInteger(cr.total)) {
      const head = new Uint8Array(await res.arrayBuffer());
      if (head.length !== Math.min(PROBE_BYTES, cr.total)) {
        throw new FormatError('http', `range answer has ${head.length} bytes, expected ${Math.min(PROBE_BYTES, cr.total)}`, name);
      }
      return rangedSource(name, cr.total, head, doFetch, opts);
    }
    // A partial answer without a usable total: fall back to one plain download.
    await res.body?.cancel();
    try {
      res = await doFetch(name, { headers: { ...opts.headers } });
    } catch (e) {
      throw new FormatError('http', `fetch failed: ${(e as Error).message}`, name);
    }
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw httpError(name, res);
  }
  return bufferSource(await downloadBody(name, res, opts.onProgress), name);
}

function rangedSource(name: string, size: number, head: Uint8Array, doFetch: typeof fetch, opts: UrlSourceOptions): ByteSource {
  let loaded = head.length;
  opts.onProgress?.(loaded, size);
  const readInto = async (offset: number, dst: Uint8Array) => {
    checkRange(name, size, offset, dst.length);
    if (dst.length === 0) return;
    if (offset + dst.length <= head.length) {
      dst.set(head.subarray(offset, offset + dst.length));
      return;
    }
    const last = offset + dst.length - 1;
    let res: Response;
    try {
      res = await doFetch(name, { headers: { ...opts.headers, Range: `bytes=${offset}-${last}` } });
    } catch (e) {
      throw new FormatError('http', `fetch failed: ${(e as Error).message}`, name);
    }
    if (res.status !== 206) {
      await res.body?.cancel();
      throw new FormatError('http', `range ${offset}-${last} answered with status ${res.status}`, name);
    }
    const got = await streamInto(res, dst, name);
    if (got !== dst.length) throw new FormatError('http', `range ${offset}-${last} gave ${got} bytes`, name);
    loaded += got;
    opts.onProgress?.(Math.min(loaded, size), size);
  };
  return {
    size,
    name,
    async read(offset, length) {
      checkRange(name, size, offset, length);
      if (offset + length <= head.length) return head.subarray(offset, offset + length);
      const dst = new Uint8Array(length);
      await readInto(offset, dst);
      return dst;
    },
    readInto,
  };
}

/** Streams a response body into `dst`; returns the byte count, failing if the body is longer than `dst`. */
async function streamInto(res: Response, dst: Uint8Array, name: string): Promise<number> {
  if (!res.body) {
    const b = new Uint8Array(await res.arrayBuffer());
    if (b.length > dst.length) throw new FormatError('http', `body of ${b.length} bytes exceeds the ${dst.length} expected`, name);
    dst.set(b);
    return b.length;
  }
  const reader = res.body.getReader();
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (n + value.length > dst.length) {
      await reader.cancel();
      throw new FormatError('http', `body exceeds the ${dst.length} bytes expected`, name);
    }
    dst.set(value, n);
    n += value.length;
  }
  return n;
}

/** The whole body in one buffer; preallocated when the length is known and the body is not re-encoded. */
async function downloadBody(name: string, res: Response, onProgress?: ProgressFn): Promise<Uint8Array> {
  const lenHeader = res.headers.get('content-length');
  const encoded = !!res.headers.get('content-encoding') && res.headers.get('content-encoding') !== 'identity';
  const declared = lenHeader !== null && /^\d+$/.test(lenHeader) ? Number(lenHeader) : NaN;
  const total = Number.isSafeInteger(declared) ? declared : 0;
  if (!res.body) {
    const b = new Uint8Array(await res.arrayBuffer());
    onProgress?.(b.length, b.length);
    return b;
  }
  const reader = res.body.getReader();
  if (total > 0 && !encoded) {
    const dst = new Uint8Array(total);
    let n = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.length > total) {
        await reader.cancel();
        throw new FormatError('http', `body longer than its content-length ${total}`, name);
      }
      dst.set(value, n);
      n += value.length;
      onProgress?.(n, total);
    }
    if (n !== total) throw new FormatError('http', `body ended after ${n} of ${total} bytes`, name);
    return dst;
  }
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
    onProgress?.(n, total);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export type SourceInput = string | URL | ArrayBuffer | ArrayBufferView | ByteSource;

export function isUrl(x: string): boolean {
  return /^https?:\/\//i.test(x);
}

export function isByteSource(x: unknown): x is ByteSource {
  return typeof x === 'object' && x !== null && typeof (x as ByteSource).read === 'function' && typeof (x as ByteSource).size === 'number';
}

function isArrayBuffer(x: unknown): x is ArrayBuffer {
  return x instanceof ArrayBuffer || Object.prototype.toString.call(x) === '[object ArrayBuffer]';
}

/** A ByteSource for a path, an http(s) URL, a file: URL, bytes, or an existing source. */
export async function openSource(x: SourceInput, opts: UrlSourceOptions & { name?: string } = {}): Promise<ByteSource> {
  if (typeof x === 'string') return isUrl(x) ? urlSource(x, opts) : fileSource(x);
  if (x instanceof URL) return x.protocol === 'file:' ? fileSource(x) : urlSource(x, opts);
  if (isArrayBuffer(x) || ArrayBuffer.isView(x)) return bufferSource(x, opts.name);
  if (isByteSource(x)) return x;
  throw new FormatError('source', `cannot read from ${Object.prototype.toString.call(x)}`);
}

/** The parts one after another in one array. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
