// Element types of checkpoint tensors, exact half-precision conversions, and the ggml Q8_0 / Q4_0
// block formats (the same bytes and rounding as ggml's reference quantizers, so files written here
// and by llama.cpp hold identical blocks).

import { FormatError } from './errors';
import { dequantizeKQuant, quantizeKQuant } from './kquants';

/** Types that weights run in (the kernels' dtypes). */
export type WeightDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
/** Every type a checkpoint tensor may have; the integer and f64 ones are read, never computed with. */
export type DType = WeightDType | KQuantDType | 'f64' | 'i64' | 'i32' | 'i16' | 'i8' | 'u8' | 'bool';
/** The block types checkpoints can be quantized to on load or conversion. */
export type QuantDType = 'q8_0' | 'q4_0';

/**
 * llama.cpp-style quantization mixes: a per-tensor choice of K-quant (and fallback) types made by
 * runtime/quantmix.ts, named as llama.cpp's `llama-quantize` file types. 'q4_k' and 'q5_k' are
 * aliases of 'q4_k_m' and 'q5_k_m', as in llama-quantize.
 */
export type QuantMix = 'q4_k_m' | 'q4_k_s' | 'q5_k_m' | 'q5_k_s' | 'q6_k' | 'q4_k' | 'q5_k';
export const QUANT_MIXES: readonly QuantMix[] = ['q4_k_m', 'q4_k_s', 'q5_k_m', 'q5_k_s', 'q6_k', 'q4_k', 'q5_k'];

export function isQuantMix(x: unknown): x is QuantMix {
  return typeof x === 'string' && (QUANT_MIXES as readonly string[]).includes(x);
}

/** Elements per quantization block (ggml QK8_0 = QK4_0 = 32). */
export const QK = 32;

/**
 * llama.cpp's K-quant, IQ4, MXFP4 and 5-bit / min legacy formats (block layouts, quantizers and
 * dequantizers in kquants.ts).
 */
export type KQuantDType = 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'q8_k' | 'iq4_nl' | 'iq4_xs' | 'mxfp4' | 'q4_1' | 'q5_0' | 'q5_1';

/** Elements and bytes per block of each format (ggml's block structs). */
export const KQUANT_LAYOUT: Readonly<Record<KQuantDType, { block: number; bytes: number }>> = {
  q2_k: { block: 256, bytes: 84 },
  q3_k: { block: 256, bytes: 110 },
  q4_k: { block: 256, bytes: 144 },
  q5_k: { block: 256, bytes: 176 },
  q6_k: { block: 256, bytes: 210 },
  q8_k: { block: 256, bytes: 292 },
  iq4_nl: { block: 32, bytes: 18 },
  iq4_xs: { block: 256, bytes: 136 },
  mxfp4: { block: 32, bytes: 17 },
  q4_1: { block: 32, bytes: 20 },
  q5_0: { block: 32, bytes: 22 },
  q5_1: { block: 32, bytes: 24 },
};

export const KQUANT_DTYPES = Object.keys(KQUANT_LAYOUT) as KQuantDType[];

export function isKQuant(d: unknown): d is KQuantDType {
  return typeof d === 'string' && Object.hasOwn(KQUANT_LAYOUT, d);
}

interface DTypeLayout {
  /** Elements per block (1 for plain types). */
  block: number;
  /** Bytes per block. */
  bytes: number;
}

const LAYOUT: Record<DType, DTypeLayout> = {
  f32: { block: 1, bytes: 4 },
  f16: { block: 1, bytes: 2 },
  bf16: { block: 1, bytes: 2 },
  // f16 scale d + 32 int8
  q8_0: { block: QK, bytes: 34 },
  // f16 scale d + 16 bytes of 4-bit values
  q4_0: { block: QK, bytes: 18 },
  ...KQUANT_LAYOUT,
  f64: { block: 1, bytes: 8 },
  i64: { block: 1, bytes: 8 },
  i32: { block: 1, bytes: 4 },
  i16: { block: 1, bytes: 2 },
  i8: { block: 1, bytes: 1 },
  u8: { block: 1, bytes: 1 },
  bool: { block: 1, bytes: 1 },
};

export const DTYPES = Object.keys(LAYOUT) as DType[];

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.hasOwn(LAYOUT, x);
}

/** Block-quantized types: q8_0, q4_0 and the K-quant family (kquants.ts). */
export function isQuantized(d: DType): d is QuantDType | KQuantDType {
  return d === 'q8_0' || d === 'q4_0' || isKQuant(d);
}

/** Elements per block: 32 for q8_0/q4_0/q4_1/q5_0/q5_1/iq4_nl/mxfp4, 256 for the super-block K-quants and iq4_xs, else 1. */
export function blockSize(d: DType): number {
  return LAYOUT[d].block;
}

/** Bytes per block: 34 for q8_0, 18 for q4_0, the ggml block size for the K-quants, else the element size. */
export function blockBytes(d: DType): number {
  return LAYOUT[d].bytes;
}

/** Bytes per element; fractional for the block types (34/32, 18/32). */
export function bytesPerElement(d: DType): number {
  return LAYOUT[d].bytes / LAYOUT[d].block;
}

/**
 * Element count of a shape; FormatError (naming `field`) when a dimension is not a non-negative safe
 * integer or the product passes 2^53.
 */
export function numElements(shape: readonly number[], field = 'shape'): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new FormatError(field, `dimension ${i} is ${JSON.stringify(d)}, not a non-negative integer below 2^53`);
    }
    n *= d;
    if (!Number.isSafeInteger(n)) throw new FormatError(field, `element count of [${shape.join(', ')}] exceeds 2^53`);
  }
  return n;
}

/**
 * Bytes of a tensor of `shape` stored as `dtype`. Block types need the last (innermost) dimension to
 * be a multiple of the block size, since ggml blocks never span rows.
 */
export function tensorByteSize(dtype: DType, shape: readonly number[], field = 'shape'): number {
  const n = numElements(shape, field);
  const { block, bytes } = LAYOUT[dtype];
  if (block > 1) {
    const inner = shape.length ? shape[shape.length - 1] : 1;
    if (inner % block !== 0) throw new FormatError(field, `last dimension ${inner} is not a multiple of ${block}, required by ${dtype}`);
  }
  const size = (n / block) * bytes;
  if (!Number.isSafeInteger(size)) throw new FormatError(field, `byte size of [${shape.join(', ')}] as ${dtype} exceeds 2^53`);
  return size;
}

// ---------------------------------------------------------------------------------------------
// Half precision. Bit-exact; the f32 → f16/bf16 direction rounds to nearest, ties to even.

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The IEEE binary32 bits of `x` (first rounded to f32). */
export function f32Bits(x: number): number {
  f32Scratch[0] = x;
  return u32Scratch[0];
}

/** The f32 value of 32 bits. */
export function f32FromBits(b: number): number {
  u32Scratch[0] = b;
  return f32Scratch[0];
}

/** f32 bits → f16 bits, round to nearest even; overflow gives ±inf, NaN stays NaN (quiet, top payload kept). */
export function f32BitsToF16(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Below half the smallest f16 subnormal (2^-25) everything rounds to zero.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1))) q++;
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1))) q++;
  // A carry out of the mantissa bumps the exponent; reaching 0x7c00 is the correct overflow to inf.
  return sign | q;
}

/** f16 bits → f32 bits (exact). */
export function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return (sign | 0x7f800000 | (m << 13)) >>> 0;
  if (e !== 0) return (sign | ((e - 15 + 127) << 23) | (m << 13)) >>> 0;
  if (m === 0) return sign >>> 0;
  // Subnormal: normalize the mantissa into an f32 normal.
  let k = 0;
  let mm = m;
  while (!(mm & 0x400)) {
    mm <<= 1;
    k++;
  }
  return (sign | ((127 - 15 + 1 - k) << 23) | ((mm & 0x3ff) << 13)) >>> 0;
}

/** f32 value → f16 bits (round to nearest even). */
export function f32ToF16(x: number): number {
  return f32BitsToF16(f32Bits(x));
}

/** f16 bits → value. */
export function f16ToF32(h: number): number {
  return f32FromBits(f16ToF32Bits(h));
}

/** f32 bits → bf16 bits, round to nearest even; NaN stays NaN (quieted). */
export function f32BitsToBF16(b: number): number {
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f32ToBF16(x: number): number {
  return f32BitsToBF16(f32Bits(x));
}

export function bf16ToF32(h: number): number {
  return f32FromBits((h & 0xffff) << 16);
}

/** f32 bits of every f16 value, built on first use (256 KiB). */
let f16Table: Uint32Array | undefined;
function f16Lut(): Uint32Array {
  if (!f16Table) {
    f16Table = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32Bits(h);
  }
  return f16Table;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** `n` little-endian u16 values from `bytes` (a view when aligned on a little-endian host, else a copy). */
function u16s(bytes: Uint8Array, n: number): Uint16Array {
  if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = bytes[2 * i] | (bytes[2 * i + 1] << 8);
  return out;
}

function needBytes(bytes: Uint8Array, need: number, what: string): void {
  if (bytes.length < need) throw new FormatError(what, `needs ${need} bytes, got ${bytes.length}`);
}

/** Little-endian f16 bytes → Float32Array of `n` elements (default: all). */
export function f16BytesToF32(bytes: Uint8Array, n = bytes.length >>> 1): Float32Array {
  needBytes(bytes, 2 * n, 'f16');
  const src = u16s(bytes, n);
  const lut = f16Lut();
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) bits[i] = lut[src[i]];
  return out;
}

/** Little-endian bf16 bytes → Float32Array of `n` elements (default: all). */
export function bf16BytesToF32(bytes: Uint8Array, n = bytes.length >>> 1): Float32Array {
  needBytes(bytes, 2 * n, 'bf16');
  const src = u16s(bytes, n);
  const out = new Float32Array(n);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
  return out;
}

/** f32 values → little-endian f16 bytes. */
export function f32ToF16Bytes(src: Float32Array): Uint8Array {
  const out = new Uint8Array(src.length * 2);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const h = f32BitsToF16(bits[i]);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

/** f32 values → little-endian bf16 bytes. */
export function f32ToBF16Bytes(src: Float32Array): Uint8Array {
  const out = new Uint8Array(src.length * 2);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const h = f32BitsToBF16(bits[i]);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

/** Little-endian f32 bytes → a fresh Float32Array of `n` elements (default: all). */
export function f32BytesToF32(bytes: Uint8Array, n = bytes.length >>> 2): Float32Array {
  needBytes(bytes, 4 * n, 'f32');
  const out = new Float32Array(n);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes.subarray(0, 4 * n));
  } else {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, 4 * n);
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  }
  return out;
}

/** Any readable dtype's bytes → f32 values (integers converted by value, f64 rounded to f32). */
export function toF32(dtype: DType, bytes: Uint8Array, n: number): Float32Array {
  switch (dtype) {
    case 'f32': return f32BytesToF32(bytes, n);
    case 'f16': return f16BytesToF32(bytes, n);
    case 'bf16': return bf16BytesToF32(bytes, n);
    case 'q8_0': return dequantizeQ8_0(bytes, n);
    case 'q4_0': return dequantizeQ4_0(bytes, n);
    case 'q2_k': case 'q3_k': case 'q4_k': case 'q5_k': case 'q6_k': case 'q8_k':
    case 'iq4_nl': case 'iq4_xs': case 'mxfp4': case 'q4_1': case 'q5_0': case 'q5_1':
      return dequantizeKQuant(dtype, bytes, n);
    default: {
      const size = LAYOUT[dtype].bytes;
      needBytes(bytes, size * n, dtype);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, size * n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const o = i * size;
        switch (dtype) {
          case 'f64': out[i] = dv.getFloat64(o, true); break;
          case 'i64': out[i] = Number(dv.getBigInt64(o, true)); break;
          case 'i32': out[i] = dv.getInt32(o, true); break;
          case 'i16': out[i] = dv.getInt16(o, true); break;
          case 'i8': out[i] = dv.getInt8(o); break;
          case 'u8': case 'bool': out[i] = dv.getUint8(o); break;
        }
      }
      return out;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ggml block quantization. All arithmetic is f32 as in ggml (Math.fround after every operation that
// ggml does in float), so the bytes match its reference quantizers exactly.

const fr = Math.fround;

/** C roundf: halfway cases away from zero. */
function roundf(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function checkQuantInput(kind: string, src: Float32Array, rows: number, cols: number, name: string): void {
  if (!Number.isSafeInteger(rows) || !Number.isSafeInteger(cols) || rows < 0 || cols < 0) {
    throw new FormatError(`tensors["${name}"].shape`, `invalid rows ${rows} / cols ${cols} for ${kind}`);
  }
  if (cols % QK !== 0) {
    throw new FormatError(`tensors["${name}"].shape`, `last dimension ${cols} is not a multiple of ${QK}, cannot quantize to ${kind}`);
  }
  if (src.length !== rows * cols) {
    throw new FormatError(`tensors["${name}"]`, `has ${src.length} values, expected ${rows} × ${cols}`);
  }
}

/**
 * Q8_0 (ggml block_q8_0): per 32 values, d = max|x| / 127 stored as f16, then 32 × int8
 * q = roundf(x / d). Rows are `cols` long; blocks never span rows.
 */
export function quantizeQ8_0(src: Float32Array, rows: number, cols: number, name = 'tensor'): Uint8Array {
  checkQuantInput('q8_0', src, rows, cols, name);
  const nb = src.length / QK;
  const out = new Uint8Array(nb * 34);
  for (let b = 0; b < nb; b++) {
    const x0 = b * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const a = Math.abs(src[x0 + j]);
      if (a > amax) amax = a;
    }
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const h = f32ToF16(d);
    const o = b * 34;
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) out[o + 2 + j] = roundf(fr(src[x0 + j] * id)) & 0xff;
  }
  return out;
}

/** Inverse of quantizeQ8_0: x = q · d. `n` is the element count (a multiple of 32). */
export function dequantizeQ8_0(bytes: Uint8Array, n: number): Float32Array {
  if (!Number.isSafeInteger(n) || n < 0 || n % QK !== 0) throw new FormatError('q8_0', `element count ${n} is not a multiple of ${QK}`);
  const nb = n / QK;
  needBytes(bytes, nb * 34, 'q8_0');
  const lut = f16Lut();
  const q = new Int8Array(bytes.buffer, bytes.byteOffset, nb * 34);
  const out = new Float32Array(n);
  for (let b = 0; b < nb; b++) {
    const o = b * 34;
    const d = f32FromBits(lut[bytes[o] | (bytes[o + 1] << 8)]);
    const y = b * QK;
    for (let j = 0; j < QK; j++) out[y + j] = q[o + 2 + j] * d;
  }
  return out;
}

/**
 * Q4_0 (ggml block_q4_0): per 32 values, `max` = the value of largest magnitude (sign kept, first
 * one on ties), d = max / −8 stored as f16, q = min(15, trunc(x / d + 8.5)). Byte j holds value j in
 * its low nibble and value j + 16 in its high nibble.
 */
export function quantizeQ4_0(src: Float32Array, rows: number, cols: number, name = 'tensor'): Uint8Array {
  checkQuantInput('q4_0', src, rows, cols, name);
  const nb = src.length / QK;
  const out = new Uint8Array(nb * 18);
  for (let b = 0; b < nb; b++) {
    const x0 = b * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = src[x0 + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    const h = f32ToF16(d);
    const o = b * 18;
    out[o] = h & 0xff;
    out[o + 1] = h >>> 8;
    for (let j = 0; j < QK / 2; j++) {
      const lo = Math.min(15, Math.trunc(fr(fr(src[x0 + j] * id) + 8.5)));
      const hi = Math.min(15, Math.trunc(fr(fr(src[x0 + j + QK / 2] * id) + 8.5)));
      out[o + 2 + j] = lo | (hi << 4);
    }
  }
  return out;
}

/** Inverse of quantizeQ4_0: x = (q − 8) · d. `n` is the element count (a multiple of 32). */
export function dequantizeQ4_0(bytes: Uint8Array, n: number): Float32Array {
  if (!Number.isSafeInteger(n) || n < 0 || n % QK !== 0) throw new FormatError('q4_0', `element count ${n} is not a multiple of ${QK}`);
  const nb = n / QK;
  needBytes(bytes, nb * 18, 'q4_0');
  const lut = f16Lut();
  const out = new Float32Array(n);
  for (let b = 0; b < nb; b++) {
    const o = b * 18;
    const d = f32FromBits(lut[bytes[o] | (bytes[o + 1] << 8)]);
    for (let j = 0; j < QK / 2; j++) {
      const q = bytes[o + 2 + j];
      out[b * QK + j] = ((q & 0x0f) - 8) * d;
      out[b * QK + j + QK / 2] = ((q >>> 4) - 8) * d;
    }
  }
  return out;
}

/**
 * f32 values of a [rows, cols] tensor encoded in `dtype`: f32, f16, bf16, Q8_0, Q4_0 or a K-quant
 * (kquants.ts quantizeKQuant), the bytes ggml's reference quantizers write.
 */
export function encodeF32(dtype: DType, src: Float32Array, rows: number, cols: number, name = 'tensor'): Uint8Array {
  switch (dtype) {
    case 'f32': return new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    case 'f16': return f32ToF16Bytes(src);
    case 'bf16': return f32ToBF16Bytes(src);
    case 'q8_0': return quantizeQ8_0(src, rows, cols, name);
    case 'q4_0': return quantizeQ4_0(src, rows, cols, name);
    default:
      if (isKQuant(dtype)) return quantizeKQuant(dtype, src, rows, cols, name);
      throw new FormatError(`tensors["${name}"].dtype`, `cannot encode f32 values as ${dtype}`);
  }
}

// ---------------------------------------------------------------------------------------------

/** Substrings of tensor names that stay f32 whatever the target (see quantPolicy). */
const KEEP_F32 = [
  // MoE routers: small, and routing decisions are sensitive to their precision (llama.cpp ffn_gate_inp).
  '.mlp.gate.weight',
  '.router.weight',
  '.router.layer.weight',
  'block_sparse_moe.gate.weight',
  // Shared-expert sigmoid gates (a single output row).
  'shared_expert_gate',
  // Depthwise causal conv kernels (llama.cpp ssm_conv1d / shortconv.conv): tiny, and convolved per
  // step. Matched as `.conv.weight`, not `.conv.`, so that the conv block's in/out projections
  // (LFM2 `conv.in_proj`, `conv.out_proj`) are quantized like any other linear layer.
  'conv1d',
  '.conv.weight',
];

/** Token embeddings and the output head, held at q8_0 when the target is q4_0. */
const EMBED_OR_HEAD = ['embed_tokens', 'lm_head'];

/**
 * The dtype a tensor is held in when a checkpoint is quantized on load (or converted) to `target`.
 * The single place that decides this:
 * - tensors with at least 2 dimensions whose last dimension is a multiple of 32 get `target`;
 * - 1-D tensors (norm weights, biases, A_log, dt_bias, D, attention sinks, …) stay f32;
 * - MoE routers (`.mlp.gate.weight`, `.router.weight`, `block_sparse_moe.gate.weight`), shared-expert
 *   gates (`shared_expert_gate`) and conv kernels (`conv1d`, `.conv.weight`) stay f32, as llama.cpp keeps
 *   ffn_gate_inp and ssm_conv1d unquantized;
 * - under q4_0, token embeddings (`embed_tokens`) and the output head (`lm_head`) get q8_0: llama.cpp's
 *   Q4_0 files hold the output in Q6_K, and without K-quants q8_0 is the nearest choice.
 */
export function quantPolicy(name: string, shape: readonly number[], target: QuantDType): 'f32' | QuantDType {
  if (shape.length < 2 || keptF32ByName(name)) return 'f32';
  const cols = shape[shape.length - 1];
  if (!(cols > 0) || cols % QK !== 0) return 'f32';
  if (target === 'q4_0' && EMBED_OR_HEAD.some((s) => name.includes(s))) return 'q8_0';
  return target;
}

/** Whether formats/dtype.ts keeps a tensor f32 by its name under every quantized target (KEEP_F32). */
export function keptF32ByName(name: string): boolean {
  return KEEP_F32.some((s) => name.includes(s));
}

/**
 * The dtype a floating-point tensor is stored in when a whole checkpoint is converted to `target`
 * (GGUF conversion, memory estimates): quantPolicy for q8_0/q4_0; for f16/bf16 the same tensors that
 * quantPolicy would keep by rank or name stay f32 and every other one gets `target` (no block
 * constraint); for f32, f32.
 */
export function storagePolicy(name: string, shape: readonly number[], target: WeightDType): WeightDType {
  if (target === 'q8_0' || target === 'q4_0') return quantPolicy(name, shape, target);
  if (target === 'f32' || shape.length < 2 || keptF32ByName(name)) return 'f32';
  return target;
}

/**
 * The dtype one tensor is held in (loading) or written in (conversion) for a requested `target`,
 * given its source dtype and the family's f32-only tensors. 'auto' (loading only) keeps the file's
 * f16/bf16/Q8_0/Q4_0 where the kernels take it. Vectors and family f32 tensors are f32; other
 * tensors follow storagePolicy; a tensor quantized in the source never changes block format.
 * Non-float tensors keep their dtype.
 */
export function storedDType(name: string, shape: readonly number[], src: DType, target: 'auto' | WeightDType, keepF32?: (name: string) => boolean): DType {
  if (!FLOAT_DTYPES.has(src)) return src;
  if (shape.length < 2 || keepF32?.(name)) return 'f32';
  const quantized = isQuantized(src);
  if (target === 'auto') {
    if (quantized) return src;
    if (quantPolicy(name, shape, 'q8_0') === 'f32') return 'f32';
    return src === 'f16' || src === 'bf16' ? src : 'f32';
  }
  const d = storagePolicy(name, shape, target);
  return quantized && d !== src && d !== 'f32' ? src : d;
}

const FLOAT_DTYPES: ReadonlySet<string> = new Set([
  'f32', 'f16', 'bf16', 'f64', 'q8_0', 'q4_0', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'q8_k', 'iq4_nl', 'iq4_xs', 'mxfp4',
  'q4_1', 'q5_0', 'q5_1',
]);
