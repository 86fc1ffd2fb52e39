// Matches a checkpoint's tensors against what an architecture expects: where
// each expected tensor comes from (its own tensor, or a slice of a packed
// expert tensor), and everything that is missing, mis-shaped or unexpected.
// Reads only headers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/model_config/model_description.h"
#include "common/model_config/tensor_spec.h"
#include "common/safetensors/checkpoint.h"

namespace epserve::checkpoint {

// Where an expected tensor's elements are in the checkpoint.
struct TensorSource {
  std::string checkpoint_name;  // the checkpoint tensor holding it
  int64_t element_offset = 0;   // first element inside that tensor
  DataType dtype = DataType::kFloat32;  // the checkpoint's dtype
};

struct CheckpointBinding {
  // Indexed like ExpectedTensors(desc); valid only where found[i].
  std::vector<TensorSource> sources;
  std::vector<bool> found;
  // Expected names with no source, in ExpectedTensors order.
  std::vector<std::string> missing;
  // "name: expected [a, b], found [c, d] (in FILE)".
  std::vector<std::string> shape_mismatches;
  // Checkpoint tensors no expected tensor uses (sorted).
  std::vector<std::string> unexpected;
  // MoE layers whose experts come from the packed layout.
  std::vector<int> packed_layers;
  // Checkpoint bytes by dtype (all tensors).
  std::map<DataType, uint64_t> bytes_by_dtype;

  bool ok() const { return missing.empty() && shape_mismatches.empty(); }
  // One error naming every missing and mis-shaped tensor; OK when ok().
  absl::Status ToStatus(const ModelDescription& desc, const std::string& dir) const;
};

CheckpointBinding BindCheckpoint(const ModelDescription& desc, const std::vector<TensorSpec>& specs,
                                 const safetensors::SafetensorsCheckpoint& checkpoint);

}  // namespace epserve::checkpoint
