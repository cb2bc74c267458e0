// The WebGPU kernel facade: the WGSL kernels of ./kernels behind builders that mirror the WASM
// facade (src/kernels/*), over offsets (in floats) into a few device buffers instead of arena
// pointers. A builder returns a Dispatch (pipeline + bind group + grid) fixed at build time; a
// forward pass replays a list of them, so per-token host work is one small uniform write.

import { BufferUsage, MapMode, ShaderStage } from './flags';
import { KernelError } from '../kernels/runtime';
import type { GpuDevice } from './device';
import { copyWgsl, COPY_PARAMS, elementwiseWgsl, EW_PARAMS } from './kernels/elementwise.wgsl';
import { convWgsl, CONV_PARAMS } from './kernels/conv.wgsl';
import { deltaWgsl, DELTA_PARAMS, gatesWgsl, GATES_PARAMS } from './kernels/linear_attention.wgsl';
import { checkGemmShape, DEFAULT_GEMMS, GEMM_BK, GEMM_MIN_BATCH, GEMM_MIN_WORKGROUPS, GEMM_PARAMS, GEMM_REDUCE_PARAMS, GEMM_REDUCE_WG, GEMM_SPLIT_MIN_STEPS, GEMM_SPLIT_TARGET, gemmReduceWgsl, gemmShapeName, gemmWgsl, type GemmShape } from './kernels/gemm.wgsl';
import { embedWgsl, EMBED_PARAMS, matmulRowsWgsl, matmulTileWgsl, matmulWgsl, MATMUL_PARAMS, MATMUL_WG, weightBlock, weightRowStride, type GpuWeightDType, type MatmulTile } from './kernels/matmul.wgsl';
import { combineWgsl, COMBINE_PARAMS } from './kernels/moe.wgsl';
import { normWgsl, NORM_PARAMS } from './kernels/norm.wgsl';
import { ropeWgsl, ROPE_PARAMS } from './kernels/rope.wgsl';
import { argmaxWgsl, ARGMAX_PARAMS, softmaxWgsl, SOFTMAX_PARAMS } from './kernels/softmax.wgsl';

export type { GpuWeightDType };

/** Words of `ids` before the sequence's token ids begin (routing ids and other integer scratch). */
export const TOKENS_BASE = 4096;

/** A weight matrix on the device: raw u32 words (GGUF blocks or f32); `off` / `eStride` in bytes (quantized) or words (f32). */
export interface GpuWeight {
  buf: GPUBuffer;
  dtype: GpuWeightDType;
  rows: number;
  cols: number;
  off: number;
  /** Distance between stacked experts (0 for a single matrix). */
  eStride: number;
}

/** The buffers a dispatch binds: activations, state, constants, integer scratch, step uniform. */
export interface GpuBufs {
  a: GPUBuffer;
  st: GPUBuffer;
  c: GPUBuffer;
  ids: GPUBuffer;
  step: GPUBuffer;
}

/** How a GEMM runs: workgroup shape, column ranges of kLen (splits of them) and the scratch floats a split needs. */
export interface GemmPlan {
  shape: GemmShape;
  kLen: number;
  splits: number;
  scratch: number;
}

export interface Dispatch {
  /** The kernel's pipeline key (for profiles). */
  key: string;
  pipeline: GPUComputePipeline;
  bind: GPUBindGroup;
  grid: [number, number, number];
}

/** Elementwise op codes of kernels/elementwise.wgsl. */
export const EW = { add: 0, mul: 1, swiglu: 2, mulSigmoid: 3, copy: 4, silu: 5, sigmoid: 6, scale: 7, addConst: 8, softcap: 9, mulConst: 10 } as const;

const ceil = (a: number, b: number) => Math.ceil(a / b);

/** u32 words of every kernel's parameter block (see GpuKernels.params). */
const PARAM_WORDS = 32;

/** Words of a GGUF-layout or f32 weight, zero-padded to a whole word. */
export function weightWords(bytes: Uint8Array): Uint8Array {
  if (bytes.byteLength % 4 === 0) return bytes;
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}

export class GpuKernels {
  readonly device: GPUDevice;
  readonly layout: GPUBindGroupLayout;
  private readonly pipelineLayout: GPUPipelineLayout;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private dummy: GPUBuffer | null = null;
  /**
   * How products over several token rows (`perOutput`) run without routed-expert ids: workgroups of
   * `rows` × `tokens` outputs (matmulTileWgsl), or null for one invocation per output
   * (matmulRowsWgsl), where the GEMM below does not run. Both give the one-row kernel's sums.
   * Default: null (the tiled kernel ran 2.5–4× slower than one invocation per output on an H100, and
   * ~10× slower on llvmpipe).
   */
  readonly tile: MatmulTile | null;
  /**
   * Products over at least GEMM_MIN_BATCH token rows without routed-expert ids as a tiled GEMM
   * (gemmWgsl: workgroup-memory blocks, f32 sums in column order, equal to the one-row kernel's up
   * to rounding): the first of these workgroup shapes whose grid has at least GEMM_MIN_WORKGROUPS
   * workgroups, else the last (small products keep the GPU busy with smaller blocks). null keeps the
   * kernels above. Default: DEFAULT_GEMMS on hardware adapters, none on software ones (whose passes
   * stay bit-identical to token-by-token decoding).
   */
  readonly gemm: readonly GemmShape[] | null;
  /**
   * Workgroups a GEMM should reach by splitting its columns into ranges whose partial sums are added
   * afterwards (products run through `product` only; 0: never split). Default GEMM_SPLIT_TARGET.
   */
  readonly gemmSplit: number;
  constructor(readonly gpu: GpuDevice, o: { tile?: MatmulTile | null; gemm?: GemmShape | readonly GemmShape[] | null; gemmSplit?: number } = {}) {
    this.device = gpu.device;
    const tile = o.tile ?? null;
    if (tile && !(Number.isInteger(tile.rows) && Number.isInteger(tile.tokens) && tile.rows >= 1 && tile.tokens >= 1 && tile.rows * tile.tokens <= 32)) {
      throw new RangeError(`matmul tile ${tile.rows}×${tile.tokens}: rows and tokens must be positive integers with rows·tokens ≤ 32`);
    }
    this.tile = tile;
    const gemm = o.gemm === undefined ? (gpu.software ? null : DEFAULT_GEMMS) : o.gemm === null ? null : 'bm' in o.gemm ? [o.gemm] : o.gemm;
    if (gemm?.length === 0) throw new RangeError('gemm: give at least one workgroup shape, or null');
    gemm?.forEach(checkGemmShape);
    this.gemm = gemm;
    const split = o.gemmSplit ?? GEMM_SPLIT_TARGET;
    if (!(Number.isInteger(split) && split >= 0)) throw new RangeError(`gemmSplit ${split}: give a whole number of workgroups, or 0`);
    this.gemmSplit = split;
    const S = ShaderStage.COMPUTE;
    this.layout = this.device.createBindGroupLayout({
      entries: [
        { binding: 0, visibility: S, buffer: { type: 'uniform' } },
        { binding: 1, visibility: S, buffer: { type: 'storage' } },
        { binding: 2, visibility: S, buffer: { type: 'storage' } },
        { binding: 3, visibility: S, buffer: { type: 'read-only-storage' } },
        { binding: 4, visibility: S, buffer: { type: 'read-only-storage' } },
        { binding: 5, visibility: S, buffer: { type: 'uniform' } },
        { binding: 6, visibility: S, buffer: { type: 'storage' } },
      ],
    });
    this.pipelineLayout = this.device.createPipelineLayout({ bindGroupLayouts: [this.layout] });
  }

  pipeline(key: string, code: string): GPUComputePipeline {
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.device.createComputePipeline({ layout: this.pipelineLayout, compute: { module: this.device.createShaderModule({ code, label: key }), entryPoint: 'main' } });
      this.pipelines.set(key, p);
    }
    return p;
  }

  buffer(bytes: number, usage = BufferUsage.STORAGE | BufferUsage.COPY_DST | BufferUsage.COPY_SRC, label?: string): GPUBuffer {
    return this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage, label });
  }

  /** A 16-byte placeholder for bindings a kernel does not use. */
  placeholder(): GPUBuffer {
    return (this.dummy ??= this.buffer(16, BufferUsage.STORAGE | BufferUsage.UNIFORM | BufferUsage.COPY_DST, 'placeholder'));
  }

  upload(data: ArrayBufferView, usage = BufferUsage.STORAGE | BufferUsage.COPY_DST, label?: string): GPUBuffer {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const buf = this.buffer(bytes.byteLength, usage, label);
    if (bytes.byteLength > this.gpu.limits.maxStorageBufferBindingSize) {
      throw new KernelError('webgpu', `${label ?? 'buffer'}: ${bytes.byteLength} bytes exceed the device's storage binding limit ${this.gpu.limits.maxStorageBufferBindingSize}`);
    }
    const padded = weightWords(bytes);
    // Chunked writes keep the staging copies small for large weights.
    const CH = 64 << 20;
    for (let o = 0; o < padded.byteLength; o += CH) this.device.queue.writeBuffer(buf, o, padded, o, Math.min(CH, padded.byteLength - o));
    return buf;
  }

  /** Uploads one weight (or a stack of `experts` equally sized ones) in its file layout. */
  weight(bytes: Uint8Array, dtype: GpuWeightDType, rows: number, cols: number, experts = 1, label?: string): GpuWeight {
    const block = weightBlock(dtype);
    if (cols % block) throw new KernelError('webgpu', `${label}: cols ${cols} is not a multiple of ${block}, the block size of ${dtype}`);
    const per = bytes.byteLength / experts;
    return { buf: this.upload(bytes, undefined, label), dtype, rows, cols, off: 0, eStride: dtype === 'f32' ? per / 4 : per };
  }

  private params(fields: string[], values: Record<string, number>): GPUBuffer {
    // Every parameter block has one size (PARAM_WORDS): wgpu checks a bound uniform's size against
    // the struct of the first pipeline set in a compute pass, so a smaller block after a kernel with
    // more parameters fails validation (and with it the whole command buffer).
    if (fields.length > PARAM_WORDS) throw new KernelError('webgpu', `${fields.length} parameters exceed ${PARAM_WORDS}`);
    const n = PARAM_WORDS;
    const u = new Uint32Array(n), f = new Float32Array(u.buffer);
    fields.forEach((spec, i) => {
      const [name, t] = spec.split(':');
      const v = values[name] ?? 0;
      if (t === 'f') f[i] = v;
      else {
        if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new KernelError('webgpu', `parameter ${name} = ${v} is not a u32`);
        u[i] = v;
      }
    });
    const buf = this.buffer(u.byteLength, BufferUsage.UNIFORM | BufferUsage.COPY_DST);
    this.device.queue.writeBuffer(buf, 0, u);
    return buf;
  }

  /** A dispatch of kernel `code` (pipeline cached by key) with its parameter block. */
  dispatch(key: string, code: string, fields: string[], values: Record<string, number>, b: GpuBufs, grid: [number, number, number], w?: GPUBuffer): Dispatch {
    const pipeline = this.pipeline(key, code);
    const bind = this.device.createBindGroup({
      layout: this.layout,
      entries: [
        { binding: 0, resource: { buffer: this.params(fields, values) } },
        { binding: 1, resource: { buffer: b.a } },
        { binding: 2, resource: { buffer: b.st } },
        { binding: 3, resource: { buffer: w ?? this.placeholder() } },
        { binding: 4, resource: { buffer: b.c } },
        { binding: 5, resource: { buffer: b.step } },
        { binding: 6, resource: { buffer: b.ids } },
      ],
    });
    const max = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (grid.some((g) => g > max)) throw new KernelError('webgpu', `${key}: grid [${grid}] exceeds ${max} workgroups per dimension`);
    return { key, pipeline, bind, grid: grid.map((g) => Math.max(1, g)) as [number, number, number] };
  }

  split(rows: number): { nx: number; ny: number } {
    const max = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    const nx = Math.min(rows, max);
    return { nx, ny: ceil(rows, nx) };
  }

  // ---------------------------------------------------------------------------------------------
  // Builders. Offsets are in floats of `a` (activations), `st` (state) or `c` (constants).

  /**
   * y[z, w.rows] = W · x[z / xDiv, w.cols] for z < batch (x rows xStride apart, y rows yStride apart;
   * xDiv default 1). `rowOff` selects rows [rowOff, rowOff + rows) of w; `ids` picks expert
   * ids[idsOff + z] of a stack. `perOutput` (passes of many tokens): the GEMM where it is on and the
   * pass has at least GEMM_MIN_BATCH rows; else the tiled kernel, or with ids or no tile the kernel of
   * one invocation per output, both with the same results as the default kernel of a workgroup per
   * output.
   */
  matmul(b: GpuBufs, y: number, x: number, w: GpuWeight, batch: number,
    o: { rows?: number; rowOff?: number; xStride?: number; yStride?: number; idsOff?: number; xDiv?: number; perOutput?: boolean } = {}): Dispatch {
    const rows = o.rows ?? w.rows;
    const rowUnits = weightRowStride(w.dtype, w.cols);
    const { nx, ny } = this.split(rows);
    const params = {
      rows, cols: w.cols, nx, wOff: w.off + (o.rowOff ?? 0) * rowUnits, xOff: x, xStride: o.xStride ?? w.cols, yOff: y, yStride: o.yStride ?? rows,
      useIds: o.idsOff === undefined ? 0 : 1, idsOff: o.idsOff ?? 0, eStride: w.eStride, xDiv: o.xDiv ?? 1, batch,
    };
    if (o.perOutput && o.idsOff === undefined) {
      const plan = this.gemmPlan(rows, w.cols, batch, false);
      if (plan) return this.gemmDispatch(b, params, w, plan, -1);
    }
    if (o.perOutput && this.tile && o.idsOff === undefined) {
      const { rows: R, tokens: TT } = this.tile, t = this.split(ceil(rows, R));
      return this.dispatch(`matmul_tile${R}x${TT}_${w.dtype}`, matmulTileWgsl(w.dtype, this.tile), MATMUL_PARAMS, { ...params, nx: t.nx }, b, [t.nx, t.ny, ceil(batch, TT)], w.buf);
    }
    if (o.perOutput) return this.dispatch(`matmul_rows_${w.dtype}`, matmulRowsWgsl(w.dtype), MATMUL_PARAMS, params, b, [nx, ny, ceil(batch, MATMUL_WG)], w.buf);
    return this.dispatch(`matmul_${w.dtype}`, matmulWgsl(w.dtype), MATMUL_PARAMS, params, b, [nx, ny, batch], w.buf);
  }

  /**
   * The GEMM that a product of `rows` × `cols` over `batch` token rows runs (see `gemm`), or null
   * where it runs another kernel: the first shape whose grid has GEMM_MIN_WORKGROUPS workgroups, or,
   * with `split`, reaches that by cutting the columns into ranges (towards `gemmSplit` workgroups,
   * each range at least GEMM_SPLIT_MIN_STEPS blocks of 32 columns); else the last shape, its columns
   * split as far as that allows. `scratch`:
   * the floats of partial sums the split needs.
   */
  gemmPlan(rows: number, cols: number, batch: number, split: boolean): GemmPlan | null {
    if (!this.gemm || batch < GEMM_MIN_BATCH) return null;
    const plan = (shape: GemmShape, n: number): GemmPlan => {
      const kLen = ceil(ceil(cols, GEMM_BK), n) * GEMM_BK, splits = ceil(cols, kLen);
      return { shape, kLen, splits, scratch: splits > 1 ? splits * batch * rows : 0 };
    };
    const ranges = (s: GemmShape) => {
      const wgs = ceil(rows, s.bm) * ceil(batch, s.bn);
      const n = split && this.gemmSplit > wgs ? Math.min(Math.floor(cols / (GEMM_BK * GEMM_SPLIT_MIN_STEPS)), ceil(this.gemmSplit, wgs)) : 1;
      return { wgs, n: Math.max(1, n) };
    };
    for (const s of this.gemm) {
      const { wgs, n } = ranges(s);
      if (wgs >= GEMM_MIN_WORKGROUPS) return plan(s, 1);
      if (n > 1 && wgs * n >= GEMM_MIN_WORKGROUPS) return plan(s, n);
    }
    const last = this.gemm[this.gemm.length - 1];
    return plan(last, ranges(last).n);
  }

  /**
   * matmul over `batch` token rows for a product that may split its columns (gemmPlan with split):
   * `scratch` is an offset in `a` of at least gemmPlan(…).scratch floats, used only when it splits.
   */
  product(b: GpuBufs, y: number, x: number, w: GpuWeight, batch: number, scratch: number, o: { xStride?: number; yStride?: number } = {}): Dispatch[] {
    const plan = scratch >= 0 ? this.gemmPlan(w.rows, w.cols, batch, true) : null;
    if (!plan || plan.splits === 1) return [this.matmul(b, y, x, w, batch, { ...o, perOutput: batch > 1 })];
    const rows = w.rows;
    const params = {
      rows, cols: w.cols, nx: 0, wOff: w.off, xOff: x, xStride: o.xStride ?? w.cols, yOff: y, yStride: o.yStride ?? rows,
      useIds: 0, idsOff: 0, eStride: w.eStride, xDiv: 1, batch,
    };
    return [
      this.gemmDispatch(b, params, w, plan, scratch),
      this.dispatch('gemm_reduce', gemmReduceWgsl, GEMM_REDUCE_PARAMS, { rows, batch, splits: plan.splits, sOff: scratch, yOff: y, yStride: params.yStride }, b,
        [ceil(rows, GEMM_REDUCE_WG), batch, 1]),
    ];
  }

  private gemmDispatch(b: GpuBufs, params: Record<string, number>, w: GpuWeight, plan: GemmPlan, scratch: number): Dispatch {
    const g = plan.shape, t = this.split(ceil(params.rows, g.bm)), nzb = ceil(params.batch, g.bn);
    return this.dispatch(`gemm${gemmShapeName(g)}_${w.dtype}`, gemmWgsl(w.dtype, g), GEMM_PARAMS,
      { ...params, nx: t.nx, kLen: plan.kLen, sOff: Math.max(scratch, 0), nzb, splits: plan.splits }, b, [t.nx, t.ny, nzb * plan.splits], w.buf);
  }

  /**
   * out[t, cols] = row (the token at ids[TOKENS_BASE + step.pos + t], or `row`) of the table, times
   * scale, for t < T.
   */
  embed(b: GpuBufs, out: number, table: GpuWeight, o: { row?: number; scale?: number; T?: number } = {}): Dispatch {
    return this.dispatch(`embed_${table.dtype}`, embedWgsl(table.dtype), EMBED_PARAMS, {
      cols: table.cols, outOff: out, useStep: o.row === undefined ? 1 : 0, row: o.row ?? 0, tokOff: TOKENS_BASE, scale: o.scale ?? 1,
    }, b, [ceil(table.cols, 64), o.T ?? 1, 1], table.buf);
  }

  /** RMSNorm of rows×dim (weight at c[w], or none when w < 0), optionally ⊙ SiLU(z); rows xStride / yStride apart (default dim). */
  rmsNorm(b: GpuBufs, y: number, x: number, w: number, rows: number, dim: number, eps: number, o: { addOne?: boolean; gateZ?: number; xStride?: number; yStride?: number } = {}): Dispatch {
    return this.dispatch('norm', normWgsl, NORM_PARAMS, {
      rows, dim, xOff: x, xStride: o.xStride ?? dim, yOff: y, yStride: o.yStride ?? dim, wOff: Math.max(w, 0), hasW: w >= 0 ? 1 : 0, addOne: o.addOne ? 1 : 0,
      mode: 0, gate: o.gateZ === undefined ? 0 : 1, zOff: o.gateZ ?? 0, eps,
    }, b, [rows, 1, 1]);
  }

  /** LayerNorm of rows×dim with weight c[w] and bias c[bias] (none when < 0). */
  layerNorm(b: GpuBufs, y: number, x: number, w: number, bias: number, rows: number, dim: number, eps: number): Dispatch {
    return this.dispatch('norm', normWgsl, NORM_PARAMS, {
      rows, dim, xOff: x, xStride: dim, yOff: y, yStride: dim, wOff: Math.max(w, 0), hasW: w >= 0 ? 1 : 0, mode: 2, bOff: Math.max(bias, 0), hasB: bias >= 0 ? 1 : 0, eps,
    }, b, [rows, 1, 1]);
  }

  l2Norm(b: GpuBufs, y: number, x: number, rows: number, dim: number, eps: number): Dispatch {
    return this.dispatch('norm', normWgsl, NORM_PARAMS, { rows, dim, xOff: x, xStride: dim, yOff: y, yStride: dim, mode: 1, eps }, b, [rows, 1, 1]);
  }

  /** RoPE in place on x[T, nHeads, headDim] at positions step.pos + t; cos/sin tables at c[cos], c[sin]. */
  rope(b: GpuBufs, x: number, T: number, nHeads: number, headDim: number, rotaryDim: number, style: 'neox' | 'interleaved', cos: number, sin: number, rowStride = nHeads * headDim): Dispatch {
    return this.dispatch('rope', ropeWgsl, ROPE_PARAMS, {
      T, nHeads, headDim, rotaryDim, neox: style === 'neox' ? 1 : 0, xOff: x, rowStride, cosOff: cos, sinOff: sin,
    }, b, [ceil(nHeads * rotaryDim / 2, 64), T, 1]);
  }

  softmax(b: GpuBufs, x: number, rows: number, n: number): Dispatch {
    return this.dispatch('softmax', softmaxWgsl, SOFTMAX_PARAMS, { rows, n, off: x }, b, [rows, 1, 1]);
  }

  /**
   * Causal depthwise conv1d of x[T, C] (rows xStride apart) into y (default: in place), state
   * st[state] ([C, W−1]), taps c[w] ([C, W]), optional bias c[o.bias].
   */
  conv1d(b: GpuBufs, x: number, w: number, state: number, T: number, C: number, W: number, act: 'none' | 'silu', o: { bias?: number; y?: number; xStride?: number; yStride?: number } = {}): Dispatch {
    if (W < 2) throw new KernelError('webgpu', `conv1d: W ${W} < 2`);
    const bias = o.bias ?? -1;
    return this.dispatch('conv', convWgsl, CONV_PARAMS, {
      T, C, W, xOff: x, xStride: o.xStride ?? C, yOff: o.y ?? x, yStride: o.yStride ?? C, wOff: w, bOff: Math.max(bias, 0), hasB: bias >= 0 ? 1 : 0,
      stOff: state, silu: act === 'silu' ? 1 : 0,
    }, b, [ceil(C, 64), 1, 1]);
  }

  /** Gated DeltaNet gates of T tokens from ba = [b (H) | a (H)] per token: g, β [T, H]. */
  deltaGates(b: GpuBufs, g: number, beta: number, ba: number, aLog: number, dtBias: number, H: number, T = 1): Dispatch {
    return this.dispatch('gates', gatesWgsl, GATES_PARAMS, { H, baOff: ba, gOff: g, betaOff: beta, aLogOff: aLog, dtOff: dtBias }, b, [ceil(H, 64), T, 1]);
  }

  /** One gated-delta-rule step for Hv value heads (q, k per key head; normQK L2-normalises them). */
  deltaStep(b: GpuBufs, out: number, S: number, q: number, k: number, v: number, g: number, beta: number, o: { Hv: number; Hk: number; dk: number; dv: number; scale: number; normQK: boolean }): Dispatch {
    if (o.dk > 256) throw new KernelError('webgpu', `deltaStep: dk ${o.dk} > 256`);
    return this.dispatch('delta', deltaWgsl, DELTA_PARAMS, {
      Hv: o.Hv, Hk: o.Hk, dk: o.dk, dv: o.dv, qOff: q, kOff: k, vOff: v, oOff: out, gOff: g, betaOff: beta, sOff: S, normQK: o.normQK ? 1 : 0, scale: o.scale,
    }, b, [o.Hv, 1, 1]);
  }

  /** Greedy choice: ids[TOKENS_BASE + step.pos + 1] = argmax of a[logits, logits + n) (ties: lowest id). */
  argmax(b: GpuBufs, logits: number, n: number): Dispatch {
    return this.dispatch('argmax', argmaxWgsl, ARGMAX_PARAMS, { n, off: logits, outOff: TOKENS_BASE + 1 }, b, [1, 1, 1]);
  }

  /** Per token t < T: out[t, D] = Σ_j w[t, j]·y[t·K + j, :] (+ sigmoid(a[sg + t])·a[shared + t·D …] when given). */
  moeCombine(b: GpuBufs, out: number, y: number, w: number, D: number, K: number, shared?: { y: number; gate?: number }, T = 1): Dispatch {
    return this.dispatch('combine', combineWgsl, COMBINE_PARAMS, {
      D, K, yOff: y, wOff: w, outOff: out, shOff: shared?.y ?? 0, sgOff: shared?.gate ?? 0, hasShared: shared ? 1 : 0, hasGate: shared?.gate !== undefined ? 1 : 0,
    }, b, [ceil(D, 64), T, 1]);
  }

  /**
   * y[i] = op(x[i], other) for i < n. `other` is an offset in `a` (ops 0–3), or in `c` for addConst /
   * mulConst, whose vector repeats every `o.period` floats (a bias over T rows); `o.s` is the scalar of
   * scale / softcap. tanh in WGSL is f32 and may differ from the host's by a few ulp.
   */
  elementwise(b: GpuBufs, op: number, y: number, x: number, other: number, n: number, o: { period?: number; s?: number } = {}): Dispatch {
    const groups = ceil(n, 256);
    const { nx, ny } = this.split(groups);
    return this.dispatch('ew', elementwiseWgsl, EW_PARAMS, { n, op, yOff: y, xOff: x, bOff: other, nx, period: o.period ?? n, s: o.s ?? 1 }, b, [nx, ny, 1]);
  }

  /**
   * For each of `rows` rows r (default 1): nChunks chunks of len floats a[src + r·srcRow + i·srcStride]
   * → (st or a)[dst + step.pos·posStride + r·dstRow + i·dstStride].
   */
  copy(b: GpuBufs, dst: number, src: number, nChunks: number, len: number,
    o: { srcStride?: number; dstStride?: number; posStride?: number; toState?: boolean; rows?: number; srcRow?: number; dstRow?: number } = {}): Dispatch {
    return this.dispatch('copy', copyWgsl, COPY_PARAMS, {
      nChunks, len, srcOff: src, srcStride: o.srcStride ?? len, dstOff: dst, dstStride: o.dstStride ?? len, posStride: o.posStride ?? 0, toState: o.toState ? 1 : 0,
      srcRow: o.srcRow ?? 0, dstRow: o.dstRow ?? 0,
    }, b, [ceil(len, 64), nChunks, o.rows ?? 1]);
  }

  // ---------------------------------------------------------------------------------------------

  encode(pass: GPUComputePassEncoder, list: Dispatch[]): void {
    let last: GPUComputePipeline | null = null;
    for (const d of list) {
      if (d.pipeline !== last) pass.setPipeline((last = d.pipeline));
      pass.setBindGroup(0, d.bind);
      pass.dispatchWorkgroups(d.grid[0], d.grid[1], d.grid[2]);
    }
  }

  /** Runs dispatches and reads back floats [off, off + n) of `src` (null: no read). */
  async run(list: Dispatch[], read: { src: GPUBuffer; off: number; n: number } | null = null): Promise<Float32Array | null> {
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.encode(pass, list);
    pass.end();
    let rd: GPUBuffer | null = null;
    if (read) {
      rd = this.device.createBuffer({ size: Math.max(16, Math.ceil(read.n * 4 / 16) * 16), usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
      enc.copyBufferToBuffer(read.src, read.off * 4, rd, 0, read.n * 4);
    }
    this.device.queue.submit([enc.finish()]);
    if (!rd) return null;
    await rd.mapAsync(MapMode.READ);
    const out = new Float32Array(rd.getMappedRange().slice(0, read!.n * 4));
    rd.unmap();
    rd.destroy();
    return out;
  }
}

/** Step uniform: token id and position of the step being run. */
export function writeStep(device: GPUDevice, step: GPUBuffer, tok: number, pos: number, prompt = false): void {
  device.queue.writeBuffer(step, 0, new Uint32Array([tok, pos, pos + 1, prompt ? 1 : 0]));
}
