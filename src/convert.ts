// Checkpoint → GGUF in sparrow's convention (src/formats/gguf.ts): HF tensor names and shapes,
// config / generation config / tokenizer / chat template as metadata; or, with format 'llama.cpp',
// in llama.cpp's own layout (src/formats/llamacpp.ts).
//
// Each tensor is written in exactly the dtype a load of the source with the same dtype holds it in
// (formats/dtype.ts storedDType, or runtime/quantmix.ts mixStoredDType for the llama.cpp-style
// mixes q4_k_m, q5_k_m, q6_k, …, with the family's f32-only tensors, Family.keepF32, e.g. gpt-oss
// expert biases), so the GGUF gives the same logits as the source quantized on load. Integer and
// boolean tensors are copied (u8 and bool as GGUF I8).

import { openCheckpoint, type Checkpoint, type TensorInfo } from './formats/checkpoint';
import { encodeF32, isQuantized, isQuantMix, numElements, QUANT_MIXES, storedDType, type DType, type QuantMix } from './formats/dtype';
import { ConfigError, FormatError, SparrowError } from './formats/errors';
import { GGUFWriter, ggmlType, setSparrowMetadata } from './formats/gguf';
import { llamaCppWriterFor } from './formats/llamacpp';
import { nodeFs, isUrl } from './formats/source';
import { familyFor } from './models/index';
import { mixModel, mixStoredDType, type MixModel } from './runtime/quantmix';

/** Whole-file dtypes, or a llama.cpp-style per-tensor mix (runtime/quantmix.ts; either layout). */
export type ConvertDType = 'f32' | 'f16' | 'q8_0' | 'q4_0' | QuantMix;
export const CONVERT_DTYPES: ConvertDType[] = ['f32', 'f16', 'q8_0', 'q4_0', ...QUANT_MIXES];

/**
 * The GGUF layout written: 'sparrow' (default) keeps HF tensor names and the config as metadata;
 * 'llama.cpp' writes llama.cpp's tensor names, transforms and `<arch>.*` hyperparameters
 * (formats/llamacpp.ts), a file llama.cpp itself can load.
 */
export type ConvertFormat = 'sparrow' | 'llama.cpp';
export const CONVERT_FORMATS: ConvertFormat[] = ['sparrow', 'llama.cpp'];

export interface ConvertOptions {
  dtype: ConvertDType;
  /** Layout of the output; default 'sparrow'. */
  format?: ConvertFormat;
  /** general.name (default: the config's _name_or_path). */
  name?: string;
  onProgress?: (done: number, total: number, name: string) => void;
  /** Stops the conversion between two chunks of output; the output file is then not written. */
  signal?: AbortSignal;
}

export interface ConvertResult {
  tensors: number;
  bytes: number;
  /** Tensor count per written dtype. */
  tensorsByDType: Record<string, number>;
  /**
   * Tensors stored quantized in the source that keep their quantized type instead of the target
   * dtype, counted per kept dtype (e.g. { q8_0: 14 } for a Q8_0 GGUF converted with dtype 'f16').
   * Quantized blocks are copied as they are, never re-quantized nor widened to f16 (f16 cannot hold
   * their values exactly); dtype 'f32' is the one target that dequantizes them (exactly).
   */
  keptQuantized: Record<string, number>;
}

/** The output would overwrite a file the conversion reads, or the conversion was stopped. */
export class ConvertError extends SparrowError {
  constructor(message: string) {
    super('CONVERT', message);
    this.name = 'ConvertError';
  }
}

/** Raised when `signal` stops a conversion; the output file was not written. */
export class ConvertAbortedError extends ConvertError {
  constructor(output: string) {
    super(`conversion to ${output} was interrupted; ${output} was not written`);
    this.name = 'ConvertAbortedError';
  }
}

/**
 * The dtype a tensor is written in for `target`, given the family's f32-only tensors; a mix target
 * needs the model facts of the whole checkpoint (quantmix.ts mixModel).
 */
export function convertedDType(info: TensorInfo, target: ConvertDType, keepF32: (name: string) => boolean, mix?: MixModel): DType {
  let d: DType;
  if (isQuantMix(target)) {
    if (!mix) throw new ConfigError('dtype', `${target} needs the model facts of the whole checkpoint (mixModel)`);
    d = mixStoredDType(info.name, info.shape, info.dtype, target, mix, keepF32);
  } else {
    d = storedDType(info.name, info.shape, info.dtype, target, keepF32);
  }
  // GGUF has no unsigned byte or boolean type: their values (0…127, 0/1) are written as I8.
  return d === 'u8' || d === 'bool' ? 'i8' : d;
}

/** A GGUF writer for `ckpt`; tensor data is read and converted lazily while the writer streams. */
export function ggufFor(ckpt: Checkpoint, opts: ConvertOptions): { writer: GGUFWriter; tensorsByDType: Record<string, number>; keptQuantized: Record<string, number> } {
  if (!CONVERT_DTYPES.includes(opts.dtype)) throw new ConfigError('dtype', `must be one of ${CONVERT_DTYPES.join(', ')}, got ${JSON.stringify(opts.dtype)}`);
  const format = opts.format ?? 'sparrow';
  if (!CONVERT_FORMATS.includes(format)) throw new ConfigError('format', `must be one of ${CONVERT_FORMATS.join(', ')}, got ${JSON.stringify(opts.format)}`);
  const config = ckpt.config;
  const family = familyFor(config);
  const keep = (name: string) => family.keepF32?.(name, config) ?? false;
  if (format === 'llama.cpp') {
    return llamaCppWriterFor(ckpt, {
      dtype: opts.dtype, name: opts.name, keepF32: keep, ignore: (name) => family.ignore?.(name, config) ?? false, onProgress: opts.onProgress,
    });
  }
  const ignore = (name: string) => family.ignore?.(name, config) ?? false;
  const mix = isQuantMix(opts.dtype) ? mixModel(ckpt.tensors.values(), config, ignore) : undefined;
  const plan = [...ckpt.tensors.values()].map((info) => ({ info, dtype: convertedDType(info, opts.dtype, keep, mix) }));
  const elements = new Map<DType, number>();
  const tensorsByDType: Record<string, number> = {};
  const keptQuantized: Record<string, number> = {};
  for (const { info, dtype } of plan) {
    if (ggmlType(dtype) === undefined) throw new FormatError(`tensors[${JSON.stringify(info.name)}].dtype`, `${info.dtype} has no GGUF type`);
    elements.set(dtype, (elements.get(dtype) ?? 0) + numElements(info.shape));
    tensorsByDType[dtype] = (tensorsByDType[dtype] ?? 0) + 1;
    if (isQuantized(info.dtype) && dtype === info.dtype && dtype !== opts.dtype) keptQuantized[dtype] = (keptQuantized[dtype] ?? 0) + 1;
  }
  let bulk: DType = 'f32';
  for (const [d, n] of elements) if (n > (elements.get(bulk) ?? 0)) bulk = d;
  const w = new GGUFWriter();
  setSparrowMetadata(w, {
    config,
    generationConfig: ckpt.generationConfig,
    tokenizerJson: ckpt.tokenizerJson,
    tokenizerConfig: ckpt.tokenizerConfig,
    chatTemplate: ckpt.chatTemplate,
    name: opts.name ?? (typeof config._name_or_path === 'string' ? config._name_or_path : undefined),
    fileType: isQuantMix(opts.dtype) ? opts.dtype : bulk,
  });
  let done = 0;
  for (const { info, dtype } of plan) {
    w.addTensor(info.name, dtype, info.shape, async () => {
      let bytes: Uint8Array;
      if (dtype === info.dtype || info.dtype === 'bool') bytes = (await ckpt.read(info.name)).bytes;
      else if (info.dtype === 'u8') {
        bytes = (await ckpt.read(info.name)).bytes;
        for (const b of bytes) if (b > 127) throw new FormatError(`tensors[${JSON.stringify(info.name)}]`, `u8 value ${b} does not fit GGUF I8`);
      } else {
        const f = await ckpt.readF32(info.name);
        const cols = info.shape.length ? info.shape[info.shape.length - 1] : 1;
        const rows = cols ? f.length / cols : 0;
        bytes = encodeF32(dtype, f, rows, cols, info.name);
      }
      opts.onProgress?.(++done, plan.length, info.name);
      return bytes;
    });
  }
  return { writer: w, tensorsByDType, keptQuantized };
}

/** Files beside the weights that opening a checkpoint reads (openCheckpoint's side files and index). */
const SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'chat_template.json', 'model.safetensors.index.json'];

function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'));
  return i < 0 ? '.' : i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

function joinPath(dir: string, name: string): string {
  return `${dir.replace(/[\\/]+$/, '')}/${name}`;
}

/**
 * Refuses an output path that is (through any spelling, symbolic link or hard link) one of the files
 * the conversion reads: the weight files of `ckpt` and the side files of the input's directory.
 */
async function checkOutput(input: string, output: string, ckpt: Checkpoint): Promise<void> {
  const fs = await nodeFs(output);
  let out: Awaited<ReturnType<typeof fs.stat>>;
  try {
    out = await fs.stat(output);
  } catch {
    // A path that does not exist yet (or cannot be stat'ed) is no input file; writing it fails or succeeds on its own.
    return;
  }
  if (out.isDirectory()) throw new ConvertError(`output ${output} is a directory; give the path of the .gguf file to write`);
  const outReal = await fs.realpath(output).catch(() => output);
  const candidates = new Set<string>();
  for (const t of ckpt.tensors.values()) if (!isUrl(t.source.name)) candidates.add(t.source.name);
  if (!isUrl(input)) {
    let isDir = false;
    try {
      isDir = (await fs.stat(input)).isDirectory();
    } catch {
      /* the checkpoint was opened, so this does not happen; nothing more to compare then */
    }
    candidates.add(input);
    const sideDir = isDir ? input : dirOf(input);
    for (const f of SIDE_FILES) candidates.add(joinPath(sideDir, f));
  }
  for (const c of candidates) {
    let st: Awaited<ReturnType<typeof fs.stat>>;
    try {
      st = await fs.stat(c);
    } catch {
      continue;
    }
    if (!st.isFile()) continue;
    const real = await fs.realpath(c).catch(() => c);
    if (real === outReal || (st.dev === out.dev && st.ino === out.ino)) {
      const how = real === outReal ? '' : ' (a hard link to it)';
      throw new ConvertError(`output ${output} is the input file ${c}${how}; writing it would destroy the checkpoint being converted: choose another output path`);
    }
  }
}

/**
 * Converts `input` (anything openCheckpoint opens) to a GGUF file at `output`. The file is written
 * under a temporary name in the output's directory and renamed over `output` only when complete,
 * so a failed or stopped conversion leaves no partial file and an existing `output` untouched; an
 * `output` that is one of the input's files is refused before anything is written.
 */
export async function convertToGGUF(input: string, output: string, opts: ConvertOptions): Promise<ConvertResult> {
  const ckpt = await openCheckpoint(input);
  try {
    const { writer, tensorsByDType, keptQuantized } = ggufFor(ckpt, opts);
    await checkOutput(input, output, ckpt);
    const bytes = writer.byteLength;
    await writeAtomically(writer, output, opts.signal);
    const tensors = Object.values(tensorsByDType).reduce((a, n) => a + n, 0);
    return { tensors, bytes, tensorsByDType, keptQuantized };
  } finally {
    await ckpt.close();
  }
}

async function writeAtomically(writer: GGUFWriter, output: string, signal?: AbortSignal): Promise<void> {
  const fs = await nodeFs(output);
  const base = output.slice(Math.max(output.lastIndexOf('/'), output.lastIndexOf('\\')) + 1);
  const tmp = joinPath(dirOf(output), `.${base}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`);
  if (signal?.aborted) throw new ConvertAbortedError(output);
  let fh: Awaited<ReturnType<typeof fs.open>>;
  try {
    fh = await fs.open(tmp, 'wx');
  } catch (e) {
    throw new ConvertError(`cannot write ${output}: ${(e as Error).message}`);
  }
  let ok = false;
  try {
    for await (const chunk of writer.chunks()) {
      if (signal?.aborted) throw new ConvertAbortedError(output);
      let done = 0;
      while (done < chunk.length) {
        const { bytesWritten } = await fh.write(chunk, done, chunk.length - done);
        done += bytesWritten;
      }
    }
    if (signal?.aborted) throw new ConvertAbortedError(output);
    await fh.sync();
    await fh.close();
    await fs.rename(tmp, output);
    ok = true;
  } finally {
    if (!ok) {
      await fh.close().catch(() => {});
      await fs.unlink(tmp).catch(() => {});
    }
  }
}
