// Generalized linear attention, per head h: state S [dk, dv], v, o [T, H, dv], q, k [T, Hk, dk] (head h
// reads q/k head h / (H / Hk), HF's repeat_interleave of q, k to the value heads).
// Per token (docs/recurrences.md §2–8; HF torch_recurrent_gated_delta_rule):
//   S ← exp(g)·S  (decay 1: one log-gate per head)  or  Diag(exp(g))·S  (decay 2: one per key channel)
//   delta rule (beta ≠ 0):  u = Sᵀk;  S ← S + k (β(v − u))ᵀ      else  S ← S + k vᵀ
//   o = Sᵀ(q·scale)
//   normalizer z ≠ 0 (fla linear_attn normalize): z ← decay(z) + k;  o /= (q·scale)·z + 1e-10
//     (z takes the same gate as S and no delta correction: it is the state of an all-ones value)
//
// Two forms over a sequence, equal up to f32 rounding:
// - recurrent: token by token. Columns of S never mix (u, the update and o are column-wise), so the
//   driver keeps a 16-column slice of S in L1 and runs a group of tokens over it before moving on.
// - chunked (docs/recurrences.md §13–15, HF torch_chunk_gated_delta_rule): per chunk of c tokens with
//   b_i = Σ_{m≤i} g_m and Γ_ij = exp(b_i − b_j) (j ≤ i),
//     P = (Q·scale Kᵀ) ⊙ Γ                                     intra-chunk scores (lower, incl. diag)
//     delta: L = −Diag(β)(K Kᵀ ⊙ Γ) strictly lower, T = (I − L)⁻¹ (forward substitution),
//            V' = T(Diag(β)V − (Diag(β)K ⊙ e^b) S)             else V' = V
//     O = (Q·scale ⊙ e^b) S + P V'
//     S ← e^{b_last} S + (K ⊙ e^{b_last − b})ᵀ V'
//   Every exponent is formed as a running sum of the g's it spans, never as a difference of two
//   cumulative sums: exp(b_i − b_j) stays accurate to the rounding of its own terms however large b is.
//   Per-channel gates cannot factor Γ into row and column scalings without e^{−b} overflowing, so P
//   and K Kᵀ ⊙ Γ are built per 8-token sub-block: against the sub-block's first token r,
//   q_i e^{b_i − b_r} · k_j e^{b_r − b_j} has both factors ≤ 1 for j < r ≤ i; pairs inside a
//   sub-block take exp of their own running sums.
import { dotF, expF, expS, gemmNN, gemmNT, madd } from './scan_util';

/** Tokens per group of the recurrent driver (upper bound; a small scratch gives fewer). */
const GROUP = 16;
/** Sub-block of the per-channel-gate chunk form. */
const SB = 8;

@inline function al4(n: i32): usize {
  return <usize>((n + 3) & ~3) << 2;
}

/** Static work area for callers without scratch (single caller at a time): the recurrent forms fit. */
const STATIC_SCRATCH_BYTES = 4 * 1024;
const staticScratch: usize = memory.data(STATIC_SCRATCH_BYTES, 64);

export function scanStaticScratch(): usize {
  return staticScratch;
}

export function scanStaticScratchBytes(): i32 {
  return STATIC_SCRATCH_BYTES;
}

/**
 * Floats of scratch for chunk length C: the chunked form's buffers (the layout chunkHead carves, in the
 * same order) or the recurrent form's full token group, whichever is larger.
 */
export function linearAttentionScratchFloats(dk: i32, dv: i32, C: i32, decay: i32, delta: i32): i32 {
  let b: usize = 0;
  b += al4(C * dk) * 2 + al4(C * C) + al4(C) * 5;
  if (delta) b += al4(C * C) + al4(C * dk) + al4(C * dv) * 2;
  b += al4(C * dk);
  if (decay == 2) b += al4(C * dk) + al4(SB * dk) * 2 + al4(dk);
  const rec = al4(GROUP * (decay == 2 ? dk : 1)) + al4(GROUP);
  return <i32>(max(b, rec) >> 2);
}

function scaleRow(p: usize, s: f32, n: i32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(p + (<usize>i << 2), f32x4.mul(v128.load(p + (<usize>i << 2)), sv));
  for (; i < n; i++) store<f32>(p + (<usize>i << 2), load<f32>(p + (<usize>i << 2)) * s);
}

/** y[i] = x[i]·s·w[i] (w = 0: no w) */
function copyScaled(y: usize, x: usize, s: f32, w: usize, n: i32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  if (w == 0) {
    for (; i + 4 <= n; i += 4) v128.store(y + (<usize>i << 2), f32x4.mul(v128.load(x + (<usize>i << 2)), sv));
    for (; i < n; i++) store<f32>(y + (<usize>i << 2), load<f32>(x + (<usize>i << 2)) * s);
  } else {
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(y + o, f32x4.mul(f32x4.mul(v128.load(x + o), sv), v128.load(w + o)));
    }
    for (; i < n; i++) store<f32>(y + (<usize>i << 2), load<f32>(x + (<usize>i << 2)) * s * load<f32>(w + (<usize>i << 2)));
  }
}

/** y[i] = exp(s·x[i]) */
function expRow(y: usize, x: usize, s: f32, n: i32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(y + (<usize>i << 2), expF(f32x4.mul(v128.load(x + (<usize>i << 2)), sv)));
  for (; i < n; i++) store<f32>(y + (<usize>i << 2), expS(s * load<f32>(x + (<usize>i << 2))));
}

/** y[i] = x[i]·exp(a[i]) */
function mulExp(y: usize, x: usize, a: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.mul(v128.load(x + o), expF(v128.load(a + o))));
  }
  for (; i < n; i++) store<f32>(y + (<usize>i << 2), load<f32>(x + (<usize>i << 2)) * expS(load<f32>(a + (<usize>i << 2))));
}

/** y[i] = x[i]·w[i] */
function mulRow(y: usize, x: usize, w: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, f32x4.mul(v128.load(x + o), v128.load(w + o)));
  }
  for (; i < n; i++) store<f32>(y + (<usize>i << 2), load<f32>(x + (<usize>i << 2)) * load<f32>(w + (<usize>i << 2)));
}

/** y[i] += s·x[i] */
function axpy(y: usize, x: usize, s: f32, n: i32): void {
  const sv = f32x4.splat(s);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const o = <usize>i << 2;
    v128.store(y + o, madd(sv, v128.load(x + o), v128.load(y + o)));
  }
  for (; i < n; i++) store<f32>(y + (<usize>i << 2), load<f32>(y + (<usize>i << 2)) + s * load<f32>(x + (<usize>i << 2)));
}

// ---------------------------------------------------------------------------------------------
// Recurrent form

/**
 * One 16-column slice [j, j+16) of head h's state over tokens tg..tg+n−1. rowDecay: per-channel gates
 * (eg holds exp(g) rows of dk); otherwise es[ti] (or 1 when eg == 0) scales the whole slice.
 */
@inline function slice16(o: usize, Sj: usize, q: usize, kp: usize, v: usize, rsK: usize, rsV: usize, dk: i32, dv: i32,
  n: i32, eg: usize, beta: usize, bStride: usize, scale: f32, den: usize, rowDecay: bool, delta: bool): void {
  const dv4 = <usize>dv << 2;
  const zero = f32x4.splat(0);
  for (let ti = 0; ti < n; ti++) {
    const kt = kp + <usize>ti * rsK, qt = q + <usize>ti * rsK;
    const vt = v + <usize>ti * rsV, ot = o + <usize>ti * rsV;
    const ev = eg + <usize>ti * (<usize>dk << 2);
    const es: f32 = eg != 0 && !rowDecay ? load<f32>(eg + (<usize>ti << 2)) : 1;
    let d0 = v128.load(vt), d1 = v128.load(vt, 16), d2 = v128.load(vt, 32), d3 = v128.load(vt, 48);
    if (delta) {
      // u = Sᵀk over this slice, two row streams for latency.
      let u0 = zero, u1 = zero, u2 = zero, u3 = zero, w0 = zero, w1 = zero, w2 = zero, w3 = zero;
      let row = Sj;
      let i = 0;
      for (; i + 2 <= dk; i += 2) {
        let ka = load<f32>(kt + (<usize>i << 2)), kb = load<f32>(kt + (<usize>i << 2), 4);
        if (rowDecay) { ka *= load<f32>(ev + (<usize>i << 2)); kb *= load<f32>(ev + (<usize>i << 2), 4); }
        const kva = f32x4.splat(ka), kvb = f32x4.splat(kb);
        const r2 = row + dv4;
        u0 = madd(kva, v128.load(row), u0); u1 = madd(kva, v128.load(row, 16), u1);
        u2 = madd(kva, v128.load(row, 32), u2); u3 = madd(kva, v128.load(row, 48), u3);
        w0 = madd(kvb, v128.load(r2), w0); w1 = madd(kvb, v128.load(r2, 16), w1);
        w2 = madd(kvb, v128.load(r2, 32), w2); w3 = madd(kvb, v128.load(r2, 48), w3);
        row = r2 + dv4;
      }
      if (i < dk) {
        let ka = load<f32>(kt + (<usize>i << 2));
        if (rowDecay) ka *= load<f32>(ev + (<usize>i << 2));
        const kva = f32x4.splat(ka);
        u0 = madd(kva, v128.load(row), u0); u1 = madd(kva, v128.load(row, 16), u1);
        u2 = madd(kva, v128.load(row, 32), u2); u3 = madd(kva, v128.load(row, 48), u3);
      }
      u0 = f32x4.add(u0, w0); u1 = f32x4.add(u1, w1); u2 = f32x4.add(u2, w2); u3 = f32x4.add(u3, w3);
      const bt = f32x4.splat(load<f32>(beta + <usize>ti * bStride));
      if (!rowDecay) {
        const e = f32x4.splat(es);
        u0 = f32x4.mul(u0, e); u1 = f32x4.mul(u1, e); u2 = f32x4.mul(u2, e); u3 = f32x4.mul(u3, e);
      }
      d0 = f32x4.mul(f32x4.sub(d0, u0), bt); d1 = f32x4.mul(f32x4.sub(d1, u1), bt);
      d2 = f32x4.mul(f32x4.sub(d2, u2), bt); d3 = f32x4.mul(f32x4.sub(d3, u3), bt);
    }
    // S ← e·S + k dᵀ;  o += q_i S_i
    let o0 = zero, o1 = zero, o2 = zero, o3 = zero;
    const esv = f32x4.splat(es);
    let row = Sj;
    for (let i = 0; i < dk; i++) {
      let s0 = v128.load(row), s1 = v128.load(row, 16), s2 = v128.load(row, 32), s3 = v128.load(row, 48);
      const e = rowDecay ? v128.load32_splat(ev + (<usize>i << 2)) : esv;
      s0 = f32x4.mul(s0, e); s1 = f32x4.mul(s1, e); s2 = f32x4.mul(s2, e); s3 = f32x4.mul(s3, e);
      const kv = v128.load32_splat(kt + (<usize>i << 2));
      s0 = madd(kv, d0, s0); s1 = madd(kv, d1, s1); s2 = madd(kv, d2, s2); s3 = madd(kv, d3, s3);
      v128.store(row, s0); v128.store(row, s1, 16); v128.store(row, s2, 32); v128.store(row, s3, 48);
      const qv = v128.load32_splat(qt + (<usize>i << 2));
      o0 = madd(qv, s0, o0); o1 = madd(qv, s1, o1); o2 = madd(qv, s2, o2); o3 = madd(qv, s3, o3);
      row += dv4;
    }
    let sc = f32x4.splat(scale);
    if (den != 0) sc = f32x4.div(sc, v128.load32_splat(den + (<usize>ti << 2)));
    v128.store(ot, f32x4.mul(o0, sc)); v128.store(ot, f32x4.mul(o1, sc), 16);
    v128.store(ot, f32x4.mul(o2, sc), 32); v128.store(ot, f32x4.mul(o3, sc), 48);
  }
}

/** The same for `w` (1..15) remaining columns, scalar per column. */
function sliceTail(o: usize, Sj: usize, q: usize, kp: usize, v: usize, rsK: usize, rsV: usize, dk: i32, dv: i32, w: i32,
  n: i32, eg: usize, rowDecay: i32, beta: usize, bStride: usize, scale: f32, den: usize): void {
  const dv4 = <usize>dv << 2;
  for (let ti = 0; ti < n; ti++) {
    const kt = kp + <usize>ti * rsK, qt = q + <usize>ti * rsK;
    const vt = v + <usize>ti * rsV, ot = o + <usize>ti * rsV;
    const ev = eg + <usize>ti * (<usize>dk << 2);
    const es: f32 = eg != 0 && !rowDecay ? load<f32>(eg + (<usize>ti << 2)) : 1;
    const dn: f32 = den != 0 ? load<f32>(den + (<usize>ti << 2)) : 1;
    const bt: f32 = beta != 0 ? load<f32>(beta + <usize>ti * bStride) : 0;
    for (let j = 0; j < w; j++) {
      const col = Sj + (<usize>j << 2);
      let d = load<f32>(vt + (<usize>j << 2));
      if (beta != 0) {
        let u: f32 = 0;
        for (let i = 0; i < dk; i++) {
          let kv = load<f32>(kt + (<usize>i << 2));
          if (rowDecay) kv *= load<f32>(ev + (<usize>i << 2));
          u += kv * load<f32>(col + <usize>i * dv4);
        }
        d = (d - u * es) * bt;
      }
      let acc: f32 = 0;
      for (let i = 0; i < dk; i++) {
        const p = col + <usize>i * dv4;
        const e: f32 = rowDecay ? load<f32>(ev + (<usize>i << 2)) : es;
        const s = load<f32>(p) * e + load<f32>(kt + (<usize>i << 2)) * d;
        store<f32>(p, s);
        acc += load<f32>(qt + (<usize>i << 2)) * s;
      }
      store<f32>(ot + (<usize>j << 2), acc * scale / dn);
    }
  }
}

function recurrentHead(o: usize, S: usize, q: usize, kp: usize, v: usize, T: i32, H: i32, Hk: i32, dk: i32, dv: i32,
  decay: i32, g: usize, gScale: f32, gsT: i32, beta: usize, scale: f32, z: usize, scr: usize, group: i32, h: i32): void {
  const rsK = <usize>(Hk * dk) << 2, rsV = <usize>(H * dv) << 2;
  const hk = h / (H / Hk);
  const Sh = S + <usize>h * (<usize>(dk * dv) << 2);
  const zh = z != 0 ? z + <usize>h * (<usize>dk << 2) : 0;
  // scratch: group gate rows (exp(g): dk per token for decay 2, one per token for decay 1), denominators
  const eg: usize = decay == 0 ? 0 : scr;
  const den: usize = z != 0 ? scr + (decay == 2 ? al4(group * dk) : al4(group)) : 0;
  const bStride = <usize>H << 2;
  for (let tg = 0; tg < T; tg += group) {
    const n = min(group, T - tg);
    const qg = q + <usize>tg * rsK + (<usize>(hk * dk) << 2);
    const kg = kp + <usize>tg * rsK + (<usize>(hk * dk) << 2);
    const vg = v + <usize>tg * rsV + (<usize>(h * dv) << 2);
    const og = o + <usize>tg * rsV + (<usize>(h * dv) << 2);
    const bg: usize = beta != 0 ? beta + (<usize>(tg * H + h) << 2) : 0;
    for (let ti = 0; ti < n; ti++) {
      const t = tg + ti;
      if (decay == 1) {
        store<f32>(eg + (<usize>ti << 2), expS(gScale * load<f32>(g + (<usize>(t * gsT + h) << 2))));
      } else if (decay == 2) {
        expRow(eg + <usize>ti * (<usize>dk << 2), g + (<usize>((t * H + h) * dk) << 2), gScale, dk);
      }
      if (zh != 0) {
        // z ← decay(z) + k, then the denominator (q·scale)·z + 1e-10 of this token.
        const kt = kg + <usize>ti * rsK;
        if (decay == 1) scaleRow(zh, load<f32>(eg + (<usize>ti << 2)), dk);
        else if (decay == 2) {
          mulRow(zh, zh, eg + <usize>ti * (<usize>dk << 2), dk);
        }
        axpy(zh, kt, 1, dk);
        store<f32>(den + (<usize>ti << 2), dotF(qg + <usize>ti * rsK, zh, dk) * scale + 1e-10);
      }
    }
    let j = 0;
    for (; j + 16 <= dv; j += 16) {
      const Sj = Sh + (<usize>j << 2), vj = vg + (<usize>j << 2), oj = og + (<usize>j << 2);
      if (decay == 2) {
        if (beta != 0) slice16(oj, Sj, qg, kg, vj, rsK, rsV, dk, dv, n, eg, bg, bStride, scale, den, true, true);
        else slice16(oj, Sj, qg, kg, vj, rsK, rsV, dk, dv, n, eg, bg, bStride, scale, den, true, false);
      } else {
        if (beta != 0) slice16(oj, Sj, qg, kg, vj, rsK, rsV, dk, dv, n, eg, bg, bStride, scale, den, false, true);
        else slice16(oj, Sj, qg, kg, vj, rsK, rsV, dk, dv, n, eg, bg, bStride, scale, den, false, false);
      }
    }
    if (j < dv) sliceTail(og + (<usize>j << 2), Sh + (<usize>j << 2), qg, kg, vg + (<usize>j << 2), rsK, rsV, dk, dv, dv - j,
      n, eg, decay == 2 ? 1 : 0, bg, bStride, scale, den);
  }
}

// ---------------------------------------------------------------------------------------------
// Chunked form

/**
 * Tokens t0..t0+c−1 of head h. Carves its buffers from scr in the order linearAttentionScratchFloats
 * counts them.
 */
function chunkHead(o: usize, S: usize, q: usize, kp: usize, v: usize, H: i32, Hk: i32, dk: i32, dv: i32,
  decay: i32, g: usize, gScale: f32, gsT: i32, beta: usize, scale: f32, z: usize, scr: usize, C: i32,
  h: i32, t0: i32, c: i32): void {
  const rsKf = Hk * dk, rsVf = H * dv;
  const rsK = <usize>rsKf << 2;
  const hk = h / (H / Hk);
  const dk4 = <usize>dk << 2, dv4 = <usize>dv << 2, C4 = <usize>C << 2;
  const qh = q + (<usize>(t0 * rsKf + hk * dk) << 2);
  const kh = kp + (<usize>(t0 * rsKf + hk * dk) << 2);
  const vh = v + (<usize>(t0 * rsVf + h * dv) << 2);
  const oh = o + (<usize>(t0 * rsVf + h * dv) << 2);
  const Sh = S + <usize>h * (<usize>(dk * dv) << 2);
  const zh = z != 0 ? z + <usize>h * dk4 : 0;
  const delta = beta != 0;

  let off = scr;
  const Qs = off; off += al4(C * dk);
  const Kb = off; off += al4(C * dk);
  const P = off; off += al4(C * C);
  const gl = off; off += al4(C);
  const eb = off; off += al4(C);
  const ebc = off; off += al4(C);
  const den = off; off += al4(C);
  const drow = off; off += al4(C);
  let G: usize = 0, Yk: usize = 0, Yv: usize = 0, U: usize = 0;
  if (delta) {
    G = off; off += al4(C * C);
    Yk = off; off += al4(C * dk);
    Yv = off; off += al4(C * dv);
    U = off; off += al4(C * dv);
  }
  // Kt: Kᵀ for decay 0/1; the reference-scaled keys K̃ of the sub-block scheme for decay 2.
  const Kt = off; off += al4(C * dk);
  let E: usize = 0, Qt: usize = 0, Kh: usize = 0, acc: usize = 0;
  if (decay == 2) {
    E = off; off += al4(C * dk);
    Qt = off; off += al4(SB * dk);
    Kh = off; off += al4(SB * dk);
    acc = off; off += al4(dk);
  }
  // Per-channel gate row of token i of the chunk.
  const gRow = (<usize>H * dk4);
  const g0: usize = decay == 2 ? g + (<usize>((t0 * H + h) * dk) << 2) : 0;

  // 1. Gates: e^{b_i} (prefix sums) and e^{b_last − b_i} (suffix sums).
  if (decay == 1) {
    for (let i = 0; i < c; i++) store<f32>(gl + (<usize>i << 2), gScale * load<f32>(g + (<usize>((t0 + i) * gsT + h) << 2)));
    let b: f32 = 0;
    for (let i = 0; i < c; i++) {
      b += load<f32>(gl + (<usize>i << 2));
      store<f32>(eb + (<usize>i << 2), expS(b));
    }
    let s: f32 = 0;
    for (let i = c - 1; i >= 0; i--) {
      store<f32>(ebc + (<usize>i << 2), expS(s));
      s += load<f32>(gl + (<usize>i << 2));
    }
  } else if (decay == 2) {
    // E_i = exp(Σ_{m≤i} g_m) per channel, accumulated in acc.
    memory.fill(acc, 0, dk4);
    for (let i = 0; i < c; i++) {
      axpy(acc, g0 + <usize>i * gRow, gScale, dk);
      expRow(E + <usize>i * dk4, acc, 1, dk);
    }
  }

  // 2. Q·scale, K̄ = K ⊙ e^{b_last − b}, and the delta rule's right-hand sides βV, −βK ⊙ e^b.
  for (let i = 0; i < c; i++) copyScaled(Qs + <usize>i * dk4, qh + <usize>i * rsK, scale, 0, dk);
  if (decay == 2) {
    memory.fill(acc, 0, dk4);
    for (let i = c - 1; i >= 0; i--) {
      mulExp(Kb + <usize>i * dk4, kh + <usize>i * rsK, acc, dk);
      axpy(acc, g0 + <usize>i * gRow, gScale, dk);
    }
  } else {
    for (let i = 0; i < c; i++) copyScaled(Kb + <usize>i * dk4, kh + <usize>i * rsK, decay == 1 ? load<f32>(ebc + (<usize>i << 2)) : 1, 0, dk);
  }
  if (delta) {
    for (let i = 0; i < c; i++) {
      const bi = load<f32>(beta + (<usize>((t0 + i) * H + h) << 2));
      copyScaled(Yv + <usize>i * dv4, vh + <usize>i * (<usize>rsVf << 2), bi, 0, dv);
      if (decay == 2) copyScaled(Yk + <usize>i * dk4, kh + <usize>i * rsK, -bi, E + <usize>i * dk4, dk);
      else copyScaled(Yk + <usize>i * dk4, kh + <usize>i * rsK, decay == 1 ? -bi * load<f32>(eb + (<usize>i << 2)) : -bi, 0, dk);
    }
  }

  // 3. P = (Q·scale Kᵀ) ⊙ Γ (lower incl. diagonal) and, for the delta rule, G = K Kᵀ ⊙ Γ (strictly lower).
  if (decay != 2) {
    // Kᵀ [dk × c] as the B operand, so both products run on the broadcast kernel.
    for (let j = 0; j < c; j++) {
      const kj = kh + <usize>j * rsK;
      for (let p = 0; p < dk; p++) store<f32>(Kt + ((<usize>(p * c + j)) << 2), load<f32>(kj + (<usize>p << 2)));
    }
    gemmNN(P, C, Qs, dk, 1, Kt, c, c, c, dk, 0, 0, 1);
    if (delta) gemmNN(G, C, kh, rsKf, 1, Kt, c, c, c, dk, 0, 0, 1);
    if (decay == 1) {
      // drow[j] = Σ_{j<m≤i} g_m for the current row i: add g_i to every earlier column.
      for (let i = 0; i < c; i++) {
        const gi = f32x4.splat(load<f32>(gl + (<usize>i << 2)));
        const pr = P + <usize>i * C4, gr = G + <usize>i * C4;
        let j = 0;
        for (; j + 4 <= i; j += 4) {
          const oj = <usize>j << 2;
          const dsum = f32x4.add(v128.load(drow + oj), gi);
          v128.store(drow + oj, dsum);
          const gam = expF(dsum);
          v128.store(pr + oj, f32x4.mul(v128.load(pr + oj), gam));
          if (delta) v128.store(gr + oj, f32x4.mul(v128.load(gr + oj), gam));
        }
        for (; j < i; j++) {
          const oj = <usize>j << 2;
          const dsum = load<f32>(drow + oj) + f32x4.extract_lane(gi, 0);
          store<f32>(drow + oj, dsum);
          const gam = expS(dsum);
          store<f32>(pr + oj, load<f32>(pr + oj) * gam);
          if (delta) store<f32>(gr + oj, load<f32>(gr + oj) * gam);
        }
        store<f32>(drow + (<usize>i << 2), 0);
      }
    }
  } else {
    for (let r = 0; r < c; r += SB) {
      const e = min(r + SB, c);
      if (r > 0) {
        // Move K̃'s reference token from r − SB to r: new rows j ∈ [r−SB, r) get e^{Σ_{j<m≤r} g_m},
        // older rows the factor e^{Σ_{r−SB<m≤r} g_m}.
        memory.fill(acc, 0, dk4);
        for (let j = r - 1; j >= r - SB; j--) {
          axpy(acc, g0 + <usize>(j + 1) * gRow, gScale, dk);
          mulExp(Kt + <usize>j * dk4, kh + <usize>j * rsK, acc, dk);
        }
        if (r - SB > 0) {
          expRow(acc, acc, 1, dk);
          for (let j = 0; j < r - SB; j++) mulRow(Kt + <usize>j * dk4, Kt + <usize>j * dk4, acc, dk);
        }
        // Rows i ∈ [r, e) against the reference: e^{Σ_{r<m≤i} g_m}.
        memory.fill(acc, 0, dk4);
        for (let i = r; i < e; i++) {
          if (i > r) axpy(acc, g0 + <usize>i * gRow, gScale, dk);
          mulExp(Qt + <usize>(i - r) * dk4, Qs + <usize>i * dk4, acc, dk);
          if (delta) mulExp(Kh + <usize>(i - r) * dk4, kh + <usize>i * rsK, acc, dk);
        }
        gemmNT(P + <usize>r * C4, C, Qt, dk, Kt, dk, e - r, r, dk, 0);
        if (delta) gemmNT(G + <usize>r * C4, C, Kh, dk, Kt, dk, e - r, r, dk, 0);
      }
      // Pairs inside the sub-block: j ≤ i, exponent Σ_{j<m≤i} g_m run from j.
      for (let j = r; j < e; j++) {
        const kj = kh + <usize>j * rsK;
        store<f32>(P + <usize>j * C4 + (<usize>j << 2), dotF(Qs + <usize>j * dk4, kj, dk));
        memory.fill(acc, 0, dk4);
        for (let i = j + 1; i < e; i++) {
          axpy(acc, g0 + <usize>i * gRow, gScale, dk);
          const qs = Qs + <usize>i * dk4, ki = kh + <usize>i * rsK;
          let sp = f32x4.splat(0), sg = f32x4.splat(0);
          let d = 0;
          for (; d + 4 <= dk; d += 4) {
            const od = <usize>d << 2;
            const kg = f32x4.mul(v128.load(kj + od), expF(v128.load(acc + od)));
            sp = madd(v128.load(qs + od), kg, sp);
            if (delta) sg = madd(v128.load(ki + od), kg, sg);
          }
          let rp = f32x4.extract_lane(sp, 0) + f32x4.extract_lane(sp, 1) + f32x4.extract_lane(sp, 2) + f32x4.extract_lane(sp, 3);
          let rg = f32x4.extract_lane(sg, 0) + f32x4.extract_lane(sg, 1) + f32x4.extract_lane(sg, 2) + f32x4.extract_lane(sg, 3);
          for (; d < dk; d++) {
            const od = <usize>d << 2;
            const kg = load<f32>(kj + od) * expS(load<f32>(acc + od));
            rp += load<f32>(qs + od) * kg;
            rg += load<f32>(ki + od) * kg;
          }
          store<f32>(P + <usize>i * C4 + (<usize>j << 2), rp);
          if (delta) store<f32>(G + <usize>i * C4 + (<usize>j << 2), rg);
        }
      }
    }
  }
  // Upper triangles: P keeps its diagonal; L = −β_i G_ij below it, zero elsewhere.
  for (let i = 0; i < c; i++) {
    const pr = P + <usize>i * C4;
    for (let j = i + 1; j < c; j++) store<f32>(pr + (<usize>j << 2), 0);
    if (delta) {
      const gr = G + <usize>i * C4;
      scaleRow(gr, -load<f32>(beta + (<usize>((t0 + i) * H + h) << 2)), i);
      for (let j = i; j < c; j++) store<f32>(gr + (<usize>j << 2), 0);
    }
  }

  // 4. Delta rule: T = (I − L)⁻¹ in place (HF's row recurrence T'_i = L_i + L_i T'), then
  //    V' = T βV − T(βK ⊙ e^b) S = T(βV + Yk S) with Yk = −βK ⊙ e^b (one triangular product fewer).
  let Vp = vh, ldVp = rsVf;
  if (delta) {
    for (let i = 1; i < c; i++) {
      const gr = G + <usize>i * C4;
      for (let m = 1; m < i; m++) axpy(gr, G + <usize>m * C4, load<f32>(gr + (<usize>m << 2)), m);
    }
    for (let i = 0; i < c; i++) store<f32>(G + <usize>i * C4 + (<usize>i << 2), 1);
    gemmNN(Yv, dv, Yk, dk, 1, Sh, dv, c, dv, dk, 1, 0);
    gemmNN(U, dv, G, C, 1, Yv, dv, c, dv, c, 0, 1);
    Vp = U; ldVp = dv;
  }

  // 5. Inter-chunk queries Q·scale ⊙ e^b; normalizer denominators before z moves on.
  if (decay == 1) for (let i = 0; i < c; i++) scaleRow(Qs + <usize>i * dk4, load<f32>(eb + (<usize>i << 2)), dk);
  else if (decay == 2) {
    for (let i = 0; i < c; i++) {
      mulRow(Qs + <usize>i * dk4, Qs + <usize>i * dk4, E + <usize>i * dk4, dk);
    }
  }
  if (zh != 0) {
    for (let i = 0; i < c; i++) {
      let s = dotF(Qs + <usize>i * dk4, zh, dk);
      const pr = P + <usize>i * C4;
      for (let j = 0; j <= i; j++) s += load<f32>(pr + (<usize>j << 2));
      store<f32>(den + (<usize>i << 2), s + 1e-10);
    }
  }

  // 6. O = (Q·scale ⊙ e^b) S + P V'
  gemmNN(oh, rsVf, Qs, dk, 1, Sh, dv, c, dv, dk, 0, 0);
  gemmNN(oh, rsVf, P, C, 1, Vp, ldVp, c, dv, c, 1, 1);
  if (zh != 0) for (let i = 0; i < c; i++) scaleRow(oh + <usize>i * (<usize>rsVf << 2), 1 / load<f32>(den + (<usize>i << 2)), dv);

  // 7. S ← e^{b_last} S + K̄ᵀ V';  z ← e^{b_last} z + Σ K̄
  if (decay == 1) {
    const eC = load<f32>(eb + (<usize>(c - 1) << 2));
    scaleRow(Sh, eC, dk * dv);
    if (zh != 0) scaleRow(zh, eC, dk);
  } else if (decay == 2) {
    const eL = E + <usize>(c - 1) * dk4;
    for (let i = 0; i < dk; i++) scaleRow(Sh + <usize>i * dv4, load<f32>(eL + (<usize>i << 2)), dv);
    if (zh != 0) mulRow(zh, zh, eL, dk);
  }
  gemmNN(Sh, dv, Kb, 1, dk, Vp, ldVp, dk, dv, c, 1, 0);
  if (zh != 0) for (let i = 0; i < c; i++) axpy(zh, Kb + <usize>i * dk4, 1, dk);
}

/**
 * Linear attention over T tokens for heads h0..h1−1 (see the top of this file). q and k have Hk heads
 * (Hk divides H): head h reads q/k head h / (H / Hk), as after HF's repeat_interleave.
 * decay: 0 none, 1 one gate per head (g at g[t·gsT + h], times gScale; gsT = 0 gives a constant gate
 * per head), 2 one gate per key channel (g [T, H, dk], times gScale). beta: 0, or [T, H] (delta rule).
 * z: 0, or the normalizer state [H, dk]. chunk: 0 recurrent, else the chunk length of the chunked
 * form. scr: scratch of scrFloats floats (the chunked form needs linearAttentionScratchFloats).
 */
export function linearAttentionF32(o: usize, S: usize, q: usize, kp: usize, v: usize, T: i32, H: i32, Hk: i32, dk: i32, dv: i32,
  decay: i32, g: usize, gScale: f32, gsT: i32, beta: usize, scale: f32, z: usize, chunk: i32, scr: usize, scrFloats: i32,
  h0: i32, h1: i32): void {
  if (chunk == 0) {
    const per = decay == 2 ? dk : 1;
    let group = GROUP;
    while (group > 1 && al4(group * per) + al4(group) > (<usize>scrFloats << 2)) group--;
    for (let h = h0; h < h1; h++) recurrentHead(o, S, q, kp, v, T, H, Hk, dk, dv, decay, g, gScale, gsT, beta, scale, z, scr, group, h);
  } else {
    for (let h = h0; h < h1; h++) {
      for (let t0 = 0; t0 < T; t0 += chunk) chunkHead(o, S, q, kp, v, H, Hk, dk, dv, decay, g, gScale, gsT, beta, scale, z, scr, chunk, h, t0, min(chunk, T - t0));
    }
  }
}
