// Generalized linear attention (docs/recurrences.md §2–8, §13–15): vanilla / RetNet / GLA / DeltaNet /
// Gated DeltaNet (Qwen3-Next, Qwen3.5) / KDA / lightning (MiniMax), recurrent and chunked forms.
// All buffers are arena byte offsets of f32, row-major; the state is always f32.
import { checkBuf, checkInt } from './act';
import { KernelError } from './runtime';
import { scanScratch, staticScanScratch } from './scan_scratch';
import type { K } from './types';

export type LinearDecay = 'none' | 'scalar' | 'vector';
export type ScanMode = 'recurrent' | 'chunked' | 'auto';

export interface LinearAttentionOptions {
  T: number;
  /** Heads of v, o, S, g, β. */
  H: number;
  dk: number;
  dv: number;
  /**
   * Heads of q and k (default H; must divide H): head h reads q/k head floor(h / (H / qkHeads)), which is
   * HF's repeat_interleave of q, k to the value heads (Qwen3-Next linear_num_key_heads) without the copy.
   */
  qkHeads?: number;
  /** 'scalar': S ← exp(g)·S with g [T, H]; 'vector': S ← Diag(exp(g))·S with g [T, H, dk] (row-wise over dk). */
  decay: LinearDecay;
  /** Log-decay (≤ 0), see `decay`. */
  g?: number;
  /** β [T, H]: turns on the delta rule u = Sᵀk; S ← S + k(β(v − u))ᵀ. */
  beta?: number;
  /** Multiplies q inside the kernel (HF torch_*_gated_delta_rule: 1/sqrt(dk)). */
  scale: number;
  /**
   * Normalizer state z [H, dk] (fla linear_attn normalize): z ← decay(z) + k, o /= (q·scale)·z + 1e-10.
   * z takes the same gate as S and no delta correction.
   */
  normalizer?: number;
  /** 'auto' (default): chunked when T ≥ chunk, else recurrent. */
  mode?: ScanMode;
  /**
   * Chunk length of the chunked form (default 16: on WASM SIMD the three c·dk·dv products per chunk run
   * at the same speed for any c ≥ 16, while the c²-sized intra-chunk work grows with c; bench/RESULTS.md).
   */
  chunk?: 16 | 32 | 64 | 128;
  /**
   * Scratch for the chunked form (linearAttentionScratchBytes). Without it the kernel uses free
   * committed memory above the arena top, else a small static area of the module (recurrent form only;
   * 'auto' then runs recurrent, 'chunked' throws). Pass one per concurrent caller on the threads build.
   */
  scratch?: number;
}

const DECAY = { none: 0, scalar: 1, vector: 2 } as const;
const CHUNKS = new Set([16, 32, 64, 128]);
/** Default chunk length of linearAttention, lightningAttention and linearAttentionScratchBytes. */
export const LINEAR_ATTENTION_CHUNK = 16;

/**
 * Bytes of scratch `opts.scratch` must hold for these sizes and the chunk the call uses (default
 * LINEAR_ATTENTION_CHUNK; independent of T and H). The kernel trusts this size: it cannot see the
 * extent of a caller's buffer.
 */
export function linearAttentionScratchBytes(k: K, o: { dk: number; dv: number; decay: LinearDecay; delta: boolean; chunk?: number }): number {
  return k.exports.linearAttentionScratchFloats(o.dk, o.dv, o.chunk ?? LINEAR_ATTENTION_CHUNK, DECAY[o.decay], o.delta ? 1 : 0) * 4;
}

/**
 * Per head h: q, k [T, H, dk] (`kk` is the key buffer; `k` the kernel instance), v, o [T, H, dv],
 * state S [H, dk, dv] read and updated in place. Per token:
 *   S ← exp(g)·S | Diag(exp(g))·S;  delta: u = Sᵀk, S ← S + k(β(v − u))ᵀ, else S ← S + k vᵀ;  o = Sᵀ(q·scale).
 * With decay 'scalar' and beta this is HF torch_recurrent_gated_delta_rule (q, k l2-normalised by the
 * caller). The chunked form (HF torch_chunk_gated_delta_rule with the WY/UT transform for the delta rule,
 * simple-GLA / GLA forms otherwise) carries S in and out, so prefill chunks and decode steps compose.
 */
export function linearAttention(k: K, o: number, S: number, q: number, kk: number, v: number, opts: LinearAttentionOptions): void {
  const kernel = 'linearAttention';
  const { T, H, dk, dv } = opts;
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'dk', dk);
  checkInt(kernel, 'dv', dv);
  const Hk = opts.qkHeads ?? H;
  checkInt(kernel, 'qkHeads', Hk);
  if (H % Hk !== 0) throw new KernelError(kernel, `qkHeads ${Hk} does not divide H ${H}`);
  const decay = DECAY[opts.decay];
  if (decay === undefined) throw new KernelError(kernel, `decay must be 'none', 'scalar' or 'vector', got ${opts.decay}`);
  if (!Number.isFinite(opts.scale)) throw new KernelError(kernel, `scale must be finite, got ${opts.scale}`);
  const g = opts.g ?? 0, beta = opts.beta ?? 0, z = opts.normalizer ?? 0;
  if (decay !== 0 && g === 0) throw new KernelError(kernel, `g: decay '${opts.decay}' needs a log-decay buffer`);
  if (decay === 0 && g !== 0) throw new KernelError(kernel, `g: given with decay 'none'`);
  checkBuf(k, kernel, 'o', o, T * H * dv * 4);
  checkBuf(k, kernel, 'S', S, H * dk * dv * 4);
  checkBuf(k, kernel, 'q', q, T * Hk * dk * 4);
  checkBuf(k, kernel, 'k', kk, T * Hk * dk * 4);
  checkBuf(k, kernel, 'v', v, T * H * dv * 4);
  if (decay === 1) checkBuf(k, kernel, 'g', g, T * H * 4);
  if (decay === 2) checkBuf(k, kernel, 'g', g, T * H * dk * 4);
  if (beta !== 0) checkBuf(k, kernel, 'beta', beta, T * H * 4);
  if (z !== 0) checkBuf(k, kernel, 'normalizer', z, H * dk * 4);
  run(k, kernel, o, S, q, kk, v, T, H, Hk, dk, dv, decay, g, 1, H, beta, opts.scale, z, opts.mode ?? 'auto', opts.chunk ?? LINEAR_ATTENTION_CHUNK, opts.scratch);
}

function run(k: K, kernel: string, o: number, S: number, q: number, kk: number, v: number, T: number, H: number, Hk: number, dk: number, dv: number,
  decay: number, g: number, gScale: number, gsT: number, beta: number, scale: number, z: number, mode: ScanMode, chunk: number, scratch: number | undefined): void {
  if (mode !== 'recurrent' && mode !== 'chunked' && mode !== 'auto') throw new KernelError(kernel, `mode must be 'recurrent', 'chunked' or 'auto', got ${mode}`);
  if (!CHUNKS.has(chunk)) throw new KernelError(kernel, `chunk must be 16, 32, 64 or 128, got ${chunk}`);
  if (T === 0) return;
  let useChunk = mode === 'chunked' || (mode === 'auto' && T >= chunk);
  const need = k.exports.linearAttentionScratchFloats(dk, dv, chunk, decay, beta !== 0 ? 1 : 0) * 4;
  let scr = scanScratch(k, kernel, scratch, need);
  if (!scr) {
    if (mode === 'chunked') throw new KernelError(kernel, `scratch: the chunked form needs ${need} bytes (linearAttentionScratchBytes); pass opts.scratch`);
    useChunk = false;
    // The recurrent form's token-group buffers fit the module's static area for dk ≤ 1016.
    scr = staticScanScratch(k);
    if (scr.bytes < (dk + 8) * 4) throw new KernelError(kernel, `scratch: needs ${need} bytes (linearAttentionScratchBytes); pass opts.scratch`);
  }
  k.exports.linearAttentionF32(o, S, q, kk, v, T, H, Hk, dk, dv, decay, g, gScale, gsT, beta, scale, z, useChunk ? chunk : 0,
    scr.ptr, Math.floor(scr.bytes / 4), 0, H);
}

export interface LightningOptions {
  T: number;
  H: number;
  /** head_dim (q, k and v). */
  d: number;
  /**
   * HF config block_size. The chunked prefill uses LINEAR_ATTENTION_CHUNK-token chunks whatever the
   * block size (the result is the same within f32 rounding), so the scratch is
   * linearAttentionScratchBytes({ dk: d, dv: d, decay: 'scalar', delta: false }).
   */
  blockSize: number;
  mode?: ScanMode;
  scratch?: number;
}

/**
 * MiniMax lightning attention (HF MiniMaxLightningAttention): per head S ← exp(−s_h)·S + kᵀv, o = qS,
 * no scale. slopes: f32[H], the per-head s_h (HF slope_rate). q, k, v, o [T, H, d]; S [H, d, d].
 * Prefill in blocks equals the step form; both are linearAttention with a constant per-head gate.
 */
export function lightningAttention(k: K, o: number, S: number, q: number, kk: number, v: number, slopes: number, opts: LightningOptions): void {
  const kernel = 'lightningAttention';
  const { T, H, d } = opts;
  checkInt(kernel, 'T', T, 0);
  checkInt(kernel, 'H', H);
  checkInt(kernel, 'd', d);
  checkInt(kernel, 'blockSize', opts.blockSize);
  checkBuf(k, kernel, 'o', o, T * H * d * 4);
  checkBuf(k, kernel, 'S', S, H * d * d * 4);
  checkBuf(k, kernel, 'q', q, T * H * d * 4);
  checkBuf(k, kernel, 'k', kk, T * H * d * 4);
  checkBuf(k, kernel, 'v', v, T * H * d * 4);
  checkBuf(k, kernel, 'slopes', slopes, H * 4);
  const chunk = LINEAR_ATTENTION_CHUNK;
  // g = −s_h for every token: gate pointer at the slopes with a token stride of 0 and gScale −1.
  run(k, kernel, o, S, q, kk, v, T, H, H, d, d, 1, slopes, -1, 0, 0, 1, 0, opts.mode ?? 'auto', chunk, opts.scratch);
}
