#include "common/checkpoint/checkpoint_binding.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/shape.h"

namespace epserve::checkpoint {
namespace {

// Tensors checkpoints carry that no model here reads.
bool IsIgnorable(const std::string& name) {
  return absl::EndsWith(name, "rotary_emb.inv_freq");
}

}  // namespace

absl::Status CheckpointBinding::ToStatus(const ModelDescription& desc,
                                         const std::string& dir) const {
  if (ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(dir, ": checkpoint does not match ", desc.architecture, ":");
  if (!missing.empty()) {
    absl::StrAppend(&msg, " missing ", missing.size(), " tensor(s): ",
                    absl::StrJoin(missing, ", "), ".");
  }
  if (!shape_mismatches.empty()) {
    absl::StrAppend(&msg, " ", shape_mismatches.size(), " shape mismatch(es): ",
                    absl::StrJoin(shape_mismatches, "; "), ".");
  }
  return absl::NotFoundError(msg);
}

CheckpointBinding BindCheckpoint(const ModelDescription& desc, const std::vector<TensorSpec>& specs,
                                 const safetensors::SafetensorsCheckpoint& checkpoint) {
  CheckpointBinding b;
  b.sources.resize(specs.size());
  b.found.assign(specs.size(), false);
  std::set<std::string> used;

  // Per MoE layer: the per-expert layout when the checkpoint has it, else the
  // packed one when present.
  std::map<int, PackedExpertSpec> packed;
  for (const PackedExpertSpec& p : PackedExpertTensors(desc)) {
    std::string first_expert;
    for (const TensorSpec& s : specs) {
      if (s.layer == p.layer && s.expert == 0 && s.role == TensorRole::kExpertGate) {
        first_expert = s.name;
      }
    }
    if (checkpoint.Find(first_expert) == nullptr && checkpoint.Find(p.gate_up_name) != nullptr) {
      packed[p.layer] = p;
      b.packed_layers.push_back(p.layer);
    }
  }

  auto check_shape = [&](const std::string& name, const std::vector<int64_t>& expected) {
    const safetensors::TensorInfo* info = checkpoint.Find(name);
    if (info->shape == expected) return true;
    auto file = checkpoint.FileOf(name);
    b.shape_mismatches.push_back(absl::StrCat(name, ": expected ", ShapeString(expected),
                                              ", found ", ShapeString(info->shape),
                                              " (in ", file.ok() ? *file : "?", ")"));
    return false;
  };

  std::set<std::string> packed_checked;
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    auto p = packed.find(spec.layer);
    bool from_packed = p != packed.end() && IsRoutedExpertRole(spec.role);
    std::string name = spec.name;
    if (p != packed.end() && spec.role == TensorRole::kRouter) name = p->second.router_name;
    if (from_packed) {
      absl::StatusOr<PackedSlice> slice = p->second.SliceFor(spec.role, spec.expert);
      if (!slice.ok()) {
        b.missing.push_back(spec.name);
        continue;
      }
      const std::string& packed_name = slice->packed_name;
      const safetensors::TensorInfo* info = checkpoint.Find(packed_name);
      if (info == nullptr) {
        if (packed_checked.insert(packed_name).second) b.missing.push_back(packed_name);
        continue;
      }
      const std::vector<int64_t>& expected = packed_name == p->second.gate_up_name
                                                 ? p->second.gate_up_shape
                                                 : p->second.down_shape;
      used.insert(packed_name);
      if (packed_checked.insert(packed_name).second && !check_shape(packed_name, expected)) continue;
      if (info->shape != expected) continue;  // reported once above
      b.sources[i] = TensorSource{packed_name, slice->element_offset, info->dtype};
      b.found[i] = true;
      continue;
    }
    const safetensors::TensorInfo* info = checkpoint.Find(name);
    if (info == nullptr) {
      b.missing.push_back(name);
      continue;
    }
    used.insert(name);
    if (!check_shape(name, spec.shape)) continue;
    b.sources[i] = TensorSource{name, 0, info->dtype};
    b.found[i] = true;
  }

  for (const std::string& name : checkpoint.TensorNames()) {
    const safetensors::TensorInfo* info = checkpoint.Find(name);
    b.bytes_by_dtype[info->dtype] += info->num_bytes();
    if (!used.count(name) && !IsIgnorable(name)) b.unexpected.push_back(name);
  }
  return b;
}

}  // namespace epserve::checkpoint
