// Elementwise ops over n floats of `a` (y, x, b offsets): 0 add x+b, 1 mul x·b, 2 SwiGLU SiLU(x)·b,
// 3 x·sigmoid(b), 4 copy x, 5 SiLU(x), 6 sigmoid(x), 7 x·s, 8 x + c[b] (a constant vector, e.g. a
// bias), 9 s·tanh(x/s) (soft-capping), 10 x·c[b] (a constant vector).
// copy: per row r (grid z), nChunks chunks of len floats from a (strided, rows srcRow apart) into a
// or st (strided, rows dstRow apart), the destination offset advanced by step.pos · posStride (KV
// cache appends of the pass's rows, head (de)interleaving).

import { kernelSource } from './common.wgsl';

export const EW_PARAMS = ['n', 'op', 'yOff', 'xOff', 'bOff', 'nx', 'period', 's:f'];
export const elementwiseWgsl = kernelSource(EW_PARAMS, ['p', 'a', 'c'], `
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.nx * 256u;
  if (i >= p.n) { return; }
  let x = a[p.xOff + i];
  var y = x;
  switch p.op {
    case 0u: { y = x + a[p.bOff + i]; }
    case 1u: { y = x * a[p.bOff + i]; }
    case 2u: { y = x / (1.0 + exp(-x)) * a[p.bOff + i]; }
    case 3u: { y = x / (1.0 + exp(-a[p.bOff + i])); }
    case 5u: { y = x / (1.0 + exp(-x)); }
    case 6u: { y = 1.0 / (1.0 + exp(-x)); }
    case 7u: { y = x * p.s; }
    case 8u: { y = x + c[p.bOff + i % p.period]; }
    case 9u: { y = p.s * tanh(x / p.s); }
    case 10u: { y = x * c[p.bOff + i % p.period]; }
    default: {}
  }
  a[p.yOff + i] = y;
}
`);

export const COPY_PARAMS = ['nChunks', 'len', 'srcOff', 'srcStride', 'dstOff', 'dstStride', 'posStride', 'toState', 'srcRow', 'dstRow'];
export const copyWgsl = kernelSource(COPY_PARAMS, ['p', 'a', 'st', 'step'], `
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x;
  let ch = gid.y;
  let r = gid.z;
  if (i >= p.len || ch >= p.nChunks) { return; }
  let v = a[p.srcOff + r * p.srcRow + ch * p.srcStride + i];
  let d = p.dstOff + step.pos * p.posStride + r * p.dstRow + ch * p.dstStride + i;
  if (p.toState != 0u) { st[d] = v; } else { a[d] = v; }
}
`);
