"""Parity fixture specs of Kimi Linear (Kimi Delta Attention + MLA + DeepSeek-style MoE) and xLSTM (mLSTM
blocks with exponential gating)."""


def specs(m):
    S = []

    # ---------------- Kimi Linear ----------------
    # Layer names in 5.17: "linear_attention" (KDA) and "full_attention" (MLA without any RoPE); the MLP kind
    # per layer comes from mlp_layer_types. save_pretrained writes the original checkpoint names (the
    # conversion mapping is reverted): block_sparse_moe.*, experts.N.w1/w2/w3, q/k/v_conv1d, f_a/f_b_proj.
    S.append(m.Spec(
        name="kimilinear-kda-mla", family="kimi_linear", config_class="KimiLinearConfig",
        model_class="KimiLinearForCausalLM", seq_len=70,
        notes="layer_types lin,lin,full,lin; KDA 4 heads x 16 (q/k/v short conv kernel 4 with SiLU, per-channel "
              "forget gate -exp(A_log)*softplus(f_b(f_a(x)) + dt_bias), beta = sigmoid(b_proj), l2-normalised q/k, "
              "sigmoid output gate g_b(g_a(x)) after a per-head RMSNorm); T=70 > HF chunk 64 (padded second chunk); "
              "MLA with q_proj (q_lora_rank None), kv_lora_rank 32, qk_nope 16, qk_rope 8 (no rotation anywhere), "
              "v_head_dim 16, 4 heads; sigmoid router with e_score_correction_bias, n_group 2 / topk_group 1, "
              "8 experts (moe_intermediate_size 16) top-2, 1 shared expert, routed_scaling_factor 2.446, norm_topk_prob; mlp_layer_types "
              "dense,sparse,sparse,sparse (dense 96); untied; vocab 131",
        variants=lambda C: [m.common(
            131, 64, 4, intermediate_size=96, moe_intermediate_size=16, num_attention_heads=4, num_key_value_heads=4,
            n_shared_experts=1, num_local_experts=8, num_experts_per_tok=2, routed_scaling_factor=2.446,
            n_group=2, topk_group=1, norm_topk_prob=True, kv_lora_rank=32, q_lora_rank=None, qk_rope_head_dim=8,
            qk_nope_head_dim=16, v_head_dim=16, linear_head_dim=16, linear_num_heads=4, linear_conv_kernel_dim=4,
            layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
            mlp_layer_types=["dense", "sparse", "sparse", "sparse"], hidden_act="silu", rms_norm_eps=1e-5,
            max_position_embeddings=512, tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0,
            output_router_logits=False)],
        expected_rotary_dims=None, moe=True,
    ))
    S.append(m.Spec(
        name="kimilinear-qlora-conv3", family="kimi_linear", config_class="KimiLinearConfig",
        model_class="KimiLinearForCausalLM", seq_len=45,
        notes="layer_types full,lin,lin; MLA with q_lora_rank 24 (q_a_layernorm), kv_lora_rank 16, qk_nope 8, "
              "qk_rope 4, v_head_dim 12, 4 heads; KDA 8 heads x 8, conv kernel 3; MoE 6 experts top-3, 2 shared "
              "experts (one MLP of 2x24), n_group 1, norm_topk_prob False, routed_scaling_factor 1.5; "
              "mlp_layer_types sparse,dense,sparse (dense 80); rms_norm_eps 1e-6; untied; vocab 97",
        variants=lambda C: [m.common(
            97, 64, 3, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=4, num_key_value_heads=4,
            n_shared_experts=2, num_local_experts=6, num_experts_per_tok=3, routed_scaling_factor=1.5,
            n_group=1, topk_group=1, norm_topk_prob=False, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=4,
            qk_nope_head_dim=8, v_head_dim=12, linear_head_dim=8, linear_num_heads=8, linear_conv_kernel_dim=3,
            layer_types=["full_attention", "linear_attention", "linear_attention"],
            mlp_layer_types=["sparse", "dense", "sparse"], hidden_act="silu", rms_norm_eps=1e-6,
            max_position_embeddings=512, tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0,
            output_router_logits=False)],
        expected_rotary_dims=None, moe=True,
    ))

    # ---------------- xLSTM ----------------
    # HF's cache sizes its states from the qk/v dims rounded up to multiples of 64 while the layer uses
    # int(hidden * factor): the factors are chosen so both agree (else cached generation fails in HF).
    # weight_mode "fused" cannot be built by 5.17 (its _init_weights indexes the gate biases with shapes
    # that do not broadcast), so both fixtures use "single".
    S.append(m.Spec(
        name="xlstm-capped-gates", family="xlstm", config_class="xLSTMConfig", model_class="xLSTMForCausalLM",
        seq_len=50,
        notes="mLSTM blocks: 4 heads, qk_dim 64 (dk 16), v_dim 128 (dv 32); gate_soft_cap 2.0 so the input gate "
              "(bias -10) and forget gate (bias 3..6) reach the regime where the stabiliser max picks the input "
              "gate; chunk_size 16 (T=50: three chunkwise chunks + two recurrent steps in HF); per-head LayerNorm "
              "weight over v_dim; sigmoid output gate; FFN proj factor 1.5 rounded up to 64 (96 -> 128); "
              "output_logit_soft_cap 4.0; no biases; untied; 3 blocks; vocab 113",
        variants=lambda C: [m.common(
            113, 64, 3, num_blocks=3, embedding_dim=64, num_heads=4, use_bias=False, qk_dim_factor=1.0,
            v_dim_factor=2.0, gate_soft_cap=2.0, output_logit_soft_cap=4.0, chunk_size=16, ffn_proj_factor=1.5,
            ffn_round_up_to_multiple_of=64, norm_eps=1e-6, eps=1e-6, weight_mode="single", mode="inference",
            tie_word_embeddings=False, add_out_norm=True)],
        expected_rotary_dims=None,
    ))
    S.append(m.Spec(
        name="xlstm-bias-chunk64", family="xlstm", config_class="xLSTMConfig", model_class="xLSTMForCausalLM",
        seq_len=67,
        notes="mLSTM blocks with use_bias (q/k/v/o-gate/out_proj/FFN/norm biases, per-head LayerNorm bias); "
              "2 heads, qk_dim 64 (dk 32), v_dim 64 (dv 32); gate_soft_cap 15 (default); chunk_size 64 "
              "(T=67: one chunk + three recurrent steps in HF); FFN 2.667 rounded to 64 (171 -> 192); "
              "output_logit_soft_cap 30; norm_eps 1e-5; untied; 2 blocks; vocab 89",
        variants=lambda C: [m.common(
            89, 64, 2, num_blocks=2, embedding_dim=64, num_heads=2, use_bias=True, qk_dim_factor=1.0,
            v_dim_factor=1.0, gate_soft_cap=15.0, output_logit_soft_cap=30.0, chunk_size=64, ffn_proj_factor=2.667,
            ffn_round_up_to_multiple_of=64, norm_eps=1e-5, eps=1e-6, weight_mode="single", mode="inference",
            tie_word_embeddings=False, add_out_norm=True)],
        expected_rotary_dims=None,
    ))
    return S
