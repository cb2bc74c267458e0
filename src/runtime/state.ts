// Per-sequence state: the union of every layer's cache (KV rings or linear caches, conv windows,
// SSM / linear-attention states, token-shift vectors), laid out in one contiguous slot of the
// arena so that a session is one block to allocate, snapshot, restore and free.

import { f16BytesToF32, f32ToF16Bytes } from '../formats/dtype';
import { ConfigError } from '../formats/errors';
import { KV_QUANT_MAX_DIM, kvRowBytes, type KvCacheType } from '../kernels/kvcache';
import { KernelError, type Arena } from '../kernels/runtime';

export type RegionKind =
  /** Grows with the context: `perToken` floats for every position (linear cache). */
  | 'kv'
  /** Ring buffer of `capacity` positions (sliding window); bounded. */
  | 'ring'
  /** Constant size whatever the context (recurrent state). */
  | 'fixed';

/** How a quantized cache region encodes a position: `heads` heads of `dim` values as `type` rows (kernels/kvcache.ts). */
export interface KvQuant {
  type: Exclude<KvCacheType, 'f32'>;
  heads: number;
  dim: number;
}

/**
 * A region's sizes count 32-bit words: floats, or for a quantized cache (`quant`) words of its
 * rows' bytes (a row is a whole number of words). Quantized words are moved as they are, never as
 * numbers.
 */
export interface RegionSpec {
  name: string;
  kind: RegionKind;
  /** words per position (kv, ring) */
  perToken?: number;
  /** positions held (ring) */
  capacity?: number;
  /** words (fixed) */
  floats?: number;
  /** A KV cache held as quantized rows (kv, ring); absent: f32. */
  quant?: KvQuant;
}

export interface Region extends RegionSpec {
  /** byte offset of the region inside the slot */
  offset: number;
  /** words the region occupies in the slot */
  size: number;
}

/**
 * The region of a KV cache (keys or values) with `heads` heads of `dim` values per position, as
 * f32 or as rows of a quantized type: a linear cache, or a ring of `ring` positions.
 */
export function kvCacheRegion(name: string, heads: number, dim: number, type: KvCacheType, ring?: number): RegionSpec {
  if (type !== 'f32' && dim > KV_QUANT_MAX_DIM) {
    throw new ConfigError('options.kvCache', `a ${type} cache holds heads of up to ${KV_QUANT_MAX_DIM} values, but ${name} has ${dim}; use kvCache 'f32'`);
  }
  const perToken = type === 'f32' ? heads * dim : kvRowBytes(type, heads, dim) / 4;
  const s: RegionSpec = ring === undefined ? { name, kind: 'kv', perToken } : { name, kind: 'ring', perToken, capacity: ring };
  if (type !== 'f32') s.quant = { type, heads, dim };
  return s;
}

/**
 * The regions of a session's state, laid out in one slot. Layers declare their regions once, as
 * RegionSpec objects they keep; those objects are the handles the WASM forward pass
 * (SeqState.ptr) and the WebGPU builder (GpuBuilder.state) find the region by. Names serve the
 * snapshot format only.
 */
export class StateLayout {
  readonly regions: Region[] = [];
  readonly byName = new Map<string, Region>();
  private readonly bySpec = new Map<RegionSpec, Region>();
  readonly bytes: number;
  /** The type of the layout's attention caches: that of its quantized regions, else f32. */
  readonly kvCache: KvCacheType = 'f32';
  constructor(specs: RegionSpec[], readonly maxContext: number) {
    let off = 0;
    for (const s of specs) {
      if (this.byName.has(s.name)) throw new KernelError('state', `duplicate state region ${s.name}`);
      if (s.quant) {
        if (this.kvCache !== 'f32' && this.kvCache !== s.quant.type) throw new KernelError('state', `state region ${s.name} is ${s.quant.type}, others ${this.kvCache}`);
        this.kvCache = s.quant.type;
      }
      const size = s.kind === 'kv' ? s.perToken! * maxContext : s.kind === 'ring' ? s.perToken! * Math.min(s.capacity!, maxContext) : s.floats!;
      if (!Number.isInteger(size) || size < 0) throw new KernelError('state', `bad size for state region ${s.name}`);
      const r: Region = { ...s, capacity: s.kind === 'ring' ? Math.min(s.capacity!, maxContext) : s.capacity, offset: off, size };
      this.regions.push(r);
      this.byName.set(s.name, r);
      this.bySpec.set(s, r);
      off += Math.ceil((size * 4) / 64) * 64;
    }
    this.bytes = Math.max(off, 64);
  }
  /** The region a layer declared as `spec` (the same object its specs() returned). */
  region(spec: RegionSpec): Region {
    const r = this.bySpec.get(spec);
    if (!r) throw new KernelError('state', `no state region declared as ${spec.name} in this layout`);
    return r;
  }

  /** Floats a snapshot holds for `pos` processed tokens. */
  snapshotFloats(pos: number): number {
    let n = 0;
    for (const r of this.regions) n += r.kind === 'kv' ? r.perToken! * pos : r.kind === 'ring' ? r.perToken! * Math.min(pos, r.capacity!) : r.size;
    return n;
  }
}

/** Every session slot is taken (the model's maxSessions); one is free again when a session is disposed. */
export class SlotsBusyError extends KernelError {
  constructor(readonly maxSlots: number) {
    super('state', `all ${maxSlots} session slots are in use`);
    this.name = 'SlotsBusyError';
  }
}

/** Fixed-size slots for session state, reused after release (a free list over arena blocks). */
export class SlotPool {
  private free: number[] = [];
  private live = new Set<number>();
  constructor(private readonly arena: Arena, readonly layout: StateLayout, readonly maxSlots = Infinity) {}
  acquire(): number {
    const p = this.free.pop() ?? (this.live.size >= this.maxSlots ? -1 : this.arena.alloc(this.layout.bytes));
    if (p < 0) throw new SlotsBusyError(this.maxSlots);
    this.live.add(p);
    this.arena.u8(p, this.layout.bytes).fill(0);
    return p;
  }
  release(p: number): void {
    if (!this.live.delete(p)) return;
    this.free.push(p);
  }
  get inUse(): number {
    return this.live.size;
  }
}

/** A view of one session slot: where each declared region is. */
export class SeqState {
  constructor(readonly arena: Arena, readonly layout: StateLayout, readonly base: number) {}
  ptr(spec: RegionSpec): number {
    return this.base + this.layout.region(spec).offset;
  }
  clear(): void {
    this.arena.u8(this.base, this.layout.bytes).fill(0);
  }
}

// ---- snapshots ----------------------------------------------------------------------------------
// Layout: "SPRWSNAP" | u32 version | u32 headerLen | header JSON (utf-8) | payload | u32 crc32
// The header names the model hash, model type, position, processed token ids and the payload dtype;
// the payload holds each region in layout order, trimmed to the positions in use (kv, ring) or whole
// (fixed), as f32 or — on request, at half the size — as f16 (the state is fp32 again once restored).
// Version 2 adds quantized KV caches: the header's `kvCache` names their type, their regions are
// listed as { name, words, kv } and stored as their bytes whatever the payload dtype. A state
// without quantized regions is written as version 1, byte for byte as before; both are read.

export const SNAPSHOT_VERSION = 2;
const SNAPSHOT_VERSIONS = [1, 2];
const MAGIC = 'SPRWSNAP';

export class SnapshotError extends Error {
  readonly code = 'SNAPSHOT';
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotError';
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** A region of a snapshot: `floats` values (f32 or f16), or `words` of quantized cache rows of type `kv`. */
export interface SnapshotRegion {
  name: string;
  floats?: number;
  words?: number;
  kv?: KvCacheType;
}

export interface SnapshotHeader {
  modelHash: string;
  modelType: string;
  pos: number;
  tokens: number[];
  maxContext: number;
  regions: SnapshotRegion[];
  /** Payload element type; absent in snapshots that predate it (f32). */
  dtype?: 'f32' | 'f16';
  /** Type of the attention caches (version 2); absent: f32. */
  kvCache?: KvCacheType;
}

export interface SnapshotOptions {
  /** Store the state as f16: half the bytes, rounding error of f16 on every state value. */
  dtype?: 'f32' | 'f16';
}

/** Floats of region `r` that a snapshot at `pos` processed tokens holds. */
export function snapshotRegionFloats(r: Region, pos: number): number {
  return r.kind === 'kv' ? r.perToken! * pos : r.kind === 'ring' ? r.perToken! * Math.min(pos, r.capacity!) : r.size;
}

/**
 * Snapshot bytes of a state with this layout, whatever holds it: `read(r, n)` gives the first n floats
 * of region r in the layout's order (kv: positions 0 … pos−1; ring: slots 0 … n/perToken − 1; fixed: all).
 */
export function encodeSnapshot(layout: StateLayout, header: Omit<SnapshotHeader, 'regions' | 'maxContext' | 'dtype' | 'kvCache'>, read: (r: Region, n: number) => Float32Array, opts: SnapshotOptions = {}): Uint8Array {
  const dtype = opts.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new SnapshotError(`snapshot dtype must be f32 or f16, got ${JSON.stringify(dtype)}`);
  const pos = header.pos;
  const quantized = layout.regions.some((r) => r.quant);
  const regions: SnapshotRegion[] = layout.regions.map((r) => {
    const n = snapshotRegionFloats(r, pos);
    return r.quant ? { name: r.name, words: n, kv: r.quant.type } : { name: r.name, floats: n };
  });
  const head = new TextEncoder().encode(JSON.stringify(quantized
    ? { ...header, maxContext: layout.maxContext, regions, dtype, kvCache: layout.kvCache }
    : { ...header, maxContext: layout.maxContext, regions, dtype }));
  const bytesOf = (r: Region, n: number) => (r.quant || dtype === 'f32' ? n * 4 : n * 2);
  const payload = layout.regions.reduce((a, r, i) => a + bytesOf(r, regions[i].floats ?? regions[i].words!), 0);
  const out = new Uint8Array(8 + 8 + head.length + payload + 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) out[i] = MAGIC.charCodeAt(i);
  dv.setUint32(8, quantized ? 2 : 1, true);
  dv.setUint32(12, head.length, true);
  out.set(head, 16);
  let o = 16 + head.length;
  for (let i = 0; i < regions.length; i++) {
    const r = layout.regions[i];
    const n = regions[i].floats ?? regions[i].words!;
    // A ring region is stored whole (slot order): positions wrap, so trimming by count would
    // only be valid before the first wrap.
    const v = read(r, n);
    if (v.length !== n) throw new SnapshotError(`state region ${r.name}: ${v.length} floats read, ${n} expected`);
    if (dtype === 'f16' && !r.quant) {
      for (let j = 0; j < n; j++) {
        if (!(Math.abs(v[j]) <= 65504)) throw new SnapshotError(`state region ${r.name} holds ${v[j]}, outside the f16 range: use an f32 snapshot`);
      }
      out.set(f32ToF16Bytes(v), o);
    }
    else out.set(new Uint8Array(v.buffer, v.byteOffset, n * 4), o);
    o += bytesOf(r, n);
  }
  dv.setUint32(o, crc32(out.subarray(0, o)), true);
  return out;
}

export function writeSnapshot(state: SeqState, header: Omit<SnapshotHeader, 'regions' | 'maxContext' | 'dtype' | 'kvCache'>, opts: SnapshotOptions = {}): Uint8Array {
  const { layout, arena } = state;
  return encodeSnapshot(layout, header, (r, n) => arena.f32(state.base + r.offset, n), opts);
}

export function readSnapshotHeader(bytes: Uint8Array): { header: SnapshotHeader; payloadOffset: number } {
  if (bytes.length < 20) throw new SnapshotError('snapshot is truncated (shorter than its header)');
  for (let i = 0; i < 8; i++) if (bytes[i] !== MAGIC.charCodeAt(i)) throw new SnapshotError('not a sparrow state snapshot (bad magic)');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = dv.getUint32(8, true);
  if (!SNAPSHOT_VERSIONS.includes(version)) throw new SnapshotError(`snapshot version ${version} is not supported (expected ${SNAPSHOT_VERSIONS.join(' or ')})`);
  const hl = dv.getUint32(12, true);
  if (16 + hl + 4 > bytes.length) throw new SnapshotError('snapshot is truncated (header length beyond end)');
  const stored = dv.getUint32(bytes.length - 4, true);
  if (crc32(bytes.subarray(0, bytes.length - 4)) !== stored) throw new SnapshotError('snapshot checksum mismatch (corrupted bytes)');
  let header: SnapshotHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(16, 16 + hl)));
  } catch {
    throw new SnapshotError('snapshot header is not valid JSON');
  }
  return { header, payloadOffset: 16 + hl };
}

/**
 * Refuses a snapshot of another model, or one whose attention caches are of another type than this
 * model's (`kvCache` of the load options): the error names both types.
 */
export function checkSnapshotModel(header: SnapshotHeader, expect: { modelHash: string; kvCache: KvCacheType }): void {
  if (header.modelHash !== expect.modelHash) {
    throw new SnapshotError(`snapshot belongs to another model (hash ${header.modelHash}, this model ${expect.modelHash})`);
  }
  const kv = header.kvCache ?? 'f32';
  if (kv !== expect.kvCache) {
    throw new SnapshotError(`snapshot's KV cache is ${kv}, this model's is ${expect.kvCache} (load option kvCache): restore it into a model loaded with kvCache '${kv}'`);
  }
}

/**
 * Checks snapshot bytes against a layout and hands over each region's words (f32 values whatever
 * the payload dtype, or a quantized cache's bytes as they are): `clear()` once the header fits, then
 * `write(r, data)` per region in layout order, data being the region's first data.length words (see
 * encodeSnapshot).
 */
export function decodeSnapshot(layout: StateLayout, bytes: Uint8Array, expect: { modelHash: string }, sink: { clear(): void; write(r: Region, data: Float32Array): void }): SnapshotHeader {
  const { header, payloadOffset } = readSnapshotHeader(bytes);
  checkSnapshotModel(header, { modelHash: expect.modelHash, kvCache: layout.kvCache });
  if (header.pos > layout.maxContext) throw new SnapshotError(`snapshot holds ${header.pos} positions; this session allows ${layout.maxContext}`);
  if (!Array.isArray(header.regions) || header.regions.length !== layout.regions.length) throw new SnapshotError('snapshot state layout differs from this model');
  const dtype = header.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new SnapshotError(`snapshot payload dtype ${JSON.stringify(dtype)} is not supported`);
  sink.clear();
  let o = payloadOffset;
  for (let i = 0; i < layout.regions.length; i++) {
    const r = layout.regions[i], e = header.regions[i];
    const n = r.quant ? e.words : e.floats;
    if (e.name !== r.name || (r.quant ? e.kv !== r.quant.type : e.kv !== undefined) || typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > r.size) {
      throw new SnapshotError(`snapshot region ${e.name} does not fit region ${r.name}`);
    }
    const raw = r.quant || dtype === 'f32';
    const len = raw ? n * 4 : n * 2;
    if (o + len > bytes.length - 4) throw new SnapshotError('snapshot is truncated (payload)');
    sink.write(r, raw ? new Float32Array(bytes.slice(o, o + len).buffer) : f16BytesToF32(bytes.subarray(o, o + len), n));
    o += len;
  }
  if (o !== bytes.length - 4) throw new SnapshotError('snapshot has trailing bytes');
  return header;
}

export function restoreSnapshot(state: SeqState, bytes: Uint8Array, expect: { modelHash: string }): SnapshotHeader {
  const { layout, arena } = state;
  return decodeSnapshot(layout, bytes, expect, {
    clear: () => state.clear(),
    write: (r, data) => arena.f32(state.base + r.offset, data.length).set(data),
  });
}
