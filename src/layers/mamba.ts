// Selective state-space mixers: Mamba-1 (S6, per-channel state [dInner, N]) and Mamba-2 (SSD,
// scalar decay per head, state [H, P, N]). Shared by the pure SSM families (mamba, falcon_mamba,
// mamba2) and the hybrids (bamba, granitemoehybrid, jamba). Both keep a depthwise causal conv window
// [C, W−1] and the SSM state per layer, in fp32, exactly what the next token needs.
//
// Mamba-1 (HF MambaMixer / FalconMambaMixer / JambaMambaMixer):
//   [x, z] = W_in u;  x' = SiLU(conv1d(x));  [δ, B, C] = W_x x'   (Falcon, Jamba: RMSNorm on δ, B, C)
//   Δ = softplus(W_dt δ + b_dt);  A = −exp(A_log)
//   h_t = exp(Δ⊗A) ⊙ h_{t−1} + (Δ⊗B_t) x'_t;  y = (h_t C_t + D x') ⊙ SiLU(z);  out = W_out y
// Mamba-2 (HF Mamba2Mixer / BambaMixer / GraniteMoeHybridMambaLayer):
//   [z, xBC, dt] = W_in u;  xBC' = SiLU(conv1d(xBC)) = [x (H·P), B (G·N), C (G·N)]
//   Δ_h = clamp(softplus(dt_h + dt_bias_h), time_step_limit);  A_h = −exp(A_log_h)
//   h_h = exp(Δ_h A_h) h_h + Δ_h x_h ⊗ B_g;  y_h = h_h C_g + D_h x_h   (head h reads group h / (H/G))
//   y = RMSNorm(y ⊙ SiLU(z)) · w  (MambaRMSNormGated, norm_before_gate=False; in transformers 5.17 one
//   norm over all d_inner channels whatever n_groups, for mamba2, bamba and granitemoehybrid alike)

import type { Weight } from '../kernels/types';
import { ConfigError } from '../formats/errors';
import type { Graph, Tensor } from '../graph/graph';
import { causalConv, linear, matmul, norm } from '../graph/ops';
import { selectiveScan, ssdScan } from '../graph/ops-ssm';
import type { RegionSpec } from '../runtime/state';
import type { Ctx, Mixer } from './context';
import { rowsOf } from './mlp';

/** Tensors every SSM family must keep in f32 whatever the load dtype (read by host code or scans). */
export function ssmKeepF32(name: string): boolean {
  return /(^|\.)(A_log|D|dt_bias)$/.test(name) || name.includes('conv1d.') || /norm\.weight$/.test(name);
}

/** HF `time_step_limit` [lo, hi]; JSON has no Infinity, so transformers writes {"__float__": "Infinity"}. */
export function timeStepLimit(c: Record<string, unknown>, field = 'time_step_limit'): [number, number] {
  const v = c[field];
  if (v === undefined || v === null) return [0, Infinity];
  const val = (x: unknown, i: number): number => {
    if (typeof x === 'number') return x;
    const s = x && typeof x === 'object' ? (x as { __float__?: unknown }).__float__ : x;
    if (s === 'Infinity' || s === 'inf' || s === 'Inf') return Infinity;
    if (s === '-Infinity' || s === '-inf') return -Infinity;
    if (x === null && i === 1) return Infinity;
    throw new ConfigError(`config.${field}[${i}]`, `must be a number, got ${JSON.stringify(x)}`);
  };
  if (!Array.isArray(v) || v.length !== 2) throw new ConfigError(`config.${field}`, `must be [min, max], got ${JSON.stringify(v)}`);
  const lo = val(v[0], 0), hi = val(v[1], 1);
  if (!(lo <= hi) || Number.isNaN(lo)) throw new ConfigError(`config.${field}`, `min ${lo} > max ${hi}`);
  return [lo, hi];
}

/** The conv kernel W: the conv1d kernel implements 2..4 (every released Mamba uses 4). */
function convWidth(W: number, field: string): number {
  if (!Number.isInteger(W) || W < 2 || W > 4) throw new ConfigError(`config.${field}`, `conv kernel ${W} is not supported (2, 3 or 4)`);
  return W;
}

/** Depthwise conv weight [C, 1, W] (HF Conv1d) as an f32 [C, W] pointer. */
function convWeight(ctx: Ctx, name: string, C: number, W: number): number {
  const shape = ctx.ws.shape(name);
  if (shape.length !== 3 || shape[0] !== C || shape[1] !== 1 || shape[2] !== W) {
    throw new ConfigError(`tensors["${name}"].shape`, `is [${shape}], expected [${C}, 1, ${W}]`);
  }
  return ctx.ws.vec(name, C * W);
}

/** −exp(A_log) as HF computes it (A_log.float(), so an f32 result), kept in the arena. */
function negExp(ctx: Ctx, aLog: number, n: number): number {
  const src = ctx.f32(aLog, n);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = -Math.exp(src[i]);
  return ctx.k.arena.putF32(a).ptr;
}

// ---- Mamba-1 -------------------------------------------------------------------------------------

export interface Mamba1Config {
  hidden: number;
  /** intermediate_size = expand · hidden */
  dInner: number;
  /** state_size */
  N: number;
  /** time_step_rank */
  R: number;
  /** conv_kernel */
  W: number;
  /** use_bias: in_proj and out_proj biases */
  projBias: boolean;
  /** use_conv_bias */
  convBias: boolean;
  /**
   * RMSNorm of δ, B and C after x_proj: FalconMamba (weightless, mixer_rms_eps) or Jamba
   * (`dt_layernorm`, `b_layernorm`, `c_layernorm` weights, rms_norm_eps).
   */
  innerNorm?: { eps: number; weighted: boolean } | null;
}

export class Mamba1Mixer implements Mixer {
  readonly inX: Weight;
  readonly inZ: Weight;
  readonly inBias: number;
  readonly convW: number;
  readonly convB: number;
  readonly xDelta: Weight;
  readonly xB: Weight;
  readonly xC: Weight;
  readonly dtW: Weight;
  readonly dtB: number;
  readonly A: number;
  readonly D: number;
  readonly outW: Weight;
  readonly outB: number;
  readonly dtNorm: number;
  readonly bNorm: number;
  readonly cNorm: number;
  /** Session state: the conv window and the SSM state. */
  readonly convState: RegionSpec;
  readonly ssmState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: Mamba1Config) {
    const { ws } = ctx;
    const { hidden, dInner, N, R } = cfg;
    const W = convWidth(cfg.W, 'conv_kernel');
    const p = prefix;
    const inProj = ws.mat(`${p}.in_proj.weight`, 2 * dInner, hidden);
    this.inX = rowsOf(inProj, 0, dInner);
    this.inZ = rowsOf(inProj, dInner, dInner);
    this.inBias = cfg.projBias ? ws.vec(`${p}.in_proj.bias`, 2 * dInner) : 0;
    this.convW = convWeight(ctx, `${p}.conv1d.weight`, dInner, W);
    this.convB = cfg.convBias ? ws.vec(`${p}.conv1d.bias`, dInner) : 0;
    const xProj = ws.mat(`${p}.x_proj.weight`, R + 2 * N, dInner);
    this.xDelta = rowsOf(xProj, 0, R);
    this.xB = rowsOf(xProj, R, N);
    this.xC = rowsOf(xProj, R + N, N);
    this.dtW = ws.mat(`${p}.dt_proj.weight`, dInner, R);
    this.dtB = ws.vec(`${p}.dt_proj.bias`, dInner);
    const aShape = ws.shape(`${p}.A_log`);
    if (aShape.length !== 2 || aShape[0] !== dInner || aShape[1] !== N) {
      throw new ConfigError(`tensors["${p}.A_log"].shape`, `is [${aShape}], expected [${dInner}, ${N}]`);
    }
    this.A = negExp(ctx, ws.vec(`${p}.A_log`, dInner * N), dInner * N);
    this.D = ws.vec(`${p}.D`, dInner);
    this.outW = ws.mat(`${p}.out_proj.weight`, hidden, dInner);
    this.outB = cfg.projBias ? ws.vec(`${p}.out_proj.bias`, hidden) : 0;
    const weighted = cfg.innerNorm?.weighted ?? false;
    this.dtNorm = weighted ? ws.vec(`${p}.dt_layernorm.weight`, R) : 0;
    this.bNorm = weighted ? ws.vec(`${p}.b_layernorm.weight`, N) : 0;
    this.cNorm = weighted ? ws.vec(`${p}.c_layernorm.weight`, N) : 0;
    this.convState = { name: `${p}.conv`, kind: 'fixed', floats: dInner * (W - 1) };
    this.ssmState = { name: `${p}.ssm`, kind: 'fixed', floats: dInner * N };
  }

  specs(): RegionSpec[] {
    return [this.convState, this.ssmState];
  }

  forward(g: Graph, u: Tensor, out: Tensor): void {
    const { cfg } = this;
    const { dInner, N, R, W } = cfg;
    const x = g.tmp(dInner), z = g.tmp(dInner), xc = g.tmp(dInner), y = g.tmp(dInner);
    const delta = g.tmp(R), B = g.tmp(N), C = g.tmp(N);

    linear(g, x, u, this.inX, this.inBias);
    linear(g, z, u, this.inZ, this.inBias && this.inBias + dInner * 4);
    causalConv(g, xc, x, { w: this.convW, bias: this.convB, state: this.convState, W, act: 'silu' });

    matmul(g, delta, xc, this.xDelta);
    matmul(g, B, xc, this.xB);
    matmul(g, C, xc, this.xC);
    if (cfg.innerNorm) {
      const eps = cfg.innerNorm.eps;
      norm(g, { w: this.dtNorm, eps }, delta, delta);
      norm(g, { w: this.bNorm, eps }, B, B);
      norm(g, { w: this.cNorm, eps }, C, C);
    }

    selectiveScan(g, { y, x: xc, delta, dtW: this.dtW, dtBias: this.dtB, A: this.A, D: this.D, B, C, z, state: this.ssmState });
    linear(g, out, y, this.outW, this.outB);
  }
}

// ---- Mamba-2 -------------------------------------------------------------------------------------

export interface Mamba2Config {
  hidden: number;
  /** num_heads */
  H: number;
  /** head_dim */
  P: number;
  /** n_groups */
  G: number;
  /** state_size */
  N: number;
  /** conv_kernel */
  W: number;
  /** use_bias: in_proj and out_proj biases */
  projBias: boolean;
  /** use_conv_bias */
  convBias: boolean;
  /** eps of the gated RMSNorm */
  normEps: number;
  /** time_step_limit */
  dtLimit: [number, number];
}

export class Mamba2Mixer implements Mixer {
  readonly dInner: number;
  readonly convDim: number;
  readonly inZ: Weight;
  readonly inXBC: Weight;
  readonly inDt: Weight;
  readonly inBias: number;
  readonly convW: number;
  readonly convB: number;
  readonly dtBias: number;
  readonly A: number;
  readonly D: number;
  readonly normW: number;
  readonly outW: Weight;
  readonly outB: number;
  /** Session state: the conv window and the SSM state. */
  readonly convState: RegionSpec;
  readonly ssmState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: Mamba2Config) {
    const { ws } = ctx;
    const { hidden, H, P, G, N } = cfg;
    const W = convWidth(cfg.W, 'conv_kernel');
    const p = prefix;
    if (H % G !== 0) throw new ConfigError('config.n_groups', `${G} does not divide the ${H} heads`);
    const dInner = (this.dInner = H * P);
    const convDim = (this.convDim = dInner + 2 * G * N);
    const inProj = ws.mat(`${p}.in_proj.weight`);
    // HF splits in_proj as [gate (d_inner) | xBC (conv_dim) | dt (H)]; any other width (older
    // checkpoints with d_mlp parts) would not load in transformers either.
    if (inProj.rows !== dInner + convDim + H || inProj.cols !== hidden) {
      throw new ConfigError(`tensors["${p}.in_proj.weight"].shape`, `is [${inProj.rows}, ${inProj.cols}], expected [${dInner + convDim + H}, ${hidden}]`);
    }
    this.inZ = rowsOf(inProj, 0, dInner);
    this.inXBC = rowsOf(inProj, dInner, convDim);
    this.inDt = rowsOf(inProj, dInner + convDim, H);
    this.inBias = cfg.projBias ? ws.vec(`${p}.in_proj.bias`, dInner + convDim + H) : 0;
    this.convW = convWeight(ctx, `${p}.conv1d.weight`, convDim, W);
    this.convB = cfg.convBias ? ws.vec(`${p}.conv1d.bias`, convDim) : 0;
    this.dtBias = ws.vec(`${p}.dt_bias`, H);
    this.A = negExp(ctx, ws.vec(`${p}.A_log`, H), H);
    this.D = ws.vec(`${p}.D`, H);
    this.normW = ws.vec(`${p}.norm.weight`, dInner);
    this.outW = ws.mat(`${p}.out_proj.weight`, hidden, dInner);
    this.outB = cfg.projBias ? ws.vec(`${p}.out_proj.bias`, hidden) : 0;
    this.convState = { name: `${p}.conv`, kind: 'fixed', floats: convDim * (W - 1) };
    this.ssmState = { name: `${p}.ssm`, kind: 'fixed', floats: H * P * N };
  }

  specs(): RegionSpec[] {
    return [this.convState, this.ssmState];
  }

  forward(g: Graph, u: Tensor, out: Tensor): void {
    const { cfg, dInner, convDim } = this;
    const { H, P, G, N, W } = cfg;
    const z = g.tmp(dInner), xbc = g.tmp(convDim), dt = g.tmp(H), y = g.tmp(dInner);
    const b = this.inBias;

    linear(g, z, u, this.inZ, b);
    linear(g, xbc, u, this.inXBC, b && b + dInner * 4);
    linear(g, dt, u, this.inDt, b && b + (dInner + convDim) * 4);
    causalConv(g, xbc, xbc, { w: this.convW, bias: this.convB, state: this.convState, W, act: 'silu' });

    ssdScan(g, { y, xbc, dt, dtBias: this.dtBias, limit: cfg.dtLimit, A: this.A, D: this.D, z, state: this.ssmState, H, P, G, N });
    // MambaRMSNormGated: RMSNorm(y ⊙ SiLU(z)) · w (the gate is applied by the scan)
    norm(g, { w: this.normW, eps: cfg.normEps }, y, y);
    linear(g, out, y, this.outW, this.outB);
  }
}
