// Elementwise linear recurrences (docs/recurrences.md §11–12: RWKV-4, RG-LRU): state per channel, lanes over channels.
import { expF, expS } from './scan_util';

/**
 * RG-LRU scan (HF RecurrentGemmaRglru + _rnn_scan), per channel over T tokens:
 *   a = exp(log_a);  multiplier = sqrt(1 − exp(2·log_a));  at reset tokens a = 0 and multiplier = 1;
 *   h = a·h + x·multiplier;  y = h.
 * logA, x, y [T, W] (x = the gated input, input_gate ⊙ conv output); h [W] in/out;
 * reset: 0, or u8 [T] (nonzero where position_ids == 0).
 */
export function rglruScanF32(y: usize, h: usize, logA: usize, x: usize, reset: usize, T: i32, W: i32): void {
  const rs = <usize>W << 2;
  const one = f32x4.splat(1), two = f32x4.splat(2), zero = f32x4.splat(0);
  for (let t = 0; t < T; t++) {
    const rst = reset != 0 && load<u8>(reset + <usize>t) != 0;
    const lt = logA + <usize>t * rs, xt = x + <usize>t * rs, yt = y + <usize>t * rs;
    let w = 0;
    for (; w + 4 <= W; w += 4) {
      const o = <usize>w << 2;
      const la = v128.load(lt + o);
      let a = expF(la);
      let m = f32x4.sqrt(f32x4.sub(one, expF(f32x4.mul(la, two))));
      if (rst) { a = zero; m = one; }
      const hn = f32x4.add(f32x4.mul(a, v128.load(h + o)), f32x4.mul(v128.load(xt + o), m));
      v128.store(h + o, hn);
      v128.store(yt + o, hn);
    }
    for (; w < W; w++) {
      const o = <usize>w << 2;
      const la = load<f32>(lt + o);
      let a = expS(la);
      let m = Mathf.sqrt(1 - expS(2 * la));
      if (rst) { a = 0; m = 1; }
      const hn = a * load<f32>(h + o) + load<f32>(xt + o) * m;
      store<f32>(h + o, hn);
      store<f32>(yt + o, hn);
    }
  }
}

/**
 * RWKV-4 WKV (HF rwkv_linear_attention_cpu, max-tracking form) over T tokens, per channel:
 *   w = −exp(time_decay), u = time_first
 *   p = max(pp, u + k);  out = (e^{pp−p}·aa + e^{u+k−p}·v) / (e^{pp−p}·bb + e^{u+k−p})
 *   p' = max(pp + w, k); aa = e^{pp+w−p'}·aa + e^{k−p'}·v; bb = e^{pp+w−p'}·bb + e^{k−p'}; pp = p'
 * key, value, out [T, C]; state [3, C] = (aa: num_state, bb: den_state, pp: max_state).
 */
export function wkv4F32(out: usize, state: usize, key: usize, value: usize, timeDecay: usize, timeFirst: usize, T: i32, C: i32): void {
  const rs = <usize>C << 2;
  const sa = state, sb = state + rs, sp = state + 2 * rs;
  let c = 0;
  for (; c + 4 <= C; c += 4) {
    const o = <usize>c << 2;
    const w = f32x4.neg(expF(v128.load(timeDecay + o)));
    const u = v128.load(timeFirst + o);
    let aa = v128.load(sa + o), bb = v128.load(sb + o), pp = v128.load(sp + o);
    let pk = key + o, pv = value + o, po = out + o;
    for (let t = 0; t < T; t++) {
      const k = v128.load(pk), v = v128.load(pv);
      const ww = f32x4.add(u, k);
      let p = f32x4.max(pp, ww);
      let e1 = expF(f32x4.sub(pp, p)), e2 = expF(f32x4.sub(ww, p));
      v128.store(po, f32x4.div(f32x4.add(f32x4.mul(e1, aa), f32x4.mul(e2, v)), f32x4.add(f32x4.mul(e1, bb), e2)));
      const ww2 = f32x4.add(pp, w);
      p = f32x4.max(ww2, k);
      e1 = expF(f32x4.sub(ww2, p));
      e2 = expF(f32x4.sub(k, p));
      aa = f32x4.add(f32x4.mul(e1, aa), f32x4.mul(e2, v));
      bb = f32x4.add(f32x4.mul(e1, bb), e2);
      pp = p;
      pk += rs; pv += rs; po += rs;
    }
    v128.store(sa + o, aa); v128.store(sb + o, bb); v128.store(sp + o, pp);
  }
  for (; c < C; c++) {
    const o = <usize>c << 2;
    const w = -expS(load<f32>(timeDecay + o));
    const u = load<f32>(timeFirst + o);
    let aa = load<f32>(sa + o), bb = load<f32>(sb + o), pp = load<f32>(sp + o);
    for (let t = 0; t < T; t++) {
      const k = load<f32>(key + <usize>t * rs + o), v = load<f32>(value + <usize>t * rs + o);
      const ww = u + k;
      let p = max(pp, ww);
      let e1 = expS(pp - p), e2 = expS(ww - p);
      store<f32>(out + <usize>t * rs + o, (e1 * aa + e2 * v) / (e1 * bb + e2));
      const ww2 = pp + w;
      p = max(ww2, k);
      e1 = expS(ww2 - p);
      e2 = expS(k - p);
      aa = e1 * aa + e2 * v;
      bb = e1 * bb + e2;
      pp = p;
    }
    store<f32>(sa + o, aa); store<f32>(sb + o, bb); store<f32>(sp + o, pp);
  }
}
