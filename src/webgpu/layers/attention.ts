// Softmax attention (layers/attention.ts Attention) for decode: q/k/v projections, optional
// per-head q/k RMSNorm, RoPE from host-computed tables, the KV cache appended in `st`, GQA decode
// attention, Qwen3-Next's output gate, and the output projection.

import { Attention } from '../../layers/attention';
import { registerMixer, unsupported, type GpuBuilder } from '../builder';
import { EW, type Dispatch } from '../ops';

/** cos/sin tables [maxContext, rotaryDim/2] (attention factor folded in) as constants. */
export function ropeTables(B: GpuBuilder, r: { rotaryDim: number; invFreq: ArrayLike<number>; attentionFactor: number }): { cos: number; sin: number } {
  const L = B.maxContext, half = r.rotaryDim / 2;
  const ct = new Float32Array(L * half), sn = new Float32Array(L * half);
  for (let p = 0; p < L; p++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(p * r.invFreq[i]);
      ct[p * half + i] = Math.cos(ang) * r.attentionFactor;
      sn[p * half + i] = Math.sin(ang) * r.attentionFactor;
    }
  }
  return { cos: B.constant(ct), sin: B.constant(sn) };
}

registerMixer(Attention, (B: GpuBuilder, m: Attention, x: number, out: number, where: string) => {
  const c = m.cfg;
  if (c.qkvBias || c.oBias) throw unsupported(`${where}: attention biases`);
  if (c.window || c.softcap || c.sinks || c.clip !== undefined || c.qkNorm?.full) throw unsupported(`${where}: sliding window / soft-cap / sinks / clip / full-width q-k norm`);
  const { nHeads, nKv, headDim } = c;
  const vDim = m.vDim;
  const qd = nHeads * headDim, kd = nKv * headDim, vd = nKv * vDim;
  const A = B.act, L = B.maxContext;
  const q = A.take(qd), gate = c.gated ? A.take(qd) : -1, raw = c.gated ? A.take(2 * qd) : -1;
  const kk = A.take(kd), v = A.take(vd), ao = A.take(nHeads * vDim), scores = A.take(nHeads * L);
  const qW = B.weight(m.q, `${m.prefix}.q_proj`), kW = B.weight(m.kw, `${m.prefix}.k_proj`), vW = B.weight(m.v, `${m.prefix}.v_proj`), oW = B.weight(m.o, `${m.prefix}.o_proj`);
  const qn = c.qkNorm ? B.vec(m.qNorm, headDim) : -1, kn = c.qkNorm ? B.vec(m.kNorm, headDim) : -1;
  const r = c.rope;
  const tables = r ? ropeTables(B, r) : { cos: 0, sin: 0 };
  const kc = B.state(L * kd, 'kv'), vc = B.state(L * vd, 'kv');
  B.emit((b) => {
    const K = B.K, list: Dispatch[] = [];
    if (c.gated) {
      list.push(K.matmul(b, raw, x, qW, 1));
      list.push(K.copy(b, q, raw, nHeads, headDim, { srcStride: 2 * headDim }));
      list.push(K.copy(b, gate, raw + headDim, nHeads, headDim, { srcStride: 2 * headDim }));
    } else list.push(K.matmul(b, q, x, qW, 1));
    list.push(K.matmul(b, kk, x, kW, 1), K.matmul(b, v, x, vW, 1));
    if (c.qkNorm) {
      list.push(K.rmsNorm(b, q, q, qn, nHeads, headDim, c.qkNorm.eps, { addOne: c.qkNorm.addOne }));
      list.push(K.rmsNorm(b, kk, kk, kn, nKv, headDim, c.qkNorm.eps, { addOne: c.qkNorm.addOne }));
    }
    if (r) {
      list.push(K.rope(b, q, 1, nHeads, headDim, r.rotaryDim, r.style, tables.cos, tables.sin));
      list.push(K.rope(b, kk, 1, nKv, headDim, r.rotaryDim, r.style, tables.cos, tables.sin));
    }
    list.push(K.copy(b, kc, kk, 1, kd, { posStride: kd, toState: true }));
    list.push(K.copy(b, vc, v, 1, vd, { posStride: vd, toState: true }));
    list.push(K.attention(b, ao, q, kc, vc, { nHeads, nKv, headDim, vDim, scale: c.scale, scores, maxN: L }));
    if (c.gated) list.push(K.elementwise(b, EW.mulSigmoid, ao, ao, gate, qd));
    list.push(K.matmul(b, out, ao, oW, 1));
    return list;
  });
});
