// What a decode or prefill step of a model must at least move or compute,
// from its ModelDescription alone (ExpectedTensors and the loader's storage
// dtypes): the numerators of the roofline ratios epserve-bench-gpu prints.
// Plain host math, no device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/model_config/model_description.h"

namespace epserve::bench_gpu {

// Weight bytes by how often a decode step reads them, in the dtypes the
// loader stores them in (norms and routers float32, the rest `weight_dtype`).
struct WeightBytes {
  // Read by every step: attention, norms, routers, dense MLPs, shared
  // experts, final norm and lm_head (the embedding table when tied).
  uint64_t every_step = 0;
  // embed_tokens when not tied: a gather of one row per token, not counted.
  uint64_t embedding = 0;
  // One routed expert of one MoE layer (gate + up + down).
  uint64_t per_expert = 0;
  int num_moe_layers = 0;
  uint64_t total_held = 0;  // everything the device holds
};

WeightBytes CountWeightBytes(const ModelDescription& desc, DataType weight_dtype);

// Distinct experts of E that B tokens touch with top-k routing, each token
// picking k distinct experts uniformly: E * (1 - (1 - k/E)^B); exactly k at
// B = 1.
double ExpectedDistinctExperts(int num_experts, int top_k, int64_t num_tokens);

// Bytes one decode step of `batch` sequences of `context` tokens reads.
struct DecodeBytes {
  double weights = 0;  // WeightBytes::every_step
  double experts = 0;  // per MoE layer: expected distinct experts x per_expert
  double kv = 0;       // batch x context x layers x 2 (K, V) x kv_heads x head_dim x kv size
  double total() const { return weights + experts + kv; }
};

DecodeBytes DecodeStepBytes(const ModelDescription& desc, const WeightBytes& weights, int64_t batch,
                            int64_t context, DataType kv_dtype);

// FLOPs of a prefill step of `num_seqs` fresh prompts of `prompt_len` tokens.
struct PrefillFlops {
  // 2 x tokens x (every matrix a token passes through: attention, dense
  // MLP, router, shared expert, top_k routed experts); no embedding gather.
  double linear = 0;
  // 2 x num_seqs x vocab x hidden: only the last prompt token of a
  // sequence gets a logits row.
  double lm_head = 0;
  // 4 x layers x heads x head_dim x sum over sequences of L (L + 1) / 2
  // causal (query, key) pairs (QK^T and PV).
  double attention = 0;
  // The textbook figure: 2 x active_params_per_token() x tokens + attention
  // (counts the embedding and lm_head for every token).
  double nominal = 0;
  double total() const { return linear + lm_head + attention; }
};

PrefillFlops PrefillStepFlops(const ModelDescription& desc, int64_t num_seqs, int64_t prompt_len);

// One GEMM y[m, n] = x[m, k] . w[n, k]^T, for the cuBLAS reference.
struct GemmShape {
  std::string label;
  int64_t m = 0, n = 0, k = 0;
};

// The weight GEMMs of a prefill of `num_tokens` tokens of `desc` (fused
// q|k|v and gate|up, as the best case for cuBLAS): qkv, o, dense MLP, shared
// expert, and one routed expert's gate|up and down at the mean rows per
// expert (tokens x top_k / experts).
std::vector<GemmShape> PrefillGemmShapes(const ModelDescription& desc, const std::string& config,
                                         int64_t num_tokens);

}  // namespace epserve::bench_gpu
