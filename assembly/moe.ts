// MoE token routing: expert ids and weights per token from router logits [T, E].
// mode 0 softmax → top-k (Mixtral, Qwen2/3-MoE, OLMoE; renorm = norm_topk_prob)
// mode 1 top-k of logits → softmax over them (gpt-oss, GraniteMoe, JetMoE)
// mode 2 sigmoid (DeepSeek-V3 noaux_tc): s = σ(l); selection on s + bias, limited to the topkGroup
//        groups with the largest sum of their top-2 biased scores; weights are the unbiased s,
//        renormalised (Σ + 1e-20) when renorm; every mode then multiplies by `scaling`.
// Top-k ties go to the lowest index. Output per token is ordered by descending weight.

@inline function sigm(x: f32): f32 {
  return 1 / (1 + Mathf.exp(-x));
}

/** Selection value of expert i in sigmoid mode: biased score, or `fill` outside the kept groups. */
@inline function choiceValue(row: usize, bias: usize, i: i32, groupSize: i32, keep: u64, fill: f32): f32 {
  if (groupSize > 0 && ((keep >> <u64>(i / groupSize)) & 1) == 0) return fill;
  let v = sigm(load<f32>(row + (<usize>i << 2)));
  if (bias != 0) v += load<f32>(bias + (<usize>i << 2));
  return v;
}

/** Sum of the two largest biased scores of group g (HF `.topk(2)[0].sum()`). */
function groupScore(row: usize, bias: usize, g: i32, gs: i32): f32 {
  let a: f32 = -Infinity, b: f32 = -Infinity;
  for (let i = g * gs; i < (g + 1) * gs; i++) {
    const v = choiceValue(row, bias, i, 0, 0, 0);
    if (v > a) { b = a; a = v; } else if (v > b) b = v;
  }
  return a + b;
}

export function routeF32(outIds: usize, outW: usize, logits: usize, T: i32, E: i32, topk: i32, mode: i32, renorm: i32, bias: usize, nGroup: i32, topkGroup: i32, scaling: f32, fill: f32): void {
  for (let t = 0; t < T; t++) {
    const row = logits + ((<usize>t * <usize>E) << 2);
    const ids = outIds + ((<usize>t * <usize>topk) << 2);
    const ws = outW + ((<usize>t * <usize>topk) << 2);
    let keep: u64 = 0;
    let groupSize = 0;
    if (mode == 2 && nGroup > 1) {
      groupSize = E / nGroup;
      // Keep the topkGroup groups with the largest scores (ties: lowest group index).
      let pv: f32 = Infinity, pi = -1;
      for (let j = 0; j < topkGroup; j++) {
        let bv: f32 = -Infinity, bi = -1;
        for (let g = 0; g < nGroup; g++) {
          const v = groupScore(row, bias, g, groupSize);
          if ((v < pv || (v == pv && g > pi)) && (bi < 0 || v > bv)) { bv = v; bi = g; }
        }
        keep |= <u64>1 << <u64>bi;
        pv = bv; pi = bi;
      }
    }
    // Top-k by (value desc, index asc) without scratch: each round takes the best entry that
    // ranks strictly after the previous pick.
    let pv: f32 = Infinity, pi = -1;
    for (let j = 0; j < topk; j++) {
      let bv: f32 = -Infinity, bi = -1;
      for (let i = 0; i < E; i++) {
        const v = mode == 2 ? choiceValue(row, bias, i, groupSize, keep, fill) : load<f32>(row + (<usize>i << 2));
        if ((v < pv || (v == pv && i > pi)) && (bi < 0 || v > bv)) { bv = v; bi = i; }
      }
      store<i32>(ids + (<usize>j << 2), bi);
      pv = bv; pi = bi;
    }
    // Weights.
    if (mode == 0) {
      let m: f32 = -Infinity;
      for (let i = 0; i < E; i++) m = max(m, load<f32>(row + (<usize>i << 2)));
      let s: f64 = 0;
      for (let i = 0; i < E; i++) s += Mathf.exp(load<f32>(row + (<usize>i << 2)) - m);
      let ss: f32 = 0;
      for (let j = 0; j < topk; j++) {
        const w = <f32>(<f64>Mathf.exp(load<f32>(row + (<usize>load<i32>(ids + (<usize>j << 2)) << 2)) - m) / s);
        store<f32>(ws + (<usize>j << 2), w);
        ss += w;
      }
      if (renorm) for (let j = 0; j < topk; j++) store<f32>(ws + (<usize>j << 2), load<f32>(ws + (<usize>j << 2)) / ss);
    } else if (mode == 1) {
      const m = load<f32>(row + (<usize>load<i32>(ids) << 2));
      let s: f32 = 0;
      for (let j = 0; j < topk; j++) {
        const e = Mathf.exp(load<f32>(row + (<usize>load<i32>(ids + (<usize>j << 2)) << 2)) - m);
        store<f32>(ws + (<usize>j << 2), e);
        s += e;
      }
      for (let j = 0; j < topk; j++) store<f32>(ws + (<usize>j << 2), load<f32>(ws + (<usize>j << 2)) / s);
    } else {
      let s: f32 = 0;
      for (let j = 0; j < topk; j++) {
        const w = sigm(load<f32>(row + (<usize>load<i32>(ids + (<usize>j << 2)) << 2)));
        store<f32>(ws + (<usize>j << 2), w);
        s += w;
      }
      if (renorm) {
        const den: f32 = s + <f32>1e-20;
        for (let j = 0; j < topk; j++) store<f32>(ws + (<usize>j << 2), load<f32>(ws + (<usize>j << 2)) / den);
      }
      // Selection ran on biased scores; order the picks by their weights (insertion sort, k ≤ E).
      for (let a = 1; a < topk; a++) {
        const wa = load<f32>(ws + (<usize>a << 2)), ia = load<i32>(ids + (<usize>a << 2));
        let b = a - 1;
        while (b >= 0) {
          const wb = load<f32>(ws + (<usize>b << 2)), ib = load<i32>(ids + (<usize>b << 2));
          if (wb > wa || (wb == wa && ib < ia)) break;
          store<f32>(ws + (<usize>(b + 1) << 2), wb);
          store<i32>(ids + (<usize>(b + 1) << 2), ib);
          b--;
        }
        store<f32>(ws + (<usize>(b + 1) << 2), wa);
        store<i32>(ids + (<usize>(b + 1) << 2), ia);
      }
    }
    if (scaling != 1) for (let j = 0; j < topk; j++) store<f32>(ws + (<usize>j << 2), load<f32>(ws + (<usize>j << 2)) * scaling);
  }
}
