// Scratch memory for the recurrent-scan kernels (linear attention, SSD): kernels never allocate, so the
// facade hands them a work area. Not re-exported from index.ts.
import { checkBuf } from './act';
import type { K } from './types';

export interface ScratchArea {
  ptr: number;
  bytes: number;
}

/**
 * The caller's scratch (checked for `need` bytes), else committed memory above the arena top: nothing
 * owns it, nothing grows, and nothing else runs during a synchronous kernel call. null when neither.
 */
export function scanScratch(k: K, kernel: string, given: number | undefined, need: number): ScratchArea | null {
  if (given !== undefined && given !== 0) {
    checkBuf(k, kernel, 'scratch', given, need);
    return { ptr: given, bytes: need };
  }
  const top = Math.ceil(k.arena.top / 64) * 64;
  const end = k.memory.buffer.byteLength;
  return top + need <= end ? { ptr: top, bytes: end - top } : null;
}

/** The module's small static area (4 KB): the recurrent forms' per-token-group buffers (dk ≤ 1016), Mamba-1's block state (N ≤ 128). */
export function staticScanScratch(k: K): ScratchArea {
  return { ptr: k.exports.scanStaticScratch(), bytes: k.exports.scanStaticScratchBytes() };
}
