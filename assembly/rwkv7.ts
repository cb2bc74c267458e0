// RWKV-7 time-mix kernels (docs/recurrences.md §17): the WKV-7 state update (a diagonal-plus-low-rank
// delta rule), the key preparation before it and the output head after it.
import { madd, expF, expS } from './scan_util';

/** Tokens per group: exp(w) and −κ̂⊙a rows of a group are made once per head, then reused by every column slice. */
const GROUP = 16;

@inline function al4(n: i32): i32 {
  return (n + 3) & ~3;
}

/**
 * Columns [j, j + 4·V) of head h over the n tokens of a group, V ∈ {4, 1} vectors of four columns.
 * Per token: u = Sᵀκ̂ (two row streams), S_i ← e_i·S_i + nb_i·u + k_i·v, y = Sᵀr.
 */
@inline function sliceV(V: i32, y: usize, Sj: usize, r: usize, kp: usize, v: usize, kk: usize, eg: usize, nbg: usize,
  rsK: usize, rsV: usize, dk: i32, dv: i32, n: i32): void {
  const dv4 = <usize>dv << 2, dk4 = <usize>dk << 2;
  const zero = f32x4.splat(0);
  for (let ti = 0; ti < n; ti++) {
    const kt = kp + <usize>ti * rsK, rt = r + <usize>ti * rsK, kkt = kk + <usize>ti * rsK;
    const vt = v + <usize>ti * rsV, yt = y + <usize>ti * rsV;
    const et = eg + <usize>ti * dk4, nbt = nbg + <usize>ti * dk4;
    let u0 = zero, u1 = zero, u2 = zero, u3 = zero, w0 = zero, w1 = zero, w2 = zero, w3 = zero;
    let row = Sj;
    let i = 0;
    for (; i + 2 <= dk; i += 2) {
      const ka = v128.load32_splat(kkt + (<usize>i << 2)), kb = v128.load32_splat(kkt + (<usize>i << 2) + 4);
      const r2 = row + dv4;
      u0 = madd(ka, v128.load(row), u0);
      w0 = madd(kb, v128.load(r2), w0);
      if (V == 4) {
        u1 = madd(ka, v128.load(row, 16), u1); u2 = madd(ka, v128.load(row, 32), u2); u3 = madd(ka, v128.load(row, 48), u3);
        w1 = madd(kb, v128.load(r2, 16), w1); w2 = madd(kb, v128.load(r2, 32), w2); w3 = madd(kb, v128.load(r2, 48), w3);
      }
      row = r2 + dv4;
    }
    if (i < dk) {
      const ka = v128.load32_splat(kkt + (<usize>i << 2));
      u0 = madd(ka, v128.load(row), u0);
      if (V == 4) {
        u1 = madd(ka, v128.load(row, 16), u1); u2 = madd(ka, v128.load(row, 32), u2); u3 = madd(ka, v128.load(row, 48), u3);
      }
    }
    u0 = f32x4.add(u0, w0);
    const d0 = v128.load(vt);
    let d1 = zero, d2 = zero, d3 = zero;
    if (V == 4) {
      u1 = f32x4.add(u1, w1); u2 = f32x4.add(u2, w2); u3 = f32x4.add(u3, w3);
      d1 = v128.load(vt, 16); d2 = v128.load(vt, 32); d3 = v128.load(vt, 48);
    }
    let o0 = zero, o1 = zero, o2 = zero, o3 = zero;
    row = Sj;
    for (i = 0; i < dk; i++) {
      const o = <usize>i << 2;
      const e = v128.load32_splat(et + o), nb = v128.load32_splat(nbt + o);
      const kv = v128.load32_splat(kt + o), rv = v128.load32_splat(rt + o);
      let s0 = madd(kv, d0, madd(nb, u0, f32x4.mul(v128.load(row), e)));
      v128.store(row, s0);
      o0 = madd(rv, s0, o0);
      if (V == 4) {
        const s1 = madd(kv, d1, madd(nb, u1, f32x4.mul(v128.load(row, 16), e)));
        const s2 = madd(kv, d2, madd(nb, u2, f32x4.mul(v128.load(row, 32), e)));
        const s3 = madd(kv, d3, madd(nb, u3, f32x4.mul(v128.load(row, 48), e)));
        v128.store(row, s1, 16); v128.store(row, s2, 32); v128.store(row, s3, 48);
        o1 = madd(rv, s1, o1); o2 = madd(rv, s2, o2); o3 = madd(rv, s3, o3);
      }
      row += dv4;
    }
    v128.store(yt, o0);
    if (V == 4) { v128.store(yt, o1, 16); v128.store(yt, o2, 32); v128.store(yt, o3, 48); }
  }
}

/** The same for `w` (1..3) remaining columns, scalar. */
function sliceTail(y: usize, Sj: usize, r: usize, kp: usize, v: usize, kk: usize, eg: usize, nbg: usize,
  rsK: usize, rsV: usize, dk: i32, dv: i32, n: i32, w: i32): void {
  const dv4 = <usize>dv << 2, dk4 = <usize>dk << 2;
  for (let ti = 0; ti < n; ti++) {
    const kt = kp + <usize>ti * rsK, rt = r + <usize>ti * rsK, kkt = kk + <usize>ti * rsK;
    const vt = v + <usize>ti * rsV, yt = y + <usize>ti * rsV;
    const et = eg + <usize>ti * dk4, nbt = nbg + <usize>ti * dk4;
    for (let j = 0; j < w; j++) {
      const col = Sj + (<usize>j << 2);
      let u: f32 = 0;
      for (let i = 0; i < dk; i++) u += load<f32>(kkt + (<usize>i << 2)) * load<f32>(col + <usize>i * dv4);
      const d = load<f32>(vt + (<usize>j << 2));
      let acc: f32 = 0;
      for (let i = 0; i < dk; i++) {
        const o = <usize>i << 2, p = col + <usize>i * dv4;
        const s = load<f32>(p) * load<f32>(et + o) + load<f32>(nbt + o) * u + load<f32>(kt + o) * d;
        store<f32>(p, s);
        acc += load<f32>(rt + o) * s;
      }
      store<f32>(yt + (<usize>j << 2), acc);
    }
  }
}

/** Floats of scratch for a full token group (fewer give smaller groups; 2·al4(dk) is the minimum). */
export function wkv7ScratchFloats(dk: i32): i32 {
  return 2 * GROUP * al4(dk);
}

/**
 * RWKV-7 WKV over T tokens, per head h (fla's state layout S [H, dk, dv], row i = key channel i):
 *   u = Sᵀκ̂;  S ← Diag(exp(w)) S − (κ̂ ⊙ a) uᵀ + k vᵀ;  y = Sᵀ r
 * (the official S ← S·Diag(d) − (S κ̂)(κ̂ ⊙ a)ᵀ + v kᵀ, y = S r on the transposed state, d = exp(w)).
 * r, w (log-decay), k, kk (κ̂), a: [T, H, dk]; v, y: [T, H, dv]. Columns of S never mix, so each slice
 * of columns runs all tokens of a group while it stays in cache; one call over T tokens is
 * bit-identical to T single-token calls. scr: scrFloats floats (≥ 2·al4(dk)) for a group's exp(w)
 * and −κ̂ ⊙ a rows.
 */
export function wkv7F32(y: usize, S: usize, r: usize, w: usize, kp: usize, v: usize, kk: usize, a: usize,
  T: i32, H: i32, dk: i32, dv: i32, scr: usize, scrFloats: i32): void {
  const rsK = <usize>(H * dk) << 2, rsV = <usize>(H * dv) << 2;
  const dkA = al4(dk);
  const group = min(GROUP, scrFloats / (2 * dkA));
  const eg = scr, nbg = scr + (<usize>(group * dkA) << 2);
  for (let h = 0; h < H; h++) {
    const Sh = S + (<usize>(h * dk * dv) << 2);
    const ho = <usize>(h * dk) << 2, hv = <usize>(h * dv) << 2;
    for (let tg = 0; tg < T; tg += group) {
      const n = min(group, T - tg);
      const rg = r + <usize>tg * rsK + ho, kg = kp + <usize>tg * rsK + ho, kkg = kk + <usize>tg * rsK + ho;
      const vg = v + <usize>tg * rsV + hv, yg = y + <usize>tg * rsV + hv;
      // exp(w) and −κ̂⊙a rows of the group, packed dk floats apart.
      for (let ti = 0; ti < n; ti++) {
        const src = <usize>ti * rsK, dst = <usize>ti * (<usize>dk << 2);
        const wt = w + <usize>tg * rsK + ho + src, at = a + <usize>tg * rsK + ho + src, kkt = kkg + src;
        let i = 0;
        for (; i + 4 <= dk; i += 4) {
          const o = <usize>i << 2;
          v128.store(eg + dst + o, expF(v128.load(wt + o)));
          v128.store(nbg + dst + o, f32x4.neg(f32x4.mul(v128.load(kkt + o), v128.load(at + o))));
        }
        for (; i < dk; i++) {
          const o = <usize>i << 2;
          store<f32>(eg + dst + o, expS(load<f32>(wt + o)));
          store<f32>(nbg + dst + o, -(load<f32>(kkt + o) * load<f32>(at + o)));
        }
      }
      let j = 0;
      for (; j + 16 <= dv; j += 16) {
        const o = <usize>j << 2;
        sliceV(4, yg + o, Sh + o, rg, kg, vg + o, kkg, eg, nbg, rsK, rsV, dk, dv, n);
      }
      for (; j + 4 <= dv; j += 4) {
        const o = <usize>j << 2;
        sliceV(1, yg + o, Sh + o, rg, kg, vg + o, kkg, eg, nbg, rsK, rsV, dk, dv, n);
      }
      if (j < dv) {
        const o = <usize>j << 2;
        sliceTail(yg + o, Sh + o, rg, kg, vg + o, kkg, eg, nbg, rsK, rsV, dk, dv, n, dv - j);
      }
    }
  }
}

/**
 * Key preparation of RWKV-7, per row and head (dk floats), in place on k; κ̂ to kk:
 *   κ = k ⊙ k_k;  κ̂ = κ / sqrt(Σκ² + eps) (clampNorm 0: fla l2_norm) | κ / max(‖κ‖, eps) (1: F.normalize)
 *   k ← k + (k ⊙ (a − 1)) ⊙ k_a
 * k, a, kk: [rows, H·dk]; kK, kA: [H·dk].
 */
export function rwkv7KeysF32(kk: usize, k: usize, a: usize, kK: usize, kA: usize, rows: i32, H: i32, dk: i32, eps: f32, clampNorm: i32): void {
  const C = H * dk;
  const one = f32x4.splat(1);
  for (let t = 0; t < rows; t++) {
    const rowOff = <usize>(t * C) << 2;
    for (let h = 0; h < H; h++) {
      const base = rowOff + (<usize>(h * dk) << 2), wb = <usize>(h * dk) << 2;
      let acc = f32x4.splat(0);
      let i = 0;
      for (; i + 4 <= dk; i += 4) {
        const o = <usize>i << 2;
        const x = f32x4.mul(v128.load(k + base + o), v128.load(kK + wb + o));
        v128.store(kk + base + o, x);
        acc = madd(x, x, acc);
      }
      let n2 = f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1) + f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3);
      for (; i < dk; i++) {
        const o = <usize>i << 2;
        const x = load<f32>(k + base + o) * load<f32>(kK + wb + o);
        store<f32>(kk + base + o, x);
        n2 += x * x;
      }
      const inv: f32 = clampNorm ? 1 / max(Mathf.sqrt(n2), eps) : 1 / Mathf.sqrt(n2 + eps);
      const iv = f32x4.splat(inv);
      i = 0;
      for (; i + 4 <= dk; i += 4) {
        const o = <usize>i << 2;
        v128.store(kk + base + o, f32x4.mul(v128.load(kk + base + o), iv));
        const kv = v128.load(k + base + o);
        const ka = f32x4.mul(f32x4.mul(kv, f32x4.sub(v128.load(a + base + o), one)), v128.load(kA + wb + o));
        v128.store(k + base + o, f32x4.add(kv, ka));
      }
      for (; i < dk; i++) {
        const o = <usize>i << 2;
        store<f32>(kk + base + o, load<f32>(kk + base + o) * inv);
        const kv = load<f32>(k + base + o);
        store<f32>(k + base + o, kv + kv * (load<f32>(a + base + o) - 1) * load<f32>(kA + wb + o));
      }
    }
  }
}

/**
 * Output head of RWKV-7 time mixing, per row and head h (key width dk, value width dv), in place on y:
 *   y ← (GroupNorm(y)·gw + gb + (Σ_i r_i k_i rK_i)·v) ⊙ g
 * GroupNorm over the head's dv floats with eps (head_dim·norm_eps); y, v, g: [rows, H·dv];
 * r, k: [rows, H·dk]; rK: [H·dk]; gw, gb: [H·dv].
 */
export function rwkv7OutputF32(y: usize, r: usize, k: usize, v: usize, g: usize, rK: usize, gw: usize, gb: usize,
  rows: i32, H: i32, dk: i32, dv: i32, eps: f32): void {
  const CK = H * dk, CV = H * dv;
  for (let t = 0; t < rows; t++) {
    for (let h = 0; h < H; h++) {
      const kb = (<usize>(t * CK + h * dk)) << 2, vb = (<usize>(t * CV + h * dv)) << 2;
      const kw = <usize>(h * dk) << 2, vw = <usize>(h * dv) << 2;
      let bonus: f32 = 0;
      for (let i = 0; i < dk; i++) {
        const o = <usize>i << 2;
        bonus += load<f32>(r + kb + o) * load<f32>(k + kb + o) * load<f32>(rK + kw + o);
      }
      let s: f32 = 0;
      for (let j = 0; j < dv; j++) s += load<f32>(y + vb + (<usize>j << 2));
      const mean = s / <f32>dv;
      let q: f32 = 0;
      for (let j = 0; j < dv; j++) {
        const d = load<f32>(y + vb + (<usize>j << 2)) - mean;
        q += d * d;
      }
      const inv = <f32>(1 / Math.sqrt(<f64>(q / <f32>dv + eps)));
      for (let j = 0; j < dv; j++) {
        const o = <usize>j << 2;
        const n = (load<f32>(y + vb + o) - mean) * inv * load<f32>(gw + vw + o) + load<f32>(gb + vw + o);
        store<f32>(y + vb + o, (n + bonus * load<f32>(v + vb + o)) * load<f32>(g + vb + o));
      }
    }
  }
}
