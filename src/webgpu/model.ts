// A loaded model's forward pass on WebGPU, token by token. The WASM model is built first (it
// parses the checkpoint, permutes and quantizes the weights, and defines the net); its weights are
// then uploaded once, in their arena layout (GGUF blocks for Q8_0/Q4_0), and each token runs as
// one command buffer of prebuilt dispatches with only the logits read back.
//
// Covered: DecoderNet of PreNormBlocks with RMSNorm (plain or 1+w), mixers GatedDeltaNet
// (Qwen3-Next) and Attention (GQA, optional per-head q/k RMSNorm, RoPE, Qwen3-Next output gate; no
// biases, windows, soft-capping or sinks), FFNs GatedMlp (SiLU) and Moe (softmax → top-k, optional
// sigmoid-gated shared expert). Anything else is refused at construction with a KernelError naming it.

import { BufferUsage, MapMode } from './flags';
import { KernelError } from '../kernels/runtime';
import { rowBytes, type Weight } from '../kernels/types';
import { Attention } from '../layers/attention';
import type { Ffn, Mixer } from '../layers/context';
import { GatedMlp, type GatedWeights } from '../layers/mlp';
import { Moe } from '../layers/moe';
import { DecoderNet, PreNormBlock, type NormSpec } from '../models/decoder';
import type { Model } from '../models/model';
import { GatedDeltaNet } from '../models/qwen3_next';
import type { GpuDevice } from './device';
import { EW, GpuKernels, writeStep, type Dispatch, type GpuBufs, type GpuWeight } from './ops';

const unsupported = (what: string) => new KernelError('webgpu', `${what} has no WebGPU path yet (use backend 'wasm')`);

/** Bump allocator of float offsets. */
class Floats {
  top = 0;
  take(n: number): number {
    const o = this.top;
    this.top += Math.ceil(Math.max(n, 1) / 4) * 4;
    return o;
  }
}

type Emit = (b: GpuBufs) => Dispatch[];

export interface GpuModelInfo {
  adapter: string;
  weightBytes: number;
  dispatchesPerToken: number;
}

export class GpuModel {
  readonly K: GpuKernels;
  readonly vocab: number;
  readonly hidden: number;
  readonly maxContext: number;
  private readonly act = new Floats();
  private readonly stateLayout = new Floats();
  private readonly consts: Float32Array[] = [];
  private constTop = 0;
  private readonly constByPtr = new Map<number, number>();
  private readonly weights = new Map<string, GpuWeight>();
  private emits: Emit[] = [];
  private c!: GPUBuffer;
  weightBytes = 0;
  readonly logitsOff: number;
  private dispatchCount = 0;

  constructor(readonly model: Model, readonly gpu: GpuDevice) {
    this.K = new GpuKernels(gpu);
    const net = model.net;
    if (!(net instanceof DecoderNet)) throw unsupported(`net ${net.constructor.name}`);
    const d = net.d;
    if (d.logitsDivisor !== undefined || d.finalSoftcap) throw unsupported('logit scaling / soft-capping');
    this.vocab = d.vocab;
    this.hidden = d.hidden;
    this.maxContext = model.maxContext;
    const D = d.hidden;
    const x = this.act.take(D), h = this.act.take(D), o = this.act.take(D);
    const embed = this.weight(d.embed, 'embed');
    const embedScale = d.embedScale ?? 1;
    this.emits.push((b) => [this.K.embed(b, x, embed, { scale: embedScale })]);
    d.blocks.forEach((blk, i) => {
      if (!(blk instanceof PreNormBlock)) throw unsupported(`block ${i} (${blk.constructor.name})`);
      const s = blk.s;
      if (s.residualMultiplier !== undefined) throw unsupported('residual_multiplier');
      this.norm(s.preMixer, h, x, D);
      this.mixer(s.mixer, h, o, `layer ${i}`);
      if (s.postMixer) this.norm(s.postMixer, o, o, D);
      this.emits.push((b) => [this.K.elementwise(b, EW.add, x, x, o, D)]);
      if (s.ffn) {
        this.norm(s.preFfn!, h, x, D);
        this.ffn(s.ffn, h, o, `layer ${i}`);
        if (s.postFfn) this.norm(s.postFfn, o, o, D);
        this.emits.push((b) => [this.K.elementwise(b, EW.add, x, x, o, D)]);
      }
    });
    this.norm(d.finalNorm, h, x, D);
    this.logitsOff = this.act.take(d.vocab);
    const head = this.weight(d.lmHead, 'lm_head');
    const logits = this.logitsOff;
    this.emits.push((b) => [this.K.matmul(b, logits, h, head, 1)]);
    this.c = this.K.upload(this.packConsts(), undefined, 'constants');
  }

  info(): GpuModelInfo {
    return { adapter: this.gpu.adapterName, weightBytes: this.weightBytes, dispatchesPerToken: this.dispatchCount };
  }

  // --- building --------------------------------------------------------------------------------

  private packConsts(): Float32Array {
    const all = new Float32Array(Math.max(this.constTop, 4));
    let o = 0;
    for (const c of this.consts) {
      all.set(c, o);
      o += c.length;
    }
    return all;
  }

  /** Offset of constants in `c` (arena f32 vectors deduplicated by pointer). */
  private constant(data: Float32Array, ptr?: number): number {
    if (ptr !== undefined && this.constByPtr.has(ptr)) return this.constByPtr.get(ptr)!;
    const off = this.constTop;
    this.consts.push(data.slice());
    this.constTop += data.length;
    if (ptr !== undefined) this.constByPtr.set(ptr, off);
    return off;
  }
  private vec(ptr: number, n: number): number {
    return this.constant(this.model.k.arena.f32(ptr, n), ptr);
  }

  private rawWeight(w: Weight): { bytes: Uint8Array; dtype: 'f32' | 'q8_0' | 'q4_0' } {
    const n = w.rows * rowBytes(w.dtype, w.cols);
    const src = this.model.k.arena.u8(w.ptr, n);
    if (w.dtype === 'f32' || w.dtype === 'q8_0' || w.dtype === 'q4_0') return { bytes: src, dtype: w.dtype };
    // f16 / bf16 go up as f32 (exact widening).
    const h = new Uint16Array(src.slice().buffer);
    const f = new Float32Array(h.length);
    const u = new Uint32Array(f.buffer);
    if (w.dtype === 'bf16') for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
    else for (let i = 0; i < h.length; i++) f[i] = f16(h[i]);
    return { bytes: new Uint8Array(f.buffer), dtype: 'f32' };
  }

  private weight(w: Weight, label: string): GpuWeight {
    const key = `${w.ptr}:${w.rows}:${w.cols}:${w.dtype}`;
    let g = this.weights.get(key);
    if (!g) {
      const { bytes, dtype } = this.rawWeight(w);
      g = this.K.weight(bytes, dtype, w.rows, w.cols, 1, label);
      this.weightBytes += bytes.byteLength;
      this.weights.set(key, g);
    }
    return g;
  }

  /** The same matrix of every expert, stacked in one buffer. */
  private stack(ws: Weight[], label: string): GpuWeight {
    const parts = ws.map((w) => this.rawWeight(w));
    const per = parts[0].bytes.byteLength;
    const all = new Uint8Array(per * parts.length);
    parts.forEach((p, e) => all.set(p.bytes, e * per));
    this.weightBytes += all.byteLength;
    return this.K.weight(all, parts[0].dtype, ws[0].rows, ws[0].cols, ws.length, label);
  }

  private norm(n: NormSpec, y: number, x: number, D: number, rows = 1): void {
    if (n.kind === 'layer') throw unsupported('LayerNorm');
    const w = this.vec(n.w, D);
    this.emits.push((b) => [this.K.rmsNorm(b, y, x, w, rows, D, n.eps, { addOne: n.addOne })]);
  }

  private mixer(m: Mixer, x: number, out: number, where: string): void {
    if (m instanceof GatedDeltaNet) return this.gdn(m, x, out);
    if (m instanceof Attention) return this.attention(m, x, out, where);
    throw unsupported(`${where}: mixer ${m.constructor.name}`);
  }

  private gdn(m: GatedDeltaNet, x: number, out: number): void {
    const { Hk, Hv, dk, dv, convK, eps } = m.cfg;
    const convDim = m.convDim;
    const A = this.act;
    const mixed = A.take(convDim), z = A.take(Hv * dv), ba = A.take(2 * Hv), g = A.take(Hv), beta = A.take(Hv), ob = A.take(Hv * dv);
    const qkvz = this.weight(m.qkvz, `${m.prefix}.in_proj_qkvz`), baW = this.weight(m.ba, `${m.prefix}.in_proj_ba`), outW = this.weight(m.out, `${m.prefix}.out_proj`);
    const convW = this.vec(m.convW, convDim * convK);
    const aLog = this.constant(m.aLog), dtBias = this.constant(m.dtBias);
    const normW = this.vec(m.normW, dv);
    const convSt = this.stateLayout.take(convDim * (convK - 1)), S = this.stateLayout.take(Hv * dk * dv);
    this.emits.push((b) => [
      this.K.matmul(b, mixed, x, qkvz, 1, { rows: convDim }),
      this.K.matmul(b, z, x, qkvz, 1, { rows: Hv * dv, rowOff: convDim }),
      this.K.matmul(b, ba, x, baW, 1),
      this.K.conv1d(b, mixed, convW, convSt, 1, convDim, convK, 'silu'),
      this.K.deltaGates(b, g, beta, ba, aLog, dtBias, Hv),
      this.K.deltaStep(b, ob, S, mixed, mixed + Hk * dk, mixed + 2 * Hk * dk, g, beta, { Hv, Hk, dk, dv, scale: 1 / Math.sqrt(dk), normQK: true }),
      this.K.rmsNorm(b, ob, ob, normW, Hv, dv, eps, { gateZ: z }),
      this.K.matmul(b, out, ob, outW, 1),
    ]);
  }

  private attention(m: Attention, x: number, out: number, where: string): void {
    const c = m.cfg;
    if (c.qkvBias || c.oBias) throw unsupported(`${where}: attention biases`);
    if (c.window || c.softcap || c.sinks || c.clip !== undefined || c.qkNorm?.full) throw unsupported(`${where}: sliding window / soft-cap / sinks / clip / full-width q-k norm`);
    const { nHeads, nKv, headDim } = c;
    const vDim = m.vDim;
    const qd = nHeads * headDim, kd = nKv * headDim, vd = nKv * vDim;
    const A = this.act, L = this.maxContext;
    const q = A.take(qd), gate = c.gated ? A.take(qd) : -1, raw = c.gated ? A.take(2 * qd) : -1;
    const kk = A.take(kd), v = A.take(vd), ao = A.take(nHeads * vDim), scores = A.take(nHeads * L);
    const qW = this.weight(m.q, `${m.prefix}.q_proj`), kW = this.weight(m.kw, `${m.prefix}.k_proj`), vW = this.weight(m.v, `${m.prefix}.v_proj`), oW = this.weight(m.o, `${m.prefix}.o_proj`);
    const qn = c.qkNorm ? this.vec(m.qNorm, headDim) : -1, kn = c.qkNorm ? this.vec(m.kNorm, headDim) : -1;
    let cos = 0, sin = 0;
    const r = c.rope;
    if (r) {
      const half = r.rotaryDim / 2;
      const ct = new Float32Array(L * half), sn = new Float32Array(L * half);
      for (let p = 0; p < L; p++) {
        for (let i = 0; i < half; i++) {
          const ang = Math.fround(p * r.invFreq[i]);
          ct[p * half + i] = Math.cos(ang) * r.attentionFactor;
          sn[p * half + i] = Math.sin(ang) * r.attentionFactor;
        }
      }
      cos = this.constant(ct);
      sin = this.constant(sn);
    }
    const kc = this.stateLayout.take(L * kd), vc = this.stateLayout.take(L * vd);
    this.emits.push((b) => {
      const K = this.K, list: Dispatch[] = [];
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
        list.push(K.rope(b, q, 1, nHeads, headDim, r.rotaryDim, r.style, cos, sin));
        list.push(K.rope(b, kk, 1, nKv, headDim, r.rotaryDim, r.style, cos, sin));
      }
      list.push(K.copy(b, kc, kk, 1, kd, { posStride: kd, toState: true }));
      list.push(K.copy(b, vc, v, 1, vd, { posStride: vd, toState: true }));
      list.push(K.attention(b, ao, q, kc, vc, { nHeads, nKv, headDim, vDim, scale: c.scale, scores, maxN: L }));
      if (c.gated) list.push(K.elementwise(b, EW.mulSigmoid, ao, ao, gate, qd));
      list.push(K.matmul(b, out, ao, oW, 1));
      return list;
    });
  }

  private gated(w: GatedWeights, label: string): { gate: GpuWeight; up: GpuWeight; down: GpuWeight } {
    if (w.gateBias || w.upBias || w.downBias) throw unsupported(`${label}: MLP biases`);
    return { gate: this.weight(w.gate, `${label}.gate`), up: this.weight(w.up, `${label}.up`), down: this.weight(w.down, `${label}.down`) };
  }

  private ffn(f: Ffn, x: number, out: number, where: string): void {
    const A = this.act, D = this.hidden;
    if (f instanceof GatedMlp) {
      if (f.act !== 'silu') throw unsupported(`${where}: ${f.act} MLP`);
      const w = this.gated(f.w, `${where}.mlp`);
      const I = f.w.gate.rows, g = A.take(I), u = A.take(I);
      this.emits.push((b) => [
        this.K.matmul(b, g, x, w.gate, 1), this.K.matmul(b, u, x, w.up, 1),
        this.K.elementwise(b, EW.swiglu, g, g, u, I), this.K.matmul(b, out, g, w.down, 1),
      ]);
      return;
    }
    if (!(f instanceof Moe)) throw unsupported(`${where}: FFN ${f.constructor.name}`);
    const c = f.cfg;
    if (c.routing.mode !== 'softmax_topk' || c.routing.bias || c.routing.routedScaling || c.routing.nGroup) throw unsupported(`${where}: MoE routing ${c.routing.mode}`);
    if (c.routerBias || c.runExpert || c.act !== 'silu') throw unsupported(`${where}: MoE router bias / custom experts / ${c.act}`);
    const E = c.nExperts, Kk = c.topk, I = c.inter;
    const router = this.weight(c.router, `${where}.router`);
    const experts = Array.from({ length: E }, (_, e) => c.expert(e));
    const eg = this.stack(experts.map((w) => w.gate), `${where}.experts.gate`);
    const eu = this.stack(experts.map((w) => w.up), `${where}.experts.up`);
    const ed = this.stack(experts.map((w) => w.down), `${where}.experts.down`);
    const logits = A.take(E), rw = A.take(Kk), yg = A.take(Kk * I), yu = A.take(Kk * I), yd = A.take(Kk * D);
    const sh = c.shared ? this.gated(c.shared.w, `${where}.shared`) : null;
    const sI = c.shared?.inter ?? 0;
    const sg = sh ? A.take(sI) : -1, su = sh ? A.take(sI) : -1, sy = sh ? A.take(D) : -1, sgate = c.shared?.gate ? A.take(1) : -1;
    const sgW = c.shared?.gate ? this.weight(c.shared.gate, `${where}.shared_gate`) : null;
    this.emits.push((b) => {
      const K = this.K;
      const list = [
        K.matmul(b, logits, x, router, 1),
        K.route(b, 0, rw, logits, 1, E, Kk, c.routing.renormalize ?? false),
        K.matmul(b, yg, x, eg, Kk, { idsOff: 0, xStride: 0, yStride: I }),
        K.matmul(b, yu, x, eu, Kk, { idsOff: 0, xStride: 0, yStride: I }),
        K.elementwise(b, EW.swiglu, yg, yg, yu, Kk * I),
        K.matmul(b, yd, yg, ed, Kk, { idsOff: 0, xStride: I, yStride: D }),
      ];
      if (sh) {
        list.push(K.matmul(b, sg, x, sh.gate, 1), K.matmul(b, su, x, sh.up, 1), K.elementwise(b, EW.swiglu, sg, sg, su, sI), K.matmul(b, sy, sg, sh.down, 1));
        if (sgW) list.push(K.matmul(b, sgate, x, sgW, 1));
      }
      list.push(K.moeCombine(b, out, yd, rw, D, Kk, sh ? { y: sy, gate: sgW ? sgate : undefined } : undefined));
      return list;
    });
  }

  // --- sessions --------------------------------------------------------------------------------

  newSession(): GpuSession {
    const K = this.K;
    const bufs: GpuBufs = {
      a: K.buffer(this.act.top * 4, undefined, 'activations'),
      st: K.buffer(this.stateLayout.top * 4, undefined, 'state'),
      c: this.c,
      ids: K.buffer(4096, undefined, 'ids'),
      step: K.buffer(16, BufferUsage.UNIFORM | BufferUsage.COPY_DST, 'step'),
    };
    const list = this.emits.flatMap((e) => e(bufs));
    this.dispatchCount = list.length;
    return new GpuSession(this, bufs, list);
  }
}

export class GpuSession {
  tokens: number[] = [];
  private disposed = false;
  constructor(readonly model: GpuModel, private readonly bufs: GpuBufs, private readonly list: Dispatch[]) {}

  get pos(): number {
    return this.tokens.length;
  }

  /** Feeds tokens one by one; resolves to the last token's logits ([V]) or every token's ([T·V]) with `all`. */
  async forward(ids: ArrayLike<number>, all = false): Promise<Float32Array> {
    if (this.disposed) throw new Error('session was disposed');
    const m = this.model, V = m.vocab, n = ids.length, dev = m.K.device;
    if (n === 0) throw new RangeError('forward needs at least one token');
    if (this.pos + n > m.maxContext) throw new RangeError(`context full: ${this.pos} + ${n} tokens > max context ${m.maxContext}`);
    for (let i = 0; i < n; i++) if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= V) throw new RangeError(`token id ${ids[i]} outside the vocabulary [0, ${V})`);
    const rows = all ? n : 1;
    const rd = dev.createBuffer({ size: rows * V * 4, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    for (let t = 0; t < n; t++) {
      writeStep(dev, this.bufs.step, ids[t], this.pos);
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      m.K.encode(pass, this.list);
      pass.end();
      if (all || t === n - 1) enc.copyBufferToBuffer(this.bufs.a, m.logitsOff * 4, rd, (all ? t : 0) * V * 4, V * 4);
      dev.queue.submit([enc.finish()]);
      this.tokens.push(ids[t]);
    }
    await rd.mapAsync(MapMode.READ);
    const out = new Float32Array(rd.getMappedRange().slice(0));
    rd.unmap();
    rd.destroy();
    return out;
  }

  reset(): void {
    const z = new Uint8Array(this.bufs.st.size);
    this.model.K.device.queue.writeBuffer(this.bufs.st, 0, z);
    this.tokens = [];
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.bufs.a.destroy();
    this.bufs.st.destroy();
    this.bufs.ids.destroy();
    this.bufs.step.destroy();
  }
}

function f16(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Builds the WebGPU forward pass of a loaded (WASM) model. */
export function gpuModel(model: Model, gpu: GpuDevice): GpuModel {
  return new GpuModel(model, gpu);
}
