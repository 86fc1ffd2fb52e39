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

class Builder {
 public:
  explicit Builder(std::vector<TensorSpec>* out) : out_(out) {}
  void Add(std::string name, std::vector<int64_t> shape, TensorRole role, int layer = -1,
           int expert = -1) {
    out_->push_back(TensorSpec{std::move(name), std::move(shape), role, layer, expert});
  }

 private:
  std::vector<TensorSpec>* out_;
};

void AddAttention(const ModelDescription& d, int i, const std::string& p, Builder& b) {
  const int64_t h = d.hidden_size;
  const int64_t q = d.num_heads * d.head_dim;
  const int64_t kv = d.num_kv_heads * d.head_dim;
  const std::string a = p + "self_attn.";
  b.Add(a + "q_proj.weight", {q, h}, TensorRole::kAttnQWeight, i);
  b.Add(a + "k_proj.weight", {kv, h}, TensorRole::kAttnKWeight, i);
  b.Add(a + "v_proj.weight", {kv, h}, TensorRole::kAttnVWeight, i);
  b.Add(a + "o_proj.weight", {h, q}, TensorRole::kAttnOWeight, i);
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
  b.Add(block + "gate.weight", {d.moe.num_experts, h}, TensorRole::kRouter, i);
  for (int e = 0; e < d.moe.num_experts; ++e) {
    const std::string x = absl::StrCat(block, "experts.", e, ".");
    b.Add(absl::StrCat(x, n.gate, ".weight"), {m, h}, TensorRole::kExpertGate, i, e);
    b.Add(absl::StrCat(x, n.up, ".weight"), {m, h}, TensorRole::kExpertUp, i, e);
    b.Add(absl::StrCat(x, n.down, ".weight"), {h, m}, TensorRole::kExpertDown, i, e);
  }
  const int64_t s = d.moe.shared_expert_intermediate_size;
  if (s > 0) {
    const std::string x = block + "shared_expert.";
    b.Add(x + "gate_proj.weight", {s, h}, TensorRole::kSharedExpertGateProj, i);
    b.Add(x + "up_proj.weight", {s, h}, TensorRole::kSharedExpertUpProj, i);
    b.Add(x + "down_proj.weight", {h, s}, TensorRole::kSharedExpertDownProj, i);
  }
  if (d.moe.shared_expert_gate) {
    b.Add(block + "shared_expert_gate.weight", {1, h}, TensorRole::kSharedExpertGate, i);
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

bool IsRoutedExpertRole(TensorRole role) {
  return role == TensorRole::kExpertGate || role == TensorRole::kExpertUp ||
         role == TensorRole::kExpertDown;
}

std::vector<TensorSpec> ExpectedTensors(const ModelDescription& d) {
  std::vector<TensorSpec> out;
  Builder b(&out);
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
      b.Add(p + "mlp.gate_proj.weight", {f, h}, TensorRole::kMlpGate, i);
      b.Add(p + "mlp.up_proj.weight", {f, h}, TensorRole::kMlpUp, i);
      b.Add(p + "mlp.down_proj.weight", {h, f}, TensorRole::kMlpDown, i);
    }
  }
  b.Add("model.norm.weight", {h}, TensorRole::kFinalNorm);
  if (!d.tie_word_embeddings) b.Add("lm_head.weight", {d.vocab_size, h}, TensorRole::kLmHead);
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
