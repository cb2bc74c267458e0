"""Parity fixture specs of BitNet b1.58 (BitNetForCausalLM with quantization_config quant_method "bitnet").

make_fixtures builds the model from its config (plain nn.Linear layers), perturbs and saves it: the
checkpoint holds f32 unpacked weights, and from_pretrained then applies the BitNet quantizer. With
linear_class "autobitlinear" and quantization_mode "online" (the layout such a checkpoint loads in),
every linear ternarizes its weight at each forward (scale mean|W|, round, clamp to [-1, 1]) and
quantizes its input per token to int8 (absmax 127, round half to even, clamp [-128, 127]), both in
f32. Small configs: a quantization boundary crossed differently by float rounding moves one int8
step, so fewer quantized activations keep that chance small."""


def _quant_check(m, expected: dict):
    def check(config):
        q = getattr(config, "quantization_config", None)
        got = q if isinstance(q, dict) else (q.to_dict() if hasattr(q, "to_dict") else vars(q))
        for k, v in expected.items():
            if got.get(k) != v:
                raise m.FixtureError(f"config.quantization_config[{k!r}] = {got.get(k)!r}, expected {v!r}")

    return check


def specs(m):
    S = []
    online = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
    S.append(m.Spec(
        name="bitnet-online", family="bitnet", config_class="BitNetConfig", model_class="BitNetForCausalLM",
        seq_len=40,
        notes="AutoBitLinear online (f32 unpacked weights ternarized per tensor at each forward, int8 per-token "
              "activations) on q/k/v/o/gate/up/down; attn_sub_norm before o_proj, ffn_sub_norm before down_proj, "
              "relu2; GQA 4q:2kv head_dim 8; rope theta 10000; untied lm_head (float); 2 layers; vocab 131",
        variants=lambda C: [m.common(131, 32, 2, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                                     hidden_act="relu2", rms_norm_eps=1e-5, max_position_embeddings=256,
                                     tie_word_embeddings=False, attention_bias=False, attention_dropout=0.0,
                                     quantization_config=dict(online), **m.rope_kwargs(C, m.rope(10000.0)))],
        expected_rotary_dims={8},
        no_verify={"quantization_config"},
        checks=[_quant_check(m, online)],
    ))
    # use_rms_norm is not exercised here: the model is built without the quantizer, so the saved checkpoint
    # would hold no <linear>.rms_norm.weight and transformers would initialise those norms on load.
    S.append(m.Spec(
        name="bitnet-online-bias-tied", family="bitnet", config_class="BitNetConfig",
        model_class="BitNetForCausalLM", seq_len=40,
        notes="AutoBitLinear online as bitnet-online, with attention_bias on q/k/v/o (added after the quantized "
              "product); MQA 4q:1kv head_dim 8; rope theta 500000 (BitNet's default); tied embeddings; rms_norm_eps "
              "1e-6; intermediate 48; 2 layers; vocab 97",
        variants=lambda C: [m.common(97, 32, 2, intermediate_size=48, num_attention_heads=4, num_key_value_heads=1,
                                     hidden_act="relu2", rms_norm_eps=1e-6, max_position_embeddings=256,
                                     tie_word_embeddings=True, attention_bias=True, attention_dropout=0.0,
                                     quantization_config=dict(online), **m.rope_kwargs(C, m.rope(500000.0)))],
        expected_rotary_dims={8},
        no_verify={"quantization_config"},
        checks=[_quant_check(m, online)],
    ))
    return S
