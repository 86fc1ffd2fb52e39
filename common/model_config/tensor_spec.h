// The tensors a model description expects in a checkpoint: exact Hugging Face
// names and shapes, per layer and per expert, plus the packed expert layout
// some checkpoints use instead of one tensor per expert.
//
// Shapes are PyTorch nn.Linear shapes, [out_features, in_features], row-major.
// Only the unquantized layout is declared: FP8 scale tensors and AWQ/GPTQ
// qweight/qzeros/scales are not (the loader refuses those methods for now).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"

namespace epserve {

enum class TensorRole {
  kEmbedding,  // model.embed_tokens.weight [vocab, hidden]
  kLmHead,     // lm_head.weight [vocab, hidden]; absent when tied
  kFinalNorm,  // model.norm.weight [hidden]
  kInputNorm,  // input_layernorm [hidden]
  kPostAttnNorm,
  kAttnQWeight,
  kAttnKWeight,
  kAttnVWeight,
  kAttnOWeight,
  kAttnQBias,
  kAttnKBias,
  kAttnVBias,
  kAttnOBias,
  kQNorm,
  kKNorm,
  kMlpGate,  // dense MLP gate_proj / up_proj / down_proj
  kMlpUp,
  kMlpDown,
  kRouter,                // [num_experts, hidden]
  kExpertGate,            // routed expert gate_proj (Mixtral w1) [moe_inter, hidden]
  kExpertUp,              // routed expert up_proj   (Mixtral w3) [moe_inter, hidden]
  kExpertDown,            // routed expert down_proj (Mixtral w2) [hidden, moe_inter]
  kSharedExpertGateProj,  // shared expert gate_proj [shared_inter, hidden]
  kSharedExpertUpProj,
  kSharedExpertDownProj,
  kSharedExpertGate,  // sigmoid gate of the shared expert [1, hidden]
};

const char* TensorRoleName(TensorRole role);  // "attn_q_weight", "expert_gate", ...
bool IsRoutedExpertRole(TensorRole role);     // kExpertGate / kExpertUp / kExpertDown

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;
  int layer = -1;   // -1: not per layer
  int expert = -1;  // -1: not a routed expert tensor
};

// Every tensor of the model in a stable order: embedding, then layer by layer
// (norms, attention, feed-forward, experts in index order), final norm,
// lm_head. Names follow the architecture's Hugging Face modeling file.
std::vector<TensorSpec> ExpectedTensors(const ModelDescription& desc);

// A contiguous run of elements inside a packed tensor: expert e's matrix,
// `shape` being its [rows, cols].
struct PackedSlice {
  std::string packed_name;
  int64_t element_offset = 0;  // row-major offset of the first element
  std::vector<int64_t> shape;
  int64_t num_elements() const;
};

// The packed expert layout of one MoE layer (transformers v5 keeps experts
// this way in memory and such checkpoints exist in the wild):
//
//   <block>.experts.gate_up_proj  [E, 2*I, H]   rows [0, I) of expert e: gate_proj (w1)
//                                               rows [I, 2I) of expert e: up_proj (w3)
//   <block>.experts.down_proj     [E, H, I]     expert e: down_proj (w2)
//
// Each per-expert matrix is contiguous, so a worker can read only its own
// experts' byte ranges. <block> is always "model.layers.{i}.mlp" in the packed
// layout, also for Mixtral (whose per-expert layout uses block_sparse_moe and
// whose router then moves from block_sparse_moe.gate to mlp.gate).
struct PackedExpertSpec {
  int layer = -1;
  int num_experts = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  std::string gate_up_name;
  std::vector<int64_t> gate_up_shape;  // [E, 2I, H]
  std::string down_name;
  std::vector<int64_t> down_shape;     // [E, H, I]
  std::string router_name;             // the router's name next to packed experts
  std::string per_expert_router_name;  // its name in the per-expert layout

  // Where expert `expert`'s tensor of `role` (kExpertGate/Up/Down) lives.
  absl::StatusOr<PackedSlice> SliceFor(TensorRole role, int expert) const;
};

// One entry per MoE layer, in layer order; empty for dense models.
std::vector<PackedExpertSpec> PackedExpertTensors(const ModelDescription& desc);

}  // namespace epserve
