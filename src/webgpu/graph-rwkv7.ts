// WebGPU implementations of the ops of src/graph/ops-rwkv7.ts (kernels/rwkv7.wgsl.ts): the WKV
// kernel runs the recording's tokens in order (one position, or a prompt chunk), so a chunk equals
// its positions replayed one by one.

import { sameShape } from '../graph/graph';
import { RWKV7_KEYS, RWKV7_OUTPUT, WKV7 } from '../graph/ops-rwkv7';
import { KernelError } from '../kernels/runtime';
import { rwkv7Keys, rwkv7Output, wkv7 } from './dispatch/rwkv7';
import { GPU_OPS as G } from './graph';
import { RWKV7_MAX_DK } from './kernels/rwkv7.wgsl';

G.set(RWKV7_KEYS, (g, a) => {
  sameShape('rwkv7_keys', a.kappa, a.k, a.a);
  const { dk } = a, C = a.k.width;
  if (C % dk) throw new KernelError('rwkv7_keys', `${g.label}: width ${C} is not a multiple of dk ${dk}`);
  const kK = g.B.vec(a.kK, C), kA = g.B.vec(a.kA, C);
  g.emit((b) => [rwkv7Keys(g.K, b, { kappa: a.kappa.off, k: a.k.off, a: a.a.off, kK, kA, rows: a.k.rows, H: C / dk, dk, ...a.norm })]);
});

G.set(WKV7, (g, a) => {
  const { y, H, dk, dv } = a;
  sameShape('wkv7', a.r, a.w, a.k, a.kappa, a.a);
  sameShape('wkv7', y, a.v);
  if (a.r.width !== H * dk || y.width !== H * dv || y.rows !== a.r.rows) {
    throw new KernelError('wkv7', `${g.label}: ${y.rows}×${y.width} from ${a.r.rows}×${a.r.width} (H ${H}, dk ${dk}, dv ${dv})`);
  }
  if (dk > RWKV7_MAX_DK) throw new KernelError('wkv7', `${g.label}: head_dim ${dk} > ${RWKV7_MAX_DK} (use backend 'wasm')`);
  const S = g.state(a.state);
  g.emit((b) => [wkv7(g.K, b, { y: y.off, S, r: a.r.off, w: a.w.off, k: a.k.off, v: a.v.off, kappa: a.kappa.off, a: a.a.off, T: y.rows, H, dk, dv })]);
});

G.set(RWKV7_OUTPUT, (g, a) => {
  const { y, H, dk, dv } = a;
  sameShape('rwkv7_output', y, a.v, a.g);
  sameShape('rwkv7_output', a.r, a.k);
  if (y.width !== H * dv || a.r.width !== H * dk || a.r.rows !== y.rows) {
    throw new KernelError('rwkv7_output', `${g.label}: ${y.rows}×${y.width} with keys ${a.r.rows}×${a.r.width} (H ${H}, dk ${dk}, dv ${dv})`);
  }
  const rK = g.B.vec(a.rK, H * dk), gw = g.B.vec(a.normW, H * dv), gb = g.B.vec(a.normB, H * dv);
  g.emit((b) => [rwkv7Output(g.K, b, { y: y.off, r: a.r.off, k: a.k.off, v: a.v.off, g: a.g.off, rK, gw, gb, rows: y.rows, H, dk, dv, eps: a.eps })]);
});
