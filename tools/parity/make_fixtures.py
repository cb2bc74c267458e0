#!/usr/bin/env python3
"""Build tiny random-weight parity fixtures with Hugging Face transformers (format:
docs/parity-fixtures.md).

For every fixture:
  DIR/<name>/config.json, model.safetensors, generation_config.json   (save_pretrained, float32)
  DIR/<name>/reference.json                                            (ids, greedy tokens, notes)
  DIR/<name>/reference_logits.f32                                      (little-endian float32 [T, V])

The reference is computed from the checkpoint as written to disk (reloaded with from_pretrained),
in float64 where the model runs in float64, otherwise float32. Attention and MoE experts run their
eager implementations. Each fixture is built inside its own try/except; a failure prints
"FAIL <name>: <error>" with the traceback and the run goes on. DIR/summary.json lists the outcome.

Usage:
  python3 tools/parity/make_fixtures.py --out DIR [--only a,b] [--seed N] [--device cpu|cuda] [--list]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

EOS_ID = 2
BOS_ID = 1
PAD_ID = 0
FIRST_INPUT_ID = 3  # input ids are drawn from [3, V) so pad/bos/eos never appear in them
GREEDY_PROMPT_LEN = 8
GREEDY_NEW_TOKENS = 10

# Keys every PreTrainedConfig accepts through its base class even when a subclass signature does not list them.
BASE_CONFIG_KEYS = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
    "use_cache",
    "attn_implementation",
    "experts_implementation",
    "output_router_logits",
}
# Keys handed to the config but not compared afterwards (consumed by __post_init__ or by the base class).
UNVERIFIED_KEYS = {"attn_implementation", "experts_implementation"}


class FixtureError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# Fixture specifications
# ----------------------------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    family: str
    config_class: str
    model_class: str
    seq_len: int
    notes: str
    # Callable(config_cls) -> list of kwargs dicts; the first that builds is used (later ones are
    # fallbacks for field names that changed between transformers releases).
    variants: Callable[[type], list[dict]]
    expected_rotary_dims: set | None = None  # sizes of every inv_freq buffer × 2; None skips the check
    extra_ok: set = field(default_factory=set)  # kwargs accepted through **kwargs by this config
    no_verify: set = field(default_factory=set)  # kwargs the config legitimately rewrites
    checks: list = field(default_factory=list)  # Callable(config) -> None, raising on mismatch
    moe: bool = False


def rope(theta: float, rope_type: str = "default", **extra) -> dict:
    params = {"rope_type": rope_type, "rope_theta": float(theta)}
    params.update(extra)
    return params


def known_config_keys(cfg_cls: type) -> set:
    """Field names a config class accepts: dataclass fields, explicit __init__ parameters, attribute_map keys."""
    keys = set()
    if dataclasses.is_dataclass(cfg_cls):
        keys |= {f.name for f in dataclasses.fields(cfg_cls)}
    try:
        sig = inspect.signature(cfg_cls.__init__)
        for pname, p in sig.parameters.items():
            if pname == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            keys.add(pname)
    except (TypeError, ValueError):
        pass
    keys |= set(getattr(cfg_cls, "attribute_map", {}) or {})
    return keys


def rope_kwargs(cfg_cls: type, params: dict, partial: float | None = None) -> dict:
    """RoPE settings in whichever form this transformers release takes (rope_parameters since v5)."""
    keys = known_config_keys(cfg_cls)
    if "rope_parameters" in keys:
        rp = dict(params)
        if partial is not None:
            rp["partial_rotary_factor"] = float(partial)
        out = {"rope_parameters": rp}
        if partial is not None and "partial_rotary_factor" in keys:
            out["partial_rotary_factor"] = float(partial)
        return out
    if "rope_theta" in keys:
        out = {"rope_theta": params["rope_theta"]}
        if params.get("rope_type", "default") != "default":
            if "rope_scaling" not in keys:
                raise FixtureError(f"{cfg_cls.__name__} has neither rope_parameters nor rope_scaling")
            out["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"}
        if partial is not None:
            out["partial_rotary_factor"] = float(partial)
        return out
    raise FixtureError(f"{cfg_cls.__name__} exposes no RoPE field (rope_parameters / rope_theta)")


def check_attr(name: str, expected):
    def _check(config):
        got = getattr(config, name)
        if not values_match(expected, got):
            raise FixtureError(f"config.{name} = {got!r}, expected {expected!r}")

    return _check


LEGACY_LAYER_TYPES = {"mamba": "linear_attention", "attention": "full_attention"}


def values_match(expected, got) -> bool:
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return False
        return all(k in got and values_match(v, got[k]) for k, v in expected.items())
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            return False
        return all(values_match(a, b) for a, b in zip(expected, got))
    if isinstance(expected, str) and isinstance(got, str):
        return LEGACY_LAYER_TYPES.get(expected, expected) == LEGACY_LAYER_TYPES.get(got, got)
    if isinstance(expected, bool) or expected is None:
        return expected == got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(float(expected), float(got), rel_tol=1e-12, abs_tol=0.0)
    return expected == got


def common(vocab: int, hidden: int, layers: int, **kw) -> dict:
    out = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    }
    out.update(kw)
    return out


def build_specs() -> list[Spec]:
    S: list[Spec] = []

    # ---------------- attention / MoE families ----------------
    S.append(Spec(
        name="llama-llama3rope-bias", family="llama", config_class="LlamaConfig", model_class="LlamaForCausalLM",
        seq_len=48,
        notes="GQA 4q:2kv, head_dim 16, attention_bias=True, mlp_bias=True, rope llama3 scaling "
              "(factor 8, low 1, high 4, original_max_position_embeddings 64), untied lm_head, vocab 97",
        variants=lambda C: [common(97, 64, 3, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, attention_bias=True, mlp_bias=True, rms_norm_eps=1e-6,
                                   max_position_embeddings=512, tie_word_embeddings=False, attention_dropout=0.0,
                                   hidden_act="silu",
                                   **rope_kwargs(C, rope(10000.0, "llama3", factor=8.0, low_freq_factor=1.0,
                                                         high_freq_factor=4.0, original_max_position_embeddings=64)))],
        expected_rotary_dims={16},
    ))
    S.append(Spec(
        name="llama-mqa-yarn-tied", family="llama", config_class="LlamaConfig", model_class="LlamaForCausalLM",
        seq_len=64,
        notes="MQA 6q:1kv, head_dim 8, rope yarn (factor 4, original_max_position_embeddings 64, beta_fast 32, "
              "beta_slow 1; attention_factor derived → cos/sin scaled), tied embeddings, rms_norm_eps 1e-5, vocab 131",
        variants=lambda C: [common(131, 48, 2, intermediate_size=96, num_attention_heads=6, num_key_value_heads=1,
                                   head_dim=8, rms_norm_eps=1e-5, max_position_embeddings=256,
                                   tie_word_embeddings=True, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(10000.0, "yarn", factor=4.0, original_max_position_embeddings=64,
                                                         beta_fast=32.0, beta_slow=1.0)))],
        expected_rotary_dims={8},
    ))
    S.append(Spec(
        name="mistral-swa", family="mistral", config_class="MistralConfig", model_class="MistralForCausalLM",
        seq_len=50,
        notes="sliding_window 12 < T (HF mask: key j visible from query i iff i-12 < j <= i), GQA 8q:4kv, head_dim 8, vocab 211",
        variants=lambda C: [common(211, 64, 3, intermediate_size=112, num_attention_heads=8, num_key_value_heads=4,
                                   sliding_window=12, max_position_embeddings=512, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False, attention_dropout=0.0, **rope_kwargs(C, rope(10000.0)))],
        expected_rotary_dims={8},
    ))
    S.append(Spec(
        name="qwen2-linear-rope", family="qwen2", config_class="Qwen2Config", model_class="Qwen2ForCausalLM",
        seq_len=45,
        notes="MHA 4q:4kv, qkv bias (Qwen2 default), rope linear factor 2, tied embeddings, vocab 257",
        variants=lambda C: [common(257, 64, 2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                                   max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                   use_sliding_window=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(1000000.0, "linear", factor=2.0)))],
        expected_rotary_dims={16},
    ))
    S.append(Spec(
        name="qwen3-mqa-headdim32", family="qwen3", config_class="Qwen3Config", model_class="Qwen3ForCausalLM",
        seq_len=56,
        notes="MQA 4q:1kv, explicit head_dim 32 (heads*head_dim=128 != hidden 48), q_norm/k_norm per head, "
              "attention_bias=True, rope theta 1e6, vocab 131",
        variants=lambda C: [common(131, 48, 3, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1,
                                   head_dim=32, attention_bias=True, max_position_embeddings=512, rms_norm_eps=1e-6,
                                   tie_word_embeddings=False, use_sliding_window=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(1000000.0)))],
        expected_rotary_dims={32},
    ))
    gemma2_layers = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    S.append(Spec(
        name="gemma2-softcap-swa", family="gemma2", config_class="Gemma2Config", model_class="Gemma2ForCausalLM",
        seq_len=44,
        notes="layer_types sliding/full alternating, sliding_window 10, attn_logit_softcapping 5.0, "
              "final_logit_softcapping 3.0 (small so tanh is non-linear), query_pre_attn_scalar 24 (!= head_dim), "
              "GQA 4q:2kv head_dim 16, gelu_pytorch_tanh, (1+w) RMSNorm, embeddings × sqrt(hidden), tied, vocab 97",
        variants=lambda C: [common(97, 64, 4, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, query_pre_attn_scalar=24, sliding_window=10,
                                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0, layer_types=gemma2_layers,
                                   max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                   hidden_activation="gelu_pytorch_tanh", attention_dropout=0.0,
                                   **rope_kwargs(C, rope(10000.0)))],
        expected_rotary_dims={16},
    ))
    gemma3_layers = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
    S.append(Spec(
        name="gemma3-text", family="gemma3", config_class="Gemma3TextConfig", model_class="Gemma3ForCausalLM",
        seq_len=60,
        notes="model_type gemma3_text; layer_types s,s,full,s; sliding_window 12; per-layer-type rope "
              "(sliding: default theta 1e4; full: linear factor 4, theta 1e6); q_norm/k_norm; "
              "attn_logit_softcapping 8.0, final_logit_softcapping 4.0; query_pre_attn_scalar 16; MQA 4q:1kv; tied; vocab 257",
        variants=lambda C: [common(257, 64, 4, intermediate_size=128, num_attention_heads=4, num_key_value_heads=1,
                                   head_dim=16, query_pre_attn_scalar=16, sliding_window=12, layer_types=gemma3_layers,
                                   attn_logit_softcapping=8.0, final_logit_softcapping=4.0,
                                   max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                   hidden_activation="gelu_pytorch_tanh", attention_dropout=0.0,
                                   rope_parameters={"sliding_attention": rope(10000.0),
                                                    "full_attention": rope(1000000.0, "linear", factor=4.0)})],
        expected_rotary_dims={16},
    ))
    S.append(Spec(
        name="mixtral-moe", family="mixtral", config_class="MixtralConfig", model_class="MixtralForCausalLM",
        seq_len=40,
        notes="4 experts top-2 (softmax → top-k → renormalise), router_jitter_noise 0, GQA 4q:2kv, vocab 211",
        variants=lambda C: [common(211, 64, 2, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                                   num_local_experts=4, num_experts_per_tok=2, router_jitter_noise=0.0,
                                   sliding_window=None, max_position_embeddings=512, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False, output_router_logits=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(1000000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    S.append(Spec(
        name="olmoe-clipqkv", family="olmoe", config_class="OlmoeConfig", model_class="OlmoeForCausalLM",
        seq_len=52,
        notes="8 experts top-2, norm_topk_prob False, clip_qkv 1.5 (clamps q,k,v projections), q_norm/k_norm over "
              "the whole projection (heads*head_dim), MHA, vocab 131",
        variants=lambda C: [common(131, 64, 2, intermediate_size=32, num_attention_heads=4, num_key_value_heads=4,
                                   num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=1.5,
                                   max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                   output_router_logits=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(10000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    S.append(Spec(
        name="qwen2moe-shared", family="qwen2_moe", config_class="Qwen2MoeConfig", model_class="Qwen2MoeForCausalLM",
        seq_len=47,
        notes="6 experts top-2, norm_topk_prob False, shared expert (96) gated by sigmoid(shared_expert_gate), "
              "mlp_only_layers [1] (dense MLP 128 in layer 1), qkv bias, GQA 4q:2kv, vocab 97",
        variants=lambda C: [common(97, 64, 3, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                                   num_experts=6, num_experts_per_tok=2, moe_intermediate_size=48,
                                   shared_expert_intermediate_size=96, norm_topk_prob=False, decoder_sparse_step=1,
                                   mlp_only_layers=[1], use_sliding_window=False, max_position_embeddings=512,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False, output_router_logits=False,
                                   attention_dropout=0.0, **rope_kwargs(C, rope(1000000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    S.append(Spec(
        name="qwen3moe", family="qwen3_moe", config_class="Qwen3MoeConfig", model_class="Qwen3MoeForCausalLM",
        seq_len=58,
        notes="8 experts top-3, norm_topk_prob True, mlp_only_layers [0] (dense 96), q_norm/k_norm, "
              "GQA 8q:2kv head_dim 16 (heads*head_dim=128 != hidden 64), vocab 257",
        variants=lambda C: [common(257, 64, 3, intermediate_size=96, num_attention_heads=8, num_key_value_heads=2,
                                   head_dim=16, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=32,
                                   norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0],
                                   max_position_embeddings=512, rms_norm_eps=1e-6,
                                   tie_word_embeddings=False, output_router_logits=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(1000000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    ds_rope = rope(10000.0, "yarn", factor=4.0, original_max_position_embeddings=64, beta_fast=32.0, beta_slow=1.0,
                   mscale=1.0, mscale_all_dim=1.0)
    S.append(Spec(
        name="deepseekv3-mla", family="deepseek_v3", config_class="DeepseekV3Config", model_class="DeepseekV3ForCausalLM",
        seq_len=42,
        notes="MLA q_lora_rank 24, kv_lora_rank 16, qk_nope 16, qk_rope 8 (interleaved rope), v_head_dim 16, 4 heads; "
              "rope yarn factor 4 with mscale=mscale_all_dim=1 (softmax scale × mscale²); sigmoid router with "
              "e_score_correction_bias (perturbed), n_group 4 / topk_group 2, 8 routed experts top-2, 1 shared, "
              "routed_scaling_factor 2.5, norm_topk_prob True; first_k_dense_replace 1 (layer 0 dense 96); vocab 211",
        variants=lambda C: [common(211, 64, 3, intermediate_size=96, moe_intermediate_size=32, num_attention_heads=4,
                                   num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
                                   routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8,
                                   v_head_dim=16, qk_nope_head_dim=16, n_group=4, topk_group=2, num_experts_per_tok=2,
                                   first_k_dense_replace=1, norm_topk_prob=True, max_position_embeddings=256,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
                                   attention_dropout=0.0, **rope_kwargs(C, ds_rope))],
        expected_rotary_dims={8}, moe=True,
    ))
    S.append(Spec(
        name="gptoss-sinks", family="gpt_oss", config_class="GptOssConfig", model_class="GptOssForCausalLM",
        seq_len=54,
        notes="learned attention sinks per head (perturbed, std 1), layer_types sliding/full/sliding with "
              "sliding_window 10, attention_bias, 4 experts top-2 (top-k → softmax), expert biases, clamped SwiGLU "
              "(alpha 1.702, swiglu_limit 1.5 so the clamp is hit; config variant 1 = a release without the "
              "swiglu_limit field, limit 7.0), interleaved gate/up columns; rope yarn "
              "factor 8 original 32 theta 150000 truncate False; GQA 4q:2kv head_dim 16; vocab 131",
        variants=lambda C: [dict(v, **lim) for v in [common(
            131, 64, 3, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            num_local_experts=4, num_experts_per_tok=2, sliding_window=10,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"], max_position_embeddings=256,
            rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=True, output_router_logits=False,
            attention_dropout=0.0,
            **rope_kwargs(C, rope(150000.0, "yarn", factor=8.0, original_max_position_embeddings=32, beta_fast=32.0,
                                  beta_slow=1.0, truncate=False)))]
                            for lim in ({"swiglu_limit": 1.5}, {})],
        expected_rotary_dims={16}, moe=True,
    ))
    S.append(Spec(
        name="deepseekv32-dsa", family="deepseek_v32", config_class="DeepseekV32Config",
        model_class="DeepseekV32ForCausalLM", seq_len=50,
        notes="DSA: indexer index_n_heads 4, index_head_dim 16 (first 8 dims rotated, non-interleaved), "
              "index_topk 12 < T so later queries attend to 12 selected keys; indexer scores are computed in float32 "
              "by HF even in a float64 run; MLA as deepseekv3-mla (yarn mscale); router as deepseekv3; "
              "first_k_dense_replace 1; vocab 97",
        variants=lambda C: [dict(common(97, 64, 3, intermediate_size=96, moe_intermediate_size=32,
                                        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                                        n_routed_experts=8, routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24,
                                        qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=16, n_group=4,
                                        topk_group=2, num_experts_per_tok=2, norm_topk_prob=True, index_topk=12,
                                        index_head_dim=16, index_n_heads=4, max_position_embeddings=256,
                                        rms_norm_eps=1e-6, tie_word_embeddings=False, attention_bias=False,
                                        attention_dropout=0.0, **rope_kwargs(C, ds_rope)), **dense)
                            for dense in ({"first_k_dense_replace": 1},
                                          {"mlp_layer_types": ["dense", "sparse", "sparse"]})],
        expected_rotary_dims={8}, moe=True,
        checks=[lambda c: (None if not hasattr(c, "mlp_layer_types") or c.mlp_layer_types is None
                           else check_attr("mlp_layer_types", ["dense", "sparse", "sparse"])(c))],
    ))

    # ---------------- recurrent / hybrid families ----------------
    S.append(Spec(
        name="mamba1", family="mamba", config_class="MambaConfig", model_class="MambaForCausalLM",
        seq_len=41,
        notes="state_size 8, expand 2 (d_inner 96), conv_kernel 4, time_step_rank 6, use_bias True "
              "(in_proj/out_proj bias), use_conv_bias True, tied embeddings, 3 layers, vocab 97",
        variants=lambda C: [common(97, 48, 3, state_size=8, expand=2, conv_kernel=4, time_step_rank=6, use_bias=True,
                                   use_conv_bias=True, layer_norm_epsilon=1e-5, residual_in_fp32=True,
                                   tie_word_embeddings=True, use_mambapy=False)],
        expected_rotary_dims=set(),
    ))
    S.append(Spec(
        name="falconmamba", family="falcon_mamba", config_class="FalconMambaConfig",
        model_class="FalconMambaForCausalLM", seq_len=43,
        notes="Mamba-1 mixer with RMSNorm (mixer_rms_eps 1e-6, no weight) on B, C and Δ; state_size 16, expand 2, "
              "time_step_rank 4, untied lm_head, 2 layers, vocab 131",
        variants=lambda C: [common(131, 32, 2, state_size=16, expand=2, conv_kernel=4, time_step_rank=4,
                                   use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5, mixer_rms_eps=1e-6,
                                   residual_in_fp32=True, tie_word_embeddings=False)],
        expected_rotary_dims=set(),
    ))
    S.append(Spec(
        name="mamba2-groups", family="mamba2", config_class="Mamba2Config", model_class="Mamba2ForCausalLM",
        seq_len=56,
        notes="n_groups 2 (heads 0-3 read group 0, 4-7 group 1), 8 heads × head_dim 16 = expand 2 × hidden 64, "
              "state_size 16, conv_kernel 4, chunk_size 16 (T=56 is not a multiple: padded last chunk), "
              "gated RMSNorm (rms_norm True), time_step_limit (0, inf), untied, 3 layers, vocab 131",
        variants=lambda C: [common(131, 64, 3, num_heads=8, head_dim=16, state_size=16, expand=2, n_groups=2,
                                   conv_kernel=4, chunk_size=16, use_bias=False, use_conv_bias=True, rms_norm=True,
                                   layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=False)],
        expected_rotary_dims=set(),
    ))
    S.append(Spec(
        name="rwkv4-rescale", family="rwkv", config_class="RwkvConfig", model_class="RwkvForCausalLM",
        seq_len=46,
        notes="RWKV-4, rescale_every 2: in eval mode HF divides attention.output / feed_forward.value weights of "
              "block b by 2**(b//2) on the first forward and halves the hidden state after every 2 blocks "
              "(the saved weights are the unscaled ones); attention_hidden_size 32, intermediate 64, 4 layers, "
              "layer_norm_epsilon 1e-5, untied, vocab 97",
        variants=lambda C: [{"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 4, "attention_hidden_size": 32,
                             "intermediate_size": 64, "context_length": 128, "rescale_every": 2,
                             "layer_norm_epsilon": 1e-5, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
                             "tie_word_embeddings": False}],
        expected_rotary_dims=set(),
    ))
    S.append(Spec(
        name="recurrentgemma-window", family="recurrent_gemma", config_class="RecurrentGemmaConfig",
        model_class="RecurrentGemmaForCausalLM", seq_len=62,
        notes="block_types recurrent,recurrent,attention over 4 layers (r,r,a,r); attention_window_size 10 < T; "
              "MQA 4q:1kv head_dim 16 partial_rotary_factor 0.5; lru_width 48 (!= hidden 64), conv1d_width 4, "
              "logits_soft_cap 10.0; hidden 64 so the bf16 sqrt(hidden) normaliser is exact (8.0); vocab 211",
        variants=lambda C: [common(211, 64, 4, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1,
                                   lru_width=48, attention_window_size=10, conv1d_width=4, logits_soft_cap=10.0,
                                   rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
                                   block_types=["recurrent", "recurrent", "attention"], attention_bias=False,
                                   attention_dropout=0.0, **rope_kwargs(C, rope(10000.0), partial=0.5))],
        expected_rotary_dims={8},
    ))
    qn_layers = ["linear_attention", "full_attention", "linear_attention", "linear_attention"]
    S.append(Spec(
        name="qwen3next-hybrid", family="qwen3_next", config_class="Qwen3NextConfig",
        model_class="Qwen3NextForCausalLM", seq_len=72,
        notes="layer_types lin,full,lin,lin; gated delta rule with linear_num_key_heads 2, linear_num_value_heads 4 "
              "(q,k repeat_interleave'd), key/value head dim 16, conv kernel 4; T=72 > HF chunk 64; gated "
              "attention (q_proj doubled, sigmoid gate), zero-centred q/k norms, partial_rotary_factor 0.5 "
              "(read from rope_parameters), GQA 4q:2kv head_dim 16; MoE 4 experts top-2 norm_topk_prob, shared "
              "expert 48 with sigmoid gate; mlp_only_layers [2] (dense 96); HF casts the delta rule to float32 "
              "internally; vocab 257",
        variants=lambda C: [common(257, 64, 4, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, layer_types=qn_layers, linear_conv_kernel_dim=4,
                                   linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                                   linear_num_value_heads=4, num_experts=4, num_experts_per_tok=2,
                                   moe_intermediate_size=32, shared_expert_intermediate_size=48, norm_topk_prob=True,
                                   decoder_sparse_step=1, mlp_only_layers=[2], max_position_embeddings=512,
                                   rms_norm_eps=1e-6, tie_word_embeddings=False, output_router_logits=False,
                                   attention_bias=False, attention_dropout=0.0, partial_rotary_factor=0.5,
                                   **rope_kwargs(C, rope(10000.0), partial=0.5))],
        extra_ok={"partial_rotary_factor"}, no_verify={"partial_rotary_factor"},
        expected_rotary_dims={8}, moe=True,
    ))
    mm_layers = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
    S.append(Spec(
        name="minimax-lightning", family="minimax", config_class="MiniMaxConfig", model_class="MiniMaxForCausalLM",
        seq_len=60,
        notes="layer_types lin,lin,full,lin; lightning attention block_size 16 (T=60: 3 full blocks + 12), "
              "per-layer slopes (buffers slope_rate/query_decay/key_decay/diagonal_decay are saved in the file); "
              "residual factors linear α1.3/β0.9, full α1.1/β0.8, mlp α1.2/β0.7 (residual is the normed input); "
              "4 experts top-2 (Mixtral router); GQA 4q:2kv head_dim 16; vocab 131",
        variants=lambda C: [common(131, 64, 4, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=16, layer_types=mm_layers, block_size=16, num_local_experts=4,
                                   num_experts_per_tok=2, router_jitter_noise=0.0, linear_attn_alpha_factor=1.3,
                                   linear_attn_beta_factor=0.9, full_attn_alpha_factor=1.1, full_attn_beta_factor=0.8,
                                   mlp_alpha_factor=1.2, mlp_beta_factor=0.7, sliding_window=None,
                                   max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                   output_router_logits=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(1000000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    lfm_layers = ["conv", "conv", "full_attention", "conv"]
    S.append(Spec(
        name="lfm2-shortconv", family="lfm2", config_class="Lfm2Config", model_class="Lfm2ForCausalLM",
        seq_len=49,
        notes="layer_types conv,conv,full,conv; conv_L_cache 3, conv_bias True; q/k layernorm; "
              "block_auto_adjust_ff_dim True with intermediate_size 200, block_multiple_of 32, multiplier 1.0 "
              "→ real FFN width int(2*200/3)=133 rounded up to 160; GQA 4q:2kv; tied; vocab 97",
        variants=lambda C: [common(97, 64, 4, intermediate_size=200, num_attention_heads=4, num_key_value_heads=2,
                                   layer_types=lfm_layers, conv_L_cache=3, conv_bias=True, block_multiple_of=32,
                                   block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True, norm_eps=1e-5,
                                   max_position_embeddings=512, tie_word_embeddings=True,
                                   **rope_kwargs(C, rope(1000000.0)))],
        expected_rotary_dims={16},
    ))
    S.append(Spec(
        name="jamba-hybrid", family="jamba", config_class="JambaConfig", model_class="JambaForCausalLM",
        seq_len=53,
        notes="4 layers: attention at layer 2 (attn_layer_period 4, offset 2; no positional encoding), MoE at "
              "layers 1 and 3 (expert_layer_period 2, offset 1; 4 experts top-2, softmax then top-k, no "
              "renormalisation); Mamba mixer with RMSNorm on dt/B/C, d_state 8, d_conv 4, expand 2, dt_rank 8; "
              "use_mamba_kernels False; GQA 4q:2kv; vocab 211",
        variants=lambda C: [common(211, 64, 4, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                                   num_experts=4, num_experts_per_tok=2, attn_layer_period=4, attn_layer_offset=2,
                                   expert_layer_period=2, expert_layer_offset=1, use_mamba_kernels=False,
                                   mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8,
                                   mamba_conv_bias=True, mamba_proj_bias=False, rms_norm_eps=1e-6,
                                   max_position_embeddings=512, tie_word_embeddings=False, output_router_logits=False,
                                   attention_dropout=0.0)],
        expected_rotary_dims=None, moe=True,
        checks=[check_attr("layers_num_experts", [1, 4, 1, 4])],
    ))
    S.append(Spec(
        name="bamba-hybrid", family="bamba", config_class="BambaConfig", model_class="BambaForCausalLM",
        seq_len=66,
        notes="attn_layer_indices [2] of 4; Mamba-2 mixer with 8 heads × d_head 16, n_groups 2, d_state 16, "
              "chunk_size 16 (T=66), gated RMSNorm (grouped per n_groups in HF Bamba); attention "
              "partial_rotary_factor 0.5 (hard-coded by BambaConfig); GQA 4q:2kv; vocab 257",
        variants=lambda C: [common(257, 64, 4, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                                   attn_layer_indices=[2], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=2,
                                   mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16,
                                   mamba_conv_bias=True, mamba_proj_bias=False, rms_norm_eps=1e-5,
                                   max_position_embeddings=512, tie_word_embeddings=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(10000.0)))],
        expected_rotary_dims={8},
    ))
    gm_legacy = ["mamba", "mamba", "attention", "mamba"]
    gm_new = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]

    def granite_variants(C):
        base = common(131, 64, 4, intermediate_size=32, num_attention_heads=4, num_key_value_heads=2,
                      num_local_experts=4, num_experts_per_tok=2, shared_intermediate_size=48,
                      embedding_multiplier=2.5, logits_scaling=1.7, residual_multiplier=0.6,
                      attention_multiplier=0.2, position_embedding_type=None, mamba_n_heads=8, mamba_d_head=16,
                      mamba_n_groups=1, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16,
                      mamba_conv_bias=True, mamba_proj_bias=False, rms_norm_eps=1e-6, max_position_embeddings=512,
                      tie_word_embeddings=False, output_router_logits=False, attention_dropout=0.0)
        return [dict(base, layer_types=gm_legacy), dict(base, layer_types=gm_new)]

    S.append(Spec(
        name="granitemoehybrid", family="granitemoehybrid", config_class="GraniteMoeHybridConfig",
        model_class="GraniteMoeHybridForCausalLM", seq_len=57,
        notes="layer_types mamba,mamba,attention,mamba; NoPE attention (position_embedding_type None, as in "
              "granite-4.0-h); MoE 4 experts top-2 (top-k then softmax) + shared MLP 48; embedding_multiplier 2.5, "
              "logits_scaling 1.7 (logits divided), residual_multiplier 0.6, attention_multiplier 0.2 (softmax "
              "scale); Mamba-2 8 heads × 16, n_groups 1, d_state 16, chunk 16; vocab 131",
        variants=granite_variants,
        expected_rotary_dims=None, moe=True,
    ))
    S.append(Spec(
        name="granitemoe", family="granitemoe", config_class="GraniteMoeConfig",
        model_class="GraniteMoeForCausalLM", seq_len=45,
        notes="4 layers; MoE 6 experts top-2 (top-k of the router logits, then softmax over them), no shared "
              "expert; embedding_multiplier 3.0, logits_scaling 2.5 (logits divided), residual_multiplier 0.4, "
              "attention_multiplier 0.15 (softmax scale); RoPE theta 10000; GQA 4q:2kv; vocab 173",
        variants=lambda C: [common(173, 64, 4, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                                   num_local_experts=6, num_experts_per_tok=2, embedding_multiplier=3.0,
                                   logits_scaling=2.5, residual_multiplier=0.4, attention_multiplier=0.15,
                                   rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=False,
                                   output_router_logits=False, attention_dropout=0.0,
                                   **rope_kwargs(C, rope(10000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    S.extend(extra_specs())
    return S


def extra_specs() -> list[Spec]:
    """Specs kept in tools/parity/specs/*.py, one module per family group, each defining specs(m) -> list[Spec]
    where m is this module (Spec, common, rope, rope_kwargs, check_attr). Loaded in file-name order, after the
    specs above, so that adding a module does not change the seeds of existing fixtures."""
    import importlib.util

    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
    out: list[Spec] = []
    if not os.path.isdir(here):
        return out
    for fname in sorted(os.listdir(here)):
        if not fname.endswith(".py") or fname.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"parity_specs_{fname[:-3]}", os.path.join(here, fname))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out.extend(mod.specs(sys.modules[__name__]))
    return out


# ----------------------------------------------------------------------------------------------
# Building, perturbing, saving
# ----------------------------------------------------------------------------------------------


def build_config(spec: Spec, transformers):
    cfg_cls = getattr(transformers, spec.config_class, None)
    if cfg_cls is None:
        raise FixtureError(f"transformers {transformers.__version__} has no {spec.config_class}")
    known = known_config_keys(cfg_cls) | BASE_CONFIG_KEYS | spec.extra_ok
    errors = []
    for i, kwargs in enumerate(spec.variants(cfg_cls)):
        # Fields the class does not declare are still stored by PreTrainedConfig (and read by the
        # modeling code through getattr); the kept-value check below proves they arrived.
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown:
            print(f"note {spec.name}: variant {i}: {spec.config_class} does not declare {unknown}; checking they are kept")
        try:
            config = cfg_cls(**kwargs, attn_implementation="eager", experts_implementation="eager")
        except TypeError:
            try:
                config = cfg_cls(**kwargs)
            except Exception as e:  # noqa: BLE001
                errors.append(f"variant {i}: {type(e).__name__}: {e}")
                continue
        except Exception as e:  # noqa: BLE001
            errors.append(f"variant {i}: {type(e).__name__}: {e}")
            continue
        mismatches = []
        for k, v in kwargs.items():
            if k in UNVERIFIED_KEYS or k in spec.no_verify:
                continue
            got = getattr(config, k, "<missing>")
            if not values_match(v, got):
                mismatches.append(f"{k}: asked {v!r}, config has {got!r}")
        if mismatches:
            errors.append(f"variant {i}: config did not keep: " + "; ".join(mismatches))
            continue
        for check in spec.checks:
            check(config)
        force_eager(config)
        return config, i, kwargs
    raise FixtureError(" | ".join(errors))


def force_eager(config):
    for attr in ("_attn_implementation", "_experts_implementation"):
        try:
            setattr(config, attr, "eager")
        except Exception:  # noqa: BLE001
            pass
    for attr in ("_attn_implementation_internal", "_experts_implementation_internal"):
        if hasattr(config, attr):
            setattr(config, attr, "eager")


def set_eager(model):
    for meth in ("set_attn_implementation", "set_experts_implementation"):
        fn = getattr(model, meth, None)
        if fn is not None:
            try:
                fn("eager")
            except Exception as e:  # noqa: BLE001
                print(f"    note: {meth}('eager') raised {type(e).__name__}: {e}")
    impl = getattr(model.config, "_experts_implementation", None)
    if impl not in (None, "eager"):
        raise FixtureError(f"experts implementation is {impl!r}, not eager")
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in (None, "eager"):
        raise FixtureError(f"attention implementation is {attn!r}, not eager")


# Parameters holding decay rates or interpolation coefficients: only a slight perturbation keeps them in range.
DECAY_PARAM_MARKERS = ("A_log", "dt_bias", "time_decay", "time_first", "recurrent_param", "dt_proj.bias")
LERP_PARAM_MARKERS = ("time_mix_",)
SINK_PARAM_MARKERS = ("sinks",)


def perturb_weights(model, seed: int, torch):
    """Keep the model's own initialisation pattern but make the numbers non-trivial.

    ≥2-D tensors are rescaled to std clamp(0.7/sqrt(fan_in), 0.05, 0.2) (fan_in = last dim) plus fresh
    noise of a quarter of that std; 1-D tensors (norm weights, biases) get N(0, 0.05) added; decay
    parameters get N(0, 0.02) added; RWKV lerp coefficients stay clamped to [0, 1]; attention sinks
    get N(0, 1) added. DeepSeek's e_score_correction_bias buffer gets N(0, 0.1) added.
    """
    gen = torch.Generator().manual_seed(seed)
    report = {"rescaled": 0, "decay": 0, "lerp": 0, "vector": 0, "sinks": 0, "buffers": 0}
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
            if any(m in name for m in LERP_PARAM_MARKERS):
                p.add_(noise * 0.02).clamp_(0.0, 1.0)
                report["lerp"] += 1
            elif any(m in name for m in DECAY_PARAM_MARKERS):
                p.add_(noise * 0.02)
                report["decay"] += 1
            elif any(name.endswith(m) for m in SINK_PARAM_MARKERS):
                p.add_(noise * 1.0)
                report["sinks"] += 1
            elif p.ndim <= 1:
                p.add_(noise * 0.05)
                report["vector"] += 1
            else:
                fan_in = p.shape[-1]
                target = min(0.2, max(0.05, 0.7 / math.sqrt(fan_in)))
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                if std > 1e-8:
                    p.mul_(target / std)
                p.add_(noise * (0.25 * target))
                report["rescaled"] += 1
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                noise = torch.randn(b.shape, generator=gen, dtype=torch.float32).to(b.dtype)
                b.add_(noise * 0.1)
                report["buffers"] += 1
        for name, p in model.named_parameters():
            if not torch.isfinite(p).all():
                raise FixtureError(f"non-finite values in parameter {name} after perturbation")
    return report


def rotary_dims(model) -> set:
    dims = set()
    for name, buf in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.endswith("inv_freq") and "original" not in leaf:
            dims.add(int(buf.numel()) * 2)
    return dims


def dir_size(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def save_checkpoint(model, out_dir: str):
    try:
        model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="2GB")
    except TypeError:
        model.save_pretrained(out_dir, max_shard_size="2GB")
    if not os.path.exists(os.path.join(out_dir, "model.safetensors")):
        raise FixtureError(f"save_pretrained did not write a single model.safetensors in {out_dir}: "
                           f"{sorted(os.listdir(out_dir))}")


# ----------------------------------------------------------------------------------------------
# Reference computation
# ----------------------------------------------------------------------------------------------


def load_for_reference(model_cls, model_dir: str, dtype, device: str, source_model, torch):
    """Reload the saved checkpoint and prove it holds exactly the tensors that were built."""
    attempts = [
        dict(attn_implementation="eager", experts_implementation="eager"),
        dict(attn_implementation="eager"),
    ]
    last = None
    for kw in attempts:
        try:
            loaded = model_cls.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True, **kw)
            break
        except (TypeError, ValueError) as e:
            last = e
    else:
        raise FixtureError(f"from_pretrained failed: {last}")
    model, info = loaded
    load_notes = {k: list(v) for k, v in (info or {}).items()
                  if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    src = source_model.state_dict()
    dst = model.state_dict()
    for name, t in src.items():
        if name not in dst:
            raise FixtureError(f"reloaded model has no tensor {name}")
        u = dst[name]
        if tuple(t.shape) != tuple(u.shape) or not torch.equal(t.detach().cpu().float(), u.detach().cpu().float()):
            raise FixtureError(f"reloaded tensor {name} differs from the one that was saved")
    model = model.to(device=device, dtype=dtype)
    set_eager(model)
    model.eval()
    return model, load_notes


def compute_reference(model, input_ids, prompt, n_new: int, device: str, torch):
    vocab = model.config.vocab_size
    ids = torch.tensor([input_ids], dtype=torch.long, device=device)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    logits = out.logits
    if tuple(logits.shape) != (1, len(input_ids), vocab):
        raise FixtureError(f"logits shape {tuple(logits.shape)} != (1, {len(input_ids)}, {vocab})")
    logits = logits[0].detach()
    if not torch.isfinite(logits).all():
        raise FixtureError("non-finite logits in the full forward pass")

    p = torch.tensor([prompt], dtype=torch.long, device=device)
    gen_kwargs = dict(
        input_ids=p,
        attention_mask=torch.ones_like(p),
        do_sample=False,
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        use_cache=True,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    step_logits = None
    with torch.no_grad():
        try:
            g = model.generate(**gen_kwargs, output_logits=True, return_dict_in_generate=True)
            seq = g.sequences
            if getattr(g, "logits", None) is not None:
                step_logits = torch.stack([s[0] for s in g.logits], 0)
        except Exception as e:  # noqa: BLE001
            print(f"    generate(output_logits=True) failed ({type(e).__name__}: {e}); retrying without it")
            seq = model.generate(**gen_kwargs)
    new_tokens = seq[0, len(prompt):].tolist()
    if len(new_tokens) != n_new:
        raise FixtureError(f"generate returned {len(new_tokens)} new tokens, expected {n_new}")

    consistency = {}
    full = torch.tensor([prompt + new_tokens], dtype=torch.long, device=device)
    with torch.no_grad():
        tf = model(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False).logits[0]
    tf_steps = tf[len(prompt) - 1: len(prompt) - 1 + n_new].double()
    masked = tf_steps.clone()
    masked[:, EOS_ID] = -float("inf")
    consistency["hf_greedy_matches_teacher_forced_argmax"] = masked.argmax(-1).tolist() == new_tokens
    if step_logits is not None:
        d = (step_logits.double() - tf_steps).abs().max().item()
        consistency["hf_decode_vs_prefill_max_rel"] = d / max(tf_steps.abs().max().item(), 1e-30)
    return logits, new_tokens, consistency


def make_fixture(idx: int, spec: Spec, args, transformers, torch) -> dict:
    t0 = time.time()
    out_dir = os.path.join(args.out, spec.name)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    torch.manual_seed(args.seed + idx)
    config, variant, kwargs = build_config(spec, transformers)
    model_cls = getattr(transformers, spec.model_class, None)
    if model_cls is None:
        raise FixtureError(f"transformers {transformers.__version__} has no {spec.model_class}")
    model = model_cls(config)
    model.eval()
    set_eager(model)
    perturbation = perturb_weights(model, args.seed * 7919 + idx, torch)

    rot = rotary_dims(model)
    if spec.expected_rotary_dims is not None and rot != spec.expected_rotary_dims:
        raise FixtureError(f"rotary dims {sorted(rot)} != expected {sorted(spec.expected_rotary_dims)}")

    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.eos_token_id = EOS_ID
        gc.bos_token_id = BOS_ID
        gc.pad_token_id = PAD_ID
    save_checkpoint(model, out_dir)

    vocab = config.vocab_size
    gen = torch.Generator().manual_seed(args.seed * 1000 + idx)
    input_ids = torch.randint(FIRST_INPUT_ID, vocab, (spec.seq_len,), generator=gen).tolist()
    prompt = torch.randint(FIRST_INPUT_ID, vocab, (GREEDY_PROMPT_LEN,), generator=gen).tolist()

    ref_dtype = None
    notes = []
    result = None
    for dtype_name in ("float64", "float32"):
        dtype = getattr(torch, dtype_name)
        try:
            ref_model, load_notes = load_for_reference(model_cls, out_dir, dtype, args.device, model, torch)
            if load_notes:
                notes.append(f"from_pretrained loading info: {load_notes}")
            result = compute_reference(ref_model, input_ids, prompt, GREEDY_NEW_TOKENS, args.device, torch)
            ref_dtype = dtype_name
            del ref_model
            break
        except FixtureError:
            raise
        except Exception as e:  # noqa: BLE001
            notes.append(f"{dtype_name} reference failed: {type(e).__name__}: {e}")
            print(f"    {dtype_name} reference failed: {type(e).__name__}: {e}")
    if result is None:
        raise FixtureError("; ".join(notes))
    logits, greedy_tokens, consistency = result

    logits_path = os.path.join(out_dir, "reference_logits.f32")
    arr = logits.to(torch.float32).cpu().numpy().astype("<f4")
    arr.tofile(logits_path)

    stats = {
        "logits_std": float(logits.double().std().item()),
        "logits_absmax": float(logits.double().abs().max().item()),
        "argmax_distinct": len(set(logits.argmax(-1).tolist())),
    }
    if stats["logits_std"] < 1e-3:
        notes.append("logits nearly constant")

    reference = {
        "family": spec.family,
        "model_type": config.model_type,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": args.seed,
        "reference_dtype": ref_dtype,
        "input_ids": input_ids,
        "logits_shape": [len(input_ids), vocab],
        "greedy_prompt": prompt,
        "greedy_tokens": greedy_tokens,
        "eos_token_id": EOS_ID,
        "config_notes": spec.notes,
        "notes": {
            "config_variant": variant,
            "config_kwargs": json.loads(json.dumps(kwargs, default=str)),
            "rotary_dims": sorted(rot),
            "perturbation": perturbation,
            "logits_stats": stats,
            "hf_consistency": consistency,
            "attn_implementation": "eager",
            "experts_implementation": "eager" if spec.moe else None,
            "reference_device": args.device,
            "weights": "float32 on disk (save_pretrained default layout); reference = that checkpoint reloaded "
                       "and cast to reference_dtype",
            "messages": notes,
        },
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")

    size = dir_size(out_dir)
    if size > 2 * 1024 * 1024:
        print(f"    warning: {spec.name} is {size / 1e6:.2f} MB")
    return {
        "name": spec.name,
        "family": spec.family,
        "status": "ok",
        "reference_dtype": ref_dtype,
        "T": len(input_ids),
        "V": vocab,
        "bytes": size,
        "seconds": round(time.time() - t0, 2),
        "hf_consistency": consistency,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory (one subdirectory per fixture)")
    ap.add_argument("--only", default="", help="comma-separated fixture names or family names")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu",
                    help="device for the reference forward/generate (default cpu: no optional fused kernels)")
    ap.add_argument("--list", action="store_true", help="print the fixtures and exit")
    ap.add_argument("--extra", action="store_true", help="only the specs of tools/parity/specs/*.py (with --only: of those)")
    args = ap.parse_args()

    specs = build_specs()
    if args.extra:
        names = {s.name for s in extra_specs()}
        specs_run = [s for s in specs if s.name in names]
    else:
        specs_run = specs
    if args.list:
        for s in specs_run:
            print(f"{s.name:28s} {s.family:18s} {s.model_class:30s} T={s.seq_len}")
        return 0
    if not args.out:
        ap.error("--out is required")

    import torch
    import transformers

    transformers.logging.set_verbosity_warning()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    if wanted:
        unknown = wanted - {s.name for s in specs} - {s.family for s in specs}
        if unknown:
            ap.error(f"unknown fixtures/families: {sorted(unknown)}")
    os.makedirs(args.out, exist_ok=True)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, device {args.device}")

    summary = []
    for idx, spec in enumerate(specs):
        if spec not in specs_run:
            continue
        if wanted and spec.name not in wanted and spec.family not in wanted:
            continue
        print(f"== {spec.name} ({spec.family})")
        try:
            row = make_fixture(idx, spec, args, transformers, torch)
            print(f"OK   {spec.name}: dtype={row['reference_dtype']} T={row['T']} V={row['V']} "
                  f"{row['bytes'] / 1e3:.0f} kB {row['seconds']}s {row['hf_consistency']}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            print(f"FAIL {spec.name}: {type(e).__name__}: {e}")
            row = {"name": spec.name, "family": spec.family, "status": "fail", "error": f"{type(e).__name__}: {e}"}
            shutil.rmtree(os.path.join(args.out, spec.name), ignore_errors=True)
        summary.append(row)

    ok = [r for r in summary if r["status"] == "ok"]
    bad = [r for r in summary if r["status"] != "ok"]
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "seed": args.seed,
                   "device": args.device, "fixtures": summary}, f, indent=1)
        f.write("\n")
    print("\n==== summary ====")
    for r in summary:
        extra = r.get("reference_dtype") if r["status"] == "ok" else r.get("error")
        print(f"{r['status'].upper():4s} {r['name']:28s} {extra}")
    print(f"{len(ok)} passed, {len(bad)} failed")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
