// In-place max-subtracted softmax of `rows` rows of n floats, one workgroup per row.

import { kernelSource, reductions } from './common.wgsl';

export const SOFTMAX_PARAMS = ['rows', 'n', 'off'];
const WG = 64;

export const softmaxWgsl = kernelSource(SOFTMAX_PARAMS, ['p', 'a'], reductions(WG) + `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let r = wg.x;
  if (r >= p.rows) { return; }
  let b = p.off + r * p.n;
  var m = -3.4e38;
  for (var i = li; i < p.n; i += ${WG}u) { m = max(m, a[b + i]); }
  let mx = wmax(m, li);
  var s = 0.0;
  for (var i = li; i < p.n; i += ${WG}u) { let e = exp(a[b + i] - mx); a[b + i] = e; s += e; }
  let tot = wsum(s, li);
  let inv = 1.0 / tot;
  for (var i = li; i < p.n; i += ${WG}u) { a[b + i] = a[b + i] * inv; }
}
`);
