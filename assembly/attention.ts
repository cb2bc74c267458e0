import { FUSE_MADD } from './base';
// Softmax attention over a KV cache with an online (FlashAttention-style) softmax: no score buffer.
//
// Work is done in packs of up to four "lanes"; a lane is one (query token, query head) pair, and the
// lanes of a pack share one kv head, so each cached key/value row is loaded once for all of them.
// Keys are taken four at a time. Per lane: m = running max, l = running denominator,
// o = Σ e^{s−m}·v accumulated in the output row; for a quad of scores s_j with max m' = max(m, s_j):
//   o ← o·e^{m−m'} + Σ_j e^{s_j−m'}·v_j,   l ← l·e^{m−m'} + Σ_j e^{s_j−m'},   m ← m'
// A learned sink (gpt-oss) starts a lane at m = sink, l = 1: it adds e^{sink} to the denominator only.
//
// Cache order: a cache row holds every kv head of one position ([slots, Hkv, D]), so walking one kv
// head over all positions strides by a whole row (often 4 KB: one page per key). The driver therefore
// walks the keys in blocks of ~256 KB and runs every pack over a block before moving on; the lanes'
// (m, l) survive between blocks in a small lane-state area: the caller's `scratch`, else (single-
// threaded builds) a static 16 KB area of this module. The threads build without scratch runs each
// pack over all its keys at once (same results, strided access).
//
// The cache walkers are generic over the cache element type C: f32, or u8 for a quantized cache
// (Q8_0 or Q4_0 rows, kvcache.ts; the format in kvType). A quantized cache is read in place: each
// quad of key rows, then of value rows, is widened into a staging tile of four rows (in L1) that
// the f32 dot products and the fused update read, once for a pack of four lanes. Strides between
// cache rows are in bytes.
import { expV, tanhV, hmax, hsum, dot } from './vmath';
import { kvHeadBytes, kvType, stage, STAGE_ROW, stageRows } from './kvcache';

/** Staged row i of the n just widened; rows past n stand in as row 0 (their scores are masked). */
@inline function staged(i: i32, n: i32): usize {
  return i < n ? stage + <usize>i * STAGE_ROW : stage;
}

const NEG_BIG: f32 = -3.0e38;
/** Lanes the static state area holds (m and l per lane, plus one pack of slack each). */
const STATIC_LANES = 2040;
const laneState: usize = memory.data(16 * 1024, 16);

/** Bytes of one head of D values in a cache row (f32, or the quantized format kvType). */
@inline function headBytes<C>(D: i32): usize {
  return isFloat<C>() ? <usize>D << 2 : kvHeadBytes(D);
}

@inline function zeroRow(p: usize, n: i32): void {
  memory.fill(p, 0, <usize>n << 2);
}

@inline function finishRow(o: usize, l: f32, n: i32): void {
  if (l > 0) {
    const inv: f32 = 1 / l;
    const iv = f32x4.splat(inv);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const a = o + (<usize>i << 2);
      v128.store(a, f32x4.mul(v128.load(a), iv));
    }
    for (; i < n; i++) {
      const a = o + (<usize>i << 2);
      store<f32>(a, load<f32>(a) * inv);
    }
  }
}

/** [q0·k, q1·k, q2·k, q3·k] over n floats, loading k once. */
@inline function dot4(k: usize, q0: usize, q1: usize, q2: usize, q3: usize, n: i32): v128 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0), a2 = f32x4.splat(0), a3 = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    const kv = v128.load(k + o);
    if (FUSE_MADD) {
      a0 = f32x4.relaxed_madd(v128.load(q0 + o), kv, a0);
      a1 = f32x4.relaxed_madd(v128.load(q1 + o), kv, a1);
      a2 = f32x4.relaxed_madd(v128.load(q2 + o), kv, a2);
      a3 = f32x4.relaxed_madd(v128.load(q3 + o), kv, a3);
    } else {
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + o), kv));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q1 + o), kv));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q2 + o), kv));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(q3 + o), kv));
    }
  }
  // 4×4 transpose-and-add: lane j of the result is the horizontal sum of aj.
  const u01 = f32x4.add(v128.shuffle<f32>(a0, a1, 0, 4, 1, 5), v128.shuffle<f32>(a0, a1, 2, 6, 3, 7));
  const u23 = f32x4.add(v128.shuffle<f32>(a2, a3, 0, 4, 1, 5), v128.shuffle<f32>(a2, a3, 2, 6, 3, 7));
  let s = f32x4.add(v128.shuffle<f32>(u01, u23, 0, 1, 4, 5), v128.shuffle<f32>(u01, u23, 2, 3, 6, 7));
  if (i < n) {
    let t0: f32 = 0, t1: f32 = 0, t2: f32 = 0, t3: f32 = 0;
    for (; i < n; i++) {
      const o = <usize>i << 2;
      const kv = load<f32>(k + o);
      t0 += load<f32>(q0 + o) * kv;
      t1 += load<f32>(q1 + o) * kv;
      t2 += load<f32>(q2 + o) * kv;
      t3 += load<f32>(q3 + o) * kv;
    }
    s = f32x4.add(s, f32x4.replace_lane(f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(t0), 1, t1), 2, t2), 3, t3));
  }
  return s;
}

/** o[i] = o[i]·r + e0·v0[i] + e1·v1[i] + e2·v2[i] + e3·v3[i] over n floats. */
@inline function fusedUpdate(o: usize, v0: usize, v1: usize, v2: usize, v3: usize, r: f32, e: v128, n: i32): void {
  const rv = f32x4.splat(r);
  const e0 = f32x4.splat(f32x4.extract_lane(e, 0)), e1 = f32x4.splat(f32x4.extract_lane(e, 1));
  const e2 = f32x4.splat(f32x4.extract_lane(e, 2)), e3 = f32x4.splat(f32x4.extract_lane(e, 3));
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const a = <usize>i << 2;
    let acc = f32x4.mul(v128.load(o + a), rv);
    acc = f32x4.add(acc, f32x4.mul(v128.load(v0 + a), e0));
    acc = f32x4.add(acc, f32x4.mul(v128.load(v1 + a), e1));
    acc = f32x4.add(acc, f32x4.mul(v128.load(v2 + a), e2));
    acc = f32x4.add(acc, f32x4.mul(v128.load(v3 + a), e3));
    v128.store(o + a, acc);
  }
  for (; i < n; i++) {
    const a = <usize>i << 2;
    store<f32>(o + a, load<f32>(o + a) * r + load<f32>(v0 + a) * f32x4.extract_lane(e, 0) + load<f32>(v1 + a) * f32x4.extract_lane(e, 1) +
      load<f32>(v2 + a) * f32x4.extract_lane(e, 2) + load<f32>(v3 + a) * f32x4.extract_lane(e, 3));
  }
}

/**
 * One lane over keys p ∈ [pLo, pHi] (range mode, slot = p or p mod capacity) or over the slots
 * idx[pLo..pHi] (idx ≠ 0), continuing from (m0, l0) with o already holding its partial sum.
 * Keys go four at a time: four dot products against the shared q, one vector exp, one fused
 * pass over o. st ≠ 0: stores (m, l) at st and st + lOff; st = 0: normalises o (the lane is complete).
 */
function attendLane<C>(o: usize, q: usize, kBase: usize, vBase: usize, kStrideB: usize, vStrideB: usize, pLo: i32, pHi: i32, capacity: i32, idx: usize, D: i32, Dv: i32, scale: f32, softcap: f32, m0: f32, l0: f32, st: usize, lOff: usize): void {
  let m = m0, l = l0;
  const scv = f32x4.splat(scale);
  const capv = f32x4.splat(softcap), icapv = f32x4.splat(softcap > 0 ? 1 / softcap : 0);
  let slot = idx != 0 ? 0 : (capacity > 0 ? pLo % capacity : pLo);
  for (let p = pLo; p <= pHi; p += 4) {
    const n = min(4, pHi - p + 1);
    // Slots of the (up to) four keys; missing ones repeat the first and are masked below.
    let s0: i32, s1: i32, s2: i32, s3: i32;
    if (idx != 0) {
      const ip = idx + (<usize>p << 2);
      s0 = load<i32>(ip);
      s1 = n > 1 ? load<i32>(ip, 4) : s0;
      s2 = n > 2 ? load<i32>(ip, 8) : s0;
      s3 = n > 3 ? load<i32>(ip, 12) : s0;
    } else {
      s0 = slot;
      if (++slot == capacity) slot = 0;
      s1 = s0; s2 = s0; s3 = s0;
      if (n > 1) { s1 = slot; if (++slot == capacity) slot = 0; }
      if (n > 2) { s2 = slot; if (++slot == capacity) slot = 0; }
      if (n > 3) { s3 = slot; if (++slot == capacity) slot = 0; }
    }
    let k0 = kBase + <usize>s0 * kStrideB, k1 = kBase + <usize>s1 * kStrideB, k2 = kBase + <usize>s2 * kStrideB, k3 = kBase + <usize>s3 * kStrideB;
    if (!isFloat<C>()) {
      stageRows(k0, k1, k2, k3, n, D);
      k0 = stage;
      k1 = staged(1, n); k2 = staged(2, n); k3 = staged(3, n);
    }
    let s = f32x4.mul(dot4(q, k0, k1, k2, k3, D), scv);
    if (softcap > 0) s = f32x4.mul(tanhV(f32x4.mul(s, icapv)), capv);
    if (n < 4) {
      s = f32x4.replace_lane(s, 3, -Infinity);
      if (n < 3) s = f32x4.replace_lane(s, 2, -Infinity);
      if (n < 2) s = f32x4.replace_lane(s, 1, -Infinity);
    }
    const mq = hmax(s);
    let r: f32 = 1;
    if (mq > m) {
      r = Mathf.exp(m - mq);
      l *= r;
      m = mq;
    }
    const e = expV(f32x4.sub(s, f32x4.splat(m)));
    l += hsum(e);
    let v0 = vBase + <usize>s0 * vStrideB, v1 = vBase + <usize>s1 * vStrideB, v2 = vBase + <usize>s2 * vStrideB, v3 = vBase + <usize>s3 * vStrideB;
    if (!isFloat<C>()) {
      stageRows(v0, v1, v2, v3, n, Dv);
      v0 = stage;
      v1 = staged(1, n); v2 = staged(2, n); v3 = staged(3, n);
    }
    fusedUpdate(o, v0, v1, v2, v3, r, e, Dv);
  }
  if (st != 0) {
    store<f32>(st, m);
    store<f32>(st + lOff, l);
  } else {
    finishRow(o, l, Dv);
  }
}

/** Slot of key p: p, p mod capacity (ring), or idx[p] (selected). */
@inline function slotOf(p: i32, capacity: i32, idx: usize): i32 {
  return idx != 0 ? load<i32>(idx + (<usize>p << 2)) : (capacity > 0 ? p % capacity : p);
}

/** Scores of one key for four lanes, scaled, capped, and masked to each lane's visible range. */
@inline function laneScores(k: usize, q0: usize, q1: usize, q2: usize, q3: usize, D: i32, scv: v128, softcap: f32, capv: v128, icapv: v128, p: i32, lo: v128, hi: v128): v128 {
  let s = f32x4.mul(dot4(k, q0, q1, q2, q3, D), scv);
  if (softcap > 0) s = f32x4.mul(tanhV(f32x4.mul(s, icapv)), capv);
  const pv = i32x4.splat(p);
  const vis = v128.and(i32x4.ge_s(pv, lo), i32x4.le_s(pv, hi));
  return v128.bitselect(s, f32x4.splat(-Infinity), vis);
}

/**
 * Four lanes sharing one kv head over keys [pLo, pHi], four keys at a time. Lane j sees keys p with
 * lo[j] ≤ p ≤ hi[j] (i32x4); keys past pHi count as invisible. Inactive lanes carry lo > hi and
 * duplicate pointers of lane 0. Per quad: 4 dot4 (each key row loaded once for the four lanes), one
 * rescale of the running max, and per lane one fused pass o ← o·r + Σ_j e_j·v_j. State as in attendLane.
 */
function attendPack4<C>(o0: usize, o1: usize, o2: usize, o3: usize, q0: usize, q1: usize, q2: usize, q3: usize, nl: i32, lo: v128, hi: v128, kBase: usize, vBase: usize, kStrideB: usize, vStrideB: usize, pLo: i32, pHi: i32, capacity: i32, idx: usize, D: i32, Dv: i32, scale: f32, softcap: f32, m0: v128, l0: v128, st: usize, lOff: usize): void {
  let m = m0, l = l0;
  const scv = f32x4.splat(scale);
  const capv = f32x4.splat(softcap), icapv = f32x4.splat(softcap > 0 ? 1 / softcap : 0);
  const ninf = f32x4.splat(-Infinity);
  for (let p = pLo; p <= pHi; p += 4) {
    const n = min(4, pHi - p + 1);
    const sl0 = slotOf(p, capacity, idx);
    const sl1 = n > 1 ? slotOf(p + 1, capacity, idx) : sl0;
    const sl2 = n > 2 ? slotOf(p + 2, capacity, idx) : sl0;
    const sl3 = n > 3 ? slotOf(p + 3, capacity, idx) : sl0;
    let k0 = kBase + <usize>sl0 * kStrideB, k1 = kBase + <usize>sl1 * kStrideB, k2 = kBase + <usize>sl2 * kStrideB, k3 = kBase + <usize>sl3 * kStrideB;
    if (!isFloat<C>()) {
      stageRows(k0, k1, k2, k3, n, D);
      k0 = stage;
      k1 = stage + STAGE_ROW;
      k2 = stage + 2 * STAGE_ROW;
      k3 = stage + 3 * STAGE_ROW;
    }
    const s0 = laneScores(k0, q0, q1, q2, q3, D, scv, softcap, capv, icapv, p, lo, hi);
    const s1 = n > 1 ? laneScores(k1, q0, q1, q2, q3, D, scv, softcap, capv, icapv, p + 1, lo, hi) : ninf;
    const s2 = n > 2 ? laneScores(k2, q0, q1, q2, q3, D, scv, softcap, capv, icapv, p + 2, lo, hi) : ninf;
    const s3 = n > 3 ? laneScores(k3, q0, q1, q2, q3, D, scv, softcap, capv, icapv, p + 3, lo, hi) : ninf;
    const mq = f32x4.max(f32x4.max(s0, s1), f32x4.max(s2, s3));
    const grew = i32x4.bitmask(f32x4.gt(mq, m));
    let r = f32x4.splat(1);
    if (grew != 0) {
      const mn = f32x4.max(m, mq);
      r = expV(f32x4.sub(m, mn));
      l = f32x4.mul(l, r);
      m = mn;
    }
    const e0 = expV(f32x4.sub(s0, m)), e1 = expV(f32x4.sub(s1, m));
    const e2 = expV(f32x4.sub(s2, m)), e3 = expV(f32x4.sub(s3, m));
    l = f32x4.add(l, f32x4.add(f32x4.add(e0, e1), f32x4.add(e2, e3)));
    const zero = f32x4.splat(0);
    const live = grew | i32x4.bitmask(f32x4.gt(f32x4.max(f32x4.max(e0, e1), f32x4.max(e2, e3)), zero));
    if (live == 0) continue;
    // Transpose (key-major e_j) into lane-major weights w_i = [e0[i], e1[i], e2[i], e3[i]].
    const t01l = v128.shuffle<f32>(e0, e1, 0, 4, 1, 5), t01h = v128.shuffle<f32>(e0, e1, 2, 6, 3, 7);
    const t23l = v128.shuffle<f32>(e2, e3, 0, 4, 1, 5), t23h = v128.shuffle<f32>(e2, e3, 2, 6, 3, 7);
    let v0 = vBase + <usize>sl0 * vStrideB, v1 = vBase + <usize>sl1 * vStrideB;
    let v2 = vBase + <usize>sl2 * vStrideB, v3 = vBase + <usize>sl3 * vStrideB;
    if (!isFloat<C>()) {
      // Missing keys (n < 4) weigh 0 in every lane: their rows point at row 0 of the tile.
      stageRows(v0, v1, v2, v3, n, Dv);
      v0 = stage;
      v1 = n > 1 ? stage + STAGE_ROW : stage;
      v2 = n > 2 ? stage + 2 * STAGE_ROW : stage;
      v3 = n > 3 ? stage + 3 * STAGE_ROW : stage;
    }
    if (live & 1) fusedUpdate(o0, v0, v1, v2, v3, f32x4.extract_lane(r, 0), v128.shuffle<f32>(t01l, t23l, 0, 1, 4, 5), Dv);
    if (live & 2) fusedUpdate(o1, v0, v1, v2, v3, f32x4.extract_lane(r, 1), v128.shuffle<f32>(t01l, t23l, 2, 3, 6, 7), Dv);
    if (live & 4) fusedUpdate(o2, v0, v1, v2, v3, f32x4.extract_lane(r, 2), v128.shuffle<f32>(t01h, t23h, 0, 1, 4, 5), Dv);
    if (live & 8) fusedUpdate(o3, v0, v1, v2, v3, f32x4.extract_lane(r, 3), v128.shuffle<f32>(t01h, t23h, 2, 3, 6, 7), Dv);
  }
  if (st != 0) {
    // Partial packs store only their own lanes: the next lanes belong to the next kv head.
    if (nl == 4) {
      v128.store(st, m);
      v128.store(st + lOff, l);
    } else {
      store<f32>(st, f32x4.extract_lane(m, 0));
      store<f32>(st + lOff, f32x4.extract_lane(l, 0));
      store<f32>(st, f32x4.extract_lane(m, 1), 4);
      store<f32>(st + lOff, f32x4.extract_lane(l, 1), 4);
      if (nl > 2) {
        store<f32>(st, f32x4.extract_lane(m, 2), 8);
        store<f32>(st + lOff, f32x4.extract_lane(l, 2), 8);
      }
    }
  } else {
    finishRow(o0, f32x4.extract_lane(l, 0), Dv);
    if (nl > 1) finishRow(o1, f32x4.extract_lane(l, 1), Dv);
    if (nl > 2) finishRow(o2, f32x4.extract_lane(l, 2), Dv);
    if (nl > 3) finishRow(o3, f32x4.extract_lane(l, 3), Dv);
  }
}

/**
 * Tokens [t0, t1) of the attention call: lanes are enumerated per kv head g in t-major order
 * (ordinal e ↦ t = t0 + e / G, h = g·G + e % G) and packed by four. st ≠ 0: key-blocked walk with
 * lane state at st (m) and st + lOff (l), lane (g, e) at index g·lanesPerKv + e.
 */
function attendTokens<C>(out: usize, q: usize, kCache: usize, vCache: usize, t0: i32, t1: i32, qPos0: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, window: i32, softcap: f32, sinks: usize, capacity: i32, kvLen: i32, causal: i32, qHeadStride: i32, qRowStride: i32, kStrideB: usize, vStrideB: usize, st: usize, lOff: usize): void {
  const G = nHeads / nKv;
  const lanesPerKv = (t1 - t0) * G;
  // Key range of the whole token range (for the block walk).
  const firstPos = qPos0 + t0, lastPos = qPos0 + t1 - 1;
  const allLo = window > 0 ? max(0, firstPos - window + 1) : 0;
  const allHi = causal ? min(lastPos, kvLen - 1) : kvLen - 1;
  const rowBytes = <i32>(kStrideB + vStrideB);
  const block = st != 0 ? max(16, min(1024, (256 * 1024) / rowBytes)) : allHi - allLo + 1;
  // Zero the output rows and initialise the lane state.
  for (let t = t0; t < t1; t++) zeroRow(out + ((<usize>(t * nHeads) * <usize>Dv) << 2), nHeads * Dv);
  if (st != 0) {
    for (let g = 0; g < nKv; g++) {
      for (let e = 0; e < lanesPerKv; e++) {
        const h = g * G + e % G;
        const li = <usize>(g * lanesPerKv + e) << 2;
        store<f32>(st + li, sinks != 0 ? load<f32>(sinks + (<usize>h << 2)) : NEG_BIG);
        store<f32>(st + lOff + li, sinks != 0 ? 1 : 0);
      }
    }
  }
  for (let b0 = allLo; b0 <= allHi; b0 += block) {
    const b1 = min(allHi, b0 + block - 1);
    const last = b1 == allHi;
    for (let g = 0; g < nKv; g++) {
      const kBase = kCache + <usize>g * headBytes<C>(D);
      const vBase = vCache + <usize>g * headBytes<C>(Dv);
      for (let e = 0; e < lanesPerKv; e += 4) {
        const nl = min(4, lanesPerKv - e);
        let qp0: usize = 0, qp1: usize = 0, qp2: usize = 0, qp3: usize = 0;
        let op0: usize = 0, op1: usize = 0, op2: usize = 0, op3: usize = 0;
        let lo = i32x4.splat(i32.MAX_VALUE), hi = i32x4.splat(i32.MIN_VALUE);
        let m0 = f32x4.splat(NEG_BIG), l0 = f32x4.splat(0);
        let pLo = i32.MAX_VALUE, pHi = i32.MIN_VALUE;
        for (let j = 0; j < nl; j++) {
          const ord = e + j;
          const t = t0 + ord / G, h = g * G + ord % G;
          const pos = qPos0 + t;
          const a = window > 0 ? max(0, pos - window + 1) : 0;
          const b = causal ? min(pos, kvLen - 1) : kvLen - 1;
          const qp = q + ((<usize>t * <usize>qRowStride + <usize>h * <usize>qHeadStride) << 2);
          const op = out + ((<usize>(t * nHeads + h) * <usize>Dv) << 2);
          const sk: f32 = sinks != 0 ? load<f32>(sinks + (<usize>h << 2)) : NEG_BIG;
          const sl: f32 = sinks != 0 ? 1 : 0;
          pLo = min(pLo, a);
          pHi = max(pHi, b);
          if (j == 0) { qp0 = qp; op0 = op; lo = i32x4.replace_lane(lo, 0, a); hi = i32x4.replace_lane(hi, 0, b); m0 = f32x4.replace_lane(m0, 0, sk); l0 = f32x4.replace_lane(l0, 0, sl); }
          else if (j == 1) { qp1 = qp; op1 = op; lo = i32x4.replace_lane(lo, 1, a); hi = i32x4.replace_lane(hi, 1, b); m0 = f32x4.replace_lane(m0, 1, sk); l0 = f32x4.replace_lane(l0, 1, sl); }
          else if (j == 2) { qp2 = qp; op2 = op; lo = i32x4.replace_lane(lo, 2, a); hi = i32x4.replace_lane(hi, 2, b); m0 = f32x4.replace_lane(m0, 2, sk); l0 = f32x4.replace_lane(l0, 2, sl); }
          else { qp3 = qp; op3 = op; lo = i32x4.replace_lane(lo, 3, a); hi = i32x4.replace_lane(hi, 3, b); m0 = f32x4.replace_lane(m0, 3, sk); l0 = f32x4.replace_lane(l0, 3, sl); }
        }
        const from = max(pLo, b0), to = min(pHi, b1);
        const sp = st + (<usize>(g * lanesPerKv + e) << 2);
        if (st != 0) {
          m0 = v128.load(sp);
          l0 = v128.load(sp + lOff);
        }
        // The last block finishes the lanes (st = 0 below); earlier blocks save their state.
        const keep: usize = st != 0 && !last ? sp : 0;
        if (from > to) {
          if (keep == 0) {
            finishRow(op0, f32x4.extract_lane(l0, 0), Dv);
            if (nl > 1) finishRow(op1, f32x4.extract_lane(l0, 1), Dv);
            if (nl > 2) finishRow(op2, f32x4.extract_lane(l0, 2), Dv);
            if (nl > 3) finishRow(op3, f32x4.extract_lane(l0, 3), Dv);
          }
          continue;
        }
        if (nl == 1) {
          attendLane<C>(op0, qp0, kBase, vBase, kStrideB, vStrideB, from, to, capacity, 0, D, Dv, scale, softcap, f32x4.extract_lane(m0, 0), f32x4.extract_lane(l0, 0), keep, lOff);
        } else {
          if (nl < 3) qp2 = qp0;
          if (nl < 4) qp3 = qp0;
          attendPack4<C>(op0, op1, op2, op3, qp0, qp1, qp2, qp3, nl, lo, hi, kBase, vBase, kStrideB, vStrideB, from, to, capacity, 0, D, Dv, scale, softcap, m0, l0, keep, lOff);
        }
      }
    }
  }
}

/**
 * Causal (or full) attention of T query tokens at positions qPos0 … qPos0+T−1 over a KV cache of
 * element type C. q [T, Hq, D] (head h at q + t·qRowStride + h·qHeadStride floats); K rows kStrideB
 * bytes apart, head g at +g·headBytes(D); V rows vStrideB apart, head g at +g·headBytes(Dv);
 * out [T, Hq, Dv]. window > 0 keeps keys p > pos − window; capacity > 0 makes the cache a ring
 * (slot = p mod capacity). causal = 0 lets every query see keys [0, kvLen). sinks ≠ 0: f32[Hq] sink
 * logits. scratch ≠ 0: lane state of 8·(T·Hq + 4·nKv) bytes; 0: the static area (single-threaded builds).
 */
function attentionImpl<C>(out: usize, q: usize, kCache: usize, vCache: usize, T: i32, qPos0: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, window: i32, softcap: f32, sinks: usize, capacity: i32, kvLen: i32, causal: i32, qHeadStride: i32, qRowStride: i32, kStrideB: usize, vStrideB: usize, scratch: usize): void {
  let st = scratch, chunk = T;
  if (st == 0 && !ASC_FEATURE_THREADS && nHeads + 4 <= STATIC_LANES) {
    st = laneState;
    chunk = max(1, STATIC_LANES / nHeads - 1);
  }
  if (st == 0) {
    attendTokens<C>(out, q, kCache, vCache, 0, T, qPos0, nHeads, nKv, D, Dv, scale, window, softcap, sinks, capacity, kvLen, causal, qHeadStride, qRowStride, kStrideB, vStrideB, 0, 0);
    return;
  }
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const t1 = min(T, t0 + chunk);
    // Lane (g, e) state at index g·lanesPerKv + e; one pack of slack past the end for vector loads.
    const lOff = <usize>((t1 - t0) * nHeads + 4) << 2;
    attendTokens<C>(out, q, kCache, vCache, t0, t1, qPos0, nHeads, nKv, D, Dv, scale, window, softcap, sinks, capacity, kvLen, causal, qHeadStride, qRowStride, kStrideB, vStrideB, st, lOff);
  }
}

/** attentionImpl over an f32 cache; kStride and vStride in floats. */
export function attentionF32(out: usize, q: usize, kCache: usize, vCache: usize, T: i32, qPos0: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, window: i32, softcap: f32, sinks: usize, capacity: i32, kvLen: i32, causal: i32, qHeadStride: i32, qRowStride: i32, kStride: i32, vStride: i32, scratch: usize): void {
  attentionImpl<f32>(out, q, kCache, vCache, T, qPos0, nHeads, nKv, D, Dv, scale, window, softcap, sinks, capacity, kvLen, causal, qHeadStride, qRowStride, <usize>kStride << 2, <usize>vStride << 2, scratch);
}

/** attentionImpl over a quantized cache (type KV_Q8_0 or KV_Q4_0, kvcache.ts); strides in bytes. */
export function attentionKvQ(type: i32, out: usize, q: usize, kCache: usize, vCache: usize, T: i32, qPos0: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, window: i32, softcap: f32, sinks: usize, capacity: i32, kvLen: i32, causal: i32, qHeadStride: i32, qRowStride: i32, kStrideB: i32, vStrideB: i32, scratch: usize): void {
  kvType = type;
  attentionImpl<u8>(out, q, kCache, vCache, T, qPos0, nHeads, nKv, D, Dv, scale, window, softcap, sinks, capacity, kvLen, causal, qHeadStride, qRowStride, <usize>kStrideB, <usize>vStrideB, scratch);
}

/**
 * One query token (q [Hq, D], head h at q + h·qHeadStride) attending only to the m cache slots
 * listed in idx (i32); kv head g reads its list at idx + g·idxStride (idxStride 0: one shared list).
 * Cache rows kStrideB / vStrideB bytes apart, of element type C.
 */
function attendSelectedImpl<C>(out: usize, q: usize, kCache: usize, vCache: usize, idx: usize, m: i32, idxStride: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, softcap: f32, sinks: usize, qHeadStride: i32, kStrideB: usize, vStrideB: usize): void {
  const G = nHeads / nKv;
  zeroRow(out, nHeads * Dv);
  for (let g = 0; g < nKv; g++) {
    const kBase = kCache + <usize>g * headBytes<C>(D);
    const vBase = vCache + <usize>g * headBytes<C>(Dv);
    const list = idx + ((<usize>g * <usize>idxStride) << 2);
    for (let e = 0; e < G; e += 4) {
      const nl = min(4, G - e);
      const h0 = g * G + e;
      const qp0 = q + ((<usize>h0 * <usize>qHeadStride) << 2);
      const op0 = out + ((<usize>h0 * <usize>Dv) << 2);
      let m0 = f32x4.splat(NEG_BIG), l0 = f32x4.splat(0);
      if (sinks != 0) {
        const sp = sinks + (<usize>h0 << 2);
        m0 = f32x4.splat(load<f32>(sp));
        if (nl > 1) m0 = f32x4.replace_lane(m0, 1, load<f32>(sp, 4));
        if (nl > 2) m0 = f32x4.replace_lane(m0, 2, load<f32>(sp, 8));
        if (nl > 3) m0 = f32x4.replace_lane(m0, 3, load<f32>(sp, 12));
        l0 = f32x4.splat(1);
      }
      if (nl == 1) {
        attendLane<C>(op0, qp0, kBase, vBase, kStrideB, vStrideB, 0, m - 1, 0, list, D, Dv, scale, softcap, f32x4.extract_lane(m0, 0), f32x4.extract_lane(l0, 0), 0, 0);
        continue;
      }
      const qs = <usize>qHeadStride << 2, os = <usize>Dv << 2;
      const qp1 = qp0 + qs, op1 = op0 + os;
      const qp2 = nl > 2 ? qp1 + qs : qp0, op2 = op1 + os;
      const qp3 = nl > 3 ? qp2 + qs : qp0, op3 = op2 + os;
      let lo = i32x4.splat(0);
      const hi = i32x4.splat(m - 1);
      if (nl < 3) lo = i32x4.replace_lane(lo, 2, i32.MAX_VALUE);
      if (nl < 4) lo = i32x4.replace_lane(lo, 3, i32.MAX_VALUE);
      attendPack4<C>(op0, op1, op2, op3, qp0, qp1, qp2, qp3, nl, lo, hi, kBase, vBase, kStrideB, vStrideB, 0, m - 1, 0, list, D, Dv, scale, softcap, m0, l0, 0, 0);
    }
  }
}

/** attendSelectedImpl over an f32 cache; kStride and vStride in floats. */
export function attendSelectedF32(out: usize, q: usize, kCache: usize, vCache: usize, idx: usize, m: i32, idxStride: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, softcap: f32, sinks: usize, qHeadStride: i32, kStride: i32, vStride: i32): void {
  attendSelectedImpl<f32>(out, q, kCache, vCache, idx, m, idxStride, nHeads, nKv, D, Dv, scale, softcap, sinks, qHeadStride, <usize>kStride << 2, <usize>vStride << 2);
}

/** attendSelectedImpl over a quantized cache (type KV_Q8_0 or KV_Q4_0); strides in bytes. */
export function attendSelectedKvQ(type: i32, out: usize, q: usize, kCache: usize, vCache: usize, idx: usize, m: i32, idxStride: i32, nHeads: i32, nKv: i32, D: i32, Dv: i32, scale: f32, softcap: f32, sinks: usize, qHeadStride: i32, kStrideB: i32, vStrideB: i32): void {
  kvType = type;
  attendSelectedImpl<u8>(out, q, kCache, vCache, idx, m, idxStride, nHeads, nKv, D, Dv, scale, softcap, sinks, qHeadStride, <usize>kStrideB, <usize>vStrideB);
}

/**
 * Indices of the `topk` largest of n scores, ascending; ties go to the lowest index. Scratch-free
 * radix select: the threshold key τ (the topk-th largest, in an order-preserving u32 map of the f32
 * bits) is found bit by bit from the highest bit where min and max differ, each bit one counting
 * pass; then one pass emits every index above τ and the first (topk − count(> τ)) equal to it.
 * Returns min(topk, n). -0 sorts below +0; scores must not be NaN.
 */
export function topkSelectF32(outIdx: usize, scores: usize, n: i32, topk: i32): i32 {
  if (topk <= 0) return 0;
  if (topk >= n) {
    for (let i = 0; i < n; i++) store<i32>(outIdx + (<usize>i << 2), i);
    return n;
  }
  const sign = i32x4.splat(0x80000000);
  let mnv = i32x4.splat(-1), mxv = i32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const b = v128.load(scores + (<usize>i << 2));
    const key = v128.xor(b, v128.or(i32x4.shr_s(b, 31), sign));
    mnv = i32x4.min_u(mnv, key);
    mxv = i32x4.max_u(mxv, key);
  }
  let mn: u32 = min(min(<u32>i32x4.extract_lane(mnv, 0), <u32>i32x4.extract_lane(mnv, 1)), min(<u32>i32x4.extract_lane(mnv, 2), <u32>i32x4.extract_lane(mnv, 3)));
  let mx: u32 = max(max(<u32>i32x4.extract_lane(mxv, 0), <u32>i32x4.extract_lane(mxv, 1)), max(<u32>i32x4.extract_lane(mxv, 2), <u32>i32x4.extract_lane(mxv, 3)));
  for (; i < n; i++) {
    const b = load<u32>(scores + (<usize>i << 2));
    const key = b ^ (<u32>(<i32>b >> 31) | 0x80000000);
    mn = min(mn, key);
    mx = max(mx, key);
  }
  let tau: u32 = mn;
  const diff = mn ^ mx;
  if (diff != 0) {
    const top = 31 - <i32>clz(diff);
    tau = top == 31 ? 0 : mn & ~((<u32>1 << <u32>(top + 1)) - 1);
    for (let bit = top; bit >= 0; bit--) {
      const cand = tau | (<u32>1 << <u32>bit);
      if (countAtLeast(scores, n, cand) >= topk) tau = cand;
    }
  }
  // count(key > τ) = count(key ≥ τ + 1); τ < max key here unless every key ≥ τ is equal to τ.
  const above = tau == 0xffffffff ? 0 : countAtLeast(scores, n, tau + 1);
  let ties = topk - above;
  let w = 0;
  for (let j = 0; j < n; j++) {
    const b = load<u32>(scores + (<usize>j << 2));
    const key = b ^ (<u32>(<i32>b >> 31) | 0x80000000);
    if (key > tau || (key == tau && ties-- > 0)) store<i32>(outIdx + (<usize>(w++) << 2), j);
  }
  return w;
}

function countAtLeast(scores: usize, n: i32, cand: u32): i32 {
  const sign = i32x4.splat(0x80000000);
  const cv = i32x4.splat(cand);
  let acc = i32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const b = v128.load(scores + (<usize>i << 2));
    const key = v128.xor(b, v128.or(i32x4.shr_s(b, 31), sign));
    acc = i32x4.sub(acc, i32x4.ge_u(key, cv));
  }
  let c = i32x4.extract_lane(acc, 0) + i32x4.extract_lane(acc, 1) + i32x4.extract_lane(acc, 2) + i32x4.extract_lane(acc, 3);
  for (; i < n; i++) {
    const b = load<u32>(scores + (<usize>i << 2));
    const key = b ^ (<u32>(<i32>b >> 31) | 0x80000000);
    if (key >= cand) c++;
  }
  return c;
}

/**
 * Quest page scores (arXiv 2406.10774): the upper bound of q·k over a page, Σ_d max(q_d·min_d, q_d·max_d),
 * summed over the query heads of each kv group. kMin, kMax [nPages, nKv, D]; q [Hq, D]; out [nKv, nPages].
 */
export function questPageScoresF32(out: usize, q: usize, kMin: usize, kMax: usize, nPages: i32, nKv: i32, D: i32, nHeads: i32): void {
  const G = nHeads / nKv;
  for (let g = 0; g < nKv; g++) {
    for (let p = 0; p < nPages; p++) {
      const off = ((<usize>p * <usize>nKv + <usize>g) * <usize>D) << 2;
      const mn = kMin + off, mx = kMax + off;
      let acc = f32x4.splat(0);
      let tail: f32 = 0;
      for (let h = g * G; h < (g + 1) * G; h++) {
        const qh = q + ((<usize>h * <usize>D) << 2);
        let d = 0;
        for (; d + 4 <= D; d += 4) {
          const o = <usize>d << 2;
          const qv = v128.load(qh + o);
          acc = f32x4.add(acc, f32x4.max(f32x4.mul(qv, v128.load(mn + o)), f32x4.mul(qv, v128.load(mx + o))));
        }
        for (; d < D; d++) {
          const o = <usize>d << 2;
          const qd = load<f32>(qh + o);
          tail += max(qd * load<f32>(mn + o), qd * load<f32>(mx + o));
        }
      }
      const s = f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1) + f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3) + tail;
      store<f32>(out + ((<usize>g * <usize>nPages + <usize>p) << 2), s);
    }
  }
}

/**
 * Recomputes the per-kv-head element-wise min and max of the keys of one page: cache slots
 * [page·pageSize, page·pageSize + nValid), K rows kStride floats apart, head g at +g·D.
 */
export function questUpdatePageF32(kMin: usize, kMax: usize, kCache: usize, page: i32, pageSize: i32, nValid: i32, nKv: i32, D: i32, kStride: i32): void {
  const row0 = kCache + ((<usize>page * <usize>pageSize * <usize>kStride) << 2);
  const rs = <usize>kStride << 2;
  for (let g = 0; g < nKv; g++) {
    const off = ((<usize>page * <usize>nKv + <usize>g) * <usize>D) << 2;
    const mn = kMin + off, mx = kMax + off;
    const src = row0 + ((<usize>g * <usize>D) << 2);
    for (let d = 0; d < D; d++) {
      const o = <usize>d << 2;
      let a: f32 = Infinity, b: f32 = -Infinity;
      for (let j = 0; j < nValid; j++) {
        const v = load<f32>(src + <usize>j * rs + o);
        a = min(a, v);
        b = max(b, v);
      }
      store<f32>(mn + o, a);
      store<f32>(mx + o, b);
    }
  }
}

/**
 * DeepSeek-V3.2 lightning-indexer scores for one query token: out[s] = scale · Σ_j w_j · ReLU(q_j · k_s).
 * HF computes relu(q·k · Di^-0.5) weighted by weights_proj(x) · Hi^-0.5; pass scale = Di^-0.5 · Hi^-0.5.
 * qI [Hi, Di], wI [Hi], kI rows kStride floats apart (n of them).
 */
export function dsaIndexerScoresF32(out: usize, qI: usize, wI: usize, kI: usize, n: i32, Hi: i32, Di: i32, scale: f32, kStride: i32): void {
  const qs = <usize>Di << 2;
  const zero = f32x4.splat(0);
  for (let s = 0; s < n; s++) {
    const k = kI + ((<usize>s * <usize>kStride) << 2);
    let acc = f32x4.splat(0);
    let j = 0;
    for (; j + 4 <= Hi; j += 4) {
      const q0 = qI + <usize>j * qs;
      const d = dot4(k, q0, q0 + qs, q0 + 2 * qs, q0 + 3 * qs, Di);
      acc = f32x4.add(acc, f32x4.mul(f32x4.max(d, zero), v128.load(wI + (<usize>j << 2))));
    }
    let sum = f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1) + f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3);
    for (; j < Hi; j++) sum += max<f32>(dot(qI + <usize>j * qs, k, Di), 0) * load<f32>(wI + (<usize>j << 2));
    store<f32>(out + (<usize>s << 2), sum * scale);
  }
}
