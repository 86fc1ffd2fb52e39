#include "common/model_config/common_keys.h"

#include <algorithm>
#include <limits>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
// Counts that size host tables before any weight is read; far above any
// published model (126 layers, 384 experts), far below what would exhaust
// memory in the tables themselves.
constexpr int64_t kMaxLayers = 16384;
constexpr int64_t kMaxRoutedExperts = 65536;

absl::StatusOr<int> RequiredCount(const ConfigReader& reader, absl::string_view key) {
  ASSIGN_OR_RETURN(int64_t v, RequiredPositive(reader, key));
  if (v > kMaxInt32) return reader.Invalid(key, absl::StrCat("is too large (", v, ")"));
  return static_cast<int>(v);
}

// torch names and the few aliases seen in the wild.
absl::StatusOr<DataType> ReadDtype(const ConfigReader& reader, absl::string_view key) {
  ASSIGN_OR_RETURN(std::string name, reader.String(key, ""));
  if (name == "float" || name == "fp32") name = "float32";
  if (name == "half" || name == "fp16") name = "float16";
  if (name == "bf16") name = "bfloat16";
  absl::StatusOr<DataType> type = ParseDataType(name);
  if (!type.ok()) return reader.Invalid(key, type.status().message());
  return *type;
}

absl::Status ReadRopeScaling(const ConfigReader& r, const char* type_key, int64_t max_positions,
                             RopeConfig* rope) {
  ASSIGN_OR_RETURN(std::string type, r.String(type_key, ""));
  if (type.empty() && std::string(type_key) == "rope_type") {
    ASSIGN_OR_RETURN(type, r.String("type", "default"));  // legacy spelling
  }
  if (type.empty()) type = "default";
  if (type == "default") {
    rope->type = RopeType::kDefault;
  } else if (type == "linear") {
    rope->type = RopeType::kLinear;
    ASSIGN_OR_RETURN(rope->factor, r.RequiredDouble("factor"));
  } else if (type == "llama3") {
    rope->type = RopeType::kLlama3;
    ASSIGN_OR_RETURN(rope->factor, r.RequiredDouble("factor"));
    ASSIGN_OR_RETURN(rope->low_freq_factor, r.RequiredDouble("low_freq_factor"));
    ASSIGN_OR_RETURN(rope->high_freq_factor, r.RequiredDouble("high_freq_factor"));
    ASSIGN_OR_RETURN(rope->original_max_position_embeddings,
                     r.RequiredInt("original_max_position_embeddings"));
    if (rope->high_freq_factor <= rope->low_freq_factor) {
      return r.Invalid("high_freq_factor", "must be greater than low_freq_factor");
    }
  } else if (type == "yarn") {
    rope->type = RopeType::kYarn;
    ASSIGN_OR_RETURN(rope->factor, r.RequiredDouble("factor"));
    ASSIGN_OR_RETURN(rope->original_max_position_embeddings,
                     r.Int("original_max_position_embeddings", max_positions));
    ASSIGN_OR_RETURN(rope->beta_fast, r.Double("beta_fast", 32.0));
    ASSIGN_OR_RETURN(rope->beta_slow, r.Double("beta_slow", 1.0));
    // Absent: 0, which RopeConfig reads as unset.
    ASSIGN_OR_RETURN(std::optional<double> mscale, r.OptionalDouble("mscale"));
    ASSIGN_OR_RETURN(std::optional<double> mscale_all_dim, r.OptionalDouble("mscale_all_dim"));
    ASSIGN_OR_RETURN(std::optional<double> attention_factor, r.OptionalDouble("attention_factor"));
    rope->mscale = mscale.value_or(0.0);
    rope->mscale_all_dim = mscale_all_dim.value_or(0.0);
    rope->attention_factor = attention_factor.value_or(0.0);
  } else {
    return r.Unsupported(type_key, absl::StrCat("'", type,
                                                "' is not supported (supported: default, "
                                                "linear, llama3, yarn)"));
  }
  if (rope->type != RopeType::kDefault && rope->factor <= 0) {
    return r.Invalid("factor", absl::StrCat("must be > 0 (found ", rope->factor, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> RequiredPositive(const ConfigReader& reader, absl::string_view key) {
  ASSIGN_OR_RETURN(int64_t v, reader.RequiredInt(key));
  if (v <= 0) return reader.Invalid(key, absl::StrCat("must be > 0 (found ", v, ")"));
  return v;
}

absl::Status ReadRope(const ConfigReader& reader, double default_theta,
                      int64_t max_position_embeddings, RopeConfig* rope) {
  *rope = RopeConfig();
  ASSIGN_OR_RETURN(std::optional<ConfigReader> params, reader.Object("rope_parameters"));
  if (params) {  // transformers v5
    // rope_theta lives inside rope_parameters; a top-level one is a v4 leftover.
    ASSIGN_OR_RETURN(double top_theta, reader.Double("rope_theta", default_theta));
    ASSIGN_OR_RETURN(rope->theta, params->Double("rope_theta", top_theta));
    RETURN_IF_ERROR(ReadRopeScaling(*params, "rope_type", max_position_embeddings, rope));
  } else {  // transformers v4
    ASSIGN_OR_RETURN(rope->theta, reader.Double("rope_theta", default_theta));
    ASSIGN_OR_RETURN(std::optional<ConfigReader> scaling, reader.Object("rope_scaling"));
    if (scaling) {
      RETURN_IF_ERROR(ReadRopeScaling(*scaling, "rope_type", max_position_embeddings, rope));
    }
  }
  if (rope->theta <= 0) {
    return reader.Invalid("rope_theta", absl::StrCat("must be > 0 (found ", rope->theta, ")"));
  }
  return absl::OkStatus();
}

absl::Status ReadQuantization(const ConfigReader& reader, QuantizationParams* quant) {
  *quant = QuantizationParams();
  ASSIGN_OR_RETURN(std::optional<ConfigReader> q, reader.Object("quantization_config"));
  if (!q) return absl::OkStatus();
  if (!q->Has("quant_method")) return q->Missing("quant_method");
  ASSIGN_OR_RETURN(quant->method_name, q->String("quant_method", ""));
  const std::string& m = quant->method_name;
  if (m == "fp8") {
    quant->method = QuantMethod::kFp8;
    ASSIGN_OR_RETURN(quant->weight_block_size, q->IntList("weight_block_size"));
    if (!quant->weight_block_size.empty() && quant->weight_block_size.size() != 2) {
      return q->Invalid("weight_block_size", "must have two elements [rows, cols]");
    }
    ASSIGN_OR_RETURN(quant->activation_scheme, q->String("activation_scheme", "dynamic"));
    ASSIGN_OR_RETURN(quant->fp8_format, q->String("fmt", "e4m3"));
    ASSIGN_OR_RETURN(quant->modules_to_not_convert, q->StringList("modules_to_not_convert"));
  } else if (m == "awq" || m == "gptq") {
    quant->method = m == "awq" ? QuantMethod::kAwq : QuantMethod::kGptq;
    ASSIGN_OR_RETURN(int64_t bits, q->Int("bits", 4));
    ASSIGN_OR_RETURN(int64_t group_size, q->Int("group_size", 128));
    quant->bits = static_cast<int>(bits);
    quant->group_size = static_cast<int>(group_size);
    ASSIGN_OR_RETURN(quant->modules_to_not_convert, q->StringList("modules_to_not_convert"));
    if (m == "awq") {
      ASSIGN_OR_RETURN(quant->zero_point, q->Bool("zero_point", true));
      ASSIGN_OR_RETURN(quant->version, q->String("version", "gemm"));
    } else {
      ASSIGN_OR_RETURN(quant->desc_act, q->Bool("desc_act", false));
      ASSIGN_OR_RETURN(quant->sym, q->Bool("sym", true));
    }
  } else {
    quant->method = QuantMethod::kOther;  // recognised as "quantized, unknown method"
  }
  return absl::OkStatus();
}

absl::Status ReadCommonKeys(const ConfigReader& r, const CommonDefaults& d,
                            ModelDescription* desc) {
  ASSIGN_OR_RETURN(desc->vocab_size, RequiredPositive(r, "vocab_size"));
  ASSIGN_OR_RETURN(desc->hidden_size, RequiredPositive(r, "hidden_size"));
  ASSIGN_OR_RETURN(desc->num_layers, RequiredCount(r, "num_hidden_layers"));
  if (desc->num_layers > kMaxLayers) {
    return r.Invalid("num_hidden_layers", absl::StrCat("(", desc->num_layers,
                                                       ") is out of range: at most ", kMaxLayers));
  }
  ASSIGN_OR_RETURN(desc->num_heads, RequiredCount(r, "num_attention_heads"));
  if (r.Has("num_key_value_heads")) {
    ASSIGN_OR_RETURN(desc->num_kv_heads, RequiredCount(r, "num_key_value_heads"));
  } else {
    desc->num_kv_heads = desc->num_heads;
  }
  if (desc->num_heads % desc->num_kv_heads != 0) {
    return r.Invalid("num_key_value_heads",
                     absl::StrCat("(", desc->num_kv_heads, ") must divide num_attention_heads (",
                                  desc->num_heads, ")"));
  }
  if (r.Has("head_dim")) {
    ASSIGN_OR_RETURN(desc->head_dim, RequiredPositive(r, "head_dim"));
  } else if (d.head_dim > 0) {
    desc->head_dim = d.head_dim;
  } else {
    if (desc->hidden_size % desc->num_heads != 0) {
      return r.Invalid(
          "hidden_size",
          absl::StrCat("(", desc->hidden_size, ") is not divisible by num_attention_heads (",
                       desc->num_heads, ") and no 'head_dim' is given"));
    }
    desc->head_dim = desc->hidden_size / desc->num_heads;
  }
  if (desc->head_dim % 2 != 0) {
    return r.Invalid("head_dim", absl::StrCat("must be even for rotary embeddings (found ",
                                              desc->head_dim, ")"));
  }
  ASSIGN_OR_RETURN(desc->rms_norm_eps, r.Double("rms_norm_eps", d.rms_norm_eps));
  ASSIGN_OR_RETURN(desc->max_position_embeddings,
                   r.Int("max_position_embeddings", d.max_position_embeddings));
  if (desc->max_position_embeddings <= 0) {
    return r.Invalid("max_position_embeddings",
                     absl::StrCat("must be > 0 (found ", desc->max_position_embeddings, ")"));
  }
  ASSIGN_OR_RETURN(desc->tie_word_embeddings, r.Bool("tie_word_embeddings", d.tie_word_embeddings));
  ASSIGN_OR_RETURN(std::string act, r.String("hidden_act", "silu"));
  if (act != "silu" && act != "swish") {
    return r.Unsupported("hidden_act",
                         absl::StrCat("'", act, "' is not supported (supported: silu)"));
  }
  RETURN_IF_ERROR(ReadRope(r, d.rope_theta, desc->max_position_embeddings, &desc->rope));
  // v5 writes `dtype`; v4 `torch_dtype`. Both present: v5 wins.
  if (r.Has("dtype")) {
    ASSIGN_OR_RETURN(desc->dtype, ReadDtype(r, "dtype"));
  } else if (r.Has("torch_dtype")) {
    ASSIGN_OR_RETURN(desc->dtype, ReadDtype(r, "torch_dtype"));
  }
  RETURN_IF_ERROR(ReadQuantization(r, &desc->quantization));
  ASSIGN_OR_RETURN(desc->bos_token_ids, r.IntOrIntList("bos_token_id"));
  ASSIGN_OR_RETURN(desc->eos_token_ids, r.IntOrIntList("eos_token_id"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LayerKind>> ReadQwenMoeLayerKinds(const ConfigReader& r, int num_layers,
                                                             int num_experts) {
  ASSIGN_OR_RETURN(int64_t step, r.Int("decoder_sparse_step", 1));
  if (step < 1) {
    return r.Invalid("decoder_sparse_step", absl::StrCat("must be >= 1 (found ", step, ")"));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> mlp_only, r.IntList("mlp_only_layers"));
  std::set<int64_t> dense(mlp_only.begin(), mlp_only.end());
  for (int64_t i : dense) {
    if (i < 0 || i >= num_layers) {
      return r.Invalid("mlp_only_layers",
                       absl::StrCat("names layer ", i, ", outside [0, ", num_layers, ")"));
    }
  }
  std::vector<LayerKind> kinds(num_layers, LayerKind::kDense);
  for (int i = 0; i < num_layers; ++i) {
    if (dense.count(i) == 0 && num_experts > 0 && (i + 1) % step == 0) kinds[i] = LayerKind::kMoe;
  }
  return kinds;
}

absl::Status ReadRoutedExperts(const ConfigReader& r, const char* num_experts_key, MoeParams* moe) {
  ASSIGN_OR_RETURN(int64_t e, r.RequiredInt(num_experts_key));
  if (e <= 0) {
    return r.Invalid(
        num_experts_key,
        absl::StrCat("must be > 0 for a mixture-of-experts architecture (found ", e, ")"));
  }
  if (e > kMaxRoutedExperts) {
    return r.Invalid(num_experts_key,
                     absl::StrCat("(", e, ") is out of range: at most ", kMaxRoutedExperts));
  }
  ASSIGN_OR_RETURN(int64_t k, r.RequiredInt("num_experts_per_tok"));
  if (k < 1 || k > e) {
    return r.Invalid("num_experts_per_tok",
                     absl::StrCat("must be in [1, ", e, "] (found ", k, ")"));
  }
  moe->num_experts = static_cast<int>(e);
  moe->routing = RoutingParams();
  moe->routing.top_k = static_cast<int>(k);
  moe->routing.scoring = RoutingScoring::kSoftmax;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LayerKind>> ReadQwenMoeFeedForward(const ConfigReader& r,
                                                              const char* num_experts_key,
                                                              ModelDescription* d) {
  RETURN_IF_ERROR(ReadRoutedExperts(r, num_experts_key, &d->moe));
  ASSIGN_OR_RETURN(d->moe.moe_intermediate_size, RequiredPositive(r, "moe_intermediate_size"));
  ASSIGN_OR_RETURN(d->moe.routing.renormalize, r.Bool("norm_topk_prob", false));
  ASSIGN_OR_RETURN(std::vector<LayerKind> kinds,
                   ReadQwenMoeLayerKinds(r, d->num_layers, d->moe.num_experts));
  if (std::count(kinds.begin(), kinds.end(), LayerKind::kDense) > 0) {
    // dense layers need their width
    ASSIGN_OR_RETURN(d->intermediate_size, RequiredPositive(r, "intermediate_size"));
  }
  return kinds;
}

AttentionSpec GqaAttention(const ModelDescription& d) {
  AttentionSpec a;
  a.kind = AttentionKind::kGqa;
  a.num_heads = d.num_heads;
  a.num_kv_heads = d.num_kv_heads;
  a.head_dim = d.head_dim;
  a.qk_norm = d.qk_norm;
  a.qkv_bias = d.attention_bias;
  a.out_bias = d.attention_out_bias;
  a.use_rope = true;
  a.rope = d.rope;
  a.chunk_size = 0;
  return a;
}

FeedForwardSpec DenseFeedForward(const ModelDescription& d) {
  FeedForwardSpec f;
  f.kind = FeedForwardKind::kDense;
  f.intermediate_size = d.intermediate_size;
  return f;
}

FeedForwardSpec MoeFeedForward(const ModelDescription& d) {
  FeedForwardSpec f;
  f.kind = d.moe.shared_expert_intermediate_size > 0 ? FeedForwardKind::kMoeShared
                                                     : FeedForwardKind::kMoe;
  f.num_experts = d.moe.num_experts;
  f.expert_intermediate_size = d.moe.moe_intermediate_size;
  f.routing = d.moe.routing;
  f.shared_intermediate_size = d.moe.shared_expert_intermediate_size;
  f.shared_expert_gate = d.moe.shared_expert_gate;
  return f;
}

void FillLayers(const std::vector<LayerKind>& kinds, ModelDescription* d) {
  d->layers.clear();
  d->layers.reserve(kinds.size());
  for (LayerKind kind : kinds) {
    LayerSpec layer;
    layer.attention = GqaAttention(*d);
    layer.feed_forward = kind == LayerKind::kMoe ? MoeFeedForward(*d) : DenseFeedForward(*d);
    d->layers.push_back(layer);
  }
}

absl::Status ReadQwenCommonKeys(const ConfigReader& r, int64_t default_head_dim,
                                ModelDescription* out) {
  CommonDefaults defaults;
  defaults.rms_norm_eps = 1e-6;
  defaults.rope_theta = 10000.0;
  defaults.max_position_embeddings = 32768;
  defaults.tie_word_embeddings = false;
  defaults.head_dim = default_head_dim;
  RETURN_IF_ERROR(ReadCommonKeys(r, defaults, out));
  ASSIGN_OR_RETURN(bool sliding, r.Bool("use_sliding_window", false));
  if (sliding) return r.Unsupported("use_sliding_window", "= true is not supported");
  return absl::OkStatus();
}

}  // namespace epserve::model_config
