"""The rows of the reference model fixtures that tools/make_fixtures.py writes
(tests/fixtures/models/): one tiny checkpoint per row. Plain data, no imports, so the
table can be read (and tested) without torch or transformers."""

# --------------------------------------------------------------------------------------
# The fixtures. One row per checkpoint; `config` holds the config.json keys (transformers
# names) on top of COMMON_CONFIG; `rope` is written as v5 `rope_parameters` (or v4
# `rope_theta` + `rope_scaling`); `base` makes a row reuse another row's config and seed
# (same weights) and change only how it is saved.
#   dtype:                 checkpoint dtype on disk ("float32" | "bfloat16")
#   save_original_format:  transformers v5 `save_pretrained(save_original_format=...)`:
#                          True (default) writes the original per-expert layout,
#                          False the packed runtime layout (mlp.experts.gate_up_proj/down_proj)
# --------------------------------------------------------------------------------------
COMMON_CONFIG = {
    "hidden_act": "silu",
    "initializer_range": 0.02,  # unused: init_weights() below overwrites every parameter
    "attention_dropout": 0.0,
    "use_cache": True,
}

FIXTURES = [
    {
        "name": "llama",
        "arch": "LlamaForCausalLM",
        "seed": 1001,
        "varies": "GQA 4:1 (MQA), hidden 48, q/k/v/o biases (attention_bias), llama3 rope scaling "
                  "(all three frequency bands), untied lm_head, rms_norm_eps 1e-5",
        "config": {
            "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 12, "intermediate_size": 96,
            "attention_bias": True, "mlp_bias": False, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 2048, "tie_word_embeddings": False,
        },
        "rope": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 256},
    },
    {
        "name": "qwen2",
        "arch": "Qwen2ForCausalLM",
        "seed": 1002,
        "varies": "GQA 2:1, q/k/v biases (always on Qwen2, no o bias), tied embeddings, "
                  "linear rope scaling (factor 2)",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 96, "rms_norm_eps": 1e-6,
            "max_position_embeddings": 4096, "tie_word_embeddings": True,
            "use_sliding_window": False,
        },
        "rope": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    },
    {
        "name": "qwen3",
        "arch": "Qwen3ForCausalLM",
        "seed": 1003,
        "varies": "head_dim 32 != hidden/heads (16), per-head q/k RMSNorm, GQA 2:1, tied "
                  "embeddings, yarn rope scaling (factor 4, original 512 = 2048/4)",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 96,
            "attention_bias": False, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
            "tie_word_embeddings": True, "use_sliding_window": False,
        },
        "rope": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                 "original_max_position_embeddings": 512},
    },
    {
        "name": "mixtral",
        "arch": "MixtralForCausalLM",
        "seed": 1004,
        "varies": "8 experts top-2 (always renormalised), every layer MoE, 8 heads / 2 kv "
                  "heads (GQA 4:1, head_dim 8), expert width 24, untied, rope_theta 1e6",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 8,
            "num_key_value_heads": 2, "intermediate_size": 24, "num_local_experts": 8,
            "num_experts_per_tok": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
            "tie_word_embeddings": False, "sliding_window": None,
        },
        "rope": {"rope_type": "default", "rope_theta": 1000000.0},
    },
    {
        "name": "qwen2_moe",
        "arch": "Qwen2MoeForCausalLM",
        "seed": 1005,
        "varies": "6 experts top-3, norm_topk_prob false, shared expert (width 32) with sigmoid "
                  "gate, mlp_only_layers [1] (layers 0,2 MoE, 1 dense), q/k/v biases (qkv_bias), "
                  "MHA (kv heads = heads), hidden 48, untied",
        "config": {
            "hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 4, "intermediate_size": 64, "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 32, "num_experts": 6, "num_experts_per_tok": 3,
            "norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": [1],
            "qkv_bias": True, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
            "tie_word_embeddings": False, "use_sliding_window": False,
        },
        "rope": {"rope_type": "default", "rope_theta": 1000000.0},
    },
    {
        "name": "qwen3_moe",
        "arch": "Qwen3MoeForCausalLM",
        "seed": 1006,
        "varies": "decoder_sparse_step 2 + mlp_only_layers [3] over 4 layers (only layer 1 MoE), "
                  "norm_topk_prob false, head_dim 24 != 16, GQA 4:1, q/k/v/o biases "
                  "(attention_bias), tied embeddings",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 24, "intermediate_size": 64,
            "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
            "norm_topk_prob": False, "decoder_sparse_step": 2, "mlp_only_layers": [3],
            "attention_bias": True, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
            "tie_word_embeddings": True, "use_sliding_window": False,
        },
        "rope": {"rope_type": "default", "rope_theta": 1000000.0},
    },
    {
        "name": "olmoe",
        "arch": "OlmoeForCausalLM",
        "seed": 1007,
        "varies": "16 experts top-4, norm_topk_prob true, full-width q/k RMSNorm ([heads*head_dim] "
                  "/ [kv_heads*head_dim] with GQA 2:1), expert width 8, untied",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 8, "num_experts": 16,
            "num_experts_per_tok": 4, "norm_topk_prob": True, "attention_bias": False,
            "clip_qkv": None, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
            "tie_word_embeddings": False,
        },
        "rope": {"rope_type": "default", "rope_theta": 10000.0},
    },
    {
        "name": "qwen3_moe_bf16",
        "arch": "Qwen3MoeForCausalLM",
        "seed": 1008,
        "dtype": "bfloat16",
        "varies": "bfloat16 checkpoint (reference = float32 math on the bf16 weights), 8 experts "
                  "top-2, norm_topk_prob true, every layer MoE, untied",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
            "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
            "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
            "attention_bias": False, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
            "tie_word_embeddings": False, "use_sliding_window": False,
        },
        "rope": {"rope_type": "default", "rope_theta": 1000000.0},
    },
    {
        # The bundled tiny model: the shapes of checkpoints/tiny-random-qwen3-moe/config.json.
        "name": "tiny-qwen3-moe",
        "arch": "Qwen3MoeForCausalLM",
        "seed": 1009,
        "varies": "the bundled tiny model (shapes of checkpoints/tiny-random-qwen3-moe/config.json): 8 experts "
                  "top-2, norm_topk_prob true, 2 MoE layers, GQA 2:1, untied",
        "config": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
            "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
            "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
            "attention_bias": False, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
            "tie_word_embeddings": False, "use_sliding_window": False,
        },
        "rope": {"rope_type": "default", "rope_theta": 1000000.0},
    },
    {
        "name": "mixtral_packed",
        "base": "mixtral",
        "save_original_format": False,
        "varies": "the mixtral fixture's weights saved in the packed layout "
                  "(mlp.experts.gate_up_proj / down_proj, router as mlp.gate)",
    },
    {
        "name": "qwen3_moe_bf16_packed",
        "base": "qwen3_moe_bf16",
        "save_original_format": False,
        "varies": "the qwen3_moe_bf16 fixture's weights saved in the packed layout "
                  "(mlp.experts.gate_up_proj / down_proj, bfloat16)",
    },
]
