// FalconMamba (FalconMambaForCausalLM, model_type "falcon_mamba"): Mamba-1 whose mixer normalises
// δ, B and C with a weightless RMSNorm (FalconMambaWeightlessRMSNorm, eps = mixer_rms_eps) between
// x_proj and dt_proj / the scan. Everything else is Mamba's.

import { ssmKeepF32 } from '../layers/mamba';
import { num } from './common';
import { buildMamba1Net, parseMamba1Net, type Mamba1NetConfig } from './mamba';
import type { Family } from './net';

export const falconMamba: Family<Mamba1NetConfig> = {
  types: ['falcon_mamba'],
  keepF32: (name) => ssmKeepF32(name),
  parse: (c) => parseMamba1Net(c, { eps: num(c, 'mixer_rms_eps', 1e-6), weighted: false }),
  build: buildMamba1Net,
};
