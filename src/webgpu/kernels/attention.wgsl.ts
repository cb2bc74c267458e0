// Attention of query rows over a KV cache in `st` (GQA: query head h reads KV head h / (nHeads /
// nKv)), one workgroup per (query head, row). Row r of the dispatch is the query at position
// P = step.pos + row0 + r (q at qOff + r·qRowStride, output at oOff + r·oRowStride); it sees the
// cached positions j ≤ P, and with a sliding window W (> 0) only those with j > P − W (keys at slot
// j for position j, rows kStride / vStride floats apart). Scores (q·k · scale, then soft-capped as
// cap·tanh(s · icap) when cap > 0) go to a scratch row per (row, head) in `a` (maxN floats, indexed
// by position), then a max-subtracted softmax whose denominator optionally also holds a per-head
// sink logit exp(c[sinkOff + h]) (gpt-oss), then the value mix per output dimension.
//
// Quantized caches (kvcache.wgsl.ts) are read in place, each value as q·d.
//
// clamp: y[i] = min(max(x[i], −lim), lim) over n floats of `a` (OLMoE clip_qkv).

import type { KvCacheType } from '../../kernels/kvcache';
import { kernelSource, reductions } from './common.wgsl';
import { kvReader } from './kvcache.wgsl';

export const ATTN_PARAMS = ['nHeads', 'nKv', 'headDim', 'vDim', 'qOff', 'oOff', 'kOff', 'vOff', 'kStride', 'vStride', 'sOff', 'maxN', 'scale:f',
  'window', 'hasSinks', 'sinkOff', 'softcap:f', 'icap:f', 'row0', 'qRowStride', 'oRowStride'];
/** Largest head dimension of q / k the kernel holds in workgroup memory. */
export const ATTN_MAX_HEAD_DIM = 512;
const WG = 64;

/** tanh in f32: odd polynomial below |x| 0.4, (1 − e^(−2|x|)) / (1 + e^(−2|x|)) with the sign above (no overflow). */
export const TANH = `
fn tanhf(x: f32) -> f32 {
  let ax = abs(x);
  if (ax < 0.4) {
    let x2 = x * x;
    var q = -0.0014558343870513183;
    q = q * x2 + 0.0035921280365724810;
    q = q * x2 - 0.0088632355299021966;
    q = q * x2 + 0.021869488536155203;
    q = q * x2 - 0.053968253968253968;
    q = q * x2 + 0.13333333333333333;
    q = q * x2 - 0.33333333333333333;
    return x + q * x2 * x;
  }
  let t = exp(-2.0 * ax);
  return sign(x) * ((1.0 - t) / (1.0 + t));
}
`;

/**
 * The attention kernel over an f32 cache, or over quantized rows (kv q8_0 / q4_0: kOff, vOff,
 * kStride and vStride in words, heads at whole blocks; values read as kvcache.wgsl.ts kvAt).
 */
export function attentionWgsl(kv: KvCacheType = 'f32'): string {
  const f32 = kv === 'f32';
  const key = f32
    ? `let kb = p.kOff + j * p.kStride + kvh * p.headDim;
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += qs[i] * st[kb + i]; }`
    : `let kb = (p.kOff + j * p.kStride) * 4u + kvh * kvHeadBytes(p.headDim);
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += qs[i] * kvAt(kb, i); }`;
  const value = f32
    ? 'st[p.vOff + j * p.vStride + kvh * p.vDim + d]'
    : 'kvAt((p.vOff + j * p.vStride) * 4u + kvh * kvHeadBytes(p.vDim), d)';
  return kernelSource(ATTN_PARAMS, ['p', 'a', f32 ? 'st' : 'stu', 'c', 'step'], reductions(WG) + TANH + (f32 ? '' : kvReader(kv)) + `
var<workgroup> qs: array<f32, ${ATTN_MAX_HEAD_DIM}>;
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
  workgroupBarrier();
  let sb = p.sOff + (r * p.nHeads + h) * p.maxN;
  var m = -3.4e38;
  for (var j = j0 + li; j < n; j += ${WG}u) {
    ${key}
    d = d * p.scale;
    if (p.softcap > 0.0) { d = tanhf(d * p.icap) * p.softcap; }
    a[sb + j] = d;
    m = max(m, d);
  }
  var mx = wmax(m, li);
  var sink = 0.0;
  if (p.hasSinks != 0u) { sink = c[p.sinkOff + h]; mx = max(mx, sink); }
  var s = 0.0;
  for (var j = j0 + li; j < n; j += ${WG}u) { let e = exp(a[sb + j] - mx); a[sb + j] = e; s += e; }
  var tot = wsum(s, li);
  if (p.hasSinks != 0u) { tot += exp(sink - mx); }
  storageBarrier();
  workgroupBarrier();
  let inv = 1.0 / tot;
  let ob = p.oOff + r * p.oRowStride + h * p.vDim;
  for (var d = li; d < p.vDim; d += ${WG}u) {
    var acc = 0.0;
    for (var j = j0; j < n; j++) { acc += a[sb + j] * ${value}; }
    a[ob + d] = acc * inv;
  }
}
`);
}

export const CLAMP_PARAMS = ['n', 'xOff', 'yOff', 'nx', 'lim:f'];
export const clampWgsl = kernelSource(CLAMP_PARAMS, ['p', 'a'], `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.nx * 256u;
  if (i >= p.n) { return; }
  a[p.yOff + i] = min(max(a[p.xOff + i], -p.lim), p.lim);
}
`);
