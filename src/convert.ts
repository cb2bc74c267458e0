// Checkpoint → GGUF in sparrow's convention (src/formats/gguf.ts): HF tensor names and shapes,
// config / generation config / tokenizer / chat template as metadata.
//
// formats/checkpoint.ts checkpointToGGUF converts by storagePolicy alone; a family may also keep
// tensors f32 that the policy would quantize (Family.keepF32, e.g. gpt-oss expert biases), and the
// loader honours that. Writing each tensor in exactly the dtype a load of the source with the same
// dtype holds it in makes the GGUF give the same logits as the source quantized on load.

import { openCheckpoint, type Checkpoint, type TensorInfo } from './formats/checkpoint';
import { f32ToF16Bytes, numElements, quantizeQ4_0, quantizeQ8_0, storedDType, type DType } from './formats/dtype';
import { ConfigError, FormatError } from './formats/errors';
import { GGUFWriter, ggmlType, setSparrowMetadata } from './formats/gguf';
import { familyFor } from './models/index';

export type ConvertDType = 'f32' | 'f16' | 'q8_0' | 'q4_0';
export const CONVERT_DTYPES: ConvertDType[] = ['f32', 'f16', 'q8_0', 'q4_0'];

export interface ConvertOptions {
  dtype: ConvertDType;
  onProgress?: (done: number, total: number, name: string) => void;
}

export interface ConvertResult {
  tensors: number;
  bytes: number;
  /** Tensor count per written dtype. */
  tensorsByDType: Record<string, number>;
}

/** The dtype a tensor is written in for `target`, given the family's f32-only tensors. */
export function convertedDType(info: TensorInfo, target: ConvertDType, keepF32: (name: string) => boolean): DType {
  return storedDType(info.name, info.shape, info.dtype, target, keepF32);
}

/** A GGUF writer for `ckpt`; tensor data is read and converted lazily while the writer streams. */
export function ggufFor(ckpt: Checkpoint, opts: ConvertOptions): { writer: GGUFWriter; tensorsByDType: Record<string, number> } {
  if (!CONVERT_DTYPES.includes(opts.dtype)) throw new ConfigError('dtype', `must be one of ${CONVERT_DTYPES.join(', ')}, got ${JSON.stringify(opts.dtype)}`);
  const config = ckpt.config;
  const family = familyFor(config);
  const keep = (name: string) => family.keepF32?.(name, config) ?? false;
  const plan = [...ckpt.tensors.values()].map((info) => ({ info, dtype: convertedDType(info, opts.dtype, keep) }));
  const elements = new Map<DType, number>();
  const tensorsByDType: Record<string, number> = {};
  for (const { info, dtype } of plan) {
    if (ggmlType(dtype) === undefined) throw new FormatError(`tensors[${JSON.stringify(info.name)}].dtype`, `${info.dtype} has no GGUF type`);
    elements.set(dtype, (elements.get(dtype) ?? 0) + numElements(info.shape));
    tensorsByDType[dtype] = (tensorsByDType[dtype] ?? 0) + 1;
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
    name: typeof config._name_or_path === 'string' ? config._name_or_path : undefined,
    fileType: bulk,
  });
  let done = 0;
  for (const { info, dtype } of plan) {
    w.addTensor(info.name, dtype, info.shape, async () => {
      let bytes: Uint8Array;
      if (dtype === info.dtype) bytes = (await ckpt.read(info.name)).bytes;
      else {
        const f = await ckpt.readF32(info.name);
        const cols = info.shape[info.shape.length - 1];
        const rows = cols ? f.length / cols : 0;
        if (dtype === 'f32') bytes = new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
        else if (dtype === 'f16') bytes = f32ToF16Bytes(f);
        else if (dtype === 'q8_0') bytes = quantizeQ8_0(f, rows, cols, info.name);
        else if (dtype === 'q4_0') bytes = quantizeQ4_0(f, rows, cols, info.name);
        else throw new FormatError(`tensors[${JSON.stringify(info.name)}].dtype`, `cannot convert ${info.dtype} to ${dtype}`);
      }
      opts.onProgress?.(++done, plan.length, info.name);
      return bytes;
    });
  }
  return { writer: w, tensorsByDType };
}

/** Converts `input` (anything openCheckpoint opens) to a GGUF file at `output`. */
export async function convertToGGUF(input: string, output: string, opts: ConvertOptions): Promise<ConvertResult> {
  const ckpt = await openCheckpoint(input);
  try {
    const { writer, tensorsByDType } = ggufFor(ckpt, opts);
    const bytes = writer.byteLength;
    await writer.writeTo(output);
    return { tensors: ckpt.tensors.size, bytes, tensorsByDType };
  } finally {
    await ckpt.close();
  }
}
