// Naive reference for MoE routing, transcribed from the HF routers (Mixtral / Qwen2-MoE, gpt-oss,
// DeepseekV3TopkRouter), with sort-based top-k (ties: lowest index).

export interface RouteRefOptions {
  mode: 'softmax_topk' | 'topk_softmax' | 'sigmoid';
  renormalize?: boolean; bias?: ArrayLike<number>; nGroup?: number; topkGroup?: number; routedScaling?: number; maskFill?: number;
}

function topk(v: number[], k: number): number[] {
  return v.map((_, i) => i).sort((a, b) => (v[b] - v[a]) || (a - b)).slice(0, k);
}

export function routeRef(logits: ArrayLike<number>, T: number, E: number, k: number, o: RouteRefOptions): { ids: number[][]; w: number[][] } {
  const ids: number[][] = [], ws: number[][] = [];
  for (let t = 0; t < T; t++) {
    const l = Array.from({ length: E }, (_, i) => logits[t * E + i]);
    let sel: number[], w: number[];
    if (o.mode === 'softmax_topk') {
      const m = Math.max(...l);
      const e = l.map((v) => Math.exp(v - m));
      const s = e.reduce((a, b) => a + b, 0);
      const p = e.map((v) => v / s);
      sel = topk(p, k);
      w = sel.map((i) => p[i]);
      if (o.renormalize) {
        const ss = w.reduce((a, b) => a + b, 0);
        w = w.map((v) => v / ss);
      }
    } else if (o.mode === 'topk_softmax') {
      sel = topk(l, k);
      const m = Math.max(...sel.map((i) => l[i]));
      const e = sel.map((i) => Math.exp(l[i] - m));
      const s = e.reduce((a, b) => a + b, 0);
      w = e.map((v) => v / s);
    } else {
      const s = l.map((v) => 1 / (1 + Math.exp(-v)));
      let choice = s.map((v, i) => v + (o.bias ? o.bias[i] : 0));
      const nG = o.nGroup ?? 1;
      if (nG > 1) {
        const gs = E / nG;
        const gScore = Array.from({ length: nG }, (_, g) => {
          const top2 = topk(choice.slice(g * gs, (g + 1) * gs), 2);
          return choice[g * gs + top2[0]] + choice[g * gs + top2[1]];
        });
        const keep = new Set(topk(gScore, o.topkGroup ?? nG));
        choice = choice.map((v, i) => (keep.has(Math.floor(i / gs)) ? v : (o.maskFill ?? 0)));
      }
      sel = topk(choice, k);
      w = sel.map((i) => s[i]);
      if (o.renormalize) {
        const den = w.reduce((a, b) => a + b, 0) + 1e-20;
        w = w.map((v) => v / den);
      }
      const order = sel.map((_, j) => j).sort((a, b) => (w[b] - w[a]) || (sel[a] - sel[b]));
      sel = order.map((j) => sel[j]);
      w = order.map((j) => w[j]);
    }
    const sc = o.routedScaling ?? 1;
    ids.push(sel);
    ws.push(w.map((v) => v * sc));
  }
  return { ids, w: ws };
}
