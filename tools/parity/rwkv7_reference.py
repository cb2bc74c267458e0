#!/usr/bin/env python3
"""RWKV-7 ("Goose") parity fixtures without transformers: a float64 numpy port of the official
equations, checked against two independent transcriptions, writing fla-hub HF-format checkpoints
(model_type "rwkv7", fla's RWKV7ForCausalLM tensor names) and the reference files of
docs/parity-fixtures.md.

    python3 tools/parity/rwkv7_reference.py --out test/fixtures/parity [--only NAME] [--check-only]

Three implementations, all float64:

1. `OfficialRwkv7` — the model run token by token as the official equations state them
   (BlinkDL RWKV-LM, RWKV-v7/rwkv_v7_numpy.py): per head the state S [dv, dk] (value rows, key
   columns), decay d = exp(−e^{−1/2}·σ(w0 + tanh(x_w W1) W2)),
       S ← S·Diag(d) − (S κ̂)(κ̂ ⊙ a)ᵀ + v kᵀ,   y = S r,
   GroupNorm per head, the r·k·r_k bonus, the output gate. This is the reference: its logits are
   the fixture's.
2. `FlaRwkv7` — a sequence-level transcription of fla's RWKV7ForCausalLM (fla/layers/rwkv7.py,
   fla/models/rwkv7/modeling_rwkv7.py): token_shift deltas, addcmul lerps, LoRA modules, torch.lerp
   for the value residual, fused_k_rwkv7, gate_output_correction, and the recurrence in the form of
   fla's fused_recurrent_rwkv7 kernel (state h [dk, dv], log-decay w: h ← exp(w) ⊙ h + b (aᵀh) + k vᵀ,
   o = hᵀ r, with a = −κ̂, b = κ̂ ⊙ a), run over the prompt in pieces with the state carried.
3. `wkv7_ggml` — the per-token loop of ggml's rwkv_wkv7 op (llama.cpp ggml-cpu ops.cpp, scalar
   path): state [dv, dk], inputs r, w (the decay itself), k, v, a = −κ̂, b = κ̂ ⊙ a.

`--check-only` (and every fixture run) asserts that the three recurrences agree to 1e-12 on random
inputs and that the two whole models agree to 1e-12 on the fixture (prefill in one piece, in odd
pieces, and token by token).

fla variants the config selects, both implemented: `fuse_norm` true normalises κ̂ with fla's l2_norm
(κ / sqrt(Σκ² + 1e-6)), false with F.normalize (κ / max(‖κ‖, 1e-12), the official form).
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys

import numpy as np

EOS = 2
DECAY_SCALE = math.exp(-0.5)  # 0.6065306597126334: log-decay = −e^{−1/2}·σ(·)


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def resolve(cfg: dict) -> dict:
    """The sizes fla's RWKV7Config / RWKV7Attention / RWKV7FeedForward derive from config.json."""
    D = cfg["hidden_size"]
    hd = cfg.get("head_dim")
    nh = cfg.get("num_heads")
    if hd is not None:
        H = D // hd
    else:
        H, hd = nh, D // nh
    vd = cfg.get("value_dim") or D
    vd = vd[0] if isinstance(vd, list) else vd
    factor = hd / 64

    def lr(name, class_default, mult, use_factor):
        # RWKV7Config's default when absent; RWKV7Attention's formula when null.
        if name not in cfg:
            return class_default
        if cfg[name] is not None:
            return cfg[name]
        return max(32, int(round((mult * D ** 0.5) * (factor if use_factor else 1) / 32) * 32))

    I = cfg.get("intermediate_size")
    if I is None:
        I = int(D * (cfg.get("hidden_ratio") or 4))
        I = 32 * ((I + 31) // 32)
    return dict(
        D=D, H=H, dk=hd, dv=vd // H, vd=vd, I=I, L=cfg["num_hidden_layers"], V=cfg["vocab_size"],
        rw=lr("decay_low_rank_dim", 64, 2.5, True), rg=lr("gate_low_rank_dim", 128, 5, False),
        ra=lr("a_low_rank_dim", 64, 2.5, True), rv=lr("v_low_rank_dim", 16, 1.7, True),
        eps=cfg.get("norm_eps", 1e-5), norm_first=cfg.get("norm_first", True),
        norm_bias=cfg.get("norm_bias", True), fuse_norm=cfg.get("fuse_norm", True),
        tied=cfg.get("tie_word_embeddings", False),
    )


# ----------------------------------------------------------------------------------------------
# Weights (fla HF names, float32 on disk)
# ----------------------------------------------------------------------------------------------


def make_weights(cfg: dict, seed: int, embed_std: float = 0.6, branch_gain: float = 0.7) -> dict:
    """
    Random weights in the ranges fla's initialisation gives, widened so every term matters. A tied
    head without pre_norm takes small embeddings and strong branches, so that the token itself does
    not dominate its own logits.
    """
    s = resolve(cfg)
    rng = np.random.default_rng(seed)
    D, H, dk, vd, I, V = s["D"], s["H"], s["dk"], s["vd"], s["I"], s["V"]
    W = {}

    def normal(shape, std):
        return rng.normal(0.0, std, size=shape)

    def lin(out_f, in_f, gain=1.0):
        return normal((out_f, in_f), gain / math.sqrt(in_f))

    def ln(prefix, n, bias):
        W[f"{prefix}.weight"] = 1 + normal((n,), 0.15)
        if bias:
            W[f"{prefix}.bias"] = normal((n,), 0.1)

    W["model.embeddings.weight"] = normal((V, D), embed_std)
    lin_pos = np.arange(D) / (D - 1) - 0.5
    for i in range(s["L"]):
        p = f"model.layers.{i}"
        if s["norm_first"] and i == 0:
            ln(f"{p}.pre_norm", D, s["norm_bias"])
        ln(f"{p}.attn_norm", D, s["norm_bias"])
        ln(f"{p}.ffn_norm", D, s["norm_bias"])
        a = f"{p}.attn"
        for m in "rwkvag":
            W[f"{a}.x_{m}"] = rng.uniform(0, 1, size=(1, 1, D))
        W[f"{a}.k_k"] = 0.71 - 0.1 * lin_pos + normal((D,), 0.1)
        W[f"{a}.k_a"] = rng.uniform(0.4, 1.6, size=(D,))
        W[f"{a}.r_k"] = normal((H, dk), 0.4)
        W[f"{a}.r_proj.weight"] = lin(D, D)
        W[f"{a}.k_proj.weight"] = lin(D, D)
        W[f"{a}.v_proj.weight"] = lin(vd, D)
        W[f"{a}.o_proj.weight"] = lin(D, vd, branch_gain)
        W[f"{a}.w_lora.lora.0.weight"] = lin(s["rw"], D, 1.5)
        W[f"{a}.w_lora.lora.2.weight"] = lin(D, s["rw"], 1.5)
        W[f"{a}.w_lora.lora.2.bias"] = rng.uniform(-4.0, 1.0, size=(D,))
        W[f"{a}.a_lora.lora.0.weight"] = lin(s["ra"], D)
        W[f"{a}.a_lora.lora.2.weight"] = lin(D, s["ra"])
        W[f"{a}.a_lora.lora.2.bias"] = -0.19 + normal((D,), 0.5)
        if i > 0:
            W[f"{a}.v_lora.lora.0.weight"] = lin(s["rv"], D)
            W[f"{a}.v_lora.lora.2.weight"] = lin(vd, s["rv"])
            W[f"{a}.v_lora.lora.2.bias"] = 0.3 + normal((vd,), 0.6)
        W[f"{a}.g_lora.lora.0.weight"] = lin(s["rg"], D, 1.5)
        W[f"{a}.g_lora.lora.2.weight"] = lin(vd, s["rg"], 1.5)
        W[f"{a}.g_norm.weight"] = 1 + normal((vd,), 0.2)
        W[f"{a}.g_norm.bias"] = normal((vd,), 0.1)
        f = f"{p}.ffn"
        W[f"{f}.x_k"] = rng.uniform(0, 1, size=(D,))
        W[f"{f}.key.weight"] = lin(I, D, 1.5)
        W[f"{f}.value.weight"] = lin(D, I, branch_gain)
    ln("model.norm", D, s["norm_bias"])
    if not s["tied"]:
        W["lm_head.weight"] = lin(V, D, 2.0)
    # The checkpoint is float32; every implementation computes from exactly those values.
    return {k: v.astype(np.float32) for k, v in W.items()}


def write_safetensors(path: str, tensors: dict):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------------------------
# Shared small functions (float64)
# ----------------------------------------------------------------------------------------------


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y + b if b is not None else y


def f64(W):
    return {k: v.astype(np.float64) for k, v in W.items()}


# ----------------------------------------------------------------------------------------------
# 1. The official equations, token by token (the reference)
# ----------------------------------------------------------------------------------------------


class OfficialRwkv7:
    """RWKV-v7/rwkv_v7_numpy.py generalised to fla's options (value_dim, norm_eps, fuse_norm, …)."""

    def __init__(self, cfg: dict, W: dict):
        self.s = resolve(cfg)
        self.W = f64(W)

    def new_state(self):
        s = self.s
        return {
            "att_x": np.zeros((s["L"], s["D"])), "ffn_x": np.zeros((s["L"], s["D"])),
            "S": np.zeros((s["L"], s["H"], s["dv"], s["dk"])),
        }

    def ln(self, name, x):
        return layer_norm(x, self.W[f"{name}.weight"], self.W.get(f"{name}.bias"), self.s["eps"])

    def time_mix(self, i, x, last_x, S, v0):
        s, W = self.s, self.W
        a = f"model.layers.{i}.attn"
        H, dk, dv = s["H"], s["dk"], s["dv"]
        xr, xw, xk, xv, xa, xg = (x + W[f"{a}.x_{m}"].reshape(-1) * (last_x - x) for m in "rwkvag")
        r = W[f"{a}.r_proj.weight"] @ xr
        lora = lambda n, z, act: W[f"{a}.{n}_lora.lora.2.weight"] @ act(W[f"{a}.{n}_lora.lora.0.weight"] @ z)
        w = np.exp(-sigmoid(lora("w", xw, np.tanh) + W[f"{a}.w_lora.lora.2.bias"]) / math.sqrt(math.e))
        k = W[f"{a}.k_proj.weight"] @ xk
        v = W[f"{a}.v_proj.weight"] @ xv
        if i == 0:
            v0 = v
        else:
            v = v + (v0 - v) * sigmoid(lora("v", xv, lambda z: z) + W[f"{a}.v_lora.lora.2.bias"])
        aa = sigmoid(lora("a", xa, lambda z: z) + W[f"{a}.a_lora.lora.2.bias"])
        g = lora("g", xg, sigmoid)
        kk = (k * W[f"{a}.k_k"]).reshape(H, dk)
        n = np.linalg.norm(kk, axis=1, keepdims=True)
        kk = kk / (np.sqrt(n * n + 1e-6) if s["fuse_norm"] else np.maximum(n, 1e-12))
        k = k + k * (aa - 1) * W[f"{a}.k_a"]
        rh, wh, kh, ah = (t.reshape(H, dk) for t in (r, w, k, aa))
        vh = v.reshape(H, dv)
        y = np.zeros((H, dv))
        for h in range(H):
            S[h] = S[h] * wh[h][None, :] - np.outer(S[h] @ kk[h], kk[h] * ah[h]) + np.outer(vh[h], kh[h])
            y[h] = S[h] @ rh[h]
        # GroupNorm over each head's dv outputs, eps = head_dim·norm_eps (official 64e-5 at head size 64).
        mu = y.mean(1, keepdims=True)
        var = ((y - mu) ** 2).mean(1, keepdims=True)
        y = ((y - mu) / np.sqrt(var + dk * s["eps"])).reshape(-1) * W[f"{a}.g_norm.weight"] + W[f"{a}.g_norm.bias"]
        y = y + ((rh * kh * W[f"{a}.r_k"]).sum(1, keepdims=True) * vh).reshape(-1)
        return W[f"{a}.o_proj.weight"] @ (y * g), v0, x

    def channel_mix(self, i, x, last_x):
        f = f"model.layers.{i}.ffn"
        k = self.W[f"{f}.key.weight"] @ (x + self.W[f"{f}.x_k"] * (last_x - x))
        return self.W[f"{f}.value.weight"] @ np.maximum(k, 0) ** 2, x

    def step(self, token: int, st: dict) -> np.ndarray:
        s, W = self.s, self.W
        x = W["model.embeddings.weight"][token]
        v0 = None
        for i in range(s["L"]):
            p = f"model.layers.{i}"
            if s["norm_first"] and i == 0:
                x = self.ln(f"{p}.pre_norm", x)
            dx, v0, st["att_x"][i] = self.time_mix(i, self.ln(f"{p}.attn_norm", x), st["att_x"][i], st["S"][i], v0)
            x = x + dx
            dx, st["ffn_x"][i] = self.channel_mix(i, self.ln(f"{p}.ffn_norm", x), st["ffn_x"][i])
            x = x + dx
        head = W["model.embeddings.weight"] if s["tied"] else W["lm_head.weight"]
        return head @ self.ln("model.norm", x)

    def logits(self, ids) -> np.ndarray:
        st = self.new_state()
        return np.stack([self.step(t, st) for t in ids])

    def greedy(self, prompt, n: int):
        st = self.new_state()
        for t in prompt:
            lg = self.step(t, st)
        out = []
        for _ in range(n):
            lg = lg.copy()
            lg[EOS] = -np.inf  # min_new_tokens = n: EOS masked at every step
            tok = int(np.argmax(lg))
            out.append(tok)
            lg = self.step(tok, st)
        return out


# ----------------------------------------------------------------------------------------------
# 2. fla's RWKV7ForCausalLM, sequence level, state carried between pieces
# ----------------------------------------------------------------------------------------------


def fla_l2_norm(x, fuse_norm):
    n2 = (x * x).sum(-1, keepdims=True)
    if fuse_norm:
        return x / np.sqrt(n2 + 1e-6)  # fla.modules.l2norm (eps inside the root)
    return x / np.maximum(np.sqrt(n2), 1e-12)  # torch.nn.functional.normalize


def torch_lerp(start, end, weight):
    # ATen's lerp: start + w·(end − start) for |w| < 0.5, else end − (end − start)·(1 − w).
    d = end - start
    return np.where(np.abs(weight) < 0.5, start + weight * d, end - d * (1 - weight))


def fla_fused_recurrent(r, w, k, v, kk, a, h):
    """fused_recurrent_rwkv7_fwd_kernel with scale 1: h [H, dk, dv] updated in place; returns o [T, H, dv]."""
    T, H, _ = r.shape
    o = np.zeros((T, H, v.shape[-1]))
    for t in range(T):
        for i in range(H):
            act_a, b = -kk[t, i], kk[t, i] * a[t, i]
            h[i] = np.exp(w[t, i])[:, None] * h[i] + b[:, None] * (act_a[:, None] * h[i]).sum(0)[None, :]
            h[i] += k[t, i][:, None] * v[t, i][None, :]
            o[t, i] = (h[i] * r[t, i][:, None]).sum(0)
    return o


class FlaRwkv7:
    def __init__(self, cfg: dict, W: dict):
        self.s = resolve(cfg)
        self.W = f64(W)

    def new_cache(self):
        s = self.s
        return [{"conv": np.zeros(s["D"]), "ffn": np.zeros(s["D"]), "h": np.zeros((s["H"], s["dk"], s["dv"]))} for _ in range(s["L"])]

    def norm(self, name, x):
        return layer_norm(x, self.W[f"{name}.weight"], self.W.get(f"{name}.bias"), self.s["eps"])

    @staticmethod
    def token_shift(x, cache):
        """fla.modules.token_shift: delta = x_{t−1} − x_t with x_{−1} from the cache; new cache = x_{T−1}."""
        prev = np.concatenate([cache[None, :], x[:-1]], 0)
        return prev - x, x[-1].copy()

    def attn(self, i, x, c, v_first):
        s, W = self.s, self.W
        a = f"model.layers.{i}.attn"
        T = x.shape[0]
        H, dk, dv = s["H"], s["dk"], s["dv"]
        delta, c["conv"] = self.token_shift(x, c["conv"])
        xr, xw, xk, xv, xa, xg = (x + delta * W[f"{a}.x_{m}"].reshape(-1) for m in "rwkvag")

        def lora(n, z, act, bias=True):
            y = act(z @ W[f"{a}.{n}_lora.lora.0.weight"].T) @ W[f"{a}.{n}_lora.lora.2.weight"].T
            return y + W[f"{a}.{n}_lora.lora.2.bias"] if bias else y

        r = xr @ W[f"{a}.r_proj.weight"].T
        w = -DECAY_SCALE * sigmoid(lora("w", xw, np.tanh))
        k = xk @ W[f"{a}.k_proj.weight"].T
        v = xv @ W[f"{a}.v_proj.weight"].T
        if i == 0:
            v_first = v
        else:
            v = torch_lerp(v, v_first, sigmoid(lora("v", xv, lambda z: z)))
        aa = sigmoid(lora("a", xa, lambda z: z))
        g = lora("g", xg, sigmoid, bias=False)
        kk = fla_l2_norm((k * W[f"{a}.k_k"]).reshape(T, H, dk), s["fuse_norm"])
        k = k + (k * (aa - 1)) * W[f"{a}.k_a"]  # fused_k_rwkv7: k.addcmul(k * (a − 1), k_a)
        rh, wh, kh, ah = (t.reshape(T, H, dk) for t in (r, w, k, aa))
        vh = v.reshape(T, H, dv)
        o = fla_fused_recurrent(rh, wh, kh, vh, kk, ah, c["h"])
        mu = o.mean(-1, keepdims=True)
        var = ((o - mu) ** 2).mean(-1, keepdims=True)
        o = ((o - mu) / np.sqrt(var + dk * s["eps"])).reshape(T, -1) * W[f"{a}.g_norm.weight"] + W[f"{a}.g_norm.bias"]
        corr = ((rh * kh * W[f"{a}.r_k"][None]).sum(-1, keepdims=True) * vh).reshape(T, -1)
        return ((o + corr) * g) @ W[f"{a}.o_proj.weight"].T, v_first

    def ffn(self, i, x, c):
        f = f"model.layers.{i}.ffn"
        delta, c["ffn"] = self.token_shift(x, c["ffn"])
        k = (x + delta * self.W[f"{f}.x_k"]) @ self.W[f"{f}.key.weight"].T
        return (np.maximum(k, 0) ** 2) @ self.W[f"{f}.value.weight"].T

    def forward(self, ids, cache):
        s, W = self.s, self.W
        x = W["model.embeddings.weight"][np.asarray(ids)]
        v_first = np.zeros((len(ids), s["vd"]))
        for i in range(s["L"]):
            p = f"model.layers.{i}"
            residual = self.norm(f"{p}.pre_norm", x) if (s["norm_first"] and i == 0) else x
            o, v_first = self.attn(i, self.norm(f"{p}.attn_norm", residual), cache[i], v_first)
            residual = residual + o
            x = residual + self.ffn(i, self.norm(f"{p}.ffn_norm", residual), cache[i])
        head = W["model.embeddings.weight"] if s["tied"] else W["lm_head.weight"]
        return self.norm("model.norm", x) @ head.T

    def logits(self, ids, pieces):
        cache, out, t = self.new_cache(), [], 0
        for n in pieces:
            out.append(self.forward(ids[t:t + n], cache))
            t += n
        assert t == len(ids)
        return np.concatenate(out, 0)


# ----------------------------------------------------------------------------------------------
# 3. ggml's rwkv_wkv7 op (per-token loop), and the recurrence cross-check
# ----------------------------------------------------------------------------------------------


def wkv7_ggml(r, w, k, v, a, b, state):
    """ggml_compute_forward_rwkv_wkv7_f32, scalar path: state [H, dv, dk] (row i: value i); w the decay."""
    T, H, dk = r.shape
    dv = v.shape[-1]
    out = np.zeros((T, H, dv))
    for t in range(T):
        for h in range(H):
            for i in range(dv):
                sa = sum(a[t, h, j] * state[h, i, j] for j in range(dk))
                acc = 0.0
                for j in range(dk):
                    state[h, i, j] = state[h, i, j] * w[t, h, j] + v[t, h, i] * k[t, h, j] + sa * b[t, h, j]
                    acc += state[h, i, j] * r[t, h, j]
                out[t, h, i] = acc
    return out


def wkv7_official(r, w, k, v, kk, a, S):
    """The official state update per head (rwkv_v7_numpy.py): S [H, dv, dk], w the decay."""
    T, H, _ = r.shape
    out = np.zeros((T, H, v.shape[-1]))
    for t in range(T):
        for h in range(H):
            S[h] = S[h] * w[t, h][None, :] - np.outer(S[h] @ kk[t, h], kk[t, h] * a[t, h]) + np.outer(v[t, h], k[t, h])
            out[t, h] = S[h] @ r[t, h]
    return out


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def check_recurrences(seed=1234):
    rng = np.random.default_rng(seed)
    for (T, H, dk, dv) in [(1, 1, 3, 5), (7, 3, 5, 4), (13, 2, 8, 16)]:
        r, k = rng.normal(size=(T, H, dk)), rng.normal(size=(T, H, dk))
        v = rng.normal(size=(T, H, dv))
        logw = -DECAY_SCALE * sigmoid(rng.normal(size=(T, H, dk)) * 3)
        kk = fla_l2_norm(rng.normal(size=(T, H, dk)), False)
        a = sigmoid(rng.normal(size=(T, H, dk)))
        S0 = rng.normal(size=(H, dv, dk))
        S1, S2, h3 = S0.copy(), S0.copy(), S0.transpose(0, 2, 1).copy()
        o1 = wkv7_official(r, np.exp(logw), k, v, kk, a, S1)
        o2 = wkv7_ggml(r, np.exp(logw), k, v, -kk, kk * a, S2)
        o3 = fla_fused_recurrent(r, logw, k, v, kk, a, h3)
        for name, o, S in (("ggml", o2, S2), ("fla", o3, h3.transpose(0, 2, 1))):
            e = max(rel(o, o1), rel(S, S1))
            assert e < 1e-12, f"wkv7 {name} vs official at T={T} H={H} dk={dk} dv={dv}: {e}"
    return True


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------

FIXTURES = [
    dict(
        name="rwkv7-goose", seed=71, T=48,
        notes="RWKV-7 (fla-hub HF layout): hidden 96, head_dim 32 (3 heads), 3 layers, LoRA ranks decay 24 / "
              "gate 40 / a 20 / v 12, intermediate from hidden_ratio 2.75 (264 rounded up to 288), fuse_norm true (κ̂ = κ/√(Σκ²+1e-6)), "
              "norm_first (layer-0 pre_norm), LayerNorm biases, norm_eps 1e-5 (GroupNorm eps 32e-5), untied, vocab 131",
        config=dict(
            hidden_size=96, num_hidden_layers=3, head_dim=32, num_heads=None, decay_low_rank_dim=24,
            gate_low_rank_dim=40, a_low_rank_dim=20, v_low_rank_dim=12, hidden_ratio=2.75, intermediate_size=None,
            norm_first=True, norm_bias=True, norm_eps=1e-5, fuse_norm=True, tie_word_embeddings=False,
            vocab_size=131, value_dim=None,
        ),
    ),
    dict(
        name="rwkv7-vdim-tied", seed=72, T=45, weights=dict(embed_std=0.15, branch_gain=2.0),
        notes="RWKV-7 (fla-hub HF layout): hidden 64, head_dim 16 (4 heads), value_dim 128 (value heads of 32), "
              "3 layers, LoRA ranks decay 16 / gate from the default formula (32) / a 12 / v 8, intermediate_size "
              "160, fuse_norm false (κ̂ = κ/max(‖κ‖, 1e-12), F.normalize), norm_first false (no pre_norm), no "
              "LayerNorm biases, norm_eps 2e-5 (GroupNorm eps 32e-5), tied embeddings, vocab 107",
        config=dict(
            hidden_size=64, num_hidden_layers=3, head_dim=16, num_heads=None, decay_low_rank_dim=16,
            gate_low_rank_dim=None, a_low_rank_dim=12, v_low_rank_dim=8, hidden_ratio=4, intermediate_size=160,
            norm_first=False, norm_bias=False, norm_eps=2e-5, fuse_norm=False, tie_word_embeddings=True,
            vocab_size=107, value_dim=128,
        ),
    ),
]


def hf_config(c: dict) -> dict:
    """config.json as fla's RWKV7Config.save_pretrained writes it (value_dim expanded to a per-layer list)."""
    s = resolve(c)
    out = {
        "architectures": ["RWKV7ForCausalLM"], "model_type": "rwkv7", "attn_mode": "chunk",
        "hidden_act": "sqrelu", "max_position_embeddings": 2048, "attn": None, "use_cache": True,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": EOS, "initializer_range": 0.02,
        "fuse_cross_entropy": True, "fuse_linear_cross_entropy": False, "use_l2warp": True,
        "dtype": "float32",
    }
    for key, val in c.items():
        out[key] = val
    out["value_dim"] = [s["vd"]] * s["L"]
    out["num_heads"] = s["H"]
    return dict(sorted(out.items()))


def make_fixture(fx: dict, out_root: str) -> dict:
    cfg = fx["config"]
    s = resolve(cfg)
    W = make_weights(cfg, fx["seed"], **fx.get("weights", {}))
    rng = np.random.default_rng(fx["seed"] * 1000)
    ids = [int(t) for t in rng.integers(3, s["V"], size=fx["T"])]
    prompt = [int(t) for t in rng.integers(3, s["V"], size=8)]

    ref = OfficialRwkv7(cfg, W)
    logits = ref.logits(ids)
    greedy = ref.greedy(prompt, 10)

    # Cross-check: fla's sequence form in one piece, in odd pieces, and token by token.
    fla = FlaRwkv7(cfg, W)
    T = len(ids)
    checks = {}
    for label, pieces in (("one_piece", [T]), ("pieces_5_17_rest", [5, 17, T - 22]), ("token_by_token", [1] * T)):
        e = rel(fla.logits(ids, pieces), logits)
        assert e < 1e-12, f"{fx['name']}: fla transcription ({label}) differs from the official port by {e}"
        checks[f"fla_{label}_max_rel"] = e

    d = os.path.join(out_root, fx["name"])
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"_from_model_config": True, "bos_token_id": 1, "eos_token_id": EOS, "pad_token_id": 0}, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(d, "model.safetensors"), W)
    logits.astype("<f4").tofile(os.path.join(d, "reference_logits.f32"))
    reference = {
        "family": "rwkv7", "model_type": "rwkv7", "transformers": None, "torch": None,
        "numpy": np.__version__, "seed": fx["seed"], "reference_dtype": "float64",
        "reference": "tools/parity/rwkv7_reference.py: float64 numpy port of the official RWKV-7 equations "
                     "(BlinkDL RWKV-LM RWKV-v7/rwkv_v7_numpy.py) over fla's HF checkpoint layout, run token by token; "
                     "cross-checked against a transcription of fla's RWKV7ForCausalLM (fused_recurrent form) and of "
                     "ggml's rwkv_wkv7 op",
        "input_ids": ids, "logits_shape": [T, s["V"]], "greedy_prompt": prompt, "greedy_tokens": greedy,
        "eos_token_id": EOS, "config_notes": fx["notes"],
        "notes": {
            "cross_check": checks,
            "logits_stats": {
                "logits_std": float(logits.std()), "logits_absmax": float(np.abs(logits).max()),
                "argmax_distinct": int(len(set(np.argmax(logits, 1).tolist()))),
            },
            "weights": "float32 on disk; every implementation computes from those values in float64",
        },
    }
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")
    return {"name": fx["name"], "T": T, "V": s["V"], **checks, **reference["notes"]["logits_stats"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="test/fixtures/parity")
    ap.add_argument("--only", default="")
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    check_recurrences()
    print("wkv7: official, fla fused_recurrent and ggml rwkv_wkv7 agree to 1e-12")
    if args.check_only:
        return 0
    only = {n for n in args.only.split(",") if n}
    for fx in FIXTURES:
        if only and fx["name"] not in only:
            continue
        print(json.dumps(make_fixture(fx, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
