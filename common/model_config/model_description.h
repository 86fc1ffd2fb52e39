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
#include "common/moe_routing.h"
#include "common/rope.h"

namespace epserve {

// What the feed-forward block of a decoder layer is, coarsely.
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

enum class QuantMethod { kNone, kFp8, kAwq, kGptq, kOther };

const char* LayerKindName(LayerKind kind);    // "dense", "moe"
const char* QkNormKindName(QkNormKind kind);  // "none", "per_head", "full"
const char* QuantMethodName(QuantMethod m);   // "none", "fp8", "awq", "gptq", "other"

// The model-wide MoE keys of config.json. Which layers use them, and how,
// is LayerSpec::feed_forward.
struct MoeParams {
  int num_experts = 0;
  int64_t moe_intermediate_size = 0;  // width of one routed expert
  RoutingParams routing;              // top_k = num_experts_per_tok, renormalize = norm_topk_prob
  int64_t shared_expert_intermediate_size = 0;  // 0: no shared expert
  bool shared_expert_gate = false;              // sigmoid(x . w) scales the shared expert's output
};

// ---- Per-layer spec: what the decoder composes each layer from ----

enum class AttentionKind {
  kGqa,  // multi/grouped-query attention: q/k/v projections, K and V cached per head
  kMla,  // multi-head latent attention: one compressed latent cached (no architecture yet)
};

const char* AttentionKindName(AttentionKind kind);  // "gqa", "mla"

struct AttentionSpec {
  AttentionKind kind = AttentionKind::kGqa;
  int num_heads = 0;       // Hq
  int num_kv_heads = 0;    // Hkv
  int64_t head_dim = 0;    // D
  int64_t latent_dim = 0;  // kMla: the cached latent's width; 0 otherwise
  QkNormKind qk_norm = QkNormKind::kNone;
  bool qkv_bias = false;   // q/k/v projections carry a bias
  bool out_bias = false;   // o_proj carries a bias
  bool use_rope = true;    // false: a NoPE layer (no rotary embedding)
  RopeConfig rope;         // when use_rope
  int64_t chunk_size = 0;  // > 0: chunked-local attention over chunks of this many tokens
};

enum class FeedForwardKind {
  kDense,      // SwiGLU MLP of width intermediate_size
  kMoe,        // router + routed experts
  kMoeShared,  // router + routed experts + one shared expert (optionally sigmoid-gated)
};

const char* FeedForwardKindName(FeedForwardKind kind);  // "dense", "moe", "moe_shared"

struct FeedForwardSpec {
  FeedForwardKind kind = FeedForwardKind::kDense;
  int64_t intermediate_size = 0;  // kDense: the MLP width
  // kMoe, kMoeShared:
  int num_experts = 0;
  int64_t expert_intermediate_size = 0;  // width of one routed expert
  RoutingParams routing;
  // kMoeShared:
  int64_t shared_intermediate_size = 0;
  bool shared_expert_gate = false;  // sigmoid(x . w) scales the shared expert's output

  bool is_moe() const { return kind != FeedForwardKind::kDense; }
  LayerKind layer_kind() const { return is_moe() ? LayerKind::kMoe : LayerKind::kDense; }
};

struct LayerSpec {
  AttentionSpec attention;
  FeedForwardSpec feed_forward;
};

// quantization_config as found; recognised here, accepted or refused by the
// loader. Fields not meaningful for `method` keep their defaults.
struct QuantizationParams {
  QuantMethod method = QuantMethod::kNone;
  std::string method_name;  // quant_method verbatim ("fp8", "awq", "compressed-tensors", ...)
  // fp8
  std::vector<int64_t> weight_block_size;  // e.g. {128, 128}; empty: per-tensor
  std::string activation_scheme;           // "dynamic" | "static"
  std::string fp8_format;                  // "fmt": "e4m3" (float8_e4m3fn weights)
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
  RopeConfig rope;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;

  bool attention_bias = false;      // q/k/v projections carry a bias
  bool attention_out_bias = false;  // o_proj carries a bias
  QkNormKind qk_norm = QkNormKind::kNone;
  std::optional<double> clip_qkv;         // OLMoE: clamp q/k/v to [-c, c]
  std::optional<int64_t> sliding_window;  // Mixtral: attention window, if any

  MoeParams moe;  // meaningful iff is_moe()

  // What each layer is (size num_layers), filled by the architecture from
  // the fields above: the decoder composes its layers from these alone.
  std::vector<LayerSpec> layers;

  std::optional<DataType> dtype;  // torch_dtype (v4) / dtype (v5)
  QuantizationParams quantization;

  std::vector<int64_t> bos_token_ids;  // empty: none given
  std::vector<int64_t> eos_token_ids;

  // layers[i].feed_forward.layer_kind() for every layer.
  std::vector<LayerKind> layer_kinds() const;
  bool is_moe() const { return num_moe_layers() > 0; }
  int num_moe_layers() const;
  // Sums over ExpectedTensors(*this) (tensor_spec.h). Active counts every
  // non-expert tensor plus top_k routed experts of each MoE layer; embeddings,
  // lm_head, routers and shared experts included.
  int64_t total_params() const;
  int64_t active_params_per_token() const;
};

}  // namespace epserve
