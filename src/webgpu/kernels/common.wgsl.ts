// Shared WGSL: every kernel sees the same bind group layout (see ../ops.ts) and declares only the
// bindings it uses. `a` holds activations and scratch, `st` a session's recurrent/KV state, `w` one
// weight matrix as raw u32 words (GGUF block layout for Q8_0/Q4_0 and the K-quants), `c` small f32
// constants (norm weights, conv taps, RoPE tables), `step` the token id and position of the current
// step, `ids` integer scratch (routing ids).

export type ParamType = 'u' | 'f';

/** A kernel's uniform parameters: names in declaration order, `name:f` for f32, otherwise u32. */
export function paramStruct(fields: string[]): string {
  return `struct P {\n${fields.map((f) => {
    const [n, t] = f.split(':');
    return `  ${n}: ${t === 'f' ? 'f32' : 'u32'},`;
  }).join('\n')}\n}\n`;
}

export const BIND = {
  p: '@group(0) @binding(0) var<uniform> p: P;',
  a: '@group(0) @binding(1) var<storage, read_write> a: array<f32>;',
  st: '@group(0) @binding(2) var<storage, read_write> st: array<f32>;',
  /** `st` as words: quantized KV cache rows (kvcache.wgsl.ts). */
  stu: '@group(0) @binding(2) var<storage, read_write> stu: array<u32>;',
  w: '@group(0) @binding(3) var<storage, read> w: array<u32>;',
  c: '@group(0) @binding(4) var<storage, read> c: array<f32>;',
  /** prompt: 1 for the positions of a forward call of several tokens (kernels that treat decode steps apart run them as prefill). */
  step: 'struct Step { tok: u32, pos: u32, n: u32, prompt: u32 }\n@group(0) @binding(5) var<uniform> step: Step;',
  ids: '@group(0) @binding(6) var<storage, read_write> ids: array<u32>;',
};

/** Workgroup tree reductions over `red` (size WG, a power of two). Callers keep control flow uniform. */
export function reductions(wg: number): string {
  return `
var<workgroup> red: array<f32, ${wg}>;
fn wsum(v: f32, li: u32) -> f32 {
  workgroupBarrier();
  red[li] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] += red[li + s]; }
    workgroupBarrier();
  }
  return red[0];
}
fn wmax(v: f32, li: u32) -> f32 {
  workgroupBarrier();
  red[li] = v;
  workgroupBarrier();
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { red[li] = max(red[li], red[li + s]); }
    workgroupBarrier();
  }
  return red[0];
}
`;
}

/** Byte and half-word reads from the u32 weight words (GGUF blocks are 2-byte aligned). */
export const BYTES = `
fn w16(byteOff: u32) -> u32 { return (w[byteOff >> 2u] >> ((byteOff & 2u) * 8u)) & 0xffffu; }
fn wf16(byteOff: u32) -> f32 { return unpack2x16float(w16(byteOff)).x; }
fn i8lo(h: u32) -> f32 { return f32(bitcast<i32>(h << 24u) >> 24u); }
fn i8hi(h: u32) -> f32 { return f32(bitcast<i32>(h << 16u) >> 24u); }
`;

export function kernelSource(fields: string[], binds: (keyof typeof BIND)[], body: string): string {
  return paramStruct(fields) + binds.map((b) => BIND[b]).join('\n') + '\n' + body;
}
