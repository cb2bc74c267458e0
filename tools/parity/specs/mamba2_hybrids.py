"""Parity fixture specs of the Mamba-2 hybrids: Nemotron-H (Mamba-2 / attention / MLP / MoE layer pattern), Falcon-H1
(attention and Mamba-2 in parallel in every layer, muP multipliers) and Zamba2 (Mamba-2 backbone with shared
attention blocks, per-use LoRA adapters, the original embeddings concatenated to the shared blocks' input)."""


def specs(m):
    S = []

    # ---------------- Nemotron-H ----------------
    nh_moe = ["linear_attention", "moe", "full_attention", "linear_attention", "mlp", "moe"]
    S.append(m.Spec(
        name="nemotronh-moe", family="nemotron_h", config_class="NemotronHConfig",
        model_class="NemotronHForCausalLM", seq_len=58,
        notes="layers_block_type M,E,*,M,-,E; Mamba-2 8 heads x 16, n_groups 2 (grouped gated RMSNorm, group 64), "
              "ssm_state_size 16, conv 4, chunk 16 (T=58); time_step_min 1e-6 with time_step_floor 0.01 (HF clamps dt below at time_step_min in "
              "the chunked scan only, not in its decode step: kept out of reach so both agree); attention without "
              "positional encoding, GQA 4q:2kv head_dim 16 (explicit); relu2 non-gated MLP 96; MoE 8 non-gated "
              "experts top-2 of 32 with sigmoid router + e_score_correction_bias (perturbed), n_group 2 / "
              "topk_group 1, norm_topk_prob, routed_scaling_factor 2.5, shared expert 48; untied; vocab 131",
        variants=lambda C: [m.common(131, 64, 6, layers_block_type=nh_moe, num_attention_heads=4,
                                     num_key_value_heads=2, head_dim=16, intermediate_size=96, mlp_hidden_act="relu2",
                                     mlp_bias=False, mamba_num_heads=8, mamba_head_dim=16, n_groups=2,
                                     ssm_state_size=16, conv_kernel=4, chunk_size=16, use_conv_bias=True,
                                     use_bias=False, mamba_hidden_act="silu", use_mamba_kernels=False,
                                     time_step_min=1e-6, time_step_floor=0.01, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                                     moe_shared_expert_intermediate_size=48, n_group=2, topk_group=1,
                                     norm_topk_prob=True, routed_scaling_factor=2.5, layer_norm_epsilon=1e-5,
                                     max_position_embeddings=512, tie_word_embeddings=False,
                                     attention_dropout=0.0)],
        expected_rotary_dims=set(), moe=True,
    ))
    nh_dense = ["linear_attention", "mlp", "full_attention", "linear_attention", "mlp"]
    S.append(m.Spec(
        name="nemotronh-dense-bias", family="nemotron_h", config_class="NemotronHConfig",
        model_class="NemotronHForCausalLM", seq_len=49,
        notes="layers_block_type M,-,*,M,-; Mamba-2 12 heads x 8, n_groups 3 (group 32), ssm_state_size 8, conv 3, "
              "chunk 16, time_step_min 1e-6; use_bias (in_proj/out_proj biases), mlp_bias; MQA 4q:1kv head_dim 12; layer_norm_epsilon "
              "1e-6; tie_word_embeddings True (NemotronHForCausalLM ties nothing: lm_head is its own tensor); "
              "hidden 48; vocab 97",
        variants=lambda C: [m.common(97, 48, 5, layers_block_type=nh_dense, num_attention_heads=4,
                                     num_key_value_heads=1, head_dim=12, intermediate_size=80, mlp_hidden_act="relu2",
                                     mlp_bias=True, mamba_num_heads=12, mamba_head_dim=8, n_groups=3,
                                     ssm_state_size=8, conv_kernel=3, chunk_size=16, use_conv_bias=True,
                                     use_bias=True, mamba_hidden_act="silu", use_mamba_kernels=False,
                                     time_step_min=1e-6, time_step_floor=0.01, layer_norm_epsilon=1e-6, max_position_embeddings=512,
                                     tie_word_embeddings=True, attention_dropout=0.0)],
        expected_rotary_dims=set(),
    ))

    # ---------------- Falcon-H1 ----------------
    def falcon(vocab, hidden, layers, **kw):
        base = dict(num_attention_heads=4, num_key_value_heads=2, intermediate_size=96, hidden_act="silu",
                    mamba_n_heads=6, mamba_d_head=16, mamba_d_ssm=96, mamba_n_groups=2, mamba_d_state=16,
                    mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16, mamba_conv_bias=True,
                    mamba_proj_bias=False, projectors_bias=False, attention_bias=False, mlp_bias=False,
                    rms_norm_eps=1e-5, max_position_embeddings=512, attention_dropout=0.0)
        base.update(kw)
        return m.common(vocab, hidden, layers, **base)

    mup = dict(embedding_multiplier=2.0, lm_head_multiplier=0.7, mlp_multipliers=[1.3, 0.6], key_multiplier=0.8,
               attention_in_multiplier=1.2, attention_out_multiplier=0.9, ssm_in_multiplier=1.1,
               ssm_out_multiplier=0.85, ssm_multipliers=[0.8, 1.1, 1.2, 0.9, 1.3])
    S.append(m.Spec(
        name="falconh1-mup", family="falcon_h1", config_class="FalconH1Config",
        model_class="FalconH1ForCausalLM", seq_len=57,
        notes="every layer: attention (x attention_in 1.2, keys x key_multiplier 0.8, out x 0.9) in parallel with "
              "Mamba-2 (x ssm_in 1.1, in_proj output x ssm_multipliers [z 0.8, x 1.1, B 1.2, C 0.9, dt 1.3], out "
              "x 0.85); mamba_d_ssm 96 (!= expand*hidden), 6 heads x 16, n_groups 2, d_state 16, chunk 16; "
              "mamba_rms_norm with norm_before_gate False (norm of y*silu(z), grouped per n_groups); MLP gate x 1.3, "
              "down x 0.6; embeddings x 2.0, logits x 0.7; GQA 4q:2kv; rope theta 1e4; untied; vocab 131",
        variants=lambda C: [falcon(131, 64, 3, mamba_rms_norm=True, mamba_norm_before_gate=False,
                                   tie_word_embeddings=False, **mup, **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={16},
    ))
    S.append(m.Spec(
        name="falconh1-normfirst-bias", family="falcon_h1", config_class="FalconH1Config",
        model_class="FalconH1ForCausalLM", seq_len=51,
        notes="mamba_rms_norm with norm_before_gate True (norm(y)*w*silu(z), grouped per n_groups 3); mamba_d_ssm "
              "None (expand 2 * hidden 48 = 96 = 12 heads x 8); mamba_proj_bias (in_proj), projectors_bias "
              "(out_proj), attention_bias, mlp_bias; multipliers as falconh1-mup but ssm_multipliers "
              "[1.2, 0.7, 1.0, 1.1, 0.9]; MQA 4q:1kv head_dim 12; d_state 8, conv 3; tied; vocab 97",
        variants=lambda C: [falcon(97, 48, 3, num_key_value_heads=1, mamba_n_heads=12, mamba_d_head=8,
                                   mamba_d_ssm=None, mamba_n_groups=3, mamba_d_state=8, mamba_d_conv=3,
                                   mamba_proj_bias=True, projectors_bias=True, attention_bias=True, mlp_bias=True,
                                   mamba_rms_norm=True, mamba_norm_before_gate=True, tie_word_embeddings=True,
                                   **dict(mup, ssm_multipliers=[1.2, 0.7, 1.0, 1.1, 0.9]),
                                   **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={12},
    ))
    S.append(m.Spec(
        name="falconh1-plain", family="falcon_h1", config_class="FalconH1Config",
        model_class="FalconH1ForCausalLM", seq_len=46,
        notes="mamba_rms_norm False (y*silu(z), no norm), all multipliers 1 (config defaults), n_groups 1, "
              "rope theta 1e6, rms_norm_eps 1e-6, 2 layers, untied, vocab 113",
        variants=lambda C: [falcon(113, 64, 2, mamba_n_groups=1, mamba_rms_norm=False, rms_norm_eps=1e-6,
                                   tie_word_embeddings=False, **m.rope_kwargs(C, m.rope(1000000.0)))],
        expected_rotary_dims={16},
    ))

    # ---------------- Zamba2 ----------------
    z_types = ["linear_attention", "hybrid", "linear_attention", "hybrid", "linear_attention", "hybrid"]
    S.append(m.Spec(
        name="zamba2-shared-adapters", family="zamba2", config_class="Zamba2Config",
        model_class="Zamba2ForCausalLM", seq_len=53,
        notes="6 layers M,H,M,H,M,H; num_mem_blocks 2: hybrid layers 0,2 use shared block 0 and hybrid 1 uses "
              "block 1 (tied weights saved once); use_shared_attention_adapter (per-use LoRA rank 8 on q/k/v) and "
              "the MLP gate_up LoRA; shared block input = RMSNorm([x, embeddings]) (2*hidden), attention head_dim "
              "2*hidden/heads = 16 with scale (head_dim/2)^-0.5, use_mem_rope (theta 1e4); per-layer linear then "
              "x + mamba(norm(x + t)); Mamba-2 4 heads x 16, ngroups 2 (grouped gated norm, eps 1e-5), d_state 16, "
              "time_step_min 1e-6 (dt clamp out of reach, as in the nemotronh specs), "
              "chunk 16; gelu MLP 64; rms_norm_eps 1e-6; tied; vocab 131",
        variants=lambda C: [m.common(131, 32, 6, layers_block_type=z_types, num_attention_heads=4,
                                     num_key_value_heads=4, intermediate_size=64, hidden_act="gelu",
                                     n_mamba_heads=4, mamba_ngroups=2, mamba_d_state=16, mamba_d_conv=4,
                                     mamba_expand=2, chunk_size=16, use_conv_bias=True, add_bias_linear=False,
                                     use_mamba_kernels=False, time_step_min=1e-6, time_step_floor=0.01, num_mem_blocks=2, use_shared_attention_adapter=True,
                                     adapter_rank=8, use_mem_rope=True, rms_norm_eps=1e-6,
                                     max_position_embeddings=512, tie_word_embeddings=True, attention_dropout=0.0,
                                     **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={16},
    ))
    z2_types = ["linear_attention", "linear_attention", "hybrid", "linear_attention", "hybrid"]
    S.append(m.Spec(
        name="zamba2-gqa-bias", family="zamba2", config_class="Zamba2Config",
        model_class="Zamba2ForCausalLM", seq_len=47,
        notes="5 layers M,M,H,M,H; num_mem_blocks 1 (both hybrid layers share one block); no attention adapters "
              "(the MLP gate_up LoRA rank 4 is always there); GQA 4q:2kv head_dim 24; no RoPE (use_mem_rope False); "
              "add_bias_linear (Mamba in/out_proj and MLP biases); Mamba-2 8 heads x 12, ngroups 1, d_state 8, "
              "conv 3; hidden 48; untied; vocab 97",
        variants=lambda C: [m.common(97, 48, 5, layers_block_type=z2_types, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=80, hidden_act="gelu",
                                     n_mamba_heads=8, mamba_ngroups=1, mamba_d_state=8, mamba_d_conv=3,
                                     mamba_expand=2, chunk_size=16, use_conv_bias=True, add_bias_linear=True,
                                     use_mamba_kernels=False, time_step_min=1e-6, time_step_floor=0.01, num_mem_blocks=1, use_shared_attention_adapter=False,
                                     adapter_rank=4, use_mem_rope=False, rms_norm_eps=1e-5,
                                     max_position_embeddings=512, tie_word_embeddings=False, attention_dropout=0.0,
                                     **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims=set(),
    ))
    return S
