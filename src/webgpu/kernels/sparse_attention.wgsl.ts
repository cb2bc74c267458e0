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
// Quest pages (the load option attention { mode: 'topk' }, any attention layer) follow at the end:
// page key bounds kept as keys are appended, page scores, top-k pages per kv head, position lists,
// and attention over them.

import type { KvCacheType } from '../../kernels/kvcache';
import { ATTN_MAX_HEAD_DIM, TANH } from './attention.wgsl';
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

/**
 * The radix top-k of one workgroup over a[sB …][0, n), writing the K positions ascending at a[iB …]
 * (every position when K ≥ n). `head` is WGSL that defines n, K, sB and iB (and may return, uniformly).
 */
function topkSource(fields: string[], head: string): string {
  return kernelSource(fields, ['p', 'a', 'step'], `
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

// How many of the n keys at a[sB …] are ≥ cand (every invocation gets the total).
fn countAtLeast(cand: u32, n: u32, sB: u32, li: u32) -> u32 {
  if (li == 0u) { atomicStore(&cnt, 0u); }
  workgroupBarrier();
  var c = 0u;
  for (var i = li; i < n; i += ${TWG}u) {
    if (keyOf(a[sB + i]) >= cand) { c++; }
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
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
${head}
  if (K >= nS) {
    for (var i = li; i < nS; i += ${TWG}u) { a[iB + i] = f32(i); }
    return;
  }
  // tau: the largest key with at least K keys ≥ it, i.e. the K-th largest key.
  var tau = 0u;
  for (var bit = 0u; bit < 32u; bit++) {
    let cand = tau | (0x80000000u >> bit);
    if (countAtLeast(cand, nS, sB, li) >= K) { tau = cand; }
  }
  // count(key > tau) = count(key ≥ tau + 1); nothing exceeds the largest key (tau + 1 wraps there).
  let c = countAtLeast(tau + 1u, nS, sB, li);
  var above = 0u;
  if (tau != 0xffffffffu) { above = c; }
  let ties = K - above;
  var written = 0u;
  var eqSeen = 0u;
  for (var base = 0u; base < nS; base += ${TWG}u) {
    let i = base + li;
    var gt = false;
    var eq = false;
    if (i < nS) {
      let k = keyOf(a[sB + i]);
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
    if (take) { a[iB + written + scanB[li] - 1u] = f32(i); }
    written += scanB[${TWG - 1}];
    eqSeen += scanA[${TWG - 1}];
    workgroupBarrier();
  }
}
`);
}

export const topkWgsl = topkSource(TOPK_PARAMS, `  let nS = step.pos + p.row + 1u;
  let K = p.topk;
  let sB = p.sOff;
  let iB = p.idxOff;`);

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

// ---- Quest pages: sparse top-k attention of any attention layer at decode -----------------------
// (src/kernels/attention.ts questAppendKeys / questAttend; one query at position step.pos, n = pos + 1
// cached positions, budget = sinks + window + pages·pageSize.) Page bounds live in `st` as
// [2, maxPages, nKv, D] (minimum, then maximum, maxW = maxPages·nKv·D floats apart). With n ≤ budget,
// or for a position of a prompt fed row by row (step.prompt), the scores, top-k and list kernels do
// nothing and the attention kernel attends every position exactly as attentionWgsl does (same
// loops, same order); otherwise each kv head attends its list.

export const QUEST_APPEND_PARAMS = ['W', 'kOff', 'kRow', 'bOff', 'maxW', 'pageSize', 'rows', 'nx'];
export const QUEST_WG = 64;

/** Folds the pass's key rows (positions step.pos …) into the page bounds, one thread per key float. */
export const questAppendWgsl = kernelSource(QUEST_APPEND_PARAMS, ['p', 'a', 'st', 'step'], `
@compute @workgroup_size(${QUEST_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.nx * ${QUEST_WG}u;
  if (i >= p.W) { return; }
  for (var t = 0u; t < p.rows; t++) {
    let pos = step.pos + t;
    let b = p.bOff + (pos / p.pageSize) * p.W + i;
    let x = a[p.kOff + t * p.kRow + i];
    if (pos % p.pageSize == 0u) {
      st[b] = x;
      st[b + p.maxW] = x;
    } else {
      st[b] = min(st[b], x);
      st[b + p.maxW] = max(st[b + p.maxW], x);
    }
  }
}
`);

/** WGSL defining n, pLo, nCand (candidate pages) and returning when attention is dense (within the budget, or a prompt row). */
const QUEST_HEAD = `  let n = step.pos + 1u;
  if (n <= p.budget || step.prompt != 0u) { return; }
  let pLo = p.sinks / p.pageSize;
  let nCand = (n - p.window + p.pageSize - 1u) / p.pageSize - pLo;`;

export const QUEST_SCORES_PARAMS = ['nKv', 'G', 'D', 'qOff', 'bOff', 'maxW', 'sOff', 'maxPages', 'pageSize', 'sinks', 'window', 'budget'];

/**
 * Scores of the candidate pages per kv head g: a[sOff + g·maxPages + k] = Σ_{h of g} Σ_d
 * max(q_hd·min_d, q_hd·max_d) for page pLo + k, summed as questPageScoresF32 sums (4 lanes, then
 * the tail). One thread per (page, kv head).
 */
export const questScoresWgsl = kernelSource(QUEST_SCORES_PARAMS, ['p', 'a', 'st', 'step'], `
@compute @workgroup_size(${QUEST_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
${QUEST_HEAD}
  let k = gid.x;
  let g = gid.y;
  if (k >= nCand || g >= p.nKv) { return; }
  let mb = p.bOff + (pLo + k) * p.nKv * p.D + g * p.D;
  let D4 = p.D & ~3u;
  var acc = vec4f(0.0);
  var tail = 0.0;
  for (var h = g * p.G; h < (g + 1u) * p.G; h++) {
    let qb = p.qOff + h * p.D;
    for (var d = 0u; d < D4; d += 4u) {
      let q = vec4f(a[qb + d], a[qb + d + 1u], a[qb + d + 2u], a[qb + d + 3u]);
      let lo = vec4f(st[mb + d], st[mb + d + 1u], st[mb + d + 2u], st[mb + d + 3u]);
      let hb = mb + p.maxW + d;
      let hi = vec4f(st[hb], st[hb + 1u], st[hb + 2u], st[hb + 3u]);
      acc = acc + max(q * lo, q * hi);
    }
    for (var d = D4; d < p.D; d++) {
      let q = a[qb + d];
      tail = tail + max(q * st[mb + d], q * st[mb + p.maxW + d]);
    }
  }
  a[p.sOff + g * p.maxPages + k] = acc.x + acc.y + acc.z + acc.w + tail;
}
`);

export const QUEST_TOPK_PARAMS = ['topk', 'sOff', 'idxOff', 'maxPages', 'pageSize', 'sinks', 'window', 'budget'];

/** The `topk` best candidate pages of kv head wg.x (indices from pLo, ascending) at a[idxOff + g·topk …]. */
export const questTopkWgsl = topkSource(QUEST_TOPK_PARAMS, `${QUEST_HEAD}
  let nS = nCand;
  let K = p.topk;
  let sB = p.sOff + wg.x * p.maxPages;
  let iB = p.idxOff + wg.x * p.topk;`);

export const QUEST_LIST_PARAMS = ['pages', 'idxOff', 'listOff', 'pageSize', 'sinks', 'window', 'budget'];

/**
 * Kv head wg.x's positions, ascending: [0, sinks) ∪ its pages clipped to [sinks, n − window) ∪
 * [n − window, n), as f32 numbers at a[listOff + g·(budget + 1) + 1 …], their count at the row's start.
 */
export const questListWgsl = kernelSource(QUEST_LIST_PARAMS, ['p', 'a', 'step'], `
@compute @workgroup_size(${QUEST_WG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
${QUEST_HEAD}
  let g = wg.x;
  let mEnd = n - p.window;
  let lb = p.listOff + g * (p.budget + 1u) + 1u;
  for (var i = li; i < p.sinks; i += ${QUEST_WG}u) { a[lb + i] = f32(i); }
  var m = p.sinks;
  for (var j = 0u; j < p.pages; j++) {
    let pg = pLo + u32(a[p.idxOff + g * p.pages + j]);
    let s0 = max(pg * p.pageSize, p.sinks);
    let s1 = min((pg + 1u) * p.pageSize, mEnd);
    for (var i = s0 + li; i < s1; i += ${QUEST_WG}u) { a[lb + m + i - s0] = f32(i); }
    m += s1 - s0;
  }
  for (var i = mEnd + li; i < n; i += ${QUEST_WG}u) { a[lb + m + i - mEnd] = f32(i); }
  m += n - mEnd;
  if (li == 0u) { a[lb - 1u] = f32(m); }
}
`);

export const QUEST_ATTN_PARAMS = ['nHeads', 'nKv', 'headDim', 'vDim', 'qOff', 'oOff', 'kOff', 'vOff', 'kStride', 'vStride', 'sOff', 'maxN', 'scale:f',
  'hasSinks', 'sinkOff', 'softcap:f', 'icap:f', 'budget', 'listOff'];
const QWG = 64;

/**
 * Attention of the query at step.pos over its kv head's list (or, with n ≤ budget or on a prompt
 * row, over every position in attentionWgsl's order): one workgroup per query head, scores in a row of maxN
 * floats at sOff (maxN ≥ the context: a prompt row attends every position), soft-capping and sink
 * logits as attentionWgsl.
 */
export function questAttentionWgsl(kv: KvCacheType = 'f32'): string {
  const f32 = kv === 'f32';
  const key = f32
    ? `let kb = p.kOff + slotOf(j) * p.kStride + kvh * p.headDim;
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += qs[i] * st[kb + i]; }`
    : `let kb = (p.kOff + slotOf(j) * p.kStride) * 4u + kvh * kvHeadBytes(p.headDim);
    var d = 0.0;
    for (var i = 0u; i < p.headDim; i++) { d += qs[i] * kvAt(kb, i); }`;
  const value = f32
    ? 'st[p.vOff + slotOf(j) * p.vStride + kvh * p.vDim + d]'
    : 'kvAt((p.vOff + slotOf(j) * p.vStride) * 4u + kvh * kvHeadBytes(p.vDim), d)';
  return kernelSource(QUEST_ATTN_PARAMS, ['p', 'a', f32 ? 'st' : 'stu', 'c', 'step'], reductions(QWG) + TANH + (f32 ? '' : kvReader(kv)) + `
var<workgroup> qs: array<f32, ${ATTN_MAX_HEAD_DIM}>;
var<private> dense: bool;
var<private> lb: u32;
fn slotOf(j: u32) -> u32 {
  if (dense) { return j; }
  return u32(a[lb + j]);
}

@compute @workgroup_size(${QWG})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) li: u32) {
  let h = wg.x;
  if (h >= p.nHeads) { return; }
  let kvh = h / (p.nHeads / p.nKv);
  let n = step.pos + 1u;
  dense = n <= p.budget || step.prompt != 0u;
  lb = p.listOff + kvh * (p.budget + 1u) + 1u;
  var m = n;
  if (!dense) { m = u32(a[lb - 1u]); }
  let qb = p.qOff + h * p.headDim;
  for (var i = li; i < p.headDim; i += ${QWG}u) { qs[i] = a[qb + i]; }
  workgroupBarrier();
  let sb = p.sOff + h * p.maxN;
  var mv = -3.4e38;
  for (var j = li; j < m; j += ${QWG}u) {
    ${key}
    d = d * p.scale;
    if (p.softcap > 0.0) { d = tanhf(d * p.icap) * p.softcap; }
    a[sb + j] = d;
    mv = max(mv, d);
  }
  var mx = wmax(mv, li);
  var sink = 0.0;
  if (p.hasSinks != 0u) { sink = c[p.sinkOff + h]; mx = max(mx, sink); }
  var s = 0.0;
  for (var j = li; j < m; j += ${QWG}u) { let e = exp(a[sb + j] - mx); a[sb + j] = e; s += e; }
  var tot = wsum(s, li);
  if (p.hasSinks != 0u) { tot += exp(sink - mx); }
  storageBarrier();
  workgroupBarrier();
  let inv = 1.0 / tot;
  let ob = p.oOff + h * p.vDim;
  for (var d = li; d < p.vDim; d += ${QWG}u) {
    var acc = 0.0;
    for (var j = 0u; j < m; j++) { acc += a[sb + j] * ${value}; }
    a[ob + d] = acc * inv;
  }
}
`);
}
