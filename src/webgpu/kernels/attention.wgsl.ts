// Decode attention for one query token over a KV cache in `st` (GQA: query head h reads KV head
// h / (nHeads / nKv)), one workgroup per query head. n = step.pos + 1 cached positions (keys at
// slot j for position j, rows kStride / vStride floats apart). Scores go to a scratch row per head
// in `a` (maxN floats), then a max-subtracted softmax, then the value mix per output dimension.

import { kernelSource, reductions } from './common.wgsl';

export const ATTN_PARAMS = ['nHeads', 'nKv', 'headDim', 'vDim', 'qOff', 'oOff', 'kOff', 'vOff', 'kStride', 'vStride', 'sOff', 'maxN', 'scale:f'];
const WG = 64;

export const attentionWgsl = kernelSource(ATTN_PARAMS, ['p', 'a', 'st', 'step'], reductions(WG) + `
var<workgroup> qs: array<f32, 512>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  if (h >= p.nHeads) { return; }
  let kvh = h / (p.nHeads / p.nKv);
  let n = step.pos + 1u;
  let qb = p.qOff + h * p.headDim;
  for (var i = li; i < p.headDim; i += ${WG}u) { qs[i] = a[qb + i]; }
  workgroupBarrier();
  let sb = p.sOff + h * p.maxN;
  var m = -3.4e38;
  for (var j = li; j < n; j += ${WG}u) {
    let kb = p.kOff + j * p.kStride + kvh * p.headDim;
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += qs[i] * st[kb + i]; }
    d = d * p.scale;
    a[sb + j] = d;
    m = max(m, d);
  }
  let mx = wmax(m, li);
  var s = 0.0;
  for (var j = li; j < n; j += ${WG}u) { let e = exp(a[sb + j] - mx); a[sb + j] = e; s += e; }
  let tot = wsum(s, li);
  storageBarrier();
  workgroupBarrier();
  let inv = 1.0 / tot;
  let ob = p.oOff + h * p.vDim;
  for (var d = li; d < p.vDim; d += ${WG}u) {
    var acc = 0.0;
    for (var j = 0u; j < n; j++) { acc += a[sb + j] * st[p.vOff + j * p.vStride + kvh * p.vDim + d]; }
    a[ob + d] = acc * inv;
  }
}
`);
