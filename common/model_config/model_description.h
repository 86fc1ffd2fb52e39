// The normalised description of a Hugging Face decoder-only model: what every
// supported architecture's config.json says, in one shape. Produced by
// ParseModelConfig (model_config.h); consumed by weight binding, the dummy
// loader, the model code and `epserve-run inspect`. Plain data: no device, no
// weights.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace epserve {

// What the feed-forward block of a decoder layer is.
enum class LayerKind {
  kDense,  // SwiGLU MLP of width intermediate_size
  kMoe,    // router + routed experts (+ shared expert where the architecture has one)
};

// RMSNorm applied to q and k after projection, before rope.
enum class QkNormKind {
  kNone,
  kPerHead,  // Qwen3 / Qwen3-MoE: weight [head_dim], applied to each head
  kFull,     // OLMoE: weight [num_heads * head_dim] (q) / [num_kv_heads * head_dim] (k),
             // normalising across all heads of the projection at once
};

enum class RopeType { kDefault, kLinear, kLlama3, kYarn };

// How router logits become expert weights.
enum class RoutingKind {
  // softmax over all experts (fp32) -> top-k -> renormalise the k weights to
  // sum 1 iff norm_topk_prob.
  kSoftmaxTopK,
};

enum class QuantMethod { kNone, kFp8, kAwq, kGptq, kOther };

const char* LayerKindName(LayerKind kind);    // "dense", "moe"
const char* QkNormKindName(QkNormKind kind);  // "none", "per_head", "full"
const char* RopeTypeName(RopeType type);      // "default", "linear", "llama3", "yarn"
const char* QuantMethodName(QuantMethod m);   // "none", "fp8", "awq", "gptq", "other"

// Rotary position embedding. Every supported architecture rotates halves
// (GPT-NeoX layout: pairs (i, i + rotary_dim/2)), never interleaved pairs.
struct RopeParams {
  double theta = 10000.0;
  RopeType type = RopeType::kDefault;
  bool neox_layout = true;  // rotate-half
  // linear, llama3, yarn: the context extension factor.
  double factor = 1.0;
  // llama3: frequency band edges. yarn: the pre-training context length
  // (defaults to max_position_embeddings when the config omits it).
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;  // 0: not applicable
  // yarn only. Unset optionals follow the YaRN defaults: attention_factor =
  // 0.1 * ln(factor) + 1, or mscale/mscale_all_dim ratio when both are given.
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  std::optional<double> attention_factor;
};

struct MoeParams {
  int num_experts = 0;
  int top_k = 0;                      // num_experts_per_tok
  int64_t moe_intermediate_size = 0;  // width of one routed expert
  bool norm_topk_prob = false;
  RoutingKind routing = RoutingKind::kSoftmaxTopK;
  int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gate = false;              // sigmoid(x . w) scales the shared expert's output
};

// quantization_config as found; recognised here, accepted or refused by the
// loader. Fields not meaningful for `method` keep their defaults.
struct QuantizationParams {
  QuantMethod method = QuantMethod::kNone;
  std::string method_name;  // quant_method verbatim ("fp8", "awq", "compressed-tensors", ...)
  // fp8
  std::vector<int64_t> weight_block_size;  // e.g. {128, 128}; empty: per-tensor
  std::string activation_scheme;           // "dynamic" | "static"
  // awq / gptq
  int bits = 0;
  int group_size = 0;
  bool zero_point = false;  // awq
  std::string version;      // awq "gemm" / "gemv"
  bool desc_act = false;    // gptq
  bool sym = false;         // gptq
  std::vector<std::string> modules_to_not_convert;
};

struct ModelDescription {
  std::string architecture;  // config.json architectures[0] (or the one model_type chose)
  std::string model_type;
  std::string config_file;  // where it came from, for later error messages

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;  // dense MLP width; 0 when no layer is dense
  double rms_norm_eps = 1e-6;
  RopeParams rope;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;

  bool attention_bias = false;      // q/k/v projections carry a bias
  bool attention_out_bias = false;  // o_proj carries a bias
  QkNormKind qk_norm = QkNormKind::kNone;
  std::optional<double> clip_qkv;         // OLMoE: clamp q/k/v to [-c, c]
  std::optional<int64_t> sliding_window;  // Mixtral: attention window, if any

  std::vector<LayerKind> layer_kinds;  // size num_layers
  MoeParams moe;                       // meaningful iff is_moe()

  std::optional<DataType> dtype;  // torch_dtype (v4) / dtype (v5)
  QuantizationParams quantization;

  std::vector<int64_t> bos_token_ids;  // empty: none given
  std::vector<int64_t> eos_token_ids;

  bool is_moe() const { return num_moe_layers() > 0; }
  int num_moe_layers() const;
  // Sums over ExpectedTensors(*this) (tensor_spec.h). Active counts every
  // non-expert tensor plus top_k routed experts of each MoE layer; embeddings,
  // lm_head, routers and shared experts included.
  int64_t total_params() const;
  int64_t active_params_per_token() const;
};

}  // namespace epserve
