// GGUF (v3; v2 read too): little-endian
//   magic "GGUF" · u32 version · u64 tensor_count · u64 kv_count
//   kv_count × (string key · u32 value type · value)
//   tensor_count × (string name · u32 n_dims · n_dims × u64 dim · u32 ggml type · u64 offset)
//   padding to `general.alignment` (default 32) · data section
// Strings are u64 length + UTF-8 bytes; arrays are u32 element type + u64 count + elements.
// Dims are innermost-first (ggml ne[0] is the contiguous one): an HF tensor [out, in] has dims
// [in, out]. TensorInfo.shape is always HF order (outermost-first).
//
// sparrow's GGUF convention (what `GGUFWriter` + `setSparrowMetadata` write and checkpoint.ts reads):
//   general.architecture        the HF `model_type`
//   general.name                model name
//   general.file_type           llama.cpp ftype of the bulk of the weights (0 f32, 1 f16, 2 q4_0, 7 q8_0, 32 bf16)
//                               or of the quantization mix (15 Q4_K_M, 17 Q5_K_M, 18 Q6_K, …)
//   sparrow.version             u32, version of this convention (SPARROW_GGUF_VERSION)
//   sparrow.hf_config           config.json, as a JSON string
//   sparrow.generation_config   generation_config.json, as a JSON string
//   sparrow.tokenizer_config    tokenizer_config.json, as a JSON string
//   tokenizer.huggingface.json  the whole tokenizer.json
//   tokenizer.chat_template     the chat template (Jinja)
// Tensor names are the HF names, unchanged; shapes are the HF shapes (reversed into GGUF dims).
// llama.cpp cannot run these files (it wants its own tensor names and hyperparameter keys); the
// container, type ids and block layouts are the standard ones, so its gguf tools can read them as
// long as every tensor name fits its 63-byte limit (this reader allows up to 65535 bytes).

import { ConfigError, FormatError } from './errors';
import type { DType } from './dtype';
import { tensorByteSize, type QuantMix } from './dtype';
import type { ByteSource } from './source';
import { nodeFs } from './source';
import type { TensorInfo } from './checkpoint';

export const GGUF_MAGIC = 'GGUF';
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const SPARROW_GGUF_VERSION = 1;

/** Sanity limits; real files are orders of magnitude below each. */
const MAX_TENSORS = 1 << 22;
const MAX_KV = 1 << 20;
const MAX_ARRAY_LEN = 1 << 26;
const MAX_ARRAY_DEPTH = 3;
const MAX_STRING = 1 << 28;
const MAX_KEY = 65535;
const MAX_DIMS = 4;
/** Largest metadata + tensor-info region read while parsing. */
const MAX_HEADER_WINDOW = 1 << 30;
const INITIAL_WINDOW = 1 << 20;

/** GGUF metadata value type ids. */
export const GGUFValueType = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
} as const;
export type GGUFScalarTypeName = Exclude<keyof typeof GGUFValueType, 'array'>;
const VT_NAME: string[] = [];
for (const [k, v] of Object.entries(GGUFValueType)) VT_NAME[v] = k;
/** Smallest encoded size of one value of each type (arrays: u32 type + u64 count). */
const VT_MIN_SIZE = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/**
 * A metadata value: numbers (u64/i64 beyond 2^53 as bigint), booleans, strings, arrays of values.
 * Its exact GGUF type is given by a descriptor string: 'u8' … 'f64', 'bool', 'string', or
 * 'array<…>' (e.g. 'array<string>', 'array<array<i32>>'; 'array<array>' when the inner arrays are empty).
 */
export type GGUFValue = number | bigint | boolean | string | GGUFValue[];

/** ggml tensor types by id; `dtype` is set for the ones sparrow reads and writes. */
const GGML_TYPES: Record<number, { name: string; dtype?: DType }> = {
  0: { name: 'F32', dtype: 'f32' }, 1: { name: 'F16', dtype: 'f16' }, 2: { name: 'Q4_0', dtype: 'q4_0' },
  3: { name: 'Q4_1', dtype: 'q4_1' }, 6: { name: 'Q5_0', dtype: 'q5_0' }, 7: { name: 'Q5_1', dtype: 'q5_1' }, 8: { name: 'Q8_0', dtype: 'q8_0' }, 9: { name: 'Q8_1' },
  10: { name: 'Q2_K', dtype: 'q2_k' }, 11: { name: 'Q3_K', dtype: 'q3_k' }, 12: { name: 'Q4_K', dtype: 'q4_k' },
  13: { name: 'Q5_K', dtype: 'q5_k' }, 14: { name: 'Q6_K', dtype: 'q6_k' }, 15: { name: 'Q8_K', dtype: 'q8_k' },
  16: { name: 'IQ2_XXS' }, 17: { name: 'IQ2_XS' }, 18: { name: 'IQ3_XXS' }, 19: { name: 'IQ1_S' }, 20: { name: 'IQ4_NL', dtype: 'iq4_nl' },
  21: { name: 'IQ3_S' }, 22: { name: 'IQ2_S' }, 23: { name: 'IQ4_XS', dtype: 'iq4_xs' },
  24: { name: 'I8', dtype: 'i8' }, 25: { name: 'I16', dtype: 'i16' }, 26: { name: 'I32', dtype: 'i32' }, 27: { name: 'I64', dtype: 'i64' },
  28: { name: 'F64', dtype: 'f64' }, 29: { name: 'IQ1_M' }, 30: { name: 'BF16', dtype: 'bf16' },
  34: { name: 'TQ1_0' }, 35: { name: 'TQ2_0' }, 39: { name: 'MXFP4', dtype: 'mxfp4' },
};
const DTYPE_TO_GGML: Partial<Record<DType, number>> = {};
for (const [id, t] of Object.entries(GGML_TYPES)) if (t.dtype) DTYPE_TO_GGML[t.dtype] = Number(id);
const SUPPORTED_GGML = Object.values(GGML_TYPES).filter((t) => t.dtype).map((t) => t.name).join(', ');

/** The ggml type id of a dtype (u8 and bool have none). */
export function ggmlType(d: DType): number | undefined {
  return DTYPE_TO_GGML[d];
}

/**
 * llama.cpp `general.file_type` (llama_ftype) for weights mostly in `d`, or for a quantization mix
 * (runtime/quantmix.ts; 'q4_k' / 'q5_k' are its aliases of Q4_K_M / Q5_K_M).
 */
export function ggufFileType(d: DType | QuantMix): number {
  switch (d) {
    case 'f16': return 1;
    case 'q4_0': return 2;
    case 'q4_1': return 3;
    case 'q5_0': return 8;
    case 'q5_1': return 9;
    case 'q8_0': return 7;
    case 'q2_k': return 10;
    case 'q3_k': return 12;
    case 'q4_k_s': return 14;
    case 'q4_k': case 'q4_k_m': return 15;
    case 'q5_k_s': return 16;
    case 'q5_k': case 'q5_k_m': return 17;
    case 'q6_k': return 18;
    case 'iq4_nl': return 25;
    case 'iq4_xs': return 30;
    case 'bf16': return 32;
    case 'mxfp4': return 38;
    default: return 0;
  }
}

export interface GGUFFile {
  version: number;
  alignment: number;
  metadata: Record<string, GGUFValue>;
  /** Type descriptor of each metadata value (see GGUFValue). */
  types: Record<string, string>;
  /** Tensors in file order; shapes in HF order, byte offsets absolute. */
  tensors: TensorInfo[];
  /** Absolute offset of the data section. */
  dataOffset: number;
  source: ByteSource;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Signals that the parse window must grow to at least `end` bytes. */
class NeedMore {
  constructor(readonly end: number) {}
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });
const utf8Lossy = new TextDecoder('utf-8');

class Cursor {
  pos = 0;
  private readonly dv: DataView;
  constructor(readonly buf: Uint8Array, readonly size: number, readonly file: string) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  }

  fail(field: string, detail: string): never {
    throw new FormatError(field, detail, this.file);
  }

  get remaining(): number {
    return this.size - this.pos;
  }

  /** Makes `n` bytes at the cursor available, or reports truncation against the real file size. */
  ensure(n: number, field: string): void {
    const end = this.pos + n;
    if (end > this.buf.length) {
      if (end > this.size) this.fail(field, `needs ${n} bytes at offset ${this.pos}, the file ends at ${this.size}`);
      throw new NeedMore(end);
    }
  }

  u8(field: string): number {
    this.ensure(1, field);
    return this.dv.getUint8(this.pos++);
  }
  i8(field: string): number {
    this.ensure(1, field);
    return this.dv.getInt8(this.pos++);
  }
  u16(field: string): number {
    this.ensure(2, field);
    const v = this.dv.getUint16(this.pos, true);
    this.pos += 2;
    return v;
  }
  i16(field: string): number {
    this.ensure(2, field);
    const v = this.dv.getInt16(this.pos, true);
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.ensure(4, field);
    const v = this.dv.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  i32(field: string): number {
    this.ensure(4, field);
    const v = this.dv.getInt32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f32(field: string): number {
    this.ensure(4, field);
    const v = this.dv.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }
  f64(field: string): number {
    this.ensure(8, field);
    const v = this.dv.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }
  /** u64 as a number when below 2^53, else as a bigint. */
  u64(field: string): number | bigint {
    this.ensure(8, field);
    const v = this.dv.getBigUint64(this.pos, true);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  i64(field: string): number | bigint {
    this.ensure(8, field);
    const v = this.dv.getBigInt64(this.pos, true);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
  }
  /** A u64 count or size that must stay below `limit`. */
  count(field: string, limit: number): number {
    const v = this.u64(field);
    if (typeof v !== 'number' || v > limit) this.fail(field, `${v} exceeds the limit of ${limit}`);
    return v;
  }
  str(field: string, strict: boolean, limit = MAX_STRING): string {
    const n = this.count(`${field}.length`, limit);
    if (n > this.remaining) this.fail(`${field}.length`, `${n} bytes, but only ${this.remaining} remain in the file`);
    this.ensure(n, field);
    const bytes = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    if (!strict) return utf8Lossy.decode(bytes);
    try {
      return utf8Strict.decode(bytes);
    } catch {
      this.fail(field, 'is not valid UTF-8');
    }
  }
}

function readScalar(c: Cursor, type: number, field: string): GGUFValue {
  switch (type) {
    case 0: return c.u8(field);
    case 1: return c.i8(field);
    case 2: return c.u16(field);
    case 3: return c.i16(field);
    case 4: return c.u32(field);
    case 5: return c.i32(field);
    case 6: return c.f32(field);
    case 7: {
      const b = c.u8(field);
      if (b > 1) c.fail(field, `bool byte is ${b}, not 0 or 1`);
      return b === 1;
    }
    case 8: return c.str(field, false);
    case 10: return c.u64(field);
    case 11: return c.i64(field);
    case 12: return c.f64(field);
  }
  return c.fail(`${field}.type`, `unknown value type ${type}`);
}

function readValue(c: Cursor, type: number, field: string, depth: number): { value: GGUFValue; desc: string } {
  if (type !== GGUFValueType.array) {
    if (type > 12) c.fail(`${field}.type`, `unknown value type ${type}`);
    return { value: readScalar(c, type, field), desc: VT_NAME[type] };
  }
  if (depth >= MAX_ARRAY_DEPTH) c.fail(field, `arrays nested deeper than ${MAX_ARRAY_DEPTH}`);
  const et = c.u32(`${field}.element_type`);
  if (et > 12) c.fail(`${field}.element_type`, `unknown value type ${et}`);
  const n = c.count(`${field}.count`, MAX_ARRAY_LEN);
  if (n * VT_MIN_SIZE[et] > c.remaining) {
    c.fail(`${field}.count`, `${n} elements of ${VT_NAME[et]} need at least ${n * VT_MIN_SIZE[et]} bytes, only ${c.remaining} remain`);
  }
  const out: GGUFValue[] = new Array(n);
  if (et === GGUFValueType.array) {
    let inner = 'array';
    for (let i = 0; i < n; i++) {
      const r = readValue(c, et, `${field}[${i}]`, depth + 1);
      out[i] = r.value;
      if (i === 0) inner = r.desc;
    }
    return { value: out, desc: `array<${inner}>` };
  }
  // Fixed-size elements: one bounds check for the whole run.
  if (et !== GGUFValueType.string) c.ensure(n * VT_MIN_SIZE[et], field);
  for (let i = 0; i < n; i++) out[i] = readScalar(c, et, field);
  return { value: out, desc: `array<${VT_NAME[et]}>` };
}

function parseHeader(c: Cursor, src: ByteSource): GGUFFile {
  c.ensure(4, 'gguf.magic');
  const magic = String.fromCharCode(c.buf[0], c.buf[1], c.buf[2], c.buf[3]);
  if (magic !== GGUF_MAGIC) c.fail('gguf.magic', `is ${JSON.stringify(magic)}, not "GGUF"`);
  c.pos = 4;
  const version = c.u32('gguf.version');
  if (version !== 2 && version !== 3) {
    const swapped = ((version & 0xff) << 24 | (version & 0xff00) << 8 | (version >>> 8) & 0xff00 | version >>> 24) >>> 0;
    if (swapped >= 1 && swapped <= 3) c.fail('gguf.version', 'big-endian GGUF files are not supported');
    c.fail('gguf.version', `${version} is not supported (2 or 3)`);
  }
  const nTensors = c.count('gguf.tensor_count', MAX_TENSORS);
  const nKV = c.count('gguf.kv_count', MAX_KV);
  // Every tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
  // every key/value at least 8 (key length) + 1 (key) + 4 (type) + 1 (value).
  if (nTensors * 24 + nKV * 14 > c.remaining) {
    c.fail('gguf.tensor_count', `${nTensors} tensors and ${nKV} metadata entries cannot fit in the ${c.remaining} bytes left`);
  }

  const metadata: Record<string, GGUFValue> = Object.create(null);
  const types: Record<string, string> = Object.create(null);
  for (let i = 0; i < nKV; i++) {
    const key = c.str(`gguf.metadata[${i}].key`, true, MAX_KEY);
    if (!key) c.fail(`gguf.metadata[${i}].key`, 'is empty');
    const field = `gguf.metadata[${JSON.stringify(key)}]`;
    if (key in metadata) c.fail(field, 'appears twice');
    const type = c.u32(`${field}.type`);
    const { value, desc } = readValue(c, type, field, 0);
    metadata[key] = value;
    types[key] = desc;
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  if ('general.alignment' in metadata) {
    const a = metadata['general.alignment'];
    if (typeof a !== 'number' || !Number.isInteger(a) || a < 1 || a > 1 << 30 || (a & (a - 1)) !== 0) {
      c.fail('gguf.metadata["general.alignment"]', `${String(a)} is not a power of two`);
    }
    alignment = a;
  }

  interface RawTensor { name: string; dtype: DType; shape: number[]; offset: number; byteLength: number }
  const raw: RawTensor[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const name = c.str(`gguf.tensors[${i}].name`, true, MAX_KEY);
    const field = `gguf.tensors[${JSON.stringify(name)}]`;
    if (!name) c.fail(`gguf.tensors[${i}].name`, 'is empty');
    if (seen.has(name)) c.fail(field, 'appears twice');
    seen.add(name);
    const nDims = c.u32(`${field}.n_dims`);
    if (nDims > MAX_DIMS) c.fail(`${field}.n_dims`, `${nDims} exceeds ${MAX_DIMS}`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const v = c.u64(`${field}.dims[${d}]`);
      if (typeof v !== 'number') c.fail(`${field}.dims[${d}]`, `${v} exceeds 2^53`);
      dims.push(v);
    }
    const shape = dims.reverse();
    const typeId = c.u32(`${field}.type`);
    const gt = GGML_TYPES[typeId];
    if (!gt) c.fail(`${field}.type`, `unknown ggml type ${typeId}`);
    if (!gt.dtype) c.fail(`${field}.type`, `ggml type ${gt.name} (${typeId}) is not supported (${SUPPORTED_GGML})`);
    const offset = c.u64(`${field}.offset`);
    if (typeof offset !== 'number') c.fail(`${field}.offset`, `${offset} exceeds 2^53`);
    let byteLength: number;
    try {
      byteLength = tensorByteSize(gt.dtype, shape, `${field}.dims`);
    } catch (e) {
      if (e instanceof FormatError) c.fail(e.field, e.detail);
      throw e;
    }
    raw.push({ name, dtype: gt.dtype, shape, offset, byteLength });
  }

  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  if (raw.length && dataOffset > c.size) c.fail('gguf.data', `data section would start at ${dataOffset}, beyond file size ${c.size}`);
  const dataSize = c.size - dataOffset;
  const tensors: TensorInfo[] = [];
  for (const t of raw) {
    const field = `gguf.tensors[${JSON.stringify(t.name)}].offset`;
    if (t.offset % alignment !== 0) c.fail(field, `${t.offset} is not a multiple of the alignment ${alignment}`);
    if (t.offset + t.byteLength > dataSize) {
      c.fail(field, `data [${t.offset}, ${t.offset + t.byteLength}) beyond data section size ${dataSize} (file size ${c.size})`);
    }
    tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, byteOffset: dataOffset + t.offset, byteLength: t.byteLength, source: src });
  }
  const spans = raw.filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  let prev: RawTensor | undefined;
  for (const t of spans) {
    if (prev && t.offset < prev.offset + prev.byteLength) {
      c.fail(`gguf.tensors[${JSON.stringify(t.name)}].offset`, `data at ${t.offset} overlaps ${JSON.stringify(prev.name)} [${prev.offset}, ${prev.offset + prev.byteLength})`);
    }
    if (!prev || t.offset + t.byteLength > prev.offset + prev.byteLength) prev = t;
  }
  return { version, alignment, metadata, types, tensors, dataOffset, source: src };
}

/** True when bytes start with the GGUF magic. */
export function isGGUF(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x47 && head[1] === 0x47 && head[2] === 0x55 && head[3] === 0x46;
}

/**
 * Reads and validates a GGUF header (metadata and tensor infos). Reads a growing prefix of the
 * file, never more than the header needs (plus doubling slack), and checks every count and length
 * against the bytes that remain before reading further.
 */
export async function parseGGUF(src: ByteSource): Promise<GGUFFile> {
  let buf = await src.read(0, Math.min(src.size, INITIAL_WINDOW));
  for (;;) {
    try {
      return parseHeader(new Cursor(buf, src.size, src.name), src);
    } catch (e) {
      if (!(e instanceof NeedMore)) throw e;
      const want = Math.min(src.size, Math.max(buf.length * 2, e.end));
      if (want > MAX_HEADER_WINDOW) throw new FormatError('gguf.header', `metadata and tensor infos exceed ${MAX_HEADER_WINDOW} bytes`, src.name);
      const more = await src.read(buf.length, want - buf.length);
      const grown = new Uint8Array(want);
      grown.set(buf);
      grown.set(more, buf.length);
      buf = grown;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

interface TypeDesc {
  type: number;
  elem?: TypeDesc;
}

function parseDesc(desc: string, field: string): TypeDesc {
  const m = /^array(?:<(.*)>)?$/.exec(desc);
  if (m) return { type: GGUFValueType.array, elem: m[1] === undefined ? undefined : parseDesc(m[1], field) };
  const t = (GGUFValueType as Record<string, number>)[desc];
  if (t === undefined) throw new FormatError(`${field}.type`, `unknown GGUF value type ${JSON.stringify(desc)}`);
  return { type: t };
}

function inferDesc(v: GGUFValue, field: string): string {
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'bigint') return v < 0n ? 'i64' : 'u64';
  if (typeof v === 'number') {
    if (Number.isInteger(v)) {
      if (v >= 0 && v <= 0xffffffff) return 'u32';
      if (v >= -0x80000000 && v < 0) return 'i32';
      if (Number.isSafeInteger(v)) return 'i64';
    }
    return 'f32';
  }
  if (Array.isArray(v)) {
    if (v.length === 0) return 'array<u8>';
    if (v.every((x) => typeof x === 'string')) return 'array<string>';
    if (v.every((x) => typeof x === 'boolean')) return 'array<bool>';
    if (v.every((x) => typeof x === 'number')) {
      const nums = v as number[];
      if (!nums.every(Number.isInteger)) return 'array<f32>';
      if (nums.every((x) => x >= -0x80000000 && x <= 0x7fffffff)) return 'array<i32>';
      if (nums.every((x) => x >= 0 && x <= 0xffffffff)) return 'array<u32>';
      return 'array<i64>';
    }
    if (v.every((x) => typeof x === 'bigint')) return (v as bigint[]).some((x) => x < 0n) ? 'array<i64>' : 'array<u64>';
    if (v.every((x) => Array.isArray(x))) {
      const first = v.find((x) => (x as GGUFValue[]).length > 0);
      return `array<${first ? inferDesc(first, field) : 'array<u8>'}>`;
    }
    throw new FormatError(field, 'array mixes value kinds; pass a type descriptor');
  }
  throw new FormatError(field, `cannot store a ${typeof v} in GGUF metadata`);
}

/** A growable little-endian byte buffer. */
class ByteBuilder {
  buf = new Uint8Array(4096);
  dv = new DataView(this.buf.buffer);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }
  u8(v: number) { this.room(1); this.dv.setUint8(this.len, v); this.len += 1; }
  i8(v: number) { this.room(1); this.dv.setInt8(this.len, v); this.len += 1; }
  u16(v: number) { this.room(2); this.dv.setUint16(this.len, v, true); this.len += 2; }
  i16(v: number) { this.room(2); this.dv.setInt16(this.len, v, true); this.len += 2; }
  u32(v: number) { this.room(4); this.dv.setUint32(this.len, v, true); this.len += 4; }
  i32(v: number) { this.room(4); this.dv.setInt32(this.len, v, true); this.len += 4; }
  f32(v: number) { this.room(4); this.dv.setFloat32(this.len, v, true); this.len += 4; }
  f64(v: number) { this.room(8); this.dv.setFloat64(this.len, v, true); this.len += 8; }
  u64(v: number | bigint) { this.room(8); this.dv.setBigUint64(this.len, BigInt(v), true); this.len += 8; }
  i64(v: number | bigint) { this.room(8); this.dv.setBigInt64(this.len, BigInt(v), true); this.len += 8; }
  bytes(b: Uint8Array) { this.room(b.length); this.buf.set(b, this.len); this.len += b.length; }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  pad(alignment: number) {
    const n = (alignment - (this.len % alignment)) % alignment;
    this.room(n);
    this.buf.fill(0, this.len, this.len + n);
    this.len += n;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

const INT_RANGE: Record<string, [number, number]> = {
  u8: [0, 0xff], i8: [-0x80, 0x7f], u16: [0, 0xffff], i16: [-0x8000, 0x7fff], u32: [0, 0xffffffff], i32: [-0x80000000, 0x7fffffff],
};

function writeValue(b: ByteBuilder, t: TypeDesc, v: GGUFValue, field: string): void {
  const bad = (why: string): never => {
    throw new FormatError(field, `${why} (value ${typeof v === 'bigint' ? `${v}n` : JSON.stringify(v)?.slice(0, 80)})`);
  };
  const name = VT_NAME[t.type];
  if (t.type === GGUFValueType.array) {
    if (!Array.isArray(v)) bad('expected an array');
    const arr = v as GGUFValue[];
    let elem = t.elem;
    if (!elem) elem = arr.length ? parseDesc(inferDesc(arr[0], field), field) : { type: GGUFValueType.u8 };
    b.u32(elem.type);
    b.u64(arr.length);
    for (let i = 0; i < arr.length; i++) writeValue(b, elem, arr[i], `${field}[${i}]`);
    return;
  }
  if (name in INT_RANGE) {
    const [lo, hi] = INT_RANGE[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) bad(`not a ${name}`);
    (b as unknown as Record<string, (x: number) => void>)[name](v as number);
    return;
  }
  switch (name) {
    case 'f32': case 'f64':
      if (typeof v !== 'number') bad(`not a number for ${name}`);
      if (name === 'f32') b.f32(v as number);
      else b.f64(v as number);
      return;
    case 'bool':
      if (typeof v !== 'boolean') bad('not a boolean');
      b.u8(v ? 1 : 0);
      return;
    case 'string':
      if (typeof v !== 'string') bad('not a string');
      b.str(v as string);
      return;
    case 'u64': case 'i64': {
      const ok = typeof v === 'bigint' || (typeof v === 'number' && Number.isSafeInteger(v));
      if (!ok) bad(`not an integer for ${name}`);
      const x = BigInt(v as number | bigint);
      if (name === 'u64' ? x < 0n || x >= 1n << 64n : x < -(1n << 63n) || x >= 1n << 63n) bad(`out of range for ${name}`);
      if (name === 'u64') b.u64(x);
      else b.i64(x);
      return;
    }
  }
}

export type TensorData = Uint8Array | (() => Uint8Array | Promise<Uint8Array>);

interface PendingTensor {
  name: string;
  dtype: DType;
  shape: number[];
  ggml: number;
  byteLength: number;
  offset: number;
  data: TensorData;
}

/**
 * Builds a GGUF v3 file: metadata of every value type and tensors in F32, F16, BF16, Q8_0, Q4_0,
 * the K-quants and related block types (Q2_K … Q8_K, IQ4_NL, IQ4_XS, MXFP4; formats/kquants.ts) and
 * the integer types. Tensor data may be given lazily (a function) so that a converter holds
 * one tensor at a time: `chunks()` yields the header, then each tensor's bytes and padding.
 */
export class GGUFWriter {
  readonly alignment: number;
  private readonly kv = new Map<string, { desc: TypeDesc; value: GGUFValue }>();
  private readonly tensors: PendingTensor[] = [];
  private dataBytes = 0;

  constructor(opts: { alignment?: number } = {}) {
    const a = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
    if (!Number.isInteger(a) || a < 1 || (a & (a - 1)) !== 0) throw new FormatError('general.alignment', `${a} is not a power of two`);
    this.alignment = a;
    if (a !== GGUF_DEFAULT_ALIGNMENT) this.set('general.alignment', a, 'u32');
  }

  /** Sets a metadata key; `type` is a descriptor ('u32', 'f32', 'array<string>', …), inferred when omitted. */
  set(key: string, value: GGUFValue, type?: string): this {
    const field = `gguf.metadata[${JSON.stringify(key)}]`;
    if (!key) throw new FormatError(field, 'empty key');
    const desc = parseDesc(type ?? inferDesc(value, field), field);
    // Encode once now so that a bad value fails here rather than while streaming.
    writeValue(new ByteBuilder(), desc, value, field);
    this.kv.set(key, { desc, value });
    return this;
  }

  has(key: string): boolean {
    return this.kv.has(key);
  }

  /** Adds a tensor; `shape` is in HF order (outermost-first), written reversed as GGUF dims. */
  addTensor(name: string, dtype: DType, shape: readonly number[], data: TensorData): this {
    const field = `gguf.tensors[${JSON.stringify(name)}]`;
    if (!name) throw new FormatError(field, 'empty name');
    if (this.tensors.some((t) => t.name === name)) throw new FormatError(field, 'added twice');
    if (shape.length > MAX_DIMS) throw new FormatError(`${field}.shape`, `${shape.length} dimensions exceed ${MAX_DIMS}`);
    const ggml = DTYPE_TO_GGML[dtype];
    if (ggml === undefined) throw new FormatError(`${field}.dtype`, `${dtype} has no ggml type`);
    const byteLength = tensorByteSize(dtype, shape, `${field}.shape`);
    if (data instanceof Uint8Array && data.length !== byteLength) {
      throw new FormatError(`${field}.data`, `has ${data.length} bytes, [${shape.join(', ')}] ${dtype} needs ${byteLength}`);
    }
    this.tensors.push({ name, dtype, shape: shape.slice(), ggml, byteLength, offset: this.dataBytes, data });
    this.dataBytes += Math.ceil(byteLength / this.alignment) * this.alignment;
    return this;
  }

  /** Magic, counts, metadata and tensor infos, padded to the alignment. */
  header(): Uint8Array {
    const b = new ByteBuilder();
    b.bytes(new TextEncoder().encode(GGUF_MAGIC));
    b.u32(3);
    b.u64(this.tensors.length);
    b.u64(this.kv.size);
    for (const [key, { desc, value }] of this.kv) {
      b.str(key);
      b.u32(desc.type);
      writeValue(b, desc, value, `gguf.metadata[${JSON.stringify(key)}]`);
    }
    for (const t of this.tensors) {
      b.str(t.name);
      b.u32(t.shape.length);
      for (let d = t.shape.length - 1; d >= 0; d--) b.u64(t.shape[d]);
      b.u32(t.ggml);
      b.u64(t.offset);
    }
    b.pad(this.alignment);
    return b.result();
  }

  /** Total file size in bytes. */
  get byteLength(): number {
    return this.header().length + this.dataBytes;
  }

  private checkData(t: PendingTensor, data: Uint8Array): Uint8Array {
    if (!(data instanceof Uint8Array) || data.length !== t.byteLength) {
      throw new FormatError(`gguf.tensors[${JSON.stringify(t.name)}].data`, `has ${data?.length} bytes, [${t.shape.join(', ')}] ${t.dtype} needs ${t.byteLength}`);
    }
    return data;
  }

  private padding(t: PendingTensor): Uint8Array {
    return new Uint8Array(Math.ceil(t.byteLength / this.alignment) * this.alignment - t.byteLength);
  }

  /** The file as a sequence of chunks: header, then each tensor's data and its padding. */
  async *chunks(): AsyncGenerator<Uint8Array> {
    yield this.header();
    for (const t of this.tensors) {
      const data = typeof t.data === 'function' ? await t.data() : t.data;
      yield this.checkData(t, data);
      const pad = this.padding(t);
      if (pad.length) yield pad;
    }
  }

  /** The whole file in memory; lazy tensor data must then be synchronous. */
  toUint8Array(): Uint8Array {
    const head = this.header();
    const out = new Uint8Array(head.length + this.dataBytes);
    out.set(head);
    for (const t of this.tensors) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      if (data instanceof Promise) throw new TypeError(`tensor ${t.name} has asynchronous data: use chunks(), toStream() or writeTo()`);
      out.set(this.checkData(t, data), head.length + t.offset);
    }
    return out;
  }

  /** A web ReadableStream of the file (Workers responses, fetch uploads). */
  toStream(): ReadableStream<Uint8Array> {
    const it = this.chunks();
    return new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        const { done, value } = await it.next();
        if (done) ctrl.close();
        else ctrl.enqueue(value);
      },
      async cancel() {
        await it.return(undefined);
      },
    });
  }

  /** Streams the file to a local path (Node, Bun, Deno). */
  async writeTo(path: string): Promise<void> {
    const fs = await nodeFs(path);
    const fh = await fs.open(path, 'w');
    try {
      for await (const chunk of this.chunks()) {
        let done = 0;
        while (done < chunk.length) {
          const { bytesWritten } = await fh.write(chunk, done, chunk.length - done);
          done += bytesWritten;
        }
      }
    } finally {
      await fh.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// sparrow convention

export interface SparrowGGUFParts {
  /** Parsed HF config.json; its model_type becomes general.architecture. */
  config: Record<string, unknown>;
  generationConfig?: unknown;
  tokenizerJson?: string;
  tokenizerConfig?: unknown;
  chatTemplate?: string;
  name?: string;
  /** Dtype of the bulk of the weights, or the quantization mix, for general.file_type. */
  fileType?: DType | QuantMix;
}

/** Writes the sparrow convention keys (see the top of this file). */
export function setSparrowMetadata(w: GGUFWriter, p: SparrowGGUFParts): void {
  const arch = p.config?.model_type;
  if (typeof arch !== 'string' || !arch) throw new ConfigError('config.model_type', 'is required to write a GGUF file');
  w.set('general.architecture', arch, 'string');
  if (p.name !== undefined) w.set('general.name', p.name, 'string');
  w.set('general.file_type', ggufFileType(p.fileType ?? 'f32'), 'u32');
  w.set('sparrow.version', SPARROW_GGUF_VERSION, 'u32');
  w.set('sparrow.hf_config', JSON.stringify(p.config), 'string');
  if (p.generationConfig !== undefined) w.set('sparrow.generation_config', JSON.stringify(p.generationConfig), 'string');
  if (p.tokenizerConfig !== undefined) w.set('sparrow.tokenizer_config', JSON.stringify(p.tokenizerConfig), 'string');
  if (p.tokenizerJson !== undefined) w.set('tokenizer.huggingface.json', p.tokenizerJson, 'string');
  if (p.chatTemplate !== undefined) w.set('tokenizer.chat_template', p.chatTemplate, 'string');
}

/**
 * The sparrow convention parts present in GGUF metadata; bad JSON in them is a ConfigError naming the
 * key. `skip` names JSON parts the caller has from elsewhere, which are then left unparsed.
 */
export function readSparrowMetadata(
  meta: Record<string, GGUFValue>,
  skip: { config?: boolean; generationConfig?: boolean; tokenizerConfig?: boolean } = {},
): Partial<Omit<SparrowGGUFParts, 'fileType'>> {
  const json = (key: string, skipped?: boolean): unknown => {
    const v = meta[key];
    if (v === undefined || skipped) return undefined;
    if (typeof v !== 'string') throw new ConfigError(`gguf.metadata[${JSON.stringify(key)}]`, 'is not a string');
    try {
      return JSON.parse(v);
    } catch (e) {
      throw new ConfigError(`gguf.metadata[${JSON.stringify(key)}]`, `invalid JSON: ${(e as Error).message}`);
    }
  };
  const str = (key: string): string | undefined => (typeof meta[key] === 'string' ? (meta[key] as string) : undefined);
  const config = json('sparrow.hf_config', skip.config) as Record<string, unknown> | undefined;
  return {
    config,
    generationConfig: json('sparrow.generation_config', skip.generationConfig),
    tokenizerConfig: json('sparrow.tokenizer_config', skip.tokenizerConfig),
    tokenizerJson: str('tokenizer.huggingface.json'),
    chatTemplate: str('tokenizer.chat_template'),
    name: str('general.name'),
  };
}
