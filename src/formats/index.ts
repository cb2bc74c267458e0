// Checkpoint formats: safetensors (single and sharded), GGUF (read and write), dtypes and
// quantization, byte sources, and the typed errors shared by the project.

export { SparrowError, FormatError, ConfigError, BudgetError } from './errors';
export type { ByteSource, ProgressFn, SourceInput, UrlSourceOptions } from './source';
export { bufferSource, fileSource, urlSource, openSource } from './source';
export type { DType, WeightDType, QuantDType } from './dtype';
export {
  QK, DTYPES, isDType, isQuantized, blockSize, blockBytes, bytesPerElement, numElements, tensorByteSize,
  f32ToF16, f16ToF32, f32ToBF16, bf16ToF32, f32BitsToF16, f16ToF32Bits, f32BitsToBF16,
  f16BytesToF32, bf16BytesToF32, f32BytesToF32, f32ToF16Bytes, f32ToBF16Bytes, toF32,
  quantizeQ8_0, dequantizeQ8_0, quantizeQ4_0, dequantizeQ4_0, quantPolicy, storagePolicy,
} from './dtype';
export type { SafetensorsFile, SafetensorsTensor } from './safetensors';
export { parseSafetensors, writeSafetensors, MAX_HEADER_BYTES } from './safetensors';
export type { GGUFFile, GGUFValue, SparrowGGUFParts, TensorData } from './gguf';
export {
  parseGGUF, GGUFWriter, GGUFValueType, GGUF_DEFAULT_ALIGNMENT, SPARROW_GGUF_VERSION, isGGUF, ggmlType, ggufFileType,
  setSparrowMetadata, readSparrowMetadata,
} from './gguf';
export type { LlamaCppParts, LlamaCppTarget, LlamaCppWriteOptions } from './llamacpp';
export { LLAMACPP_ARCHS, LLAMACPP_MODEL_TYPES, isLlamaCppLayout, openLlamaCpp, llamaCppWriterFor } from './llamacpp';
export { tokenizerFromGGUF, tokenizerToGGUF } from './gguf-tokenizer';
export type { Checkpoint, CheckpointFormat, CheckpointInput, MemoryFiles, OpenOptions, TensorInfo } from './checkpoint';
export { openCheckpoint } from './checkpoint';
