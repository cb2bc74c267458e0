// Depthwise causal conv1d with a rolling state (Mamba, Mamba2, GatedDeltaNet, RG-LRU, LFM2 short conv).
// x [T, C]; w [C, W] (HF Conv1d weight [C, 1, W]); state [C, W−1], oldest input first.
// y[t, c] = act(bias[c] + Σ_j w[c, j] · in[t − (W−1) + j, c]); inputs before t = 0 come from state.
// Afterwards state holds the last W−1 inputs. y may equal x: each input is read before y[t] is written.
import { sigmoidV } from './vmath';

@inline function silu(v: f32): f32 {
  return v / (1 + Mathf.exp(-v));
}

/**
 * Channels c..c+3 as vectors. The state rows of 4 channels (K floats each, contiguous) and the weight
 * rows (W floats each) are transposed so that lane i of every vector belongs to channel c + i.
 */
@inline function conv4(y: usize, x: usize, w: usize, bias: usize, state: usize, T: i32, C: i32, W: i32, act: i32, c: i32): void {
  const K = W - 1;
  const cs = <usize>C << 2;
  const wc = w + ((<usize>c * <usize>W) << 2);
  const sc = state + ((<usize>c * <usize>K) << 2);
  const zero = f32x4.splat(0);
  let s0 = zero, s1 = zero, s2 = zero;
  let w0 = zero, w1 = zero, w2 = zero, w3 = zero;
  // Gather lane by lane: W ≤ 4 and K ≤ 3 floats per channel, four channels.
  for (let i = 0; i < 4; i++) {
    const wr = wc + ((<usize>(i * W)) << 2), sr = sc + ((<usize>(i * K)) << 2);
    // Align the window to the right: the newest state entry is s2, the current-input weight is w3.
    const ws3 = load<f32>(wr + (<usize>(W - 1) << 2));
    const ws2 = load<f32>(wr + (<usize>(W - 2) << 2));
    const ws1: f32 = W >= 3 ? load<f32>(wr + (<usize>(W - 3) << 2)) : 0;
    const ws0: f32 = W >= 4 ? load<f32>(wr) : 0;
    const ss2 = load<f32>(sr + (<usize>(K - 1) << 2));
    const ss1: f32 = K >= 2 ? load<f32>(sr + (<usize>(K - 2) << 2)) : 0;
    const ss0: f32 = K >= 3 ? load<f32>(sr) : 0;
    if (i == 0) {
      w0 = f32x4.replace_lane(w0, 0, ws0); w1 = f32x4.replace_lane(w1, 0, ws1); w2 = f32x4.replace_lane(w2, 0, ws2); w3 = f32x4.replace_lane(w3, 0, ws3);
      s0 = f32x4.replace_lane(s0, 0, ss0); s1 = f32x4.replace_lane(s1, 0, ss1); s2 = f32x4.replace_lane(s2, 0, ss2);
    } else if (i == 1) {
      w0 = f32x4.replace_lane(w0, 1, ws0); w1 = f32x4.replace_lane(w1, 1, ws1); w2 = f32x4.replace_lane(w2, 1, ws2); w3 = f32x4.replace_lane(w3, 1, ws3);
      s0 = f32x4.replace_lane(s0, 1, ss0); s1 = f32x4.replace_lane(s1, 1, ss1); s2 = f32x4.replace_lane(s2, 1, ss2);
    } else if (i == 2) {
      w0 = f32x4.replace_lane(w0, 2, ws0); w1 = f32x4.replace_lane(w1, 2, ws1); w2 = f32x4.replace_lane(w2, 2, ws2); w3 = f32x4.replace_lane(w3, 2, ws3);
      s0 = f32x4.replace_lane(s0, 2, ss0); s1 = f32x4.replace_lane(s1, 2, ss1); s2 = f32x4.replace_lane(s2, 2, ss2);
    } else {
      w0 = f32x4.replace_lane(w0, 3, ws0); w1 = f32x4.replace_lane(w1, 3, ws1); w2 = f32x4.replace_lane(w2, 3, ws2); w3 = f32x4.replace_lane(w3, 3, ws3);
      s0 = f32x4.replace_lane(s0, 3, ss0); s1 = f32x4.replace_lane(s1, 3, ss1); s2 = f32x4.replace_lane(s2, 3, ss2);
    }
  }
  const b = bias != 0 ? v128.load(bias + (<usize>c << 2)) : zero;
  let px = x + (<usize>c << 2), py = y + (<usize>c << 2);
  for (let t = 0; t < T; t++) {
    const v = v128.load(px);
    // Same summation order as the scalar path: b + w0·s0 + w1·s1 + w2·s2 + w3·v.
    let o = f32x4.add(f32x4.add(f32x4.add(f32x4.add(b, f32x4.mul(w0, s0)), f32x4.mul(w1, s1)), f32x4.mul(w2, s2)), f32x4.mul(w3, v));
    if (act) o = f32x4.mul(o, sigmoidV(o));
    v128.store(py, o);
    s0 = s1; s1 = s2; s2 = v;
    px += cs; py += cs;
  }
  for (let i = 0; i < 4; i++) {
    const sr = sc + ((<usize>(i * K)) << 2);
    const a0 = i == 0 ? f32x4.extract_lane(s0, 0) : i == 1 ? f32x4.extract_lane(s0, 1) : i == 2 ? f32x4.extract_lane(s0, 2) : f32x4.extract_lane(s0, 3);
    const a1 = i == 0 ? f32x4.extract_lane(s1, 0) : i == 1 ? f32x4.extract_lane(s1, 1) : i == 2 ? f32x4.extract_lane(s1, 2) : f32x4.extract_lane(s1, 3);
    const a2 = i == 0 ? f32x4.extract_lane(s2, 0) : i == 1 ? f32x4.extract_lane(s2, 1) : i == 2 ? f32x4.extract_lane(s2, 2) : f32x4.extract_lane(s2, 3);
    store<f32>(sr + (<usize>(K - 1) << 2), a2);
    if (K >= 2) store<f32>(sr + (<usize>(K - 2) << 2), a1);
    if (K >= 3) store<f32>(sr, a0);
  }
}

/** One channel with its window in scalar registers (the tail channels past a multiple of 4). */
function conv1(y: usize, x: usize, w: usize, bias: usize, state: usize, T: i32, C: i32, W: i32, act: i32, c: i32): void {
  const K = W - 1;
  const cs = <usize>C << 2;
  const wc = w + ((<usize>c * <usize>W) << 2);
  const sc = state + ((<usize>c * <usize>K) << 2);
  const b: f32 = bias != 0 ? load<f32>(bias + (<usize>c << 2)) : 0;
  const w3 = load<f32>(wc + (<usize>(W - 1) << 2));
  const w2 = load<f32>(wc + (<usize>(W - 2) << 2));
  const w1: f32 = W >= 3 ? load<f32>(wc + (<usize>(W - 3) << 2)) : 0;
  const w0: f32 = W >= 4 ? load<f32>(wc) : 0;
  let s2 = load<f32>(sc + (<usize>(K - 1) << 2));
  let s1: f32 = K >= 2 ? load<f32>(sc + (<usize>(K - 2) << 2)) : 0;
  let s0: f32 = K >= 3 ? load<f32>(sc) : 0;
  let px = x + (<usize>c << 2), py = y + (<usize>c << 2);
  for (let t = 0; t < T; t++) {
    const v = load<f32>(px);
    let o: f32 = b + w0 * s0 + w1 * s1 + w2 * s2 + w3 * v;
    if (act) o = silu(o);
    store<f32>(py, o);
    s0 = s1; s1 = s2; s2 = v;
    px += cs; py += cs;
  }
  store<f32>(sc + (<usize>(K - 1) << 2), s2);
  if (K >= 2) store<f32>(sc + (<usize>(K - 2) << 2), s1);
  if (K >= 3) store<f32>(sc, s0);
}

export function conv1dF32(y: usize, x: usize, w: usize, bias: usize, state: usize, T: i32, C: i32, W: i32, act: i32): void {
  let c = 0;
  for (; c + 4 <= C; c += 4) conv4(y, x, w, bias, state, T, C, W, act, c);
  for (; c < C; c++) conv1(y, x, w, bias, state, T, C, W, act, c);
}
