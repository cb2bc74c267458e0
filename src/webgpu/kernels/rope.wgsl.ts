// Rotary embeddings in place on x[T, nHeads, headDim] (rows rowStride apart) for positions
// step.pos + t. cos/sin come from a table computed on the host in f64 ([maxPos, rotaryDim/2] each,
// attention factor folded in): GPU trigonometry is too coarse for large angles.

import { kernelSource } from './common.wgsl';

export const ROPE_PARAMS = ['T', 'nHeads', 'headDim', 'rotaryDim', 'neox', 'xOff', 'rowStride', 'cosOff', 'sinOff'];

export const ropeWgsl = kernelSource(ROPE_PARAMS, ['p', 'a', 'c', 'step'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let half = p.rotaryDim / 2u;
  let i = gid.x % half;
  let h = gid.x / half;
  let t = gid.y;
  if (h >= p.nHeads || t >= p.T) { return; }
  let pos = step.pos + t;
  let cs = c[p.cosOff + pos * half + i];
  let sn = c[p.sinOff + pos * half + i];
  let base = p.xOff + t * p.rowStride + h * p.headDim;
  var ia = base + i;
  var ib = base + i + half;
  if (p.neox == 0u) { ia = base + 2u * i; ib = ia + 1u; }
  let x1 = a[ia];
  let x2 = a[ib];
  a[ia] = x1 * cs - x2 * sn;
  a[ib] = x2 * cs + x1 * sn;
}
`);
