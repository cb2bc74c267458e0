// In-place max-subtracted softmax of `rows` rows of n floats, one workgroup per row; and the
// greedy choice over one row (argmax, ties to the lowest index, NaN never chosen) written to `ids`
// as the next token, so greedy decoding needs no logits on the host.

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

export const ARGMAX_PARAMS = ['n', 'off', 'outOff'];
const AWG = 256;
export const argmaxWgsl = kernelSource(ARGMAX_PARAMS, ['p', 'a', 'step', 'ids'], `
var<workgroup> bv: array<f32, ${AWG}>;
var<workgroup> bi: array<u32, ${AWG}>;
@compute @workgroup_size(${AWG})
fn main(@builtin(local_invocation_index) li: u32) {
  var best = -3.4e38;
  var idx = 0xffffffffu;
  for (var i = li; i < p.n; i += ${AWG}u) {
    let v = a[p.off + i];
    if (v > best || (idx == 0xffffffffu && v == v)) { best = v; idx = i; }
  }
  bv[li] = best;
  bi[li] = idx;
  workgroupBarrier();
  for (var s = ${AWG / 2}u; s > 0u; s >>= 1u) {
    if (li < s) {
      let ov = bv[li + s];
      let oi = bi[li + s];
      if (oi != 0xffffffffu && (bi[li] == 0xffffffffu || ov > bv[li] || (ov == bv[li] && oi < bi[li]))) { bv[li] = ov; bi[li] = oi; }
    }
    workgroupBarrier();
  }
  if (li == 0u) {
    var r = bi[0];
    if (r == 0xffffffffu) { r = 0u; }
    ids[p.outOff + step.pos] = r;
  }
}
`);
