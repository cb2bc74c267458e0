"""Parity fixture specs: OLMo Hybrid (gated delta rule + post-norm attention), LongCat-Flash (MLA, shortcut MoE
with zero-computation experts) and Gemma 4 text (per-layer head dims, KV sharing, per-layer input embeddings)."""


def specs(m):
    S = []

    # ---------------- OLMo Hybrid ----------------
    # Attention layers are OLMo-2 style (post-norms on the branch outputs, q_norm/k_norm over the whole
    # projection); linear-attention layers are pre-norm gated delta rule blocks. head_dim is always
    # hidden_size / num_attention_heads. rope_parameters None means no RoPE at all (NoPE); where this release
    # fills in a default RoPE instead, the second variant of the NoPE spec uses an explicit theta.
    oh_layers = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
    S.append(m.Spec(
        name="olmohybrid-rope-gqa", family="olmo_hybrid", config_class="OlmoHybridConfig",
        model_class="OlmoHybridForCausalLM", seq_len=70,
        notes="layer_types lin,lin,full,lin; gated delta rule with separate q/k/v/a/b/g projections, "
              "linear_num_key_heads 2, linear_num_value_heads 4 (q,k repeat_interleave'd), key head dim 16, value "
              "head dim 24, conv kernel 4 (SiLU, no bias), beta = 2*sigmoid(b) (allow_neg_eigval), gated output "
              "RMSNorm eps 1e-5; T=70 > HF chunk 64; attention 4q:2kv head_dim 16, q_norm/k_norm over the whole "
              "projection, post_attention/post_feedforward norms; RoPE theta 10000; MLP 96; untied; vocab 131",
        variants=lambda C: [m.common(131, 64, 4, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                                     layer_types=oh_layers, linear_num_key_heads=2, linear_num_value_heads=4,
                                     linear_key_head_dim=16, linear_value_head_dim=24, linear_conv_kernel_dim=4,
                                     linear_allow_neg_eigval=True, max_position_embeddings=512, rms_norm_eps=1e-6,
                                     tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0,
                                     hidden_act="silu", **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={16},
    ))
    oh_layers2 = ["full_attention", "linear_attention", "linear_attention"]
    S.append(m.Spec(
        name="olmohybrid-nope-tied", family="olmo_hybrid", config_class="OlmoHybridConfig",
        model_class="OlmoHybridForCausalLM", seq_len=52,
        notes="layer_types full,lin,lin; rope_parameters None (NoPE attention; variant 1: RoPE theta 5e5); "
              "MHA 4 heads x 12; gated delta rule 2 key heads = 2 value heads, key dim 12, value dim 20, conv "
              "kernel 3, allow_neg_eigval False (beta = sigmoid(b)); rms_norm_eps 1e-5; MLP 80; tied; vocab 97",
        variants=lambda C: [m.common(97, 48, 3, intermediate_size=80, num_attention_heads=4, num_key_value_heads=4,
                                     layer_types=oh_layers2, linear_num_key_heads=2, linear_num_value_heads=2,
                                     linear_key_head_dim=12, linear_value_head_dim=20, linear_conv_kernel_dim=3,
                                     linear_allow_neg_eigval=False, max_position_embeddings=512, rms_norm_eps=1e-5,
                                     tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0,
                                     hidden_act="silu", **rp)
                            for rp in ({"rope_parameters": None}, m.rope_kwargs(C, m.rope(500000.0)))],
        expected_rotary_dims=None,
    ))

    # ---------------- LongCat-Flash ----------------
    # num_layers decoder layers, each with two attention sublayers (num_hidden_layers = 2 * num_layers), two
    # dense MLPs and one MoE whose output is added at the end of the layer. The RoPE dimension comes from
    # head_dim, which equals qk_rope_head_dim in the released checkpoints.
    S.append(m.Spec(
        name="longcat-zero-experts", family="longcat_flash", config_class="LongcatFlashConfig",
        model_class="LongcatFlashForCausalLM", seq_len=54,
        notes="num_layers 2 (4 MLA sublayers): q_lora_rank 24, kv_lora_rank 16, qk_nope 16, qk_rope 8 (interleaved "
              "rope), v_head_dim 16, 4 heads, q scaled by sqrt(hidden/q_lora_rank), kv latent by "
              "sqrt(hidden/kv_lora_rank); RoPE theta 1e7; MoE: 6 routed experts (32) + 3 zero (identity) "
              "experts, softmax over all 9, top-3 chosen with e_score_correction_bias (perturbed), weights x "
              "routed_scaling_factor 2.5 (no renormalisation); dense MLPs 96; untied; vocab 131",
        variants=lambda C: [m.common(131, 64, 4, num_layers=2, ffn_hidden_size=96, expert_ffn_hidden_size=32,
                                     num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=16,
                                     qk_nope_head_dim=16, qk_rope_head_dim=8, head_dim=8, v_head_dim=16,
                                     n_routed_experts=6, zero_expert_num=3, moe_topk=3, routed_scaling_factor=2.5,
                                     max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                     attention_bias=False, attention_dropout=0.0, hidden_act="silu",
                                     **m.rope_kwargs(C, m.rope(10000000.0)))],
        expected_rotary_dims={8}, moe=True,
    ))
    lc_rope = m.rope(10000.0, "yarn", factor=4.0, original_max_position_embeddings=64, beta_fast=32.0,
                     beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)
    S.append(m.Spec(
        name="longcat-yarn-tied", family="longcat_flash", config_class="LongcatFlashConfig",
        model_class="LongcatFlashForCausalLM", seq_len=47,
        notes="num_layers 3 (6 MLA sublayers): q_lora_rank 32, kv_lora_rank 24, qk_nope 8, qk_rope 8, v_head_dim "
              "12, 2 heads; rope yarn factor 4 (mscale = mscale_all_dim = 1: softmax scale x mscale^2); MoE 4 "
              "routed experts (24) + 2 zero experts, top-2, routed_scaling_factor 1.5; dense MLPs 64; "
              "rms_norm_eps 1e-6; tied; vocab 97",
        variants=lambda C: [m.common(97, 48, 6, num_layers=3, ffn_hidden_size=64, expert_ffn_hidden_size=24,
                                     num_attention_heads=2, num_key_value_heads=2, q_lora_rank=32, kv_lora_rank=24,
                                     qk_nope_head_dim=8, qk_rope_head_dim=8, head_dim=8, v_head_dim=12,
                                     n_routed_experts=4, zero_expert_num=2, moe_topk=2, routed_scaling_factor=1.5,
                                     max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                     attention_bias=False, attention_dropout=0.0, hidden_act="silu",
                                     **m.rope_kwargs(C, lc_rope))],
        expected_rotary_dims={8}, moe=True,
    ))

    # ---------------- Gemma 4 (text) ----------------
    # global_head_dim / num_global_key_value_heads are consumed by __post_init__ into per_layer_config (full
    # attention layers); head_dim and num_key_value_heads become per-layer attributes, so none of the four is
    # read back from the built config.
    g4_nv = {"global_head_dim", "num_global_key_value_heads", "head_dim", "num_key_value_heads"}
    g4_rope = {"sliding_attention": m.rope(10000.0),
               "full_attention": m.rope(1000000.0, "proportional", partial_rotary_factor=0.25)}
    S.append(m.Spec(
        name="gemma4-ple-kvshare", family="gemma4", config_class="Gemma4TextConfig", model_class="Gemma4ForCausalLM",
        seq_len=60,
        notes="model_type gemma4_text; layer_types s,s,full,s,full; sliding_window 12; sliding layers 4q:2kv "
              "head_dim 16 (rope theta 1e4), full layers head_dim 32 with 1 kv head and attention_k_eq_v (values = "
              "the k projection, v_norm without scale), proportional rope (partial 0.25: 4 of 16 frequencies, "
              "theta 1e6); q/k norms, scaling 1; num_kv_shared_layers 2 (layer 3 reads layer 1's K/V, layer 4 "
              "layer 2's) with use_double_wide_mlp (MLP 128 on shared layers, 64 elsewhere); per-layer input "
              "embeddings 8 per layer; final_logit_softcapping 4.0; tied; vocab 131",
        variants=lambda C: [m.common(131, 64, 5, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                                     head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
                                     attention_k_eq_v=True, sliding_window=12,
                                     layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                                  "sliding_attention", "full_attention"],
                                     num_kv_shared_layers=2, use_double_wide_mlp=True,
                                     hidden_size_per_layer_input=8, vocab_size_per_layer_input=131,
                                     final_logit_softcapping=4.0, enable_moe_block=False,
                                     max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                     hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                                     attention_dropout=0.0, rope_parameters=g4_rope)],
        extra_ok=g4_nv, no_verify=g4_nv, expected_rotary_dims=None,
    ))
    S.append(m.Spec(
        name="gemma4-moe", family="gemma4", config_class="Gemma4TextConfig", model_class="Gemma4ForCausalLM",
        seq_len=50,
        notes="model_type gemma4_text; layer_types s,full,s,full; sliding_window 10; 4q:2kv, head_dim 16 sliding / "
              "24 full (attention_k_eq_v False, so the global kv-head override is ignored), proportional rope "
              "partial 0.5 on full layers; MoE block beside the dense MLP 48: router RMSNorm (no weight) x scale x "
              "hidden^-0.5, softmax over 4 experts, top-2 renormalised x per_expert_scale, experts 32 on "
              "pre_feedforward_layernorm_2(residual), outputs summed after post_feedforward_layernorm_1/_2; no PLE "
              "(hidden_size_per_layer_input 0); no final softcap; untied; vocab 97",
        variants=lambda C: [m.common(97, 64, 4, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
                                     head_dim=16, global_head_dim=24, num_global_key_value_heads=1,
                                     attention_k_eq_v=False, sliding_window=10,
                                     layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                                  "full_attention"],
                                     num_kv_shared_layers=0, use_double_wide_mlp=False,
                                     hidden_size_per_layer_input=0, vocab_size_per_layer_input=97,
                                     final_logit_softcapping=None, enable_moe_block=True, num_experts=4,
                                     top_k_experts=2, moe_intermediate_size=32,
                                     max_position_embeddings=512, rms_norm_eps=1e-6, tie_word_embeddings=False,
                                     hidden_activation="gelu_pytorch_tanh", attention_bias=False,
                                     attention_dropout=0.0,
                                     rope_parameters={"sliding_attention": m.rope(10000.0),
                                                      "full_attention": m.rope(1000000.0, "proportional",
                                                                               partial_rotary_factor=0.5)})],
        extra_ok=g4_nv, no_verify=g4_nv, expected_rotary_dims=None, moe=True,
    ))
    return S
