// safetensors: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// `{ "__metadata__"?: {str: str}, "<name>": { dtype, shape, data_offsets: [begin, end] }, … }`,
// then the data section; offsets are relative to the data section's start (8 + N).
// Everything in the header is validated against the file size before any tensor is read.

import { FormatError } from './errors';
import type { DType } from './dtype';
import { numElements, bytesPerElement } from './dtype';
import type { ByteSource } from './source';
import type { TensorInfo } from './checkpoint';

/** Largest header accepted (the limit the reference implementation uses too). */
export const MAX_HEADER_BYTES = 100_000_000;

const ST_TO_DTYPE: Record<string, DType> = {
  F32: 'f32', F16: 'f16', BF16: 'bf16', F64: 'f64',
  I64: 'i64', I32: 'i32', I16: 'i16', I8: 'i8', U8: 'u8', BOOL: 'bool',
};
const DTYPE_TO_ST: Partial<Record<DType, string>> = Object.fromEntries(Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k]));

export interface SafetensorsFile {
  /** `__metadata__` (string → string), empty when absent. */
  metadata: Record<string, string>;
  /** Tensors in header order, with absolute byte offsets into `source`. */
  tensors: TensorInfo[];
  /** Absolute offset of the data section (8 + header length). */
  dataOffset: number;
  source: ByteSource;
}

const own = (o: object, k: string) => Object.hasOwn(o, k);
const isPlainObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Runs a check that throws FormatError without a file name, attaching `file`. */
function withFile<R>(file: string, fn: () => R): R {
  try {
    return fn();
  } catch (e) {
    if (e instanceof FormatError && !e.file) throw new FormatError(e.field, e.detail, file);
    throw e;
  }
}

/** Reads and validates the header of a safetensors source. */
export async function parseSafetensors(src: ByteSource): Promise<SafetensorsFile> {
  const file = src.name;
  if (src.size < 8) throw new FormatError('safetensors.header_length', `file of ${src.size} bytes is shorter than the 8-byte header length`, file);
  const lenBytes = await src.read(0, 8);
  const dv = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  const headerLen = hi * 2 ** 32 + lo;
  if (headerLen > MAX_HEADER_BYTES) {
    throw new FormatError('safetensors.header_length', `${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`, file);
  }
  if (headerLen > src.size - 8) {
    throw new FormatError('safetensors.header_length', `${headerLen} beyond file size ${src.size} (8-byte prefix + header)`, file);
  }
  const headerBytes = await src.read(8, headerLen);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new FormatError('safetensors.header', 'is not valid UTF-8', file);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new FormatError('safetensors.header', `invalid JSON: ${(e as Error).message}`, file);
  }
  if (!isPlainObject(header)) throw new FormatError('safetensors.header', 'is not a JSON object', file);

  const dataOffset = 8 + headerLen;
  const dataSize = src.size - dataOffset;
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const spans: { begin: number; end: number; name: string }[] = [];

  for (const name of Object.keys(header)) {
    const entry = header[name];
    if (name === '__metadata__') {
      if (!isPlainObject(entry)) throw new FormatError('safetensors.header.__metadata__', 'is not an object', file);
      for (const k of Object.keys(entry)) {
        const v = entry[k];
        if (typeof v !== 'string') throw new FormatError(`safetensors.header.__metadata__[${JSON.stringify(k)}]`, `is ${typeof v}, not a string`, file);
        metadata[k] = v;
      }
      continue;
    }
    const field = `safetensors.header.tensors[${JSON.stringify(name)}]`;
    if (!isPlainObject(entry)) throw new FormatError(field, 'is not an object', file);
    if (!own(entry, 'dtype') || !own(entry, 'shape') || !own(entry, 'data_offsets')) {
      throw new FormatError(field, 'needs dtype, shape and data_offsets', file);
    }
    const st = entry.dtype;
    if (typeof st !== 'string' || !own(ST_TO_DTYPE, st)) {
      throw new FormatError(`${field}.dtype`, `${JSON.stringify(st)} is not supported (${Object.keys(ST_TO_DTYPE).join(', ')})`, file);
    }
    const dtype = ST_TO_DTYPE[st];
    const shape = entry.shape;
    if (!Array.isArray(shape)) throw new FormatError(`${field}.shape`, 'is not an array', file);
    if (shape.length > 32) throw new FormatError(`${field}.shape`, `has ${shape.length} dimensions`, file);
    const n = withFile(file, () => numElements(shape as number[], `${field}.shape`));
    const off = entry.data_offsets;
    if (!Array.isArray(off) || off.length !== 2) throw new FormatError(`${field}.data_offsets`, 'is not [begin, end]', file);
    const [begin, end] = off as unknown[];
    if (typeof begin !== 'number' || typeof end !== 'number' || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin) {
      throw new FormatError(`${field}.data_offsets`, `[${JSON.stringify(begin)}, ${JSON.stringify(end)}] is not a range of non-negative integers`, file);
    }
    if (end > dataSize) throw new FormatError(`${field}.data_offsets`, `end ${end} beyond data section size ${dataSize} (file size ${src.size})`, file);
    const byteLength = n * bytesPerElement(dtype);
    if (end - begin !== byteLength) {
      throw new FormatError(`${field}.data_offsets`, `span ${end - begin} bytes, but [${shape.join(', ')}] ${st} needs ${byteLength}`, file);
    }
    spans.push({ begin, end, name });
    tensors.push({ name, dtype, shape: (shape as number[]).slice(), byteOffset: dataOffset + begin, byteLength, source: src });
  }

  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < spans.length; i++) {
    const p = spans[i - 1], c = spans[i];
    // Zero-length tensors occupy nothing and may share an offset with anything.
    if (c.begin < p.end && c.end > c.begin) {
      throw new FormatError(`safetensors.header.tensors[${JSON.stringify(c.name)}].data_offsets`, `[${c.begin}, ${c.end}) overlaps ${JSON.stringify(p.name)} [${p.begin}, ${p.end})`, file);
    }
    if (c.end < p.end) spans[i] = p;
  }
  return { metadata, tensors, dataOffset, source: src };
}

export interface SafetensorsTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** True when a buffer starts like a safetensors file (plausible header length, then `{`). */
export function looksLikeSafetensors(head: Uint8Array, size: number): boolean {
  if (head.length < 9) return false;
  const dv = new DataView(head.buffer, head.byteOffset, head.length);
  const n = dv.getUint32(4, true) * 2 ** 32 + dv.getUint32(0, true);
  return n <= size - 8 && head[8] === 0x7b;
}

/**
 * A complete safetensors file. Tensors are laid out in the given order; the header is padded with
 * spaces to a multiple of 8 bytes so that the data section starts aligned.
 */
export function writeSafetensors(tensors: SafetensorsTensor[], metadata?: Record<string, string>): Uint8Array {
  // Null prototype: a tensor named `__proto__` must become a key, not a prototype.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const field = `tensors[${JSON.stringify(t.name)}]`;
    if (t.name === '__metadata__' || own(header, t.name)) throw new FormatError(field, 'duplicate or reserved name');
    const st = DTYPE_TO_ST[t.dtype];
    if (!st) throw new FormatError(`${field}.dtype`, `${t.dtype} cannot be stored in safetensors`);
    const n = numElements(t.shape, `${field}.shape`);
    const len = n * bytesPerElement(t.dtype);
    if (t.data.length !== len) throw new FormatError(`${field}.data`, `has ${t.data.length} bytes, [${t.shape.join(', ')}] ${t.dtype} needs ${len}`);
    header[t.name] = { dtype: st, shape: t.shape, data_offsets: [offset, offset + len] };
    offset += len;
  }
  let json = JSON.stringify(header);
  let hb = new TextEncoder().encode(json);
  const pad = (8 - (hb.length % 8)) % 8;
  if (pad) {
    json += ' '.repeat(pad);
    hb = new TextEncoder().encode(json);
  }
  const out = new Uint8Array(8 + hb.length + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, hb.length % 2 ** 32, true);
  dv.setUint32(4, Math.floor(hb.length / 2 ** 32), true);
  out.set(hb, 8);
  let o = 8 + hb.length;
  for (const t of tensors) {
    out.set(t.data, o);
    o += t.data.length;
  }
  return out;
}
