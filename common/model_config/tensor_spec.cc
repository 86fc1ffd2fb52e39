#include "common/model_config/tensor_spec.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/model_config/architecture.h"

namespace epserve {
namespace {

using model_config::ExpertNaming;

// Per-expert naming of the description's architecture; the Qwen/OLMoE scheme
// for descriptions of unregistered architectures.
ExpertNaming NamingFor(const ModelDescription& desc) {
  const model_config::ArchitectureDef* def = model_config::FindArchitecture(desc.architecture);
  return def != nullptr ? def->experts : ExpertNaming{};
}

// The format the description's linear layer `module` of `role` is stored in:
// desc.quantization's for every linear layer except those checkpoints keep
// unquantized (the router gate, the lm_head, the 1-wide shared-expert gate,
// and modules whose name contains an entry of modules_to_not_convert).
WeightFormat FormatOf(const ModelDescription& desc, TensorRole role, const std::string& module) {
  const QuantizationParams& q = desc.quantization;
  if (q.method == QuantMethod::kNone || role == TensorRole::kRouter ||
      role == TensorRole::kLmHead || role == TensorRole::kSharedExpertGate) {
    return WeightFormat::kUnquantized;
  }
  for (const std::string& skip : q.modules_to_not_convert) {
    if (!skip.empty() && module.find(skip) != std::string::npos) return WeightFormat::kUnquantized;
  }
  if (q.method == QuantMethod::kFp8 && q.weight_block_size.size() == 2) {
    return WeightFormat::kFp8Block;
  }
  if (q.method == QuantMethod::kAwq && q.bits == 4) return WeightFormat::kAwqInt4;
  return WeightFormat::kUnquantized;  // refused by the quantization check before any use
}

class Builder {
 public:
  Builder(const ModelDescription& desc, std::vector<TensorSpec>* out) : desc_(desc), out_(out) {}
  void Add(std::string name, std::vector<int64_t> shape, TensorRole role, int layer = -1,
           int expert = -1) {
    out_->push_back(TensorSpec{std::move(name), std::move(shape), role, layer, expert});
  }
  // The tensors of linear layer `module` (N x K, run by `op`) in the format
  // FormatOf gives: its kWeight entry, then its companions.
  //   unquantized: <module>.weight [N, K]
  //   fp8-block:   <module>.weight [N, K] f8e4m3,
  //                <module>.weight_scale_inv [ceil(N/bn), ceil(K/bk)] f32
  //   awq-int4:    <module>.qweight [K, N/8] i32, <module>.qzeros [K/g, N/8] i32,
  //                <module>.scales [K/g, N] f16
  void AddLinear(const std::string& module, int64_t n, int64_t k, TensorRole role, LinearOp op,
                 int layer = -1, int expert = -1) {
    LinearSpec linear;
    linear.format = FormatOf(desc_, role, module);
    linear.op = op;
    linear.out_features = n;
    linear.in_features = k;
    switch (linear.format) {
      case WeightFormat::kUnquantized: {
        TensorSpec w{module + ".weight", {n, k}, role, layer, expert};
        w.part = LinearPart::kWeight;
        w.linear = std::move(linear);
        out_->push_back(std::move(w));
        break;
      }
      case WeightFormat::kFp8Block: {
        const int64_t bn = desc_.quantization.weight_block_size[0];
        const int64_t bk = desc_.quantization.weight_block_size[1];
        linear.block_shape = {bn, bk};
        linear.scales_name = module + ".weight_scale_inv";
        TensorSpec w{module + ".weight", {n, k}, role, layer, expert};
        w.part = LinearPart::kWeight;
        w.fixed_dtype = DataType::kFloat8E4M3;
        TensorSpec s{
            linear.scales_name, {CeilDivide(n, bn), CeilDivide(k, bk)}, role, layer, expert};
        s.part = LinearPart::kScales;
        s.fixed_dtype = DataType::kFloat32;
        w.linear = std::move(linear);
        out_->push_back(std::move(w));
        out_->push_back(std::move(s));
        break;
      }
      case WeightFormat::kAwqInt4: {
        const int64_t g = desc_.quantization.group_size;
        linear.group_size = g;
        linear.scales_name = module + ".scales";
        linear.zero_points_name = module + ".qzeros";
        TensorSpec w{module + ".qweight", {k, n / 8}, role, layer, expert};
        w.part = LinearPart::kWeight;
        w.fixed_dtype = DataType::kInt32;
        TensorSpec z{linear.zero_points_name, {k / g, n / 8}, role, layer, expert};
        z.part = LinearPart::kZeroPoints;
        z.fixed_dtype = DataType::kInt32;
        TensorSpec s{linear.scales_name, {k / g, n}, role, layer, expert};
        s.part = LinearPart::kScales;
        s.fixed_dtype = DataType::kFloat16;
        w.linear = std::move(linear);
        out_->push_back(std::move(w));
        out_->push_back(std::move(z));
        out_->push_back(std::move(s));
        break;
      }
    }
  }
  static int64_t CeilDivide(int64_t a, int64_t b) { return b > 0 ? (a + b - 1) / b : 0; }

 private:
  const ModelDescription& desc_;
  std::vector<TensorSpec>* out_;
};

void AddAttention(const ModelDescription& d, int i, const std::string& p, Builder& b) {
  const int64_t h = d.hidden_size;
  const int64_t q = d.num_heads * d.head_dim;
  const int64_t kv = d.num_kv_heads * d.head_dim;
  const std::string a = p + "self_attn.";
  b.AddLinear(a + "q_proj", q, h, TensorRole::kAttnQWeight, LinearOp::kMatMulShared, i);
  b.AddLinear(a + "k_proj", kv, h, TensorRole::kAttnKWeight, LinearOp::kMatMulShared, i);
  b.AddLinear(a + "v_proj", kv, h, TensorRole::kAttnVWeight, LinearOp::kMatMulShared, i);
  b.AddLinear(a + "o_proj", h, q, TensorRole::kAttnOWeight, LinearOp::kMatMul, i);
  if (d.attention_bias) {
    b.Add(a + "q_proj.bias", {q}, TensorRole::kAttnQBias, i);
    b.Add(a + "k_proj.bias", {kv}, TensorRole::kAttnKBias, i);
    b.Add(a + "v_proj.bias", {kv}, TensorRole::kAttnVBias, i);
  }
  if (d.attention_out_bias) b.Add(a + "o_proj.bias", {h}, TensorRole::kAttnOBias, i);
  switch (d.qk_norm) {
    case QkNormKind::kNone:
      break;
    case QkNormKind::kPerHead:
      b.Add(a + "q_norm.weight", {d.head_dim}, TensorRole::kQNorm, i);
      b.Add(a + "k_norm.weight", {d.head_dim}, TensorRole::kKNorm, i);
      break;
    case QkNormKind::kFull:
      b.Add(a + "q_norm.weight", {q}, TensorRole::kQNorm, i);
      b.Add(a + "k_norm.weight", {kv}, TensorRole::kKNorm, i);
      break;
  }
}

void AddMoe(const ModelDescription& d, int i, const std::string& p, const ExpertNaming& n,
            Builder& b) {
  const int64_t h = d.hidden_size;
  const int64_t m = d.moe.moe_intermediate_size;
  const std::string block = absl::StrCat(p, n.block, ".");
  b.AddLinear(block + "gate", d.moe.num_experts, h, TensorRole::kRouter, LinearOp::kMatMul, i);
  for (int e = 0; e < d.moe.num_experts; ++e) {
    const std::string x = absl::StrCat(block, "experts.", e, ".");
    b.AddLinear(x + n.gate, m, h, TensorRole::kExpertGate, LinearOp::kGroupedExpertGateUp, i, e);
    b.AddLinear(x + n.up, m, h, TensorRole::kExpertUp, LinearOp::kGroupedExpertGateUp, i, e);
    b.AddLinear(x + n.down, h, m, TensorRole::kExpertDown, LinearOp::kGroupedExpertMatMul, i, e);
  }
  const int64_t s = d.moe.shared_expert_intermediate_size;
  if (s > 0) {
    const std::string x = block + "shared_expert.";
    b.AddLinear(x + "gate_proj", s, h, TensorRole::kSharedExpertGateProj, LinearOp::kMatMul, i);
    b.AddLinear(x + "up_proj", s, h, TensorRole::kSharedExpertUpProj, LinearOp::kMatMul, i);
    b.AddLinear(x + "down_proj", h, s, TensorRole::kSharedExpertDownProj, LinearOp::kMatMul, i);
  }
  if (d.moe.shared_expert_gate) {
    b.AddLinear(block + "shared_expert_gate", 1, h, TensorRole::kSharedExpertGate,
                LinearOp::kMatMul, i);
  }
}

}  // namespace

const char* TensorRoleName(TensorRole role) {
  switch (role) {
    case TensorRole::kEmbedding:
      return "embedding";
    case TensorRole::kLmHead:
      return "lm_head";
    case TensorRole::kFinalNorm:
      return "final_norm";
    case TensorRole::kInputNorm:
      return "input_norm";
    case TensorRole::kPostAttnNorm:
      return "post_attn_norm";
    case TensorRole::kAttnQWeight:
      return "attn_q_weight";
    case TensorRole::kAttnKWeight:
      return "attn_k_weight";
    case TensorRole::kAttnVWeight:
      return "attn_v_weight";
    case TensorRole::kAttnOWeight:
      return "attn_o_weight";
    case TensorRole::kAttnQBias:
      return "attn_q_bias";
    case TensorRole::kAttnKBias:
      return "attn_k_bias";
    case TensorRole::kAttnVBias:
      return "attn_v_bias";
    case TensorRole::kAttnOBias:
      return "attn_o_bias";
    case TensorRole::kQNorm:
      return "q_norm";
    case TensorRole::kKNorm:
      return "k_norm";
    case TensorRole::kMlpGate:
      return "mlp_gate";
    case TensorRole::kMlpUp:
      return "mlp_up";
    case TensorRole::kMlpDown:
      return "mlp_down";
    case TensorRole::kRouter:
      return "router";
    case TensorRole::kExpertGate:
      return "expert_gate";
    case TensorRole::kExpertUp:
      return "expert_up";
    case TensorRole::kExpertDown:
      return "expert_down";
    case TensorRole::kSharedExpertGateProj:
      return "shared_expert_gate_proj";
    case TensorRole::kSharedExpertUpProj:
      return "shared_expert_up_proj";
    case TensorRole::kSharedExpertDownProj:
      return "shared_expert_down_proj";
    case TensorRole::kSharedExpertGate:
      return "shared_expert_gate";
  }
  return "?";
}

const char* LinearPartName(LinearPart part) {
  switch (part) {
    case LinearPart::kNone:
      return "none";
    case LinearPart::kWeight:
      return "weight";
    case LinearPart::kScales:
      return "scales";
    case LinearPart::kZeroPoints:
      return "zero_points";
  }
  return "?";
}

bool IsRoutedExpertRole(TensorRole role) {
  return role == TensorRole::kExpertGate || role == TensorRole::kExpertUp ||
         role == TensorRole::kExpertDown;
}

std::vector<TensorSpec> ExpectedTensors(const ModelDescription& d) {
  std::vector<TensorSpec> out;
  Builder b(d, &out);
  const int64_t h = d.hidden_size;
  const ExpertNaming naming = NamingFor(d);
  b.Add("model.embed_tokens.weight", {d.vocab_size, h}, TensorRole::kEmbedding);
  for (int i = 0; i < d.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    b.Add(p + "input_layernorm.weight", {h}, TensorRole::kInputNorm, i);
    AddAttention(d, i, p, b);
    b.Add(p + "post_attention_layernorm.weight", {h}, TensorRole::kPostAttnNorm, i);
    const bool moe = i < static_cast<int>(d.layers.size()) && d.layers[i].feed_forward.is_moe();
    if (moe) {
      AddMoe(d, i, p, naming, b);
    } else {
      const int64_t f = d.intermediate_size;
      b.AddLinear(p + "mlp.gate_proj", f, h, TensorRole::kMlpGate, LinearOp::kMatMul, i);
      b.AddLinear(p + "mlp.up_proj", f, h, TensorRole::kMlpUp, LinearOp::kMatMul, i);
      b.AddLinear(p + "mlp.down_proj", h, f, TensorRole::kMlpDown, LinearOp::kMatMul, i);
    }
  }
  b.Add("model.norm.weight", {h}, TensorRole::kFinalNorm);
  if (!d.tie_word_embeddings) {
    b.AddLinear("lm_head", d.vocab_size, h, TensorRole::kLmHead, LinearOp::kMatMul);
  }
  return out;
}

int64_t PackedSlice::num_elements() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

absl::StatusOr<PackedSlice> PackedExpertSpec::SliceFor(TensorRole role, int expert) const {
  if (expert < 0 || expert >= num_experts) {
    return absl::OutOfRangeError(
        absl::StrCat("layer ", layer, ": expert ", expert, " outside [0, ", num_experts, ")"));
  }
  const int64_t h = hidden_size;
  const int64_t m = intermediate_size;
  const int64_t e = expert;
  switch (role) {
    case TensorRole::kExpertGate:
      return PackedSlice{gate_up_name, e * 2 * m * h, {m, h}};
    case TensorRole::kExpertUp:
      return PackedSlice{gate_up_name, e * 2 * m * h + m * h, {m, h}};
    case TensorRole::kExpertDown:
      return PackedSlice{down_name, e * h * m, {h, m}};
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("role ", TensorRoleName(role), " is not a routed expert tensor"));
  }
}

std::vector<PackedExpertSpec> PackedExpertTensors(const ModelDescription& d) {
  std::vector<PackedExpertSpec> out;
  const ExpertNaming naming = NamingFor(d);
  for (int i = 0; i < static_cast<int>(d.layers.size()); ++i) {
    if (!d.layers[i].feed_forward.is_moe()) continue;
    const std::string p = absl::StrCat("model.layers.", i, ".");
    PackedExpertSpec s;
    s.layer = i;
    s.num_experts = d.moe.num_experts;
    s.hidden_size = d.hidden_size;
    s.intermediate_size = d.moe.moe_intermediate_size;
    s.gate_up_name = p + "mlp.experts.gate_up_proj";
    s.gate_up_shape = {d.moe.num_experts, 2 * s.intermediate_size, s.hidden_size};
    s.down_name = p + "mlp.experts.down_proj";
    s.down_shape = {d.moe.num_experts, s.hidden_size, s.intermediate_size};
    s.router_name = p + "mlp.gate.weight";
    s.per_expert_router_name = absl::StrCat(p, naming.block, ".gate.weight");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace epserve
