// Loads the weights a worker needs: the replicated dense parts and its own
// experts, from a safetensors checkpoint or as seeded random dummies.
//
//   desc ──ExpectedTensors──► specs ──Backend::Supports(linear op, format) per layer
//        ──BindCheckpoint──► sources (headers only)
//        ──per local tensor──► zero-copy view (dtype matches) or one cast
//        ──per linear layer──► LinearWeight (its kWeight entry + companions)
//
// Nothing is read for tensors of experts other ranks own. The loader is
// format-neutral: which tensors a layer has, their dtypes and how they form
// a LinearWeight all come from the TensorSpecs (tensor_spec.h). Binding, the
// dtype policy and the quantization check are common/checkpoint's, shared
// with the router.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/checkpoint/load_format.h"
#include "common/model_config/model_description.h"
#include "common/model_config/tensor_spec.h"
#include "kernels/linear_weight.h"
#include "kernels/tensor.h"

namespace epserve::safetensors {
class SafetensorsCheckpoint;
}
namespace epserve::kernels {
class Backend;
}

namespace epserve::weights {

struct LoadOptions {
  std::string dtype = "auto";  // auto | bfloat16 | float16 | float32
  checkpoint::LoadFormat format = checkpoint::LoadFormat::kSafetensors;
  // expert_to_rank[e]: the rank holding expert e. Empty: every expert local.
  std::vector<uint32_t> expert_to_rank;
  uint32_t rank = 0;
  // Routed experts held beyond the rank's own (ascending), e.g. the copies
  // of --redundant-experts or experts taken over from a lost rank.
  std::vector<int> extra_experts;
  // Only the routed experts (the rank's and extra_experts): for adding
  // experts to weights already loaded (AddExperts).
  bool experts_only = false;
  uint64_t seed = 0;  // dummy weights
  std::string backend = "cpu";  // for messages
  // Dummy weights are made directly in this backend's memory (a GPU fills
  // them in a kernel: no host copy of a 60 GB model); null: host tensors.
  // The values are the same either way. When set, every linear layer's
  // (op, format) must be one it Supports.
  kernels::Backend* device = nullptr;
};

struct LoadReport {
  DataType weight_dtype = DataType::kFloat32;
  // One line per (from, to) pair: "casting bfloat16 checkpoint to float16 (N tensors)".
  std::vector<std::string> casts;
  std::vector<std::string> unexpected;  // checkpoint tensors nothing uses
  std::vector<int> packed_layers;       // layers read from the packed expert layout
  std::vector<int> local_experts;       // routed experts this rank holds (ascending)
  int64_t num_tensors = 0;              // tensors held
  uint64_t bytes_held = 0;              // bytes of the tensors held (owned or mapped)
  uint64_t bytes_read = 0;              // checkpoint bytes read or mapped
};

class ModelWeights {
 public:
  const ModelDescription& desc() const { return desc_; }
  const LoadReport& report() const { return report_; }
  const std::map<std::string, kernels::Tensor>& tensors() const { return tensors_; }
  // nullptr when absent (e.g. another rank's expert).
  const kernels::Tensor* Find(const std::string& name) const;
  absl::StatusOr<const kernels::Tensor*> Get(const std::string& name) const;
  // The linear layers held, by the name of their kWeight entry (e.g.
  // "model.layers.0.self_attn.q_proj.weight"): the tensors of tensors()
  // (shared, not copied) in the layer's format. nullptr when absent.
  const std::map<std::string, kernels::LinearWeight>& linears() const { return linears_; }
  const kernels::LinearWeight* FindLinear(const std::string& name) const;

  // Drops the routed experts not in `keep` (ascending): their tensors and
  // linear layers, and their bytes from the report.
  void DropExperts(const std::vector<int>& keep);

 private:
  friend absl::StatusOr<ModelWeights> LoadWeights(const ModelDescription&, const std::string&,
                                                  const LoadOptions&);
  friend absl::Status AddExperts(const std::string&, const LoadOptions&, const std::vector<int>&,
                                 ModelWeights*);
  ModelDescription desc_;
  LoadReport report_;
  std::map<std::string, kernels::Tensor> tensors_;
  std::map<std::string, kernels::LinearWeight> linears_;
  std::shared_ptr<safetensors::SafetensorsCheckpoint> checkpoint_;  // owns mapped views
  // Checkpoints opened again by AddExperts (their views are held).
  std::vector<std::shared_ptr<safetensors::SafetensorsCheckpoint>> more_checkpoints_;
};

// Errors: unsupported quantization (FAILED_PRECONDITION naming the method and
// backend), a linear layer whose format options.device does not run
// (FAILED_PRECONDITION, see CheckLinearFormatsSupported), bad dtype (INVALID_ARGUMENT listing the
// accepted ones), a placement that does not match the model, every missing and mis-shaped tensor at
// once (NOT_FOUND), unreadable files.
absl::StatusOr<ModelWeights> LoadWeights(const ModelDescription& desc, const std::string& model_dir,
                                         const LoadOptions& options);

// FAILED_PRECONDITION naming the first layer (tensor name and layer index),
// its format, the op and the backend when `backend` does not support the
// (op, format) pair of a linear layer of `specs` (ExpectedTensors(desc)), or
// the tied lm_head's (MatMul on the unquantized embedding table).
absl::Status CheckLinearFormatsSupported(const ModelDescription& desc,
                                         const std::vector<TensorSpec>& specs,
                                         const kernels::Backend& backend);

// The LinearWeight of the linear layer whose kWeight entry is `spec`, from
// the tensors `find` returns by name (nullptr: absent): the weight and the
// companions spec.linear names, with its format and granularity.
// NOT_FOUND naming the first absent tensor.
absl::StatusOr<kernels::LinearWeight> AssembleLinearWeight(
    const TensorSpec& spec, const std::function<const kernels::Tensor*(const std::string&)>& find);

// Loads the routed experts `experts` (those not held yet) into `weights`,
// from `model_dir` with `options` (its dtype, format, seed and device; its
// placement fields are ignored), with the values a full load gives them.
// Errors as LoadWeights'; `weights` is unchanged on error.
absl::Status AddExperts(const std::string& model_dir, const LoadOptions& options,
                        const std::vector<int>& experts, ModelWeights* weights);

// Whether routed expert `expert` is held by `rank` under `expert_to_rank`.
bool IsLocalExpert(const std::vector<uint32_t>& expert_to_rank, uint32_t rank, int expert);

}  // namespace epserve::weights
