"""Parity fixture specs: Qwen3.5 (dense and MoE), LFM2-MoE, GLM-MoE-DSA (see make_fixtures.extra_specs)."""


def specs(m):
    S = []

    # ---------------- Qwen3.5 ----------------
    # The text RoPE is multimodal (mrope_section over t/h/w positions); for text all three components are
    # the token position, so it acts as plain partial RoPE. mrope_section sums to rotary_dim / 2.
    q35_dense_layers = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
    S.append(m.Spec(
        name="qwen35-dense", family="qwen3_5", config_class="Qwen3_5TextConfig",
        model_class="Qwen3_5ForCausalLM", seq_len=70,
        notes="model_type qwen3_5_text; layer_types lin,lin,full,lin; gated delta rule over separate "
              "in_proj_qkv / in_proj_z / in_proj_b / in_proj_a, linear_num_key_heads 2, linear_num_value_heads 4 "
              "(q,k repeat_interleave'd), key head dim 16 != value head dim 24, conv kernel 4; T=70 > HF chunk 64; "
              "gated attention (q_proj doubled, sigmoid gate), zero-centred norms, head_dim 32 with "
              "partial_rotary_factor 0.25 (8 rotary dims), mrope_section [2,1,1] interleaved (text positions: plain "
              "RoPE); GQA 4q:2kv; dense SwiGLU MLP 80; tied embeddings; vocab 131",
        variants=lambda C: [m.common(131, 48, 4, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
                                     head_dim=32, layer_types=q35_dense_layers, linear_conv_kernel_dim=4,
                                     linear_key_head_dim=16, linear_value_head_dim=24, linear_num_key_heads=2,
                                     linear_num_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-6,
                                     tie_word_embeddings=True, attention_bias=False, attention_dropout=0.0,
                                     hidden_act="silu", partial_rotary_factor=0.25,
                                     **m.rope_kwargs(C, m.rope(10000000.0, mrope_section=[2, 1, 1],
                                                               mrope_interleaved=True), partial=0.25))],
        extra_ok={"partial_rotary_factor"}, no_verify={"partial_rotary_factor"},
        expected_rotary_dims={8},
    ))
    q35_moe_layers = ["full_attention", "linear_attention", "linear_attention", "full_attention"]
    S.append(m.Spec(
        name="qwen35-moe", family="qwen3_5_moe", config_class="Qwen3_5MoeTextConfig",
        model_class="Qwen3_5MoeForCausalLM", seq_len=66,
        notes="model_type qwen3_5_moe_text; layer_types full,lin,lin,full; gated delta rule with "
              "linear_num_key_heads = linear_num_value_heads = 2, head dims 16; gated attention with "
              "attention_bias (q/k/v/o biases), head_dim 16, partial_rotary_factor 0.5, MQA 4q:1kv; every layer "
              "MoE: 6 experts top-2 (softmax, top-k, always renormalised), shared expert 40 with sigmoid gate; "
              "untied; T=66 > HF chunk 64; vocab 97",
        variants=lambda C: [m.common(97, 64, 4, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                     layer_types=q35_moe_layers, linear_conv_kernel_dim=4, linear_key_head_dim=16,
                                     linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=2,
                                     num_experts=6, num_experts_per_tok=2, moe_intermediate_size=32,
                                     shared_expert_intermediate_size=40, max_position_embeddings=512,
                                     rms_norm_eps=1e-6, tie_word_embeddings=False, output_router_logits=False,
                                     attention_bias=True, attention_dropout=0.0, hidden_act="silu",
                                     partial_rotary_factor=0.5,
                                     **m.rope_kwargs(C, m.rope(10000.0, mrope_section=[2, 1, 1],
                                                               mrope_interleaved=True), partial=0.5))],
        extra_ok={"partial_rotary_factor"}, no_verify={"partial_rotary_factor"},
        expected_rotary_dims={8}, moe=True,
    ))
    # ---------------- LFM2-MoE ----------------
    lm_layers = ["conv", "full_attention", "conv", "conv", "full_attention"]
    S.append(m.Spec(
        name="lfm2moe-bias", family="lfm2_moe", config_class="Lfm2MoeConfig", model_class="Lfm2MoeForCausalLM",
        seq_len=54,
        notes="layer_types conv,full,conv,conv,full; num_dense_layers 1 (dense w1/w3/w2 MLP 96, no width "
              "adjustment), MoE on layers 1-4: 6 experts top-3, sigmoid router with use_expert_bias (buffer saved "
              "as zeros), norm_topk_prob True (÷ Σ + 1e-6), routed_scaling_factor 1.7, fused experts 32; "
              "conv_L_cache 3, conv_bias False; q/k layernorm; GQA 4q:2kv; tied; vocab 113",
        variants=lambda C: [m.common(113, 64, 5, intermediate_size=96, moe_intermediate_size=32,
                                     num_attention_heads=4, num_key_value_heads=2, layer_types=lm_layers,
                                     conv_L_cache=3, conv_bias=False, num_dense_layers=1, num_experts=6,
                                     num_experts_per_tok=3, use_expert_bias=True, routed_scaling_factor=1.7,
                                     norm_topk_prob=True, norm_eps=1e-5, max_position_embeddings=512,
                                     tie_word_embeddings=True, **m.rope_kwargs(C, m.rope(1000000.0)))],
        expected_rotary_dims={16}, moe=True,
    ))
    lm2_layers = ["full_attention", "conv", "conv"]
    S.append(m.Spec(
        name="lfm2moe-nobias", family="lfm2_moe", config_class="Lfm2MoeConfig", model_class="Lfm2MoeForCausalLM",
        seq_len=47,
        notes="layer_types full,conv,conv; num_dense_layers 0 (every layer MoE): 4 experts top-2, sigmoid router "
              "without expert bias, norm_topk_prob False, routed_scaling_factor 1.0; conv_bias True; "
              "MQA 4q:1kv head_dim 12; untied lm_head; vocab 89",
        variants=lambda C: [m.common(89, 48, 3, intermediate_size=64, moe_intermediate_size=24,
                                     num_attention_heads=4, num_key_value_heads=1, layer_types=lm2_layers,
                                     conv_L_cache=3, conv_bias=True, num_dense_layers=0, num_experts=4,
                                     num_experts_per_tok=2, use_expert_bias=False, routed_scaling_factor=1.0,
                                     norm_topk_prob=False, norm_eps=1e-5, max_position_embeddings=512,
                                     tie_word_embeddings=False, **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={12}, moe=True,
    ))
    # ---------------- GLM-MoE-DSA ----------------
    def glm_kwargs(C, layers, **kw):
        out = m.common(97, 64, layers, intermediate_size=96, moe_intermediate_size=32, num_attention_heads=4,
                       num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, routed_scaling_factor=2.5,
                       kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=16,
                       num_experts_per_tok=2, norm_topk_prob=True, index_topk=12, index_head_dim=16,
                       index_n_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       attention_bias=False, attention_dropout=0.0, hidden_act="silu")
        out.update(kw)
        return out

    def need_indexer_types(c):
        if not hasattr(c, "indexer_types"):
            raise m.FixtureError("this GlmMoeDsaConfig has no indexer_types (IndexShare)")

    S.append(m.Spec(
        name="glmdsa-dsa", family="glm_moe_dsa", config_class="GlmMoeDsaConfig",
        model_class="GlmMoeDsaForCausalLM", seq_len=50,
        notes="every layer DSA with its own indexer: index_n_heads 4, index_head_dim 16 (first 8 dims rotated), "
              "index_topk 12 < T; MLA q_lora 24, kv_lora 16, qk_nope 16, qk_rope 8, v_head_dim 16, 4 heads; RoPE "
              "default theta 1e6; mlp_layer_types dense,sparse,sparse: sigmoid router with e_score_correction_bias "
              "(perturbed), n_group 1, 8 routed experts top-2, 1 shared, routed_scaling_factor 2.5; vocab 97",
        variants=lambda C: [glm_kwargs(C, 3, n_group=1, topk_group=1, mlp_layer_types=["dense", "sparse", "sparse"],
                                       **m.rope_kwargs(C, m.rope(1000000.0)))],
        expected_rotary_dims={8}, moe=True,
    ))
    S.append(m.Spec(
        name="glmdsa-indexshare", family="glm_moe_dsa", config_class="GlmMoeDsaConfig",
        model_class="GlmMoeDsaForCausalLM", seq_len=58,
        notes="indexer_types full,shared,shared,full (IndexShare: shared layers reuse the last full layer's top-k "
              "and have no indexer weights); index_topk 12 < T; index_n_heads 16, so that no index score is an exact "
              "ReLU zero tying at the top-k boundary (torch.topk breaks such ties in no defined order); "
              "first_k_dense_replace 1; group-limited routing "
              "n_group 2, topk_group 1 over 8 experts top-2; RoPE yarn factor 4 (mscale = mscale_all_dim = 1); "
              "MLA as glmdsa-dsa; vocab 97",
        variants=lambda C: [glm_kwargs(C, 4, n_group=2, topk_group=1, first_k_dense_replace=1, index_n_heads=16,
                                       indexer_types=["full", "shared", "shared", "full"],
                                       **m.rope_kwargs(C, m.rope(10000.0, "yarn", factor=4.0,
                                                                 original_max_position_embeddings=64, beta_fast=32.0,
                                                                 beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0)))],
        expected_rotary_dims={8}, moe=True, checks=[need_indexer_types],
    ))
    return S
