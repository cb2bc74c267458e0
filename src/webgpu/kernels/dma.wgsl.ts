// Dynamic mask attention (graph/ops-dma.ts) over f32 caches in `st`, one workgroup per (query head,
// row). Row r is the query at position P = step.pos + row0 + r; it sees positions j ≤ P (and
// j > P − window with a window). Per (row, head) the scratch in `a` holds maxN scores, then maxN key
// biases b[j] = exp(A[g] · softplus(dt[j, g])) (g the head's KV head). When more than `keep`
// positions are visible, position j takes part iff fewer than `keep` visible positions i have
// b[i] > b[j], or b[i] = b[j] and i < j; the others get score −3.4e38 (weight 0). Then a
// max-subtracted softmax of scale·q·k[j] + b[j] and the value mix per output dimension.

import { kernelSource, reductions } from './common.wgsl';

export const DMA_PARAMS = ['nHeads', 'nKv', 'headDim', 'vDim', 'qOff', 'oOff', 'kOff', 'vOff', 'dtOff', 'aOff', 'sOff', 'maxN', 'scale:f',
  'window', 'keep', 'row0', 'qRowStride', 'oRowStride'];
/** Largest head dimension of q / k the kernel holds in workgroup memory. */
export const DMA_MAX_HEAD_DIM = 512;
const WG = 64;

export const dmaWgsl = kernelSource(DMA_PARAMS, ['p', 'a', 'st', 'c', 'step'], reductions(WG) + `
var<workgroup> qs: array<f32, ${DMA_MAX_HEAD_DIM}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  let r = wg.y;
  if (h >= p.nHeads) { return; }
  let kvh = h / (p.nHeads / p.nKv);
  let n = step.pos + p.row0 + r + 1u;
  var j0 = 0u;
  if (p.window > 0u && n > p.window) { j0 = n - p.window; }
  let qb = p.qOff + r * p.qRowStride + h * p.headDim;
  for (var i = li; i < p.headDim; i += ${WG}u) { qs[i] = a[qb + i]; }
  let sb = p.sOff + (r * p.nHeads + h) * 2u * p.maxN;
  let bb = sb + p.maxN;
  let A = c[p.aOff + kvh];
  for (var j = j0 + li; j < n; j += ${WG}u) {
    let x = st[p.dtOff + j * p.nKv + kvh];
    var sp = x;
    if (x <= 20.0) { sp = log(1.0 + exp(x)); }
    a[bb + j] = exp(A * sp);
  }
  storageBarrier();
  workgroupBarrier();
  let limit = p.keep > 0u && n - j0 > p.keep;
  let kStride = p.nKv * p.headDim;
  var m = -3.4e38;
  for (var j = j0 + li; j < n; j += ${WG}u) {
    let b = a[bb + j];
    var take = true;
    if (limit) {
      var rank = 0u;
      for (var i = j0; i < n; i++) {
        let bi = a[bb + i];
        if (bi > b || (bi == b && i < j)) { rank++; }
      }
      take = rank < p.keep;
    }
    var s = -3.4e38;
    if (take) {
      let kb = p.kOff + j * kStride + kvh * p.headDim;
      var d = 0.0;
      for (var i = 0u; i < p.headDim; i++) { d += qs[i] * st[kb + i]; }
      s = d * p.scale + b;
      m = max(m, s);
    }
    a[sb + j] = s;
  }
  let mx = wmax(m, li);
  var tot = 0.0;
  for (var j = j0 + li; j < n; j += ${WG}u) {
    var e = 0.0;
    let s = a[sb + j];
    if (s > -3.0e38) { e = exp(s - mx); }
    a[sb + j] = e;
    tot += e;
  }
  let sum = wsum(tot, li);
  storageBarrier();
  workgroupBarrier();
  let inv = 1.0 / sum;
  let vStride = p.nKv * p.vDim;
  let ob = p.oOff + r * p.oRowStride + h * p.vDim;
  for (var d = li; d < p.vDim; d += ${WG}u) {
    var acc = 0.0;
    for (var j = j0; j < n; j++) { acc += a[sb + j] * st[p.vOff + j * vStride + kvh * p.vDim + d]; }
    a[ob + d] = acc * inv;
  }
}
`);
