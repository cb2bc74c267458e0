// Per-head matrix–vector products of Multi-head Latent Attention: y[z, rows] = W_z · x[z, cols] for
// heads z < heads, W_z an f32 matrix (in `w`, words) at wOff + z·wHeadStride with rows `cols` words
// apart. MLA absorbs kv_b_proj into the query (W_UK_hᵀ q_nope_h) and the output (W_UV_h o_h) with a
// different matrix per head. One workgroup per (row, head, token); token t's x and y rows are xRow and
// yRow floats after token 0's. The sum is f32.

import { kernelSource, reductions } from './common.wgsl';

export const HEAD_MM_PARAMS = ['rows', 'cols', 'heads', 'wOff', 'wHeadStride', 'xOff', 'xStride', 'yOff', 'yStride', 'xRow', 'yRow'];
const WG = 64;

export const headMatmulWgsl = kernelSource(HEAD_MM_PARAMS, ['p', 'a', 'w'], reductions(WG) + `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = wg.x;
  let z = wg.y;
  if (r >= p.rows || z >= p.heads) { return; }
  let t = wg.z;
  let wb = p.wOff + z * p.wHeadStride + r * p.cols;
  let xb = p.xOff + t * p.xRow + z * p.xStride;
  var s = 0.0;
  for (var i = li; i < p.cols; i += ${WG}u) { s += bitcast<f32>(w[wb + i]) * a[xb + i]; }
  let tot = wsum(s, li);
  if (li == 0u) { a[p.yOff + t * p.yRow + z * p.yStride + r] = tot; }
}
`);
