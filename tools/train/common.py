"""Shared pieces of the default-model pipeline: corpus files, document splitting, the token stream,
the validation window protocol, model configurations, parameter and decode-cost accounting.

Corpus format (shared/corpus/README.md): every document is followed by a line holding exactly
`<|endoftext|>`; documents are split on "\\n<|endoftext|>\\n".
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re

EOT = "<|endoftext|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
EOT_ID = 0
VOCAB_SIZE = 8192
SEQ_LEN = 512
EVAL_WINDOW = 512
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------


def corpus_files(corpus_dir: str) -> tuple[list[str], str]:
    """(train files sorted by name, valid file); each may be .txt or .txt.gz (.txt preferred)."""
    names = os.listdir(corpus_dir)
    stems = {}
    for n in names:
        m = re.fullmatch(r"(.+\.txt)(\.gz)?", n)
        if not m:
            continue
        stem = m.group(1)
        if stem not in stems or not m.group(2):
            stems[stem] = os.path.join(corpus_dir, n)
    train = [stems[s] for s in sorted(stems) if s.startswith("train-")]
    if "valid.txt" not in stems:
        raise FileNotFoundError(f"no valid.txt(.gz) in {corpus_dir}")
    if not train:
        raise FileNotFoundError(f"no train-*.txt(.gz) in {corpus_dir}")
    return train, stems["valid.txt"]


def read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8")


def split_documents(text: str) -> list[str]:
    """Documents of one corpus file, without their `<|endoftext|>` separator lines."""
    parts = text.split("\n" + EOT + "\n")
    if parts and parts[-1].endswith("\n" + EOT):
        parts[-1] = parts[-1][: -len(EOT) - 1]
    if parts and parts[0].startswith(EOT + "\n"):
        parts[0] = parts[0][len(EOT) + 1:]
    return [p for p in parts if p]


def file_fingerprint(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}:{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def token_stream(tokenizer, docs: list[str]):
    """[EOT] + doc_1 + [EOT] + doc_2 + [EOT] + ... as a numpy uint16 array.

    Documents are encoded without special tokens; the leading EOT gives the first document the
    same left context as every later one.
    """
    import numpy as np

    encs = tokenizer.encode_batch(docs, add_special_tokens=False)
    total = 1 + sum(len(e.ids) + 1 for e in encs)
    out = np.empty(total, dtype=np.uint16)
    out[0] = EOT_ID
    pos = 1
    for e in encs:
        n = len(e.ids)
        out[pos: pos + n] = e.ids
        out[pos + n] = EOT_ID
        pos += n + 1
    assert pos == total
    return out


def eval_windows(n_tokens: int, window: int = EVAL_WINDOW) -> list[tuple[int, int]]:
    """Validation windows over a stream of n_tokens: [(start, end)], inputs stream[start:end-1],
    targets stream[start+1:end], end - start <= window + 1.

    Window k starts at k*window, so every stream position 1..n_tokens-1 is a target exactly once and
    the context restarts at each window (the first token of a window is never a target in it).
    """
    out = []
    start = 0
    while start < n_tokens - 1:
        end = min(start + window + 1, n_tokens)
        out.append((start, end))
        start += window
    return out


EVAL_PROTOCOL = (
    "valid.txt is split into documents on '\\n<|endoftext|>\\n'; each document is encoded with "
    "tokenizer.json without special tokens; the stream is [0] + doc_1 + [0] + doc_2 + [0] + ... "
    "(0 = <|endoftext|>). Windows start at 0, 512, 1024, ...: window k feeds stream[512k : 512k+512] "
    "(shorter at the end) with no other context and scores the next token at every position, i.e. "
    "targets stream[512k+1 : 512k+513]; every stream token except the first is scored exactly once, "
    "<|endoftext|> targets included. nats = sum of -log softmax(logits)[target]; bytes = sum of the "
    "UTF-8 byte lengths of the documents (separators excluded); bpb = nats / ln 2 / bytes."
)


# ----------------------------------------------------------------------------------------------
# Model configurations
# ----------------------------------------------------------------------------------------------

HIDDEN = 256
LAYERS = 8
HYBRID_LAYER_TYPES = (["linear_attention"] * 3 + ["full_attention"]) * 2
MOE_SIZE_CHOICES = (256, 224, 192, 160, 128, 96, 64)
MAX_PARAMS = 12_000_000


def rope_fields(cfg_cls, theta: float, partial: float | None = None) -> dict:
    """RoPE kwargs in the form this transformers release takes (rope_parameters since v5)."""
    import dataclasses
    import inspect

    keys = set()
    if dataclasses.is_dataclass(cfg_cls):
        keys |= {f.name for f in dataclasses.fields(cfg_cls)}
    try:
        keys |= set(inspect.signature(cfg_cls.__init__).parameters)
    except (TypeError, ValueError):
        pass
    out = {}
    if "rope_parameters" in keys:
        rp = {"rope_type": "default", "rope_theta": float(theta)}
        if partial is not None:
            rp["partial_rotary_factor"] = float(partial)
        out["rope_parameters"] = rp
    else:
        out["rope_theta"] = float(theta)
    if partial is not None:
        out["partial_rotary_factor"] = float(partial)
    return out


def hybrid_kwargs(cfg_cls, moe_intermediate: int) -> dict:
    kw = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        layer_types=list(HYBRID_LAYER_TYPES),
        linear_num_key_heads=4,
        linear_num_value_heads=8,
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        linear_conv_kernel_dim=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=moe_intermediate,
        shared_expert_intermediate_size=moe_intermediate,
        intermediate_size=4 * HIDDEN,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
        initializer_range=0.02,
        router_aux_loss_coef=0.01,
        output_router_logits=True,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
        pad_token_id=EOT_ID,
    )
    kw.update(rope_fields(cfg_cls, 10000.0, partial=0.25))
    return kw


def llama_kwargs(cfg_cls, intermediate: int) -> dict:
    kw = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=intermediate,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        initializer_range=0.02,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
        pad_token_id=EOT_ID,
    )
    kw.update(rope_fields(cfg_cls, 10000.0))
    return kw


def count_params(model) -> int:
    seen = set()
    n = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def build_on_meta(model_cls, config):
    import torch

    try:
        with torch.device("meta"):
            return model_cls(config)
    except Exception:  # noqa: BLE001
        return model_cls(config)


def make_config(arch: str):
    """(config, kwargs, model_cls) for 'hybrid' (Qwen3Next, MoE size picked to stay <= 12 M params)
    or 'llama' (dense, FFN width picked to match the hybrid's total parameter count)."""
    import transformers

    h_cfg_cls = transformers.Qwen3NextConfig
    h_model_cls = transformers.Qwen3NextForCausalLM
    chosen = None
    for size in MOE_SIZE_CHOICES:
        kw = hybrid_kwargs(h_cfg_cls, size)
        cfg = h_cfg_cls(**kw)
        n = count_params(build_on_meta(h_model_cls, cfg))
        if n <= MAX_PARAMS:
            chosen = (cfg, kw, n)
            break
    if chosen is None:
        raise RuntimeError("no MoE size keeps the hybrid under 12 M parameters")
    h_cfg, h_kw, h_params = chosen
    if arch == "hybrid":
        return h_cfg, h_kw, h_model_cls

    l_cfg_cls = transformers.LlamaConfig
    l_model_cls = transformers.LlamaForCausalLM
    probe = l_cfg_cls(**llama_kwargs(l_cfg_cls, 32))
    base = count_params(build_on_meta(l_model_cls, probe)) - LAYERS * 3 * HIDDEN * 32
    inter = max(32, int(round((h_params - base) / (LAYERS * 3 * HIDDEN) / 32.0)) * 32)
    kw = llama_kwargs(l_cfg_cls, inter)
    return l_cfg_cls(**kw), kw, l_model_cls


def active_params(model, config) -> int:
    """Parameters touched per token: all, minus the routed experts that are not selected."""
    total = count_params(model)
    n_exp = getattr(config, "num_experts", None)
    if not n_exp:
        return total
    expert = 0
    for name, p in model.named_parameters():
        if ".mlp.experts." in name:
            expert += p.numel()
    return total - expert + expert * config.num_experts_per_tok // n_exp


def decode_cost(config, arch: str, n_params: int, n_active: int, contexts=(512, 2048)) -> dict:
    """Per-token decode FLOPs (2 per multiply-add) and state size, from the config.

    matmul FLOPs = 2 * active params, where the embedding lookup is free and the lm_head is a matmul
    (with tied embeddings the shared table is counted once, as the lm_head). Attention adds
    4 * heads * head_dim * ctx per full attention layer (scores and weighted sum). A gated-delta-rule
    layer adds about 8 * dk * dv per value head (decay, S^T k, rank-1 update, S^T q); its depthwise
    conv is already in the parameter count. State: K/V cache per token for attention layers; conv
    window and recurrent matrix (fp32) for linear layers.
    """
    H = config.hidden_size
    V = config.vocab_size
    tied = bool(getattr(config, "tie_word_embeddings", False))
    matmul = 2 * (n_active - (0 if tied else V * H))
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    n_full = sum(1 for t in layer_types if t == "full_attention")
    n_lin = sum(1 for t in layer_types if t == "linear_attention")
    head_dim = getattr(config, "head_dim", None) or H // config.num_attention_heads
    kv_per_token = n_full * 2 * config.num_key_value_heads * head_dim
    fixed_state = 0
    lin_flops = 0
    if n_lin:
        dk, dv = config.linear_key_head_dim, config.linear_value_head_dim
        hk, hv = config.linear_num_key_heads, config.linear_num_value_heads
        conv_dim = 2 * hk * dk + hv * dv
        k = config.linear_conv_kernel_dim
        fixed_state = n_lin * (hv * dk * dv + conv_dim * k)
        lin_flops = n_lin * 8 * hv * dk * dv
    out = {
        "arch": arch,
        "params_total": n_params,
        "params_active_per_token": n_active,
        "matmul_flops_per_token": matmul,
        "linear_attention_flops_per_token": lin_flops,
        "kv_cache_floats_per_token": kv_per_token,
        "fixed_state_floats": fixed_state,
        "by_context": {},
    }
    for ctx in contexts:
        attn = n_full * 4 * config.num_attention_heads * head_dim * ctx
        out["by_context"][str(ctx)] = {
            "flops_per_token": matmul + lin_flops + attn,
            "state_bytes_fp32": 4 * (kv_per_token * ctx + fixed_state),
            "state_bytes_kv_fp16_recurrent_fp32": 2 * kv_per_token * ctx + 4 * fixed_state,
        }
    return out


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def bits_per_byte(nats: float, n_bytes: int) -> float:
    return nats / math.log(2) / n_bytes
