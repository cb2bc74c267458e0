// WASM implementations of the ops of ./ops-recurrent.ts, on the kernels of src/kernels over the
// T tokens of a chunk (one call per chunk: the kernels equal T single steps).

import { gelu, mul, relu2, sigmoid } from '../kernels/act';
import { matmul } from '../kernels/matmul';
import { rglruScan, wkv4, wkv4InitState } from '../kernels/rnn';
import { KernelError } from '../kernels/runtime';
import { sameShape, type Tensor } from './graph';
import { addBias } from './ops';
import { REC_ACT, RGLRU, TOKEN_SHIFT, WKV4 } from './ops-recurrent';
import { WASM_OPS as W, type WasmGraph } from './wasm';

/** Recurrences consume the pass's tokens in order: one row per token. */
function perToken(g: WasmGraph, op: string, x: Tensor): void {
  if (x.rows !== g.T) throw new KernelError(op, `${g.label}: ${x.rows} rows for ${g.T} tokens`);
}

W.set(TOKEN_SHIFT, (g, a) => {
  if (g.dry) return;
  const { x, ys, mixes } = a;
  sameShape('token_shift', x, ...ys);
  perToken(g, 'token_shift', x);
  if (ys.length !== mixes.length) throw new KernelError('token_shift', `${g.label}: ${ys.length} outputs for ${mixes.length} mixes`);
  if (ys.some((y) => y.off === x.off)) throw new KernelError('token_shift', `${g.label}: an output aliases the input`);
  const { rows: T, width: D } = x;
  const hv = g.f32(x), sv = g.k.arena.f32(g.state(a.state), D);
  const ov = ys.map((y) => g.f32(y));
  for (let t = 0; t < T; t++) {
    for (let d = 0; d < D; d++) {
      const xt = hv[t * D + d], xp = t ? hv[(t - 1) * D + d] : sv[d];
      for (let j = 0; j < mixes.length; j++) ov[j][t * D + d] = xt * mixes[j][d] + xp * (1 - mixes[j][d]);
    }
  }
  sv.set(hv.subarray((T - 1) * D, T * D));
});

W.set(WKV4, (g, a) => {
  if (g.dry) return;
  sameShape('wkv4', a.y, a.k, a.v);
  perToken(g, 'wkv4', a.y);
  const C = a.y.width, st = g.state(a.state);
  // A fresh sequence starts the running max at −1e38 (HF rwkv_linear_attention_cpu), not at the
  // zero a new state region holds.
  if (g.pos0 === 0) wkv4InitState(g.k, st, C);
  wkv4(g.k, a.y.off, st, a.k.off, a.v.off, a.decay, a.first, a.y.rows, C);
});


// Per head: the head's slice of x gathered, multiplied by both gate blocks and scattered back; then
// biases, sigmoids, x̃ = i ⊙ x, log a = r ⊙ logABase, the scan, and y = h ⊙ gate.
W.set(RGLRU, (g, a) => {
  const { spec: s, x, y, gate } = a;
  const T = x.rows, Wd = s.W, H = s.H, bw = Wd / H;
  const gi = g.tmp(Wd, T), ga = g.tmp(Wd, T);
  const xs = g.tmp(bw, T), is = g.tmp(bw, T), as = g.tmp(bw, T);
  const reset = g.tmp(Math.ceil(T / 4), 1);
  if (g.dry) return;
  sameShape('rglru', y, x, gate);
  perToken(g, 'rglru', x);
  if (y.off === x.off || y.off === gate.off) throw new KernelError('rglru', `${g.label}: the output aliases an input`);
  if (x.width !== Wd) throw new KernelError('rglru', `${g.label}: rows of ${x.width} for lru_width ${Wd}`);
  const k = g.k, n = T * Wd;
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) g.move(xs.off + t * bw * 4, x.off + (t * Wd + h * bw) * 4, bw);
    matmul(k, is.off, xs.off, s.gateI[h], T, g.matmulOpts);
    matmul(k, as.off, xs.off, s.gateA[h], T, g.matmulOpts);
    for (let t = 0; t < T; t++) {
      g.move(gi.off + (t * Wd + h * bw) * 4, is.off + t * bw * 4, bw);
      g.move(ga.off + (t * Wd + h * bw) * 4, as.off + t * bw * 4, bw);
    }
  }
  addBias(g, gi, s.bI);
  addBias(g, ga, s.bA);
  sigmoid(k, gi.off, gi.off, n);
  sigmoid(k, ga.off, ga.off, n);
  mul(k, gi.off, gi.off, x.off, n);
  const gav = g.f32(ga);
  for (let t = 0; t < T; t++) for (let c = 0; c < Wd; c++) gav[t * Wd + c] *= s.logABase[c];
  // HF resets the recurrence where position_ids == 0: a = 0 and multiplier 1 for the first token.
  let mask = 0;
  if (g.pos0 === 0) {
    mask = reset.off;
    k.arena.u8(mask, T).fill(0)[0] = 1;
  }
  rglruScan(k, y.off, g.state(a.h), ga.off, gi.off, mask, T, Wd);
  mul(k, y.off, y.off, gate.off, n);
});

W.set(REC_ACT, (g, a) => {
  if (g.dry) return;
  const { x } = a, n = x.rows * x.width;
  if (a.act === 'relu2') relu2(g.k, x.off, x.off, n);
  else gelu(g.k, x.off, x.off, n, 'tanh');
});
