// A naive float64 DiffusionGemma (the equations of transformers' DiffusionGemmaForBlockDiffusion) over
// an HF checkpoint directory: the encoder pass over a prompt (causal, sliding window on sliding
// layers) and the denoiser over a canvas after it (bidirectional over the cached prompt — the last
// window − 1 positions on sliding layers — and the canvas), with optional self-conditioning logits.
// Tests compare sparrow's graph against it.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

type T = Float64Array;
const f = Math.fround;

function readTensors(dir: string): Map<string, { shape: number[]; data: T }> {
  const raw = readFileSync(join(dir, 'model.safetensors'));
  const n = Number(raw.readBigUInt64LE(0));
  const hdr = JSON.parse(raw.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { shape: number[]; data: T }>();
  for (const [k, v] of Object.entries(hdr)) {
    if (k === '__metadata__') continue;
    const [a, b] = v.data_offsets;
    const buf = raw.subarray(8 + n + a, 8 + n + b);
    const f32 = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    out.set(k, { shape: v.shape, data: Float64Array.from(f32) });
  }
  return out;
}

/** y[rows, out] = x[rows, in] · W[out, in]ᵀ */
function mm(x: T, rows: number, w: { shape: number[]; data: T }): T {
  const [o, i] = [w.shape[w.shape.length - 2], w.shape[w.shape.length - 1]];
  const y = new Float64Array(rows * o);
  for (let r = 0; r < rows; r++) for (let a = 0; a < o; a++) {
    let s = 0;
    for (let b = 0; b < i; b++) s += x[r * i + b] * w.data[a * i + b];
    y[r * o + a] = s;
  }
  return y;
}

function rms(x: T, dim: number, eps: number, w?: T): T {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / dim; r++) {
    let s = 0;
    for (let i = 0; i < dim; i++) s += x[r * dim + i] ** 2;
    const k = (s / dim + eps) ** -0.5;
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * k * (w ? w[i] : 1);
  }
  return y;
}

const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

interface TextConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  rms_norm_eps: number;
  sliding_window: number;
  layer_types: string[];
  rope_parameters: Record<string, { rope_type: string; rope_theta: number; partial_rotary_factor?: number }>;
  moe_intermediate_size: number;
  num_experts: number;
  top_k_experts: number;
  final_logit_softcapping?: number | null;
}

export class ReferenceDiffusionGemma {
  private readonly W: Map<string, { shape: number[]; data: T }>;
  private readonly t: TextConfig;
  readonly V: number;
  private readonly H: number;
  private cache: { k: T; v: T; D: number; nkv: number }[] = [];
  private P = 0;

  constructor(dir: string) {
    this.W = readTensors(dir);
    this.t = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).text_config;
    this.V = this.t.vocab_size;
    this.H = this.t.hidden_size;
  }

  private w(i: number, name: string, encoder = false): { shape: number[]; data: T } {
    const order = encoder ? ['model.encoder.language_model.', 'model.decoder.'] : ['model.decoder.', 'model.encoder.language_model.'];
    for (const p of order) {
      const x = this.W.get(`${p}layers.${i}.${name}`);
      if (x) return x;
    }
    throw new Error(`no ${name} in layer ${i}`);
  }

  private invFreq(type: string, D: number): Float32Array {
    const rp = this.t.rope_parameters[type];
    const inv = new Float32Array(D / 2);
    const n = rp.rope_type === 'proportional' ? Math.floor(((rp.partial_rotary_factor ?? 1) * D) / 2) : D / 2;
    for (let i = 0; i < n; i++) inv[i] = f(1 / f(Math.pow(f(rp.rope_theta), f((2 * i) / D))));
    return inv;
  }

  private rope(x: T, rows: number, heads: number, D: number, pos0: number, inv: Float32Array): void {
    for (let r = 0; r < rows; r++) for (let h = 0; h < heads; h++) {
      const o = (r * heads + h) * D;
      for (let i = 0; i < D / 2; i++) {
        const ang = f(f(pos0 + r) * inv[i]);
        const c = f(Math.cos(ang)), s = f(Math.sin(ang));
        const a = x[o + i], b = x[o + i + D / 2];
        x[o + i] = a * c - b * s;
        x[o + i + D / 2] = b * c + a * s;
      }
    }
  }

  /** One attention layer: q, k, v of `rows` rows at positions pos0 …; keys seen decided by `visible`. */
  private attention(i: number, h: T, rows: number, pos0: number, encoder: boolean, store: boolean): T {
    const { t, H } = this;
    const nH = t.num_attention_heads, eps = t.rms_norm_eps;
    const qw = this.w(i, 'self_attn.q_proj.weight'), kw = this.w(i, 'self_attn.k_proj.weight');
    const D = qw.shape[0] / nH, nkv = kw.shape[0] / D;
    const q = rms(mm(h, rows, qw), D, eps, this.w(i, 'self_attn.q_norm.weight').data);
    const kraw = mm(h, rows, kw);
    let vraw = kraw;
    try {
      vraw = mm(h, rows, this.w(i, 'self_attn.v_proj.weight'));
    } catch {
      /* full layers: v is the k projection */
    }
    const k = rms(kraw, D, eps, this.w(i, 'self_attn.k_norm.weight').data), v = rms(vraw, D, eps);
    const inv = this.invFreq(t.layer_types[i], D);
    this.rope(q, rows, nH, D, pos0, inv);
    this.rope(k, rows, nkv, D, pos0, inv);
    const sliding = t.layer_types[i] === 'sliding_attention', win = t.sliding_window;
    // Keys: for the encoder, the cache so far plus these rows; for the denoiser, the visible cache plus these rows.
    const prev = this.cache[i];
    const prevLen = prev ? prev.k.length / (nkv * D) : 0;
    const keys = new Float64Array((prevLen + rows) * nkv * D), vals = new Float64Array(keys.length);
    if (prev) {
      keys.set(prev.k);
      vals.set(prev.v);
    }
    keys.set(k, prevLen * nkv * D);
    vals.set(v, prevLen * nkv * D);
    const out = new Float64Array(rows * nH * D), g = nH / nkv;
    for (let r = 0; r < rows; r++) {
      const p = pos0 + r;
      for (let hh = 0; hh < nH; hh++) {
        const kvh = Math.floor(hh / g);
        const sc: number[] = [], idx: number[] = [];
        for (let j = 0; j < prevLen + rows; j++) {
          let ok: boolean;
          if (encoder) ok = j <= p && (!sliding || j > p - win);
          else ok = j >= prevLen || !sliding || j >= prevLen - (win - 1);
          if (!ok) continue;
          let s = 0;
          for (let d = 0; d < D; d++) s += q[(r * nH + hh) * D + d] * keys[(j * nkv + kvh) * D + d];
          sc.push(s);
          idx.push(j);
        }
        const m = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - m)), z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          idx.forEach((j, n) => (acc += (e[n] / z) * vals[(j * nkv + kvh) * D + d]));
          out[(r * nH + hh) * D + d] = acc;
        }
      }
    }
    if (store) this.cache[i] = { k: keys, v: vals, D, nkv };
    return mm(out, rows, this.w(i, 'self_attn.o_proj.weight')).subarray(0, rows * H);
  }

  private ffn(i: number, x: T, rows: number): T {
    const { t, H } = this;
    const eps = t.rms_norm_eps, I = t.moe_intermediate_size, E = t.num_experts, K = t.top_k_experts;
    let h1 = rms(x, H, eps, this.w(i, 'pre_feedforward_layernorm.weight').data);
    const g1 = mm(h1, rows, this.w(i, 'mlp.gate_proj.weight')), u1 = mm(h1, rows, this.w(i, 'mlp.up_proj.weight'));
    for (let j = 0; j < g1.length; j++) g1[j] = gelu(g1[j]) * u1[j];
    h1 = rms(mm(g1, rows, this.w(i, 'mlp.down_proj.weight')), H, eps, this.w(i, 'post_feedforward_layernorm_1.weight').data);
    const r = rms(x, H, eps);
    const sc = this.w(i, 'router.scale').data;
    for (let j = 0; j < r.length; j++) r[j] *= sc[j % H] * H ** -0.5;
    const lg = mm(r, rows, this.w(i, 'router.proj.weight'));
    const pes = this.w(i, 'router.per_expert_scale').data, gu = this.w(i, 'experts.gate_up_proj'), dn = this.w(i, 'experts.down_proj');
    const u = rms(x, H, eps, this.w(i, 'pre_feedforward_layernorm_2.weight').data);
    const h2 = new Float64Array(rows * H);
    for (let tt = 0; tt < rows; tt++) {
      const l = Array.from(lg.subarray(tt * E, tt * E + E)), m = Math.max(...l);
      const p = l.map((x) => Math.exp(x - m)), z = p.reduce((a, b) => a + b, 0);
      const order = p.map((_, e) => e).sort((a, b) => p[b] - p[a] || a - b).slice(0, K);
      const sum = order.reduce((a, e) => a + p[e] / z, 0);
      for (const e of order) {
        const we = (p[e] / z / sum) * pes[e];
        const act = new Float64Array(I);
        for (let a = 0; a < I; a++) {
          let gs = 0, us = 0;
          for (let b = 0; b < H; b++) {
            gs += gu.data[(e * 2 * I + a) * H + b] * u[tt * H + b];
            us += gu.data[(e * 2 * I + I + a) * H + b] * u[tt * H + b];
          }
          act[a] = gelu(gs) * us;
        }
        for (let d = 0; d < H; d++) {
          let s = 0;
          for (let a = 0; a < I; a++) s += dn.data[(e * H + d) * I + a] * act[a];
          h2[tt * H + d] += we * s;
        }
      }
    }
    const h2n = rms(h2, H, eps, this.w(i, 'post_feedforward_layernorm_2.weight').data);
    for (let j = 0; j < h1.length; j++) h1[j] += h2n[j];
    return rms(h1, H, eps, this.w(i, 'post_feedforward_layernorm.weight').data);
  }

  private layers(x: T, rows: number, pos0: number, encoder: boolean): T {
    const { t, H } = this;
    for (let i = 0; i < t.num_hidden_layers; i++) {
      const a = rms(this.attention(i, rms(x, H, t.rms_norm_eps, this.w(i, 'input_layernorm.weight', encoder).data), rows, pos0, encoder, encoder), H, t.rms_norm_eps, this.w(i, 'post_attention_layernorm.weight').data);
      for (let j = 0; j < x.length; j++) x[j] += a[j];
      const fo = this.ffn(i, x, rows);
      const ls = this.w(i, 'layer_scalar', encoder).data[0];
      for (let j = 0; j < x.length; j++) x[j] = (x[j] + fo[j]) * ls;
    }
    return x;
  }

  private head(x: T, rows: number): T {
    const { H, V } = this;
    const n = rms(x, H, this.t.rms_norm_eps, this.W.get('model.decoder.norm.weight')!.data);
    const l = mm(n, rows, this.W.get('model.decoder.embed_tokens.weight')!);
    const cap = this.t.final_logit_softcapping ?? 30;
    for (let j = 0; j < l.length; j++) l[j] = cap * Math.tanh(l[j] / cap);
    return l.subarray(0, rows * V);
  }

  private embed(ids: ArrayLike<number>): T {
    const { H } = this;
    const E = this.W.get('model.decoder.embed_tokens.weight')!.data, s = f(Math.sqrt(H));
    const x = new Float64Array(ids.length * H);
    for (let r = 0; r < ids.length; r++) for (let d = 0; d < H; d++) x[r * H + d] = E[ids[r] * H + d] * s;
    return x;
  }

  /** The encoder pass over `ids` at the next positions (extends the cache); logits of every row. */
  encode(ids: ArrayLike<number>): T {
    const x = this.layers(this.embed(ids), ids.length, this.P, true);
    this.P += ids.length;
    return this.head(x, ids.length);
  }

  /** The denoiser over `canvas` after the cache, with self-conditioning logits [C, V] or none. */
  denoise(canvas: ArrayLike<number>, scLogits: ArrayLike<number> | null): T {
    const { H, V } = this;
    const C = canvas.length;
    const x = this.embed(canvas);
    if (scLogits) {
      const E = this.W.get('model.decoder.embed_tokens.weight')!.data, s = f(Math.sqrt(H));
      const soft = new Float64Array(C * H);
      for (let r = 0; r < C; r++) {
        const l = Array.from(scLogits).slice(r * V, r * V + V), m = Math.max(...l);
        const p = l.map((v) => Math.exp(v - m)), z = p.reduce((a, b) => a + b, 0);
        for (let v = 0; v < V; v++) for (let d = 0; d < H; d++) soft[r * H + d] += (p[v] / z) * E[v * H + d] * s;
      }
      const sc = 'model.decoder.self_conditioning';
      const n = rms(soft, H, this.t.rms_norm_eps, this.W.get(`${sc}.pre_norm.weight`)!.data);
      const g = mm(n, C, this.W.get(`${sc}.gate_proj.weight`)!), u = mm(n, C, this.W.get(`${sc}.up_proj.weight`)!);
      for (let j = 0; j < g.length; j++) g[j] = gelu(g[j]) * u[j];
      const sig = mm(g, C, this.W.get(`${sc}.down_proj.weight`)!);
      for (let j = 0; j < x.length; j++) x[j] += sig[j];
    }
    const xn = rms(x, H, this.t.rms_norm_eps);
    return this.head(this.layers(xn, C, this.P, false), C);
  }
}
