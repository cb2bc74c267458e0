// The Mamba-2 mixer of the Mamba-2 hybrids nemotron_h, falcon_h1 and zamba2 (NemotronHMamba2Mixer,
// FalconH1Mixer, Zamba2MambaMixer): the SSD mixer of layers/mamba.ts with the options these families
// add:
//   [z, xBC, dt] = (W_in (s_in · u) + b_in) ⊙ [m_z, m_x, m_B, m_C, m_dt]   (Falcon-H1 µP multipliers)
//   xBC' = SiLU(conv1d(xBC));  y = SSD scan (Δ = clamp(softplus(dt + dt_bias), dtLimit));
//   out mode 'gate':             y ⊙ SiLU(z)                                  (Falcon-H1, mamba_rms_norm False)
//            'norm_after_gate':  RMSNorm_g(y ⊙ SiLU(z)) · w                  (Nemotron-H, Zamba2, Falcon-H1)
//            'norm_before_gate': (RMSNorm_g(y) · w) ⊙ SiLU(z)                (Falcon-H1 mamba_norm_before_gate)
//   RMSNorm_g normalises each of `normGroups` equal slices of d_inner on its own (Zamba2RMSNormGated /
//   FalconH1RMSNormGated), w spanning all of d_inner;  out = W_out y + b_out.

import { ConfigError } from '../formats/errors';
import type { Weight } from '../kernels/types';
import type { Graph, Tensor } from '../graph/graph';
import { causalConv, linear, mul, mulRow, norm, scale, silu } from '../graph/ops';
import { ssdScan } from '../graph/ops-ssm';
import type { Ctx, Mixer } from '../layers/context';
import { rowsOf } from '../layers/mlp';
import type { RegionSpec } from '../runtime/state';

export type HybridMamba2Out = 'gate' | 'norm_after_gate' | 'norm_before_gate';

export interface HybridMamba2Config {
  hidden: number;
  /** heads, head width, groups of B/C, state size, conv kernel */
  H: number;
  P: number;
  G: number;
  N: number;
  W: number;
  inBias: boolean;
  outBias: boolean;
  convBias: boolean;
  /** [min, max] of Δ */
  dtLimit: [number, number];
  out: HybridMamba2Out;
  /** Slices of d_inner the gated RMSNorm normalises separately (n_groups of the norm). */
  normGroups: number;
  normEps: number;
  /** Falcon-H1 ssm_in_multiplier: the input's scale. */
  inScale?: number;
  /** Falcon-H1 ssm_multipliers: scales of the projection's z, x, B, C and dt parts. */
  projScale?: [number, number, number, number, number];
}

/** The conv kernel W: the conv1d kernel implements 2..4. */
function convWidth(W: number): number {
  if (!Number.isInteger(W) || W < 2 || W > 4) throw new ConfigError('config.conv_kernel', `conv kernel ${W} is not supported (2, 3 or 4)`);
  return W;
}

export class HybridMamba2Mixer implements Mixer {
  readonly dInner: number;
  readonly convDim: number;
  readonly inZ: Weight;
  readonly inXBC: Weight;
  readonly inDt: Weight;
  readonly inB: number;
  readonly convW: number;
  readonly convB: number;
  readonly dtBias: number;
  readonly A: number;
  readonly D: number;
  readonly normW: number;
  readonly outW: Weight;
  readonly outB: number;
  /** Arena vector of the x, B, C multipliers over xBC (0: all 1). */
  readonly xbcScale: number;
  readonly convState: RegionSpec;
  readonly ssmState: RegionSpec;

  constructor(readonly ctx: Ctx, readonly prefix: string, readonly cfg: HybridMamba2Config) {
    const { ws } = ctx;
    const { hidden, H, P, G, N } = cfg;
    const W = convWidth(cfg.W);
    const p = prefix;
    if (H % G !== 0) throw new ConfigError('config.n_groups', `${G} does not divide the ${H} Mamba heads`);
    const dInner = (this.dInner = H * P);
    if (dInner % cfg.normGroups !== 0) throw new ConfigError('config.n_groups', `${cfg.normGroups} norm groups do not divide d_inner ${dInner}`);
    const convDim = (this.convDim = dInner + 2 * G * N);
    const inProj = ws.mat(`${p}.in_proj.weight`);
    if (inProj.rows !== dInner + convDim + H || inProj.cols !== hidden) {
      throw new ConfigError(`tensors["${p}.in_proj.weight"].shape`, `is [${inProj.rows}, ${inProj.cols}], expected [${dInner + convDim + H}, ${hidden}]`);
    }
    this.inZ = rowsOf(inProj, 0, dInner);
    this.inXBC = rowsOf(inProj, dInner, convDim);
    this.inDt = rowsOf(inProj, dInner + convDim, H);
    this.inB = cfg.inBias ? ws.vec(`${p}.in_proj.bias`, dInner + convDim + H) : 0;
    const cw = `${p}.conv1d.weight`, shape = ws.shape(cw);
    if (shape.length !== 3 || shape[0] !== convDim || shape[1] !== 1 || shape[2] !== W) {
      throw new ConfigError(`tensors["${cw}"].shape`, `is [${shape}], expected [${convDim}, 1, ${W}]`);
    }
    this.convW = ws.vec(cw, convDim * W);
    this.convB = cfg.convBias ? ws.vec(`${p}.conv1d.bias`, convDim) : 0;
    this.dtBias = ws.vec(`${p}.dt_bias`, H);
    // A = −exp(A_log), as HF computes it in f32.
    const aLog = ctx.f32(ws.vec(`${p}.A_log`, H), H);
    this.A = ctx.k.arena.putF32(Float32Array.from(aLog, (v) => -Math.exp(v))).ptr;
    this.D = ws.vec(`${p}.D`, H);
    this.normW = cfg.out === 'gate' ? 0 : ws.vec(`${p}.norm.weight`, dInner);
    this.outW = ws.mat(`${p}.out_proj.weight`, hidden, dInner);
    this.outB = cfg.outBias ? ws.vec(`${p}.out_proj.bias`, hidden) : 0;
    const m = cfg.projScale;
    if (m && (m[1] !== 1 || m[2] !== 1 || m[3] !== 1)) {
      const v = new Float32Array(convDim);
      v.fill(m[1], 0, dInner);
      v.fill(m[2], dInner, dInner + G * N);
      v.fill(m[3], dInner + G * N);
      this.xbcScale = ctx.k.arena.putF32(v).ptr;
    } else {
      this.xbcScale = 0;
    }
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
    const b = this.inB;
    let x = u;
    if (cfg.inScale !== undefined && cfg.inScale !== 1) {
      x = g.tmp(u.width);
      scale(g, x, u, cfg.inScale);
    }
    linear(g, z, x, this.inZ, b);
    linear(g, xbc, x, this.inXBC, b && b + dInner * 4);
    linear(g, dt, x, this.inDt, b && b + (dInner + convDim) * 4);
    const m = cfg.projScale;
    if (m) {
      if (m[0] !== 1) scale(g, z, z, m[0]);
      if (this.xbcScale) mulRow(g, xbc, this.xbcScale);
      if (m[4] !== 1) scale(g, dt, dt, m[4]);
    }
    causalConv(g, xbc, xbc, { w: this.convW, bias: this.convB, state: this.convState, W, act: 'silu' });

    const gateInScan = cfg.out !== 'norm_before_gate';
    ssdScan(g, { y, xbc, dt, dtBias: this.dtBias, limit: cfg.dtLimit, A: this.A, D: this.D, z: gateInScan ? z : undefined, state: this.ssmState, H, P, G, N });
    if (cfg.out !== 'gate') {
      const groups = cfg.normGroups, eps = cfg.normEps;
      if (groups === 1) {
        norm(g, { w: this.normW, eps }, y, y);
      } else {
        norm(g, { w: 0, eps }, y, y, dInner / groups);
        mulRow(g, y, this.normW);
      }
      if (!gateInScan) {
        silu(g, z, z);
        mul(g, y, y, z);
      }
    }
    linear(g, out, y, this.outW, this.outB);
  }
}
