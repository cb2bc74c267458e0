// WebGPU implementations of the ops of src/graph/ops-mlstm.ts (kernels/mlstm.wgsl.ts): the recurrence
// runs the recording's tokens in order (one position, or a prompt chunk), so a chunk equals its
// positions replayed one by one.

import { sameShape } from '../graph/graph';
import { MLSTM, MLSTM_OUTPUT } from '../graph/ops-mlstm';
import { KernelError } from '../kernels/runtime';
import { mlstmOutput, mlstmRule } from './dispatch/mlstm';
import { GPU_OPS as G } from './graph';
import { MLSTM_MAX_DK } from './kernels/mlstm.wgsl';

G.set(MLSTM, (g, a) => {
  const { y, H, dk, dv } = a;
  sameShape('mlstm', a.q, a.k);
  sameShape('mlstm', y, a.v);
  sameShape('mlstm', a.i, a.f);
  if (a.q.width !== H * dk || y.width !== H * dv || a.i.width !== H || a.q.rows !== y.rows || a.i.rows !== y.rows) {
    throw new KernelError('mlstm', `${g.label}: ${y.rows}×${y.width} from ${a.q.rows}×${a.q.width} (H ${H}, dk ${dk}, dv ${dv})`);
  }
  if (dk > MLSTM_MAX_DK) throw new KernelError('mlstm', `${g.label}: query/key head size ${dk} > ${MLSTM_MAX_DK} (use backend 'wasm')`);
  const S = g.state(a.state);
  g.emit((b) => [mlstmRule(g.K, b, { y: y.off, S, q: a.q.off, k: a.k.off, v: a.v.off, i: a.i.off, f: a.f.off, T: y.rows, H, dk, dv, eps: a.eps })]);
});

G.set(MLSTM_OUTPUT, (g, a) => {
  sameShape('mlstm_output', a.y, a.o);
  const C = a.H * a.dv;
  if (a.y.width !== C) throw new KernelError('mlstm_output', `${g.label}: width ${a.y.width} is not H ${a.H} × dv ${a.dv}`);
  const w = g.B.vec(a.w, C), bias = a.b ? g.B.vec(a.b, C) : -1;
  g.emit((b) => [mlstmOutput(g.K, b, { y: a.y.off, o: a.o.off, w, b: bias, rows: a.y.rows, H: a.H, dv: a.dv, eps: a.eps })]);
});
