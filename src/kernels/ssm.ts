// Selective state-space scans: Mamba-1 (HF MambaMixer.slow_forward) and Mamba-2 / SSD
// (HF Mamba2Mixer.torch_forward), recurrent and chunked. Buffers are arena byte offsets of f32,
// row-major; states are f32.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import { scanScratch, staticScanScratch } from './scan_scratch';
import type { K } from './types';
import type { ScanMode } from './linear_attention';

export interface SelectiveScanOptions {
  T: number;
  dInner: number;
  /** state_size */
  N: number;
  /** 32·N bytes of work space; default: the module's static area (one caller at a time). */
  scratch?: number;
}

/**
 * Mamba-1 selective scan. x [T, dInner] (after conv + SiLU); delta [T, dInner] (softplus(dt_proj(·)),
 * done by the caller); A [dInner, N] (= −exp(A_log)); B, C [T, N]; D [dInner]; z [T, dInner] or 0 (no
 * gate); h [dInner, N] in/out; y [T, dInner]. Per token, in HF's order:
 *   h = exp(A·Δ)⊙h + (Δ·B)·x;  y = h·C + x·D;  y *= SiLU(z).
 * One call over T tokens is bit-identical to T single-token calls.
 */
export function selectiveScan(k: K, y: number, h: number, x: number, delta: number, A: number, B: number, C: number, D: number, z: number, opts: SelectiveScanOptions): void {
  const kernel = 'selectiveScan';
  const { T, dInner, N } = opts;
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'dInner', dInner);
  checkInt(kernel, 'N', N);
  checkBuf(k, kernel, 'y', y, T * dInner * 4);
  checkBuf(k, kernel, 'h', h, dInner * N * 4);
  checkBuf(k, kernel, 'x', x, T * dInner * 4);
  checkBuf(k, kernel, 'delta', delta, T * dInner * 4);
  checkBuf(k, kernel, 'A', A, dInner * N * 4);
  checkBuf(k, kernel, 'B', B, T * N * 4);
  checkBuf(k, kernel, 'C', C, T * N * 4);
  checkBuf(k, kernel, 'D', D, dInner * 4);
  if (z !== 0) checkBuf(k, kernel, 'z', z, T * dInner * 4);
  if (T === 0) return;
  const need = k.exports.selectiveScanScratchFloats(N) * 4;
  let scr: number;
  if (opts.scratch !== undefined && opts.scratch !== 0) {
    checkBuf(k, kernel, 'scratch', opts.scratch, need);
    scr = opts.scratch;
  } else {
    const area = staticScanScratch(k);
    if (area.bytes < need) throw new KernelError(kernel, `scratch: N ${N} needs ${need} bytes; pass opts.scratch`);
    scr = area.ptr;
  }
  k.exports.selectiveScanF32(y, h, x, delta, A, B, C, D, z, T, dInner, N, scr);
}

export interface SsdScanOptions {
  T: number;
  /** num_heads */
  H: number;
  /** head_dim */
  P: number;
  /** n_groups: head h reads group floor(h / (H / G)) of B and C. */
  G: number;
  /** state_size */
  N: number;
  /** 'auto' (default): chunked when T ≥ chunk, else recurrent. */
  mode?: ScanMode;
  /** Chunk length of the SSD form (default 64; HF's config chunk_size only sets its own padding). */
  chunk?: 16 | 32 | 64 | 128;
  /** Scratch of ssdScanScratchBytes for the chunked form; else free memory above the arena top is used. */
  scratch?: number;
}

const CHUNKS = new Set([16, 32, 64, 128]);

/** Bytes of scratch the SSD chunked form needs (independent of T, H and G). */
export function ssdScanScratchBytes(k: K, o: { P: number; N: number; chunk?: number }): number {
  return k.exports.ssdScanScratchFloats(o.P, o.N, o.chunk ?? 64) * 4;
}

/**
 * Mamba-2 scan. x [T, H, P]; dt [T, H] (softplus(dt + dt_bias), clamped to time_step_limit by the
 * caller); A [H] (= −exp(A_log)); B, C [T, G, N]; D [H] or 0; h [H, P, N] in/out; y [T, H, P]. Per token:
 *   h = exp(dt·A)·h + (dt·B)·x;  y = h·C + D·x.
 * The chunked form (SSD) carries h in and out, so prefill pieces and decode steps compose.
 */
export function ssdScan(k: K, y: number, h: number, x: number, dt: number, A: number, B: number, C: number, D: number, opts: SsdScanOptions): void {
  const kernel = 'ssdScan';
  const { T, H, P, G, N } = opts;
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'P', P);
  checkInt(kernel, 'G', G);
  checkInt(kernel, 'N', N);
  if (H % G !== 0) throw new KernelError(kernel, `H ${H} is not a multiple of G ${G}`);
  const mode = opts.mode ?? 'auto', chunk = opts.chunk ?? 64;
  if (mode !== 'recurrent' && mode !== 'chunked' && mode !== 'auto') throw new KernelError(kernel, `mode must be 'recurrent', 'chunked' or 'auto', got ${mode}`);
  if (!CHUNKS.has(chunk)) throw new KernelError(kernel, `chunk must be 16, 32, 64 or 128, got ${chunk}`);
  checkBuf(k, kernel, 'y', y, T * H * P * 4);
  checkBuf(k, kernel, 'h', h, H * P * N * 4);
  checkBuf(k, kernel, 'x', x, T * H * P * 4);
  checkBuf(k, kernel, 'dt', dt, T * H * 4);
  checkBuf(k, kernel, 'A', A, H * 4);
  checkBuf(k, kernel, 'B', B, T * G * N * 4);
  checkBuf(k, kernel, 'C', C, T * G * N * 4);
  if (D !== 0) checkBuf(k, kernel, 'D', D, H * 4);
  if (T === 0) return;
  let useChunk = mode === 'chunked' || (mode === 'auto' && T >= chunk);
  let scr = 0;
  if (useChunk) {
    const need = k.exports.ssdScanScratchFloats(P, N, chunk) * 4;
    const area = scanScratch(k, kernel, opts.scratch, need);
    if (area) scr = area.ptr;
    else if (mode === 'chunked') throw new KernelError(kernel, `scratch: the chunked form needs ${need} bytes (ssdScanScratchBytes); pass opts.scratch`);
    else useChunk = false;
  }
  k.exports.ssdScanF32(y, h, x, dt, A, B, C, D, T, H, P, G, N, useChunk ? chunk : 0, scr);
}
