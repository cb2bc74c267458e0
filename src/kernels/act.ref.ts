// Naive float64 references for the elementwise kernels (equations as in PyTorch / HF).

const map = (x: ArrayLike<number>, fn: (v: number) => number): Float64Array => Float64Array.from(x as ArrayLike<number>, fn);

export const sigmoidRef = (x: ArrayLike<number>) => map(x, (v) => 1 / (1 + Math.exp(-v)));
export const siluRef = (x: ArrayLike<number>) => map(x, (v) => v / (1 + Math.exp(-v)));
export const relu2Ref = (x: ArrayLike<number>) => map(x, (v) => (v > 0 ? v * v : 0));
export const softplusRef = (x: ArrayLike<number>) => map(x, (v) => (v > 20 ? v : Math.log1p(Math.exp(v))));
export const softcapRef = (x: ArrayLike<number>, cap: number) => map(x, (v) => cap * Math.tanh(v / cap));

/** erf by its Maclaurin series (|z| ≤ 3, 80 terms, f64) and 1 − erfc asymptotics beyond. */
export function erfRef(z: number): number {
  const a = Math.abs(z);
  if (a > 6) return Math.sign(z);
  // Σ (−1)^n z^(2n+1) / (n! (2n+1)); terms peak near n ≈ z² (≤ 36 for |z| ≤ 6) at ≤ e^36/… — use
  // the positive series instead to avoid cancellation: erf z = 2/√π e^{−z²} Σ 2^n z^(2n+1)/(2n+1)!!
  let term = a, sum = a;
  for (let n = 1; n < 400; n++) {
    term *= (2 * a * a) / (2 * n + 1);
    sum += term;
  }
  return Math.sign(z) * (2 / Math.sqrt(Math.PI)) * Math.exp(-a * a) * sum;
}

export function geluRef(x: ArrayLike<number>, approx: 'tanh' | 'none'): Float64Array {
  if (approx === 'tanh') return map(x, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v))));
  return map(x, (v) => 0.5 * v * (1 + erfRef(v / Math.SQRT2)));
}

export function softmaxRef(x: ArrayLike<number>, rows: number, n: number, o: { cap?: number; temperature?: number; sink?: (r: number) => number } = {}): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const z = Array.from({ length: n }, (_, i) => {
      let v = x[r * n + i];
      if (o.cap) v = o.cap * Math.tanh(v / o.cap);
      return v / (o.temperature ?? 1);
    });
    const sk = o.sink ? o.sink(r) : -Infinity;
    const m = Math.max(...z, sk);
    let s = o.sink ? Math.exp(sk - m) : 0;
    for (const v of z) s += Math.exp(v - m);
    z.forEach((v, i) => (y[r * n + i] = Math.exp(v - m) / s));
  }
  return y;
}

export function logSumExpRef(x: ArrayLike<number>): number {
  const m = Math.max(...Array.from(x));
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  return m + Math.log(s);
}
