"""Parity fixture specs of attention-variant families: DiffLlama (differential attention), Doge (dynamic-mask
attention) and MiMo-V2-Flash (hybrid sliding-window / global attention with sinks, MoE)."""


def specs(m):
    S = []

    # ---------------- DiffLlama ----------------
    S.append(m.Spec(
        name="diffllama-gqa-bias", family="diffllama", config_class="DiffLlamaConfig",
        model_class="DiffLlamaForCausalLM", seq_len=48,
        notes="differential attention: GQA 8q:4kv (kv heads even, as DiffLlama requires), head_dim 8, "
              "attention_bias on q/k/v/o, lambda_q1/k1/q2/k2 per layer (lambda_init 0.8-0.6*exp(-0.3*layer)), "
              "headwise RMSNorm over 2*head_dim without weight; rope theta 10000; untied; 3 layers; vocab 131",
        variants=lambda C: [m.common(131, 64, 3, intermediate_size=96, num_attention_heads=8, num_key_value_heads=4,
                                     head_dim=8, attention_bias=True, rms_norm_eps=1e-5, max_position_embeddings=512,
                                     tie_word_embeddings=False, attention_dropout=0.0, lambda_std_dev=0.1,
                                     hidden_act="silu", **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={8},
    ))
    S.append(m.Spec(
        name="diffllama-mha-tied", family="diffllama", config_class="DiffLlamaConfig",
        model_class="DiffLlamaForCausalLM", seq_len=56,
        notes="differential attention: MHA 4q:4kv, head_dim 16 (= hidden / heads), no bias, rope linear factor 2, "
              "tied embeddings, gelu_pytorch_tanh MLP, 2 layers, vocab 97",
        variants=lambda C: [m.common(97, 64, 2, intermediate_size=80, num_attention_heads=4, num_key_value_heads=4,
                                     attention_bias=False, rms_norm_eps=1e-6, max_position_embeddings=512,
                                     tie_word_embeddings=True, attention_dropout=0.0, lambda_std_dev=0.1,
                                     hidden_act="gelu_pytorch_tanh",
                                     **m.rope_kwargs(C, m.rope(10000.0, "linear", factor=2.0)))],
        expected_rotary_dims={16},
    ))

    # ---------------- Doge ----------------
    S.append(m.Spec(
        name="doge-dma-topk", family="doge", config_class="DogeConfig", model_class="DogeForCausalLM",
        seq_len=50,
        notes="dynamic mask attention: per key and kv head bias exp(A*softplus(dt_proj(v))) added to the scores; "
              "keep_window_size 48 < T so queries 48 and 49 keep only the 48 visible keys with the largest bias "
              "(a smaller keep makes repeated input tokens tie at the cut in layer 0, where torch.topk breaks "
              "ties by its sort's order); "
              "GQA 4q:2kv head_dim 16, q_norm/k_norm, attention_bias (q/k/v/o/dt_proj), mlp_bias, learned "
              "input_residual / post_attention_residual vectors; dense MLP; untied; 3 layers; vocab 131",
        variants=lambda C: [m.common(131, 64, 3, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                                     attention_bias=True, mlp_bias=True, keep_window_size=48, is_moe=False,
                                     sliding_window=None, rms_norm_eps=1e-6, max_position_embeddings=512,
                                     tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0,
                                     hidden_act="silu", **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={16},
    ))
    S.append(m.Spec(
        name="doge-swa-tied", family="doge", config_class="DogeConfig", model_class="DogeForCausalLM",
        seq_len=44,
        notes="dynamic mask attention with sliding_window 12 (mask i-12 < j <= i) and keep_window_size 2048 (no "
              "top-k); GQA 6q:3kv head_dim 8, no biases, tied embeddings, 2 layers, vocab 97",
        variants=lambda C: [m.common(97, 48, 2, intermediate_size=64, num_attention_heads=6, num_key_value_heads=3,
                                     attention_bias=False, mlp_bias=False, keep_window_size=2048, is_moe=False,
                                     sliding_window=12, rms_norm_eps=1e-6, max_position_embeddings=512,
                                     tie_word_embeddings=True, attention_dropout=0.0, hidden_dropout=0.0,
                                     hidden_act="silu", **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={8},
    ))

    # ---------------- MiMo-V2-Flash ----------------
    S.append(m.Spec(
        name="mimov2-hybrid-moe", family="mimo_v2_flash", config_class="MiMoV2FlashConfig",
        model_class="MiMoV2FlashForCausalLM", seq_len=54,
        notes="layer_types full/sliding/sliding/full, sliding_window 10; sliding layers have twice the kv heads "
              "(2 vs 1) and per-head sinks; head_dim 24 (q/k), v_head_dim 16; partial rope 0.334 (8 of 24 dims) "
              "with theta 5e6 (full) / 1e4 (sliding); attention_value_scale 0.707; mlp_layer_types "
              "dense/sparse/sparse/sparse; 8 experts top-2, sigmoid router with e_score_correction_bias, "
              "n_group 2 / topk_group 1, norm_topk_prob, routed_scaling_factor 2.5; untied; vocab 131",
        variants=lambda C: [m.common(131, 64, 4, intermediate_size=96, moe_intermediate_size=32,
                                     num_attention_heads=4, num_key_value_heads=1, head_dim=24, v_head_dim=16,
                                     sliding_window=10,
                                     layer_types=["full_attention", "sliding_attention", "sliding_attention",
                                                  "full_attention"],
                                     mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                                     n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                                     norm_topk_prob=True, routed_scaling_factor=2.5, attention_value_scale=0.707,
                                     attention_bias=False, rms_norm_eps=1e-5, max_position_embeddings=512,
                                     tie_word_embeddings=False, attention_dropout=0.0,
                                     rope_parameters={
                                         "full_attention": m.rope(5000000.0, partial_rotary_factor=0.334),
                                         "sliding_attention": m.rope(10000.0, partial_rotary_factor=0.334)})],
        expected_rotary_dims={8}, moe=True,
    ))
    S.append(m.Spec(
        name="mimov2-bias-tied", family="mimo_v2_flash", config_class="MiMoV2FlashConfig",
        model_class="MiMoV2FlashForCausalLM", seq_len=46,
        notes="layer_types sliding/full/sliding, sliding_window 8; GQA 4q:2kv (sliding 4q:4kv + sinks); head_dim = "
              "v_head_dim = 16; q/k/v biases (o_proj never has one); rope partial 0.5 (sliding, theta 1e4) and "
              "0.25 (full, theta 1e6); attention_value_scale 1.3; mlp_layer_types sparse/dense/sparse; 6 experts "
              "top-3, n_group 1, norm_topk_prob False, routed_scaling_factor 1.0; tied; vocab 97",
        variants=lambda C: [m.common(97, 48, 3, intermediate_size=64, moe_intermediate_size=24,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, v_head_dim=16,
                                     sliding_window=8,
                                     layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                     mlp_layer_types=["sparse", "dense", "sparse"],
                                     n_routed_experts=6, num_experts_per_tok=3, n_group=1, topk_group=1,
                                     norm_topk_prob=False, routed_scaling_factor=1.0, attention_value_scale=1.3,
                                     attention_bias=True, rms_norm_eps=1e-6, max_position_embeddings=512,
                                     tie_word_embeddings=True, attention_dropout=0.0,
                                     rope_parameters={
                                         "full_attention": m.rope(1000000.0, partial_rotary_factor=0.25),
                                         "sliding_attention": m.rope(10000.0, partial_rotary_factor=0.5)})],
        expected_rotary_dims={4, 8}, moe=True,
    ))
    return S
