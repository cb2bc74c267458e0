// Row normalisations over f32: RMSNorm (plain and zero-centred (1+w)), LayerNorm, L2 norm.
// Rows sit `stride` floats apart in both x and y; y may equal x.
import { hsum } from './vmath';

@inline function sumSq(p: usize, n: i32): f32 {
  let a0 = f32x4.splat(0), a1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const o = <usize>i << 2;
    const v0 = v128.load(p + o), v1 = v128.load(p + o, 16);
    a0 = f32x4.add(a0, f32x4.mul(v0, v0));
    a1 = f32x4.add(a1, f32x4.mul(v1, v1));
  }
  for (; i + 4 <= n; i += 4) {
    const v0 = v128.load(p + (<usize>i << 2));
    a0 = f32x4.add(a0, f32x4.mul(v0, v0));
  }
  let s = hsum(f32x4.add(a0, a1));
  for (; i < n; i++) {
    const v = load<f32>(p + (<usize>i << 2));
    s += v * v;
  }
  return s;
}

/** y = x·inv (w == 0), (x·inv)·w, or (x·inv)·(1 + w) when addOne: HF multiplies in this order in f32. */
@inline function scaleRow(y: usize, x: usize, w: usize, inv: f32, n: i32, addOne: i32): void {
  const iv = f32x4.splat(inv);
  const one = f32x4.splat(1);
  let i = 0;
  if (w == 0) {
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(y + o, f32x4.mul(v128.load(x + o), iv));
    }
    for (; i < n; i++) store<f32>(y + (<usize>i << 2), load<f32>(x + (<usize>i << 2)) * inv);
  } else if (addOne) {
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(y + o, f32x4.mul(f32x4.mul(v128.load(x + o), iv), f32x4.add(one, v128.load(w + o))));
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      store<f32>(y + o, load<f32>(x + o) * inv * (1 + load<f32>(w + o)));
    }
  } else {
    for (; i + 4 <= n; i += 4) {
      const o = <usize>i << 2;
      v128.store(y + o, f32x4.mul(f32x4.mul(v128.load(x + o), iv), v128.load(w + o)));
    }
    for (; i < n; i++) {
      const o = <usize>i << 2;
      store<f32>(y + o, load<f32>(x + o) * inv * load<f32>(w + o));
    }
  }
}

/** y = x / sqrt(mean(x²) + eps) · w  (or · (1 + w)); rows `stride` floats apart. */
export function rmsNormF32(y: usize, x: usize, w: usize, rows: i32, dim: i32, eps: f32, addOne: i32, stride: i32): void {
  const rs = <usize>stride << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rs, yr = y + <usize>r * rs;
    const ms: f32 = sumSq(xr, dim) / <f32>dim;
    const inv = <f32>(1 / Math.sqrt(<f64>(ms + eps)));
    scaleRow(yr, xr, w, inv, dim, addOne);
  }
}

/** y = x / sqrt(Σx² + eps) (FLA / Qwen3-Next `l2norm`: x · rsqrt(sum + eps)). */
export function l2NormF32(y: usize, x: usize, rows: i32, dim: i32, eps: f32, stride: i32): void {
  const rs = <usize>stride << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rs, yr = y + <usize>r * rs;
    const inv = <f32>(1 / Math.sqrt(<f64>(sumSq(xr, dim) + eps)));
    scaleRow(yr, xr, 0, inv, dim, 0);
  }
}

/** torch.nn.LayerNorm: (x − mean) / sqrt(var + eps) · w + b with the biased variance; w, b may be 0. */
export function layerNormF32(y: usize, x: usize, w: usize, b: usize, rows: i32, dim: i32, eps: f32): void {
  const rs = <usize>dim << 2;
  for (let r = 0; r < rows; r++) {
    const xr = x + <usize>r * rs, yr = y + <usize>r * rs;
    let a0 = f32x4.splat(0);
    let i = 0;
    for (; i + 4 <= dim; i += 4) a0 = f32x4.add(a0, v128.load(xr + (<usize>i << 2)));
    let s = hsum(a0);
    for (; i < dim; i++) s += load<f32>(xr + (<usize>i << 2));
    const mean: f32 = s / <f32>dim;
    const mv = f32x4.splat(mean);
    a0 = f32x4.splat(0);
    i = 0;
    for (; i + 4 <= dim; i += 4) {
      const d = f32x4.sub(v128.load(xr + (<usize>i << 2)), mv);
      a0 = f32x4.add(a0, f32x4.mul(d, d));
    }
    let v = hsum(a0);
    for (; i < dim; i++) {
      const d = load<f32>(xr + (<usize>i << 2)) - mean;
      v += d * d;
    }
    const inv = <f32>(1 / Math.sqrt(<f64>(v / <f32>dim + eps)));
    const iv = f32x4.splat(inv);
    i = 0;
    for (; i + 4 <= dim; i += 4) {
      const o = <usize>i << 2;
      let t = f32x4.mul(f32x4.sub(v128.load(xr + o), mv), iv);
      if (w != 0) t = f32x4.mul(t, v128.load(w + o));
      if (b != 0) t = f32x4.add(t, v128.load(b + o));
      v128.store(yr + o, t);
    }
    for (; i < dim; i++) {
      const o = <usize>i << 2;
      let t = (load<f32>(xr + o) - mean) * inv;
      if (w != 0) t *= load<f32>(w + o);
      if (b != 0) t += load<f32>(b + o);
      store<f32>(yr + o, t);
    }
  }
}
