// Selective state-space scans (docs/recurrences.md §9–10, chunked form §16).
//
// Mamba-1 (HF MambaMixer.slow_forward), per channel c and state n, state h [dInner, N]:
//   h = exp(A·Δ)⊙h + (Δ·B)·x;   y = h·C + D·x;   y *= SiLU(z)
// Mamba-2 / SSD (HF Mamba2Mixer.torch_forward), per head h with group g = h / (H/G), state [H, P, N]:
//   h = exp(dt·A)·h + (dt·B)·x;   y = h·C + D·x
// The SSD chunked form is simple-GLA with q = C, k = B, v = dt·x, g = dt·A (docs/recurrences.md §13, §16):
//   per chunk, b_i = Σ_{m≤i} dt_m A,  Y = e^b ⊙ (C hᵀ) + ((C Bᵀ) ⊙ Γ)(dt·x) + D·x,
//   h ← e^{b_last} h + ((dt·x) ⊙ e^{b_last − b})ᵀ B;  Γ_ij = exp(Σ_{j<m≤i} dt_m A), run as sums.
import { expF, expS, gemmNN, madd } from './scan_util';

@inline function hsum(v: v128): f32 {
  return f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1) + f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3);
}

/**
 * Mamba-1 selective scan over T tokens. x, delta, z, y [T, dInner]; A [dInner, N]; B, C [T, N];
 * D [dInner]; z = 0: no gate. h [dInner, N] in/out. Lanes run over four channels, so Δ, x, z and y
 * are contiguous vector loads and nothing needs a horizontal sum; the block's state and A are
 * transposed to [N, 4] in scr (8·N floats) for the whole sequence.
 */
export function selectiveScanF32(y: usize, h: usize, x: usize, delta: usize, A: usize, B: usize, C: usize, D: usize, z: usize,
  T: i32, dI: i32, N: i32, scr: usize): void {
  const N4 = <usize>N << 2, rs = <usize>dI << 2;
  const hT = scr, AT = scr + (N4 << 2);
  let c = 0;
  for (; c + 4 <= dI; c += 4) {
    for (let n = 0; n < N; n++) {
      for (let l = 0; l < 4; l++) {
        const src = <usize>(c + l) * N4 + (<usize>n << 2), dst = (<usize>(n * 4 + l)) << 2;
        store<f32>(hT + dst, load<f32>(h + src));
        store<f32>(AT + dst, load<f32>(A + src));
      }
    }
    const D4 = v128.load(D + (<usize>c << 2));
    let po = <usize>c << 2;
    let pB = B, pC = C;
    for (let t = 0; t < T; t++) {
      const dt4 = v128.load(delta + po), x4 = v128.load(x + po);
      let acc = f32x4.splat(0);
      for (let n = 0; n < N; n++) {
        const o = <usize>n << 4;
        // HF: discrete_A = exp(A·Δ); deltaB_u = (Δ·B)·x; h = discrete_A·h + deltaB_u; y = h·C
        const dA = expF(f32x4.mul(v128.load(AT + o), dt4));
        const dBu = f32x4.mul(f32x4.mul(dt4, v128.load32_splat(pB + (<usize>n << 2))), x4);
        const hn = f32x4.add(f32x4.mul(dA, v128.load(hT + o)), dBu);
        v128.store(hT + o, hn);
        acc = madd(hn, v128.load32_splat(pC + (<usize>n << 2)), acc);
      }
      let out = f32x4.add(acc, f32x4.mul(x4, D4));
      if (z != 0) {
        const z4 = v128.load(z + po);
        out = f32x4.mul(out, f32x4.div(z4, f32x4.add(f32x4.splat(1), expF(f32x4.neg(z4)))));
      }
      v128.store(y + po, out);
      po += rs; pB += N4; pC += N4;
    }
    for (let n = 0; n < N; n++) {
      for (let l = 0; l < 4; l++) store<f32>(h + <usize>(c + l) * N4 + (<usize>n << 2), load<f32>(hT + ((<usize>(n * 4 + l)) << 2)));
    }
  }
  for (; c < dI; c++) {
    const hc = h + <usize>c * N4, ac = A + <usize>c * N4;
    const Dc = load<f32>(D + (<usize>c << 2));
    let po = <usize>c << 2;
    let pB = B, pC = C;
    for (let t = 0; t < T; t++) {
      const dt = load<f32>(delta + po), xv = load<f32>(x + po);
      let s: f32 = 0;
      for (let n = 0; n < N; n++) {
        const o = <usize>n << 2;
        const hn = expS(load<f32>(ac + o) * dt) * load<f32>(hc + o) + dt * load<f32>(pB + o) * xv;
        store<f32>(hc + o, hn);
        s += hn * load<f32>(pC + o);
      }
      let out = s + xv * Dc;
      if (z != 0) {
        const zv = load<f32>(z + po);
        out *= zv / (1 + expS(-zv));
      }
      store<f32>(y + po, out);
      po += rs; pB += N4; pC += N4;
    }
  }
}

/** Floats of scratch selectiveScanF32 uses. */
export function selectiveScanScratchFloats(N: i32): i32 {
  return 8 * N;
}

/**
 * Mamba-2 recurrent form over T tokens for heads h0..h1−1. x, y [T, H, P]; dt [T, H]; A, D [H]
 * (D = 0: no skip); B, C [T, G, N]; state [H, P, N].
 */
function ssdRecurrent(y: usize, hs: usize, x: usize, dt: usize, A: usize, B: usize, C: usize, D: usize,
  T: i32, H: i32, P: i32, G: i32, N: i32, h0: i32, h1: i32): void {
  const N4 = <usize>N << 2;
  const nv = N & ~3;
  const hpg = H / G;
  for (let hh = h0; hh < h1; hh++) {
    const grp = hh / hpg;
    const Ah = load<f32>(A + (<usize>hh << 2));
    const Dh: f32 = D != 0 ? load<f32>(D + (<usize>hh << 2)) : 0;
    const st = hs + <usize>hh * (<usize>(P * N) << 2);
    for (let t = 0; t < T; t++) {
      const dtv = load<f32>(dt + (<usize>(t * H + hh) << 2));
      // HF decode: dA = exp(dt·A); dBx = (dt·B)·x; h = h·dA + dBx; y = h·C + x·D
      const dA = f32x4.splat(expS(dtv * Ah));
      const dts = f32x4.splat(dtv);
      const Bt = B + (<usize>(t * G + grp) * N4), Ct = C + (<usize>(t * G + grp) * N4);
      const xt = x + (<usize>((t * H + hh) * P) << 2), yt = y + (<usize>((t * H + hh) * P) << 2);
      for (let p = 0; p < P; p++) {
        const xv = load<f32>(xt + (<usize>p << 2));
        const xvv = f32x4.splat(xv);
        const row = st + <usize>p * N4;
        let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
        let n = 0;
        for (; n + 8 <= nv; n += 8) {
          const o = <usize>n << 2;
          const h0v = f32x4.add(f32x4.mul(v128.load(row + o), dA), f32x4.mul(f32x4.mul(dts, v128.load(Bt + o)), xvv));
          const h1v = f32x4.add(f32x4.mul(v128.load(row + o, 16), dA), f32x4.mul(f32x4.mul(dts, v128.load(Bt + o, 16)), xvv));
          v128.store(row + o, h0v);
          v128.store(row + o, h1v, 16);
          a0 = madd(h0v, v128.load(Ct + o), a0);
          a1 = madd(h1v, v128.load(Ct + o, 16), a1);
        }
        for (; n < nv; n += 4) {
          const o = <usize>n << 2;
          const hv = f32x4.add(f32x4.mul(v128.load(row + o), dA), f32x4.mul(f32x4.mul(dts, v128.load(Bt + o)), xvv));
          v128.store(row + o, hv);
          a0 = madd(hv, v128.load(Ct + o), a0);
        }
        let s = hsum(f32x4.add(a0, a1));
        const dAs = f32x4.extract_lane(dA, 0);
        for (; n < N; n++) {
          const o = <usize>n << 2;
          const hv = load<f32>(row + o) * dAs + dtv * load<f32>(Bt + o) * xv;
          store<f32>(row + o, hv);
          s += hv * load<f32>(Ct + o);
        }
        store<f32>(yt + (<usize>p << 2), s + xv * Dh);
      }
    }
  }
}

@inline function al4(n: i32): usize {
  return <usize>((n + 3) & ~3) << 2;
}

/** Floats of scratch the SSD chunked form needs (the layout ssdChunk carves, in the same order). */
export function ssdScanScratchFloats(P: i32, N: i32, Cn: i32): i32 {
  return <i32>((al4(Cn * Cn) * 2 + al4(N * Cn) + al4(Cn * P) + al4(N * P) + al4(Cn) * 4) >> 2);
}

/** Tokens t0..t0+c−1 for every head; chunk capacity Cn. */
function ssdChunk(y: usize, hs: usize, x: usize, dt: usize, A: usize, B: usize, C: usize, D: usize,
  H: i32, P: i32, G: i32, N: i32, Cn: i32, scr: usize, t0: i32, c: i32): void {
  let off = scr;
  const CB = off; off += al4(Cn * Cn);
  const M = off; off += al4(Cn * Cn);
  const BT = off; off += al4(N * Cn);
  const Xd = off; off += al4(Cn * P);
  const hT = off; off += al4(N * P);
  const gl = off; off += al4(Cn);
  const eb = off; off += al4(Cn);
  const ebc = off; off += al4(Cn);
  const drow = off; off += al4(Cn);
  const Cn4 = <usize>Cn << 2, P4 = <usize>P << 2, N4 = <usize>N << 2;
  const hpg = H / G;
  const rsBC = G * N, rsY = H * P;
  for (let grp = 0; grp < G; grp++) {
    const Bg = B + (<usize>(t0 * G + grp) * N4), Cg = C + (<usize>(t0 * G + grp) * N4);
    // C Bᵀ (lower triangle) through Bᵀ [N × c].
    for (let j = 0; j < c; j++) {
      const bj = Bg + <usize>j * (<usize>rsBC << 2);
      for (let n = 0; n < N; n++) store<f32>(BT + (<usize>(n * c + j) << 2), load<f32>(bj + (<usize>n << 2)));
    }
    gemmNN(CB, Cn, Cg, rsBC, 1, BT, c, c, c, N, 0, 0, 1);
    for (let hh = grp * hpg; hh < (grp + 1) * hpg; hh++) {
      const Ah = load<f32>(A + (<usize>hh << 2));
      const Dh: f32 = D != 0 ? load<f32>(D + (<usize>hh << 2)) : 0;
      const st = hs + <usize>hh * (<usize>(P * N) << 2);
      const xh = x + (<usize>(t0 * rsY + hh * P) << 2), yh = y + (<usize>(t0 * rsY + hh * P) << 2);
      // Gates g_i = A·dt_i (HF: A.to(dtype) * dt); prefix and suffix exponentials as running sums.
      for (let i = 0; i < c; i++) store<f32>(gl + (<usize>i << 2), Ah * load<f32>(dt + (<usize>((t0 + i) * H + hh) << 2)));
      let b: f32 = 0;
      for (let i = 0; i < c; i++) {
        b += load<f32>(gl + (<usize>i << 2));
        store<f32>(eb + (<usize>i << 2), expS(b));
      }
      let sfx: f32 = 0;
      for (let i = c - 1; i >= 0; i--) {
        store<f32>(ebc + (<usize>i << 2), expS(sfx));
        sfx += load<f32>(gl + (<usize>i << 2));
      }
      // M = (C Bᵀ) ⊙ Γ, lower triangle incl. diagonal, zeros above.
      for (let i = 0; i < c; i++) {
        const gi = f32x4.splat(load<f32>(gl + (<usize>i << 2)));
        const cr = CB + <usize>i * Cn4, mr = M + <usize>i * Cn4;
        let j = 0;
        for (; j + 4 <= i; j += 4) {
          const oj = <usize>j << 2;
          const ds = f32x4.add(v128.load(drow + oj), gi);
          v128.store(drow + oj, ds);
          v128.store(mr + oj, f32x4.mul(v128.load(cr + oj), expF(ds)));
        }
        for (; j < i; j++) {
          const oj = <usize>j << 2;
          const ds = load<f32>(drow + oj) + f32x4.extract_lane(gi, 0);
          store<f32>(drow + oj, ds);
          store<f32>(mr + oj, load<f32>(cr + oj) * expS(ds));
        }
        store<f32>(drow + (<usize>i << 2), 0);
        store<f32>(mr + (<usize>i << 2), load<f32>(cr + (<usize>i << 2)));
        for (j = i + 1; j < c; j++) store<f32>(mr + (<usize>j << 2), 0);
      }
      // Xd = dt·x (HF: hidden_states * dt[..., None]).
      for (let i = 0; i < c; i++) {
        const dts = f32x4.splat(load<f32>(dt + (<usize>((t0 + i) * H + hh) << 2)));
        const xi = xh + <usize>i * (<usize>rsY << 2), xd = Xd + <usize>i * P4;
        let p = 0;
        for (; p + 4 <= P; p += 4) v128.store(xd + (<usize>p << 2), f32x4.mul(v128.load(xi + (<usize>p << 2)), dts));
        for (; p < P; p++) store<f32>(xd + (<usize>p << 2), load<f32>(xi + (<usize>p << 2)) * f32x4.extract_lane(dts, 0));
      }
      // Y = e^b ⊙ (C hᵀ) + M Xd + D·x
      for (let p = 0; p < P; p++) {
        const row = st + <usize>p * N4;
        for (let n = 0; n < N; n++) store<f32>(hT + (<usize>(n * P + p) << 2), load<f32>(row + (<usize>n << 2)));
      }
      gemmNN(yh, rsY, Cg, rsBC, 1, hT, P, c, P, N, 0, 0);
      for (let i = 0; i < c; i++) {
        const yi = yh + <usize>i * (<usize>rsY << 2);
        const e = f32x4.splat(load<f32>(eb + (<usize>i << 2)));
        let p = 0;
        for (; p + 4 <= P; p += 4) v128.store(yi + (<usize>p << 2), f32x4.mul(v128.load(yi + (<usize>p << 2)), e));
        for (; p < P; p++) store<f32>(yi + (<usize>p << 2), load<f32>(yi + (<usize>p << 2)) * f32x4.extract_lane(e, 0));
      }
      gemmNN(yh, rsY, M, Cn, 1, Xd, P, c, P, c, 1, 1);
      if (Dh != 0) {
        const dv = f32x4.splat(Dh);
        for (let i = 0; i < c; i++) {
          const yi = yh + <usize>i * (<usize>rsY << 2), xi = xh + <usize>i * (<usize>rsY << 2);
          let p = 0;
          for (; p + 4 <= P; p += 4) v128.store(yi + (<usize>p << 2), madd(v128.load(xi + (<usize>p << 2)), dv, v128.load(yi + (<usize>p << 2))));
          for (; p < P; p++) store<f32>(yi + (<usize>p << 2), load<f32>(yi + (<usize>p << 2)) + load<f32>(xi + (<usize>p << 2)) * Dh);
        }
      }
      // h ← e^{b_last} h + (Xd ⊙ e^{b_last − b})ᵀ B
      for (let i = 0; i < c; i++) {
        const xd = Xd + <usize>i * P4;
        const e = f32x4.splat(load<f32>(ebc + (<usize>i << 2)));
        let p = 0;
        for (; p + 4 <= P; p += 4) v128.store(xd + (<usize>p << 2), f32x4.mul(v128.load(xd + (<usize>p << 2)), e));
        for (; p < P; p++) store<f32>(xd + (<usize>p << 2), load<f32>(xd + (<usize>p << 2)) * f32x4.extract_lane(e, 0));
      }
      const eL = f32x4.splat(load<f32>(eb + (<usize>(c - 1) << 2)));
      const tot = P * N;
      let q = 0;
      for (; q + 4 <= tot; q += 4) v128.store(st + (<usize>q << 2), f32x4.mul(v128.load(st + (<usize>q << 2)), eL));
      for (; q < tot; q++) store<f32>(st + (<usize>q << 2), load<f32>(st + (<usize>q << 2)) * f32x4.extract_lane(eL, 0));
      gemmNN(st, N, Xd, 1, P, Bg, rsBC, P, N, c, 1, 0);
    }
  }
}

/**
 * Mamba-2 scan over T tokens (see the top of this file). chunk 0: recurrent; else the SSD chunked
 * form with chunks of `chunk` tokens, scratch of ssdScanScratchFloats(P, N, chunk) floats at scr.
 */
export function ssdScanF32(y: usize, h: usize, x: usize, dt: usize, A: usize, B: usize, C: usize, D: usize,
  T: i32, H: i32, P: i32, G: i32, N: i32, chunk: i32, scr: usize): void {
  if (chunk == 0) {
    ssdRecurrent(y, h, x, dt, A, B, C, D, T, H, P, G, N, 0, H);
    return;
  }
  for (let t0 = 0; t0 < T; t0 += chunk) ssdChunk(y, h, x, dt, A, B, C, D, H, P, G, N, chunk, scr, t0, min(chunk, T - t0));
}
