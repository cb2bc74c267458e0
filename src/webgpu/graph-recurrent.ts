// WebGPU implementations of the ops of src/graph/ops-recurrent.ts: each kernel runs the recording's
// rows in order (one position, or a prompt chunk); those that restart at position 0 read the pass's
// first position from the step uniform.

import { sameShape } from '../graph/graph';
import { REC_ACT, RGLRU, TOKEN_SHIFT, WKV4 } from '../graph/ops-recurrent';
import { KernelError } from '../kernels/runtime';
import { RACT, ract, rglru, tokenShift, wkv4 } from './dispatch/recurrent';
import { GPU_OPS as G } from './graph';

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// The shift kernel writes output j at out + j·stride: outputs evenly spaced (as consecutive
// temporaries are) take one dispatch; others go through a contiguous temporary and copies.
G.set(TOKEN_SHIFT, (g, a) => {
  const { ys, x, mixes } = a;
  sameShape('token_shift', x, ...ys);
  const D = x.width, T = x.rows, nMix = ys.length, n = T * D;
  if (nMix !== mixes.length) throw new KernelError('webgpu', `${g.label}: token_shift of ${nMix} outputs, ${mixes.length} mixes`);
  const mix = g.B.constant(concat(mixes)), st = g.state(a.state);
  const stride = nMix > 1 ? ys[1].off - ys[0].off : n;
  if (stride >= n && ys.every((y, j) => y.off === ys[0].off + j * stride)) {
    g.emit((b) => [tokenShift(g.K, b, ys[0].off, x.off, st, mix, nMix, T, D, stride)]);
    return;
  }
  const tmp = g.tmp(nMix * n, 1);
  g.emit((b) => [
    tokenShift(g.K, b, tmp.off, x.off, st, mix, nMix, T, D, n),
    ...ys.map((y, j) => g.K.copy(b, y.off, tmp.off + j * n, 1, n)),
  ]);
});

G.set(WKV4, (g, a) => {
  sameShape('wkv4', a.y, a.k, a.v);
  const C = a.y.width, st = g.state(a.state);
  const decay = g.B.vec(a.decay, C), first = g.B.vec(a.first, C);
  g.emit((b) => [wkv4(g.K, b, a.y.off, st, a.k.off, a.v.off, decay, first, a.y.rows, C)]);
});


G.set(RGLRU, (g, a) => {
  const { spec: s, x, y, gate } = a;
  sameShape('rglru', x, y, gate);
  const W = s.W, H = s.H, bw = W / H;
  if (y.off === x.off || y.off === gate.off) throw new KernelError('webgpu', `${g.label}: rglru output aliases an input`);
  // The kernel reads the gate blocks as one [H, bw, bw] array.
  const contiguous = (ws: typeof s.gateI) => ws.every((m, h) => m.dtype === 'f32' && m.rows === bw && m.cols === bw && m.ptr === ws[0].ptr + h * bw * bw * 4);
  if (!contiguous(s.gateI) || !contiguous(s.gateA)) throw new KernelError('webgpu', `${g.label}: rglru gate blocks are not one f32 [${H}, ${bw}, ${bw}] array`);
  const B = g.B;
  const gates = {
    mi: B.vec(s.gateI[0].ptr, H * bw * bw), ma: B.vec(s.gateA[0].ptr, H * bw * bw),
    bi: B.vec(s.bI, W), ba: B.vec(s.bA, W), logA: B.constant(s.logABase),
  };
  const h = g.state(a.h);
  g.emit((b) => [rglru(g.K, b, y.off, h, x.off, gate.off, gates, x.rows, W, bw)]);
});

G.set(REC_ACT, (g, a) => {
  const op = a.act === 'relu2' ? RACT.relu2 : RACT.geluTanh, n = a.x.rows * a.x.width;
  g.emit((b) => [ract(g.K, b, op, a.x.off, n)]);
});
