// Depthwise causal conv1d over T tokens of C channels (every conv mixer: Gated DeltaNet, Mamba,
// LFM2 short conv, RecurrentGemma): x[t] at xOff + t·xStride, y[t] at yOff + t·yStride (may equal
// x), the W−1 previous inputs per channel in st[stOff + ch·(W−1) …] (oldest first), optional bias
// c[bOff + ch] and SiLU; one invocation per channel. Summation order as the WASM kernel:
// b + w0·in0 + … + w_{W−1}·x.

import { kernelSource } from './common.wgsl';

export const CONV_PARAMS = ['T', 'C', 'W', 'xOff', 'xStride', 'yOff', 'yStride', 'wOff', 'bOff', 'hasB', 'stOff', 'silu'];
export const convWgsl = kernelSource(CONV_PARAMS, ['p', 'a', 'st', 'c'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.C) { return; }
  let K = p.W - 1u;
  let sb = p.stOff + ch * K;
  let wb = p.wOff + ch * p.W;
  var bias = 0.0;
  if (p.hasB != 0u) { bias = c[p.bOff + ch]; }
  for (var t = 0u; t < p.T; t++) {
    let x = a[p.xOff + t * p.xStride + ch];
    var s = bias;
    for (var j = 0u; j < K; j++) { s += c[wb + j] * st[sb + j]; }
    s += c[wb + K] * x;
    for (var j = 0u; j + 1u < K; j++) { st[sb + j] = st[sb + j + 1u]; }
    st[sb + K - 1u] = x;
    if (p.silu != 0u) { s = s / (1.0 + exp(-s)); }
    a[p.yOff + t * p.yStride + ch] = s;
  }
}
`);

