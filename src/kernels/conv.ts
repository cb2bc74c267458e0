// Depthwise causal conv1d with a rolling state (Mamba 1/2, GatedDeltaNet, RG-LRU, LFM2 short conv).
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import type { K } from './types';

/**
 * y[t, c] = act(bias[c] + Σ_j w[c, j] · in[t − (W−1) + j, c]) for x [T, C], w [C, W] (HF Conv1d
 * weight [C, 1, W]), bias [C] or 0. state [C, W−1] holds the W−1 inputs before x[0] (oldest first;
 * zeros = HF's zero-padded causal conv) and afterwards the last W−1 inputs, so T single steps equal
 * one call over T tokens. W ∈ 2..4; y may equal x.
 */
export function conv1d(k: K, y: number, x: number, w: number, bias: number, state: number, T: number, C: number, W: number, act: 'none' | 'silu'): void {
  checkInt('conv1d', 'T', T, 0);
  checkInt('conv1d', 'C', C);
  if (!Number.isInteger(W) || W < 2 || W > 4) throw new KernelError('conv1d', `W must be 2, 3 or 4, got ${W}`);
  if (act !== 'none' && act !== 'silu') throw new KernelError('conv1d', `act must be 'none' or 'silu', got ${act}`);
  checkBuf(k, 'conv1d', 'y', y, T * C * 4);
  checkBuf(k, 'conv1d', 'x', x, T * C * 4);
  checkBuf(k, 'conv1d', 'w', w, C * W * 4);
  if (bias !== 0) checkBuf(k, 'conv1d', 'bias', bias, C * 4);
  checkBuf(k, 'conv1d', 'state', state, C * (W - 1) * 4);
  k.exports.conv1dF32(y, x, w, bias, state, T, C, W, act === 'silu' ? 1 : 0);
}
