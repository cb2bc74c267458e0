// The element-wise recurrences of RecurrentGemma (RG-LRU) and RWKV-4 (WKV), as host loops over f32
// arena views until the kernels facade has them (src/kernels/rnn.ts: rglruScan, wkv4). Each is
// O(T·channels) — small beside the projections around it — and follows HF's arithmetic order.

import type { Ctx } from '../layers/context';

/**
 * RG-LRU (HF RecurrentGemmaRglru) over W channels, given the gate activations already through their
 * sigmoids: log a_t = −8 · r_t · softplus(Λ);  x̃_t = x_t ⊙ i_t ⊙ sqrt(1 − a_t²);  h ← a_t ⊙ h + x̃_t;
 * y_t = h. At absolute position 0 the multiplier is 1 and a is 0 (HF's document reset).
 * x, gi (input gate), ga (recurrence gate), y [T, W]; spl = softplus(Λ) [W]; h [W] (f32, in place);
 * y may equal x. The scan runs in f32 as HF's _rnn_scan (acc_dtype float32).
 */
export function rglru(ctx: Ctx, y: number, h: number, x: number, gi: number, ga: number, spl: number, T: number, W: number, pos0: number): void {
  const xv = ctx.f32(x, T * W), iv = ctx.f32(gi, T * W), av = ctx.f32(ga, T * W), yv = ctx.f32(y, T * W);
  const sv = ctx.f32(spl, W), hv = ctx.f32(h, W);
  const f = Math.fround;
  for (let t = 0; t < T; t++) {
    const reset = pos0 + t === 0;
    for (let c = 0; c < W; c++) {
      const j = t * W + c;
      const logA = -8 * av[j] * sv[c];
      const a = reset ? 0 : Math.exp(logA);
      const mult = reset ? 1 : Math.sqrt(1 - Math.exp(2 * logA));
      const hn = f(f(f(a) * hv[c]) + f(xv[j] * iv[j] * mult));
      hv[c] = hn;
      yv[j] = hn;
    }
  }
}

/**
 * RWKV-4 WKV with max tracking (HF rwkv_linear_attention_cpu), per channel c of C:
 * out_t = (e^{m−m'} num + e^{k+u−m'} v) / (e^{m−m'} den + e^{k+u−m'}) with m' = max(m, k+u), then
 * num, den, m advance with decay w = −exp(time_decay). k, v, out [T, C]; w = −exp(time_decay) [C];
 * u = time_first [C]; state num, den, max [C] each (f32, in place).
 */
export function wkv4(ctx: Ctx, out: number, k: number, v: number, w: number, u: number, num: number, den: number, max: number, T: number, C: number): void {
  const kv = ctx.f32(k, T * C), vv = ctx.f32(v, T * C), ov = ctx.f32(out, T * C);
  const wv = ctx.f32(w, C), uv = ctx.f32(u, C);
  const nv = ctx.f32(num, C), dv = ctx.f32(den, C), mv = ctx.f32(max, C);
  for (let c = 0; c < C; c++) {
    let n = nv[c], d = dv[c], m = mv[c];
    const wc = wv[c], uc = uv[c];
    for (let t = 0; t < T; t++) {
      const kt = kv[t * C + c], vt = vv[t * C + c];
      let mo = Math.max(m, kt + uc);
      let e1 = Math.exp(m - mo), e2 = Math.exp(kt + uc - mo);
      ov[t * C + c] = (e1 * n + e2 * vt) / (e1 * d + e2);
      mo = Math.max(m + wc, kt);
      e1 = Math.exp(m + wc - mo);
      e2 = Math.exp(kt - mo);
      n = e1 * n + e2 * vt;
      d = e1 * d + e2;
      m = mo;
    }
    nv[c] = n;
    dv[c] = d;
    mv[c] = m;
  }
}
