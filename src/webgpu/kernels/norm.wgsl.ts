// Row normalisations, one workgroup per row: RMSNorm (plain or zero-centred weight x̂·(1+w),
// optionally gated by SiLU(z) as Qwen3-Next's gated norm), L2 normalisation and LayerNorm.

import { kernelSource, reductions } from './common.wgsl';

export const NORM_WG = 64;
/**
 * mode 0: y = x · rsqrt(mean(x²) + eps) · w'   (w' = w, 1 + w, or 1 when hasW is 0)
 * mode 1: y = x · rsqrt(Σx² + eps)
 * mode 2: y = (x − mean) · rsqrt(var + eps) · w' (+ b at bOff when hasB)
 * gate 1: y ·= SiLU(z) with z at zOff + row·dim.
 */
export const NORM_PARAMS = ['rows', 'dim', 'xOff', 'xStride', 'yOff', 'yStride', 'wOff', 'hasW', 'addOne', 'mode', 'gate', 'zOff', 'bOff', 'hasB', 'eps:f'];

export const normWgsl = kernelSource(NORM_PARAMS, ['p', 'a', 'c'], reductions(NORM_WG) + `
@compute @workgroup_size(${NORM_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = wg.x;
  if (r >= p.rows) { return; }
  let xb = p.xOff + r * p.xStride;
  let yb = p.yOff + r * p.yStride;
  var mean = 0.0;
  if (p.mode == 2u) {
    var s1 = 0.0;
    for (var i = li; i < p.dim; i += ${NORM_WG}u) { s1 += a[xb + i]; }
    mean = wsum(s1, li) / f32(p.dim);
  }
  var ss = 0.0;
  for (var i = li; i < p.dim; i += ${NORM_WG}u) { let v = a[xb + i] - mean; ss += v * v; }
  let tot = wsum(ss, li);
  var inv: f32;
  if (p.mode == 1u) { inv = 1.0 / sqrt(tot + p.eps); } else { inv = 1.0 / sqrt(tot / f32(p.dim) + p.eps); }
  for (var i = li; i < p.dim; i += ${NORM_WG}u) {
    var m = inv;
    if (p.hasW != 0u) {
      let wv = c[p.wOff + i];
      if (p.addOne != 0u) { m = m * (1.0 + wv); } else { m = m * wv; }
    }
    var y = (a[xb + i] - mean) * m;
    if (p.hasB != 0u) { y += c[p.bOff + i]; }
    if (p.gate != 0u) { let z = a[p.zOff + r * p.dim + i]; y = y * (z / (1.0 + exp(-z))); }
    a[yb + i] = y;
  }
}
`);
