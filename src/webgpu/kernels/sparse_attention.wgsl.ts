// DeepSeek-V3.2 sparse (top-k) attention for one query over n = step.pos + row + 1 cached positions
// (row: the query's place in the pass, so a pass of several tokens runs these once per row):
// - indexer scores: s[j] = scale · Σ_h w[h] · ReLU(q[h]·k[j]) over the cached lightning-indexer keys
//   (src/kernels/attention.ts dsaIndexerScores), one thread per position;
// - top-k selection: the positions of the `topk` largest scores, ascending, ties to the lowest
//   position (the rule of src/kernels/attention.ts topkSelect); every position when topk ≥ n. The
//   threshold (the topk-th largest score) is found bit by bit over an order-preserving u32 map of the
//   f32 bits; an ordered pass then emits every position above it and the first (topk − count above)
//   equal to it, with workgroup prefix sums. Positions are written as f32 numbers into `a` (exact
//   below 2^24). −0 counts as +0 (the indexer never yields −0, and shader compilers need not keep
//   the sign of a zero sum);
// - attention of each query head over the listed positions (or over all n when useIdx is 0): scores
//   to a per-head scratch row in `a` (maxN floats), max-subtracted softmax, value mix. Queries are
//   read from `a` in place, so the head dimension is not bounded (MLA's absorbed heads are 576 wide).
//   Quantized caches (kvcache.wgsl.ts) are read in place, each value as q·d.

import type { KvCacheType } from '../../kernels/kvcache';
import { kernelSource, reductions } from './common.wgsl';
import { kvReader } from './kvcache.wgsl';

export const INDEXER_PARAMS = ['Hi', 'Di', 'qOff', 'wOff', 'kOff', 'kStride', 'sOff', 'nx', 'scale:f', 'row'];
export const INDEXER_WG = 64;

export const indexerWgsl = kernelSource(INDEXER_PARAMS, ['p', 'a', 'st', 'step'], `
@compute @workgroup_size(${INDEXER_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let s = gid.x + gid.y * p.nx * ${INDEXER_WG}u;
  if (s >= step.pos + p.row + 1u) { return; }
  let kb = p.kOff + s * p.kStride;
  var acc = 0.0;
  for (var h = 0u; h < p.Hi; h++) {
    let qb = p.qOff + h * p.Di;
    var d = 0.0;
    for (var i = 0u; i < p.Di; i++) { d += a[qb + i] * st[kb + i]; }
    acc += max(d, 0.0) * a[p.wOff + h];
  }
  a[p.sOff + s] = acc * p.scale;
}
`);

export const TOPK_PARAMS = ['topk', 'sOff', 'idxOff', 'row'];
const TWG = 256;

export const topkWgsl = kernelSource(TOPK_PARAMS, ['p', 'a', 'step'], `
var<workgroup> cnt: atomic<u32>;
var<workgroup> scanA: array<u32, ${TWG}>;
var<workgroup> scanB: array<u32, ${TWG}>;

// Order-preserving map of f32 bits to u32 (larger float, larger key); −0 maps like +0.
fn keyOf(v: f32) -> u32 {
  var b = bitcast<u32>(v);
  if (b == 0x80000000u) { b = 0u; }
  if ((b >> 31u) == 1u) { return ~b; }
  return b | 0x80000000u;
}

// How many of the n keys are ≥ cand (every invocation gets the total).
fn countAtLeast(cand: u32, n: u32, li: u32) -> u32 {
  if (li == 0u) { atomicStore(&cnt, 0u); }
  workgroupBarrier();
  var c = 0u;
  for (var i = li; i < n; i += ${TWG}u) {
    if (keyOf(a[p.sOff + i]) >= cand) { c++; }
  }
  atomicAdd(&cnt, c);
  workgroupBarrier();
  let total = atomicLoad(&cnt);
  workgroupBarrier();
  return total;
}

// Inclusive prefix sum of scanA (which = 0) or scanB (which = 1) over the workgroup.
fn scan(which: u32, li: u32) {
  for (var off = 1u; off < ${TWG}u; off <<= 1u) {
    var v = 0u;
    if (which == 0u) {
      v = scanA[li];
      if (li >= off) { v += scanA[li - off]; }
    } else {
      v = scanB[li];
      if (li >= off) { v += scanB[li - off]; }
    }
    workgroupBarrier();
    if (which == 0u) { scanA[li] = v; } else { scanB[li] = v; }
    workgroupBarrier();
  }
}

@compute @workgroup_size(${TWG})
fn main(@builtin(local_invocation_index) li: u32) {
  let n = step.pos + p.row + 1u;
  let K = p.topk;
  if (K >= n) {
    for (var i = li; i < n; i += ${TWG}u) { a[p.idxOff + i] = f32(i); }
    return;
  }
  // tau: the largest key with at least K keys ≥ it, i.e. the K-th largest key.
  var tau = 0u;
  for (var bit = 0u; bit < 32u; bit++) {
    let cand = tau | (0x80000000u >> bit);
    if (countAtLeast(cand, n, li) >= K) { tau = cand; }
  }
  // count(key > tau) = count(key ≥ tau + 1); nothing exceeds the largest key (tau + 1 wraps there).
  let c = countAtLeast(tau + 1u, n, li);
  var above = 0u;
  if (tau != 0xffffffffu) { above = c; }
  let ties = K - above;
  var written = 0u;
  var eqSeen = 0u;
  for (var base = 0u; base < n; base += ${TWG}u) {
    let i = base + li;
    var gt = false;
    var eq = false;
    if (i < n) {
      let k = keyOf(a[p.sOff + i]);
      gt = k > tau;
      eq = k == tau;
    }
    scanA[li] = select(0u, 1u, eq);
    workgroupBarrier();
    scan(0u, li);
    let eqBefore = eqSeen + scanA[li] - select(0u, 1u, eq);
    let take = gt || (eq && eqBefore < ties);
    scanB[li] = select(0u, 1u, take);
    workgroupBarrier();
    scan(1u, li);
    if (take) { a[p.idxOff + written + scanB[li] - 1u] = f32(i); }
    written += scanB[${TWG - 1}];
    eqSeen += scanA[${TWG - 1}];
    workgroupBarrier();
  }
}
`);

export const SPARSE_ATTN_PARAMS = ['nHeads', 'nKv', 'headDim', 'vDim', 'qOff', 'qStride', 'oOff', 'kOff', 'vOff', 'kStride', 'vStride', 'sOff', 'maxN', 'useIdx', 'idxOff', 'topk', 'scale:f', 'row'];
const WG = 64;

/** The attention over listed or all positions, over an f32 cache or quantized rows (as attentionWgsl). */
export function sparseAttentionWgsl(kv: KvCacheType = 'f32'): string {
  const f32 = kv === 'f32';
  const key = f32
    ? `let kb = p.kOff + slotOf(j) * p.kStride + kvh * p.headDim;
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += a[qb + i] * st[kb + i]; }`
    : `let kb = (p.kOff + slotOf(j) * p.kStride) * 4u + kvh * kvHeadBytes(p.headDim);
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += a[qb + i] * kvAt(kb, i); }`;
  const value = f32
    ? 'st[p.vOff + slotOf(j) * p.vStride + kvh * p.vDim + d]'
    : 'kvAt((p.vOff + slotOf(j) * p.vStride) * 4u + kvh * kvHeadBytes(p.vDim), d)';
  return kernelSource(SPARSE_ATTN_PARAMS, ['p', 'a', f32 ? 'st' : 'stu', 'step'], reductions(WG) + (f32 ? '' : kvReader(kv)) + `
fn slotOf(j: u32) -> u32 {
  if (p.useIdx != 0u) { return u32(a[p.idxOff + j]); }
  return j;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  if (h >= p.nHeads) { return; }
  let kvh = h / (p.nHeads / p.nKv);
  let n = step.pos + p.row + 1u;
  var m = n;
  if (p.useIdx != 0u) { m = min(p.topk, n); }
  let qb = p.qOff + h * p.qStride;
  let sb = p.sOff + h * p.maxN;
  var mx = -3.4e38;
  for (var j = li; j < m; j += ${WG}u) {
    ${key}
    d = d * p.scale;
    a[sb + j] = d;
    mx = max(mx, d);
  }
  let gmax = wmax(mx, li);
  var s = 0.0;
  for (var j = li; j < m; j += ${WG}u) { let e = exp(a[sb + j] - gmax); a[sb + j] = e; s += e; }
  let tot = wsum(s, li);
  storageBarrier();
  workgroupBarrier();
  let inv = 1.0 / tot;
  let ob = p.oOff + h * p.vDim;
  for (var d = li; d < p.vDim; d += ${WG}u) {
    var acc = 0.0;
    for (var j = 0u; j < m; j++) { acc += a[sb + j] * ${value}; }
    a[ob + d] = acc * inv;
  }
}
`);
}
