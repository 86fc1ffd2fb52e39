// The tensors a model description expects in a checkpoint: exact Hugging Face
// names and shapes, per layer and per expert, plus the packed expert layout
// some checkpoints use instead of one tensor per expert.
//
// Shapes are PyTorch nn.Linear shapes, [out_features, in_features], row-major.
//
// Linear layers (the weights of the linear ops: projections, MLPs, experts,
// router, lm_head) are described per layer in a storage format
// (WeightFormat): the layer's data tensor is a kWeight entry carrying a
// LinearSpec (format, op, N x K, granularity, the names of its companion
// tensors), and each companion (scales, zero points) is an entry of its own
// (kScales / kZeroPoints, with the layer's role, layer and expert), so that
// checkpoint binding, missing-tensor reports, dummy weights and placement
// treat every stored tensor alike. The loader assembles a
// kernels::LinearWeight from a kWeight entry and its companions and asks the
// backend whether it runs `linear.op` on `linear.format`.
//
// A new format adds here only the tensors of a layer in that format (names,
// shapes, fixed dtypes: see AddLinear in tensor_spec.cc) and which layers
// take it; the loader and the model code need no change. Only the
// unquantized format exists: a layer is `<module>.weight` [N, K] with no
// companions (the loader refuses quantized checkpoints for now). The packed
// expert layout describes unquantized experts only.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/model_config/model_description.h"
#include "common/weight_format.h"

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

// What a tensor is within its linear layer (kernels::LinearWeight's fields).
enum class LinearPart {
  kNone,        // not a linear layer's tensor: embedding, norms, biases, q/k norms
  kWeight,      // the layer's data tensor (LinearWeight::weight); carries the LinearSpec
  kScales,      // LinearWeight::scales
  kZeroPoints,  // LinearWeight::zero_points
};

const char* LinearPartName(LinearPart part);  // "none", "weight", "scales", "zero_points"

// One linear layer: how it is stored and which op runs it.
struct LinearSpec {
  WeightFormat format = WeightFormat::kUnquantized;
  // The kernels::Backend op the model runs this layer through (q/k/v:
  // MatMulShared; routed expert gate/up: GroupedExpertGateUp; expert down:
  // GroupedExpertMatMul; every other layer: MatMul).
  LinearOp op = LinearOp::kMatMul;
  int64_t out_features = 0;                     // N
  int64_t in_features = 0;                      // K
  int64_t group_size = 0;                       // as kernels::LinearWeight; 0: none
  std::array<int64_t, 2> block_shape = {0, 0};  // {out, in}; {0, 0}: none
  // The companion entries' names (part kScales / kZeroPoints); empty when the
  // format has none.
  std::string scales_name;
  std::string zero_points_name;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // as stored in the checkpoint
  TensorRole role;
  int layer = -1;   // -1: not per layer
  int expert = -1;  // -1: not a routed expert tensor
  LinearPart part = LinearPart::kNone;
  LinearSpec linear;  // meaningful iff part == kWeight
  // The dtype a tensor keeps whatever --dtype says (quantized data, scales,
  // zero points): loaded as stored, never cast. nullopt: the dtype policy
  // decides (every unquantized tensor).
  std::optional<DataType> fixed_dtype;
};

// Every tensor of the model in a stable order: embedding, then layer by layer
// (norms, attention, feed-forward, experts in index order), final norm,
// lm_head. Names follow the architecture's Hugging Face modeling file. A
// linear layer's companions follow its kWeight entry.
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
