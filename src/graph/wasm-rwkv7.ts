// WASM implementations of the ops of ./ops-rwkv7.ts, on the kernels of src/kernels/rwkv7.ts over
// the T tokens of a chunk (the WKV kernel equals T single steps bit for bit).

import { KernelError } from '../kernels/runtime';
import { rwkv7Keys, rwkv7Output, wkv7, wkv7ScratchBytes } from '../kernels/rwkv7';
import { sameShape } from './graph';
import { RWKV7_KEYS, RWKV7_OUTPUT, WKV7 } from './ops-rwkv7';
import { WASM_OPS as W } from './wasm';

W.set(RWKV7_KEYS, (g, a) => {
  if (g.dry) return;
  sameShape('rwkv7_keys', a.kappa, a.k, a.a);
  if (a.k.width % a.dk) throw new KernelError('rwkv7_keys', `${g.label}: width ${a.k.width} is not a multiple of dk ${a.dk}`);
  rwkv7Keys(g.k, a.kappa.off, a.k.off, a.a.off, a.kK, a.kA, a.k.rows, a.k.width / a.dk, a.dk, a.norm);
});

W.set(WKV7, (g, a) => {
  const { y, H, dk, dv } = a;
  const scratch = g.tmp(Math.ceil(wkv7ScratchBytes(g.k, dk) / 4), 1);
  if (g.dry) return;
  sameShape('wkv7', a.r, a.w, a.k, a.kappa, a.a);
  sameShape('wkv7', y, a.v);
  if (a.r.width !== H * dk || y.width !== H * dv || y.rows !== a.r.rows || y.rows !== g.T) {
    throw new KernelError('wkv7', `${g.label}: ${y.rows}×${y.width} from ${a.r.rows}×${a.r.width} (H ${H}, dk ${dk}, dv ${dv}, ${g.T} tokens)`);
  }
  wkv7(g.k, y.off, g.state(a.state), a.r.off, a.w.off, a.k.off, a.v.off, a.kappa.off, a.a.off, { T: y.rows, H, dk, dv, scratch: scratch.off });
});

W.set(RWKV7_OUTPUT, (g, a) => {
  if (g.dry) return;
  const { y, H, dk, dv } = a;
  sameShape('rwkv7_output', y, a.v, a.g);
  sameShape('rwkv7_output', a.r, a.k);
  if (y.width !== H * dv || a.r.width !== H * dk || a.r.rows !== y.rows) {
    throw new KernelError('rwkv7_output', `${g.label}: ${y.rows}×${y.width} with keys ${a.r.rows}×${a.r.width} (H ${H}, dk ${dk}, dv ${dv})`);
  }
  rwkv7Output(g.k, y.off, a.r.off, a.k.off, a.v.off, a.g.off, a.rK, a.normW, a.normB, y.rows, H, dk, dv, a.eps);
});
