// WebGPU device acquisition: navigator.gpu (Deno, browsers) or, on Node, the optional `webgpu`
// package (Dawn). A device is only handed out after it has passed a known-answer compute shader,
// because some stacks hand back adapters that run shaders as no-ops (a null backend) and would
// return garbage logits instead of failing.

import { BufferUsage, MapMode } from './flags';
import { SparrowError } from '../formats/errors';

/** No usable WebGPU device here (no API, no adapter, a null/fallback adapter, limits too small, or a failed probe). */
export class WebGpuUnavailableError extends SparrowError {
  constructor(readonly reason: string) {
    super('WEBGPU_UNAVAILABLE', `WebGPU is not available: ${reason}`);
    this.name = 'WebGpuUnavailableError';
  }
}

export interface GpuDevice {
  device: GPUDevice;
  /** Adapter description for logs: vendor / architecture / device / description. */
  adapterName: string;
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number; maxComputeWorkgroupsPerDimension: number };
  /** Where the API came from: 'navigator.gpu' or 'node:webgpu'. */
  api: string;
  /** A CPU implementation (llvmpipe, lavapipe, SwiftShader, a fallback adapter): correct, but slower than WASM. */
  software: boolean;
  /** The message of the device's latest uncaptured error (validation, out of memory), or null. */
  lastError(): string | null;
}

/** Adapter names of CPU implementations of WebGPU / Vulkan / GL. */
export const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|softpipe|software rasterizer/i;

export interface AcquireOptions {
  /** Smallest storage binding the caller needs (bytes); default 64 MiB. */
  minStorageBinding?: number;
  powerPreference?: 'high-performance' | 'low-power';
}

let cached: Promise<GpuDevice> | null = null;

interface GpuApi {
  gpu: GPU;
  api: string;
  adapterOptions: Record<string, unknown>;
}

async function gpuApis(): Promise<GpuApi[]> {
  const nav = (globalThis as any).navigator;
  if (nav?.gpu) return [{ gpu: nav.gpu as GPU, api: 'navigator.gpu', adapterOptions: {} }];
  const proc = (globalThis as any).process;
  if (!proc?.versions?.node || (globalThis as any).Deno || (globalThis as any).Bun) return [];
  // Node: Dawn through the optional `webgpu` package. Its default backend serves real GPUs; on
  // CPU-only hosts it rejects lavapipe, and GLES on a surfaceless EGL display (compatibility
  // feature level) is the one that works, so that is the second candidate.
  try {
    proc.env.EGL_PLATFORM ??= 'surfaceless';
    const name = 'webgpu';
    const mod: any = await import(/* @vite-ignore */ name);
    Object.assign(globalThis, mod.globals ?? {});
    return [
      { gpu: mod.create([]) as GPU, api: 'node:webgpu', adapterOptions: {} },
      { gpu: mod.create(['backend=opengles']) as GPU, api: 'node:webgpu (opengles)', adapterOptions: { featureLevel: 'compatibility' } },
    ];
  } catch {
    return [];
  }
}

/** A tiny shader with a known answer: out[i] = i·3 + 1 summed over a workgroup reduction. */
const PROBE = /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> o: array<u32>;
var<workgroup> r: array<u32, 64>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wg: vec3u) {
  r[li] = li * 3u + 1u + wg.x;
  workgroupBarrier();
  for (var s = 32u; s > 0u; s >>= 1u) {
    if (li < s) { r[li] += r[li + s]; }
    workgroupBarrier();
  }
  if (li == 0u) { o[wg.x] = r[0]; }
}`;

async function probe(device: GPUDevice): Promise<string | null> {
  const n = 4;
  const buf = device.createBuffer({ size: n * 4, usage: BufferUsage.STORAGE | BufferUsage.COPY_SRC });
  const rd = device.createBuffer({ size: n * 4, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
  try {
    device.pushErrorScope('validation');
    const pipe = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code: PROBE }), entryPoint: 'main' } });
    const bg = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: buf } }] });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    pass.setBindGroup(0, bg);
    pass.dispatchWorkgroups(n);
    pass.end();
    enc.copyBufferToBuffer(buf, 0, rd, 0, n * 4);
    device.queue.submit([enc.finish()]);
    const err = await device.popErrorScope();
    if (err) return `probe shader: ${err.message}`;
    await rd.mapAsync(MapMode.READ);
    const got = Array.from(new Uint32Array(rd.getMappedRange().slice(0)));
    rd.unmap();
    // Σ_{i<64} (3i + 1 + w) = 3·2016 + 64 + 64w
    const want = Array.from({ length: n }, (_, w) => 6048 + 64 + 64 * w);
    if (got.some((v, i) => v !== want[i])) return `probe shader gave [${got}], expected [${want}] (a null or broken backend)`;
    return null;
  } finally {
    buf.destroy();
    rd.destroy();
  }
}

async function acquire(opts: AcquireOptions): Promise<GpuDevice> {
  const apis = await gpuApis();
  if (!apis.length) throw new WebGpuUnavailableError('this runtime has no navigator.gpu (on Node, install the optional `webgpu` package)');
  let adapter: GPUAdapter | null = null;
  let api = apis[0];
  const tried: string[] = [];
  for (const a of apis) {
    try {
      adapter = await a.gpu.requestAdapter({ powerPreference: opts.powerPreference ?? 'high-performance', ...a.adapterOptions } as any);
    } catch (e) {
      tried.push(`${a.api}: ${(e as Error).message}`);
      continue;
    }
    api = a;
    if (adapter) break;
    tried.push(`${a.api}: requestAdapter() returned null`);
  }
  if (!adapter) throw new WebGpuUnavailableError(tried.join('; '));
  const info: any = (adapter as any).info ?? {};
  const adapterName = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(' / ') || 'unknown adapter';
  if (info.device === 'null-backend' || /null/i.test(String(info.description ?? '')) && /backend/i.test(String(info.description ?? ''))) {
    throw new WebGpuUnavailableError(`adapter "${adapterName}" is a null backend`);
  }
  const software = SOFTWARE_ADAPTER.test(adapterName) || (adapter as any).isFallbackAdapter === true || info.isFallbackAdapter === true;
  if (software && api.api.startsWith('node:')) {
    // Dawn (node:webgpu) over Mesa's software GL aborts the process at random points of real
    // workloads (std::system_error / futex errors), though its probe passes; Deno's WebGPU runs the
    // same drivers reliably.
    throw new WebGpuUnavailableError(`adapter "${adapterName}" is a software rasterizer, which node:webgpu does not run reliably; use Deno for WebGPU on hosts without a GPU`);
  }
  const L = adapter.limits;
  const need = opts.minStorageBinding ?? 64 * 1024 * 1024;
  if (L.maxStorageBufferBindingSize < need) {
    throw new WebGpuUnavailableError(`adapter "${adapterName}" allows ${L.maxStorageBufferBindingSize}-byte storage bindings, need ${need}`);
  }
  if (L.maxStorageBuffersPerShaderStage < 6) throw new WebGpuUnavailableError(`adapter "${adapterName}" allows only ${L.maxStorageBuffersPerShaderStage} storage buffers per stage, need 6`);
  if (L.maxComputeWorkgroupSizeX < 256 || L.maxComputeInvocationsPerWorkgroup < 256) {
    throw new WebGpuUnavailableError(`adapter "${adapterName}" allows workgroups of ${L.maxComputeInvocationsPerWorkgroup} invocations, need 256`);
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      requiredLimits: {
        maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
        maxBufferSize: L.maxBufferSize,
        maxStorageBuffersPerShaderStage: Math.min(L.maxStorageBuffersPerShaderStage, 8),
        maxComputeWorkgroupSizeX: 256,
        maxComputeInvocationsPerWorkgroup: 256,
      },
    });
  } catch (e) {
    throw new WebGpuUnavailableError(`requestDevice failed: ${(e as Error).message}`);
  }
  // Errors outside error scopes (a submit that fails validation) are kept for the next failure to name.
  let lastError: string | null = null;
  (device as any).addEventListener?.('uncapturederror', (ev: any) => {
    lastError = String(ev?.error?.message ?? ev?.error ?? 'unknown error');
    if ((ev as Event).preventDefault) (ev as Event).preventDefault();
  });
  const bad = await probe(device);
  if (bad) {
    device.destroy();
    throw new WebGpuUnavailableError(`adapter "${adapterName}": ${bad}`);
  }
  return {
    device,
    adapterName,
    api: api.api,
    software,
    lastError: () => lastError,
    limits: {
      maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
      maxBufferSize: device.limits.maxBufferSize,
      maxComputeWorkgroupsPerDimension: device.limits.maxComputeWorkgroupsPerDimension,
    },
  };
}

/**
 * The process-wide WebGPU device, acquired and probed once. Rejects with WebGpuUnavailableError
 * (never anything else) when there is none.
 */
export function acquireGpu(opts: AcquireOptions = {}): Promise<GpuDevice> {
  if (!cached) {
    cached = acquire(opts).catch((e) => {
      cached = null;
      throw e instanceof WebGpuUnavailableError ? e : new WebGpuUnavailableError((e as Error)?.message ?? String(e));
    });
  }
  return cached;
}

/** The device, or null with the reason (for backend: 'auto'). */
export async function probeGpu(opts: AcquireOptions = {}): Promise<{ gpu: GpuDevice | null; reason?: string }> {
  try {
    return { gpu: await acquireGpu(opts) };
  } catch (e) {
    return { gpu: null, reason: (e as Error).message };
  }
}
