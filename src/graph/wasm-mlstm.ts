// WASM implementations of the ops of ./ops-mlstm.ts, on the kernels of src/kernels/mlstm.ts over the
// T tokens of a chunk (the recurrence over T tokens equals T single steps bit for bit).

import { mlstm, mlstmOutput } from '../kernels/mlstm';
import { KernelError } from '../kernels/runtime';
import { sameShape } from './graph';
import { MLSTM, MLSTM_OUTPUT } from './ops-mlstm';
import { WASM_OPS as W } from './wasm';

W.set(MLSTM, (g, a) => {
  if (g.dry) return;
  const { y, H, dk, dv } = a;
  sameShape('mlstm', a.q, a.k);
  sameShape('mlstm', y, a.v);
  sameShape('mlstm', a.i, a.f);
  if (a.q.width !== H * dk || y.width !== H * dv || a.i.width !== H || a.q.rows !== y.rows || a.i.rows !== y.rows || y.rows !== g.T) {
    throw new KernelError('mlstm', `${g.label}: ${y.rows}×${y.width} from ${a.q.rows}×${a.q.width} (H ${H}, dk ${dk}, dv ${dv}, ${g.T} tokens)`);
  }
  mlstm(g.k, y.off, g.state(a.state), a.q.off, a.k.off, a.v.off, a.i.off, a.f.off, { T: y.rows, H, dk, dv, eps: a.eps });
});

W.set(MLSTM_OUTPUT, (g, a) => {
  if (g.dry) return;
  sameShape('mlstm_output', a.y, a.o);
  if (a.y.width !== a.H * a.dv) throw new KernelError('mlstm_output', `${g.label}: width ${a.y.width} is not H ${a.H} × dv ${a.dv}`);
  mlstmOutput(g.k, a.y.off, a.o.off, a.w, a.b, a.y.rows, a.H, a.dv, a.eps);
});
