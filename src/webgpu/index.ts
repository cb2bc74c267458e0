// WebGPU entry: load a checkpoint and build its GPU forward pass (GpuModel: sessions with async
// forward and greedy batches). loadModel({ backend: 'webgpu' | 'auto' }) generates through it.

import { openCheckpoint, type CheckpointInput } from '../formats/checkpoint';
import { buildModel, type ModelOptions } from '../models/model';
import '../models/index';
import { acquireGpu } from './device';
import { GpuModel } from './model';

export { acquireGpu, probeGpu, WebGpuUnavailableError, type GpuDevice } from './device';
export { GpuModel, GpuSession, gpuModel } from './model';

/**
 * Loads a checkpoint and uploads it to the WebGPU device. Rejects with WebGpuUnavailableError when
 * there is no usable adapter, and with a KernelError naming the part of the model that has no GPU
 * kernels yet.
 */
export async function loadGpuModel(source: CheckpointInput, options: Omit<ModelOptions, 'build'> = {}): Promise<GpuModel> {
  const gpu = await acquireGpu();
  const ckpt = await openCheckpoint(source);
  try {
    const model = await buildModel(ckpt, { exact: true, ...options, maxSessions: options.maxSessions ?? 1 });
    return new GpuModel(model, gpu);
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}
