#include "worker/weights/weight_loader.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/checkpoint_binding.h"
#include "common/checkpoint/dtype_policy.h"
#include "common/checkpoint/quantization.h"
#include "common/dtype_convert.h"
#include "common/logging.h"
#include "common/progress.h"
#include "common/safetensors/checkpoint.h"
#include "common/shape.h"
#include "common/status.h"
#include "kernels/ops.h"
#include "kernels/registry.h"

namespace epserve::weights {

using checkpoint::BindCheckpoint;
using checkpoint::CheckpointBinding;
using checkpoint::CheckQuantizationSupported;
using checkpoint::IsNormRole;
using checkpoint::LoadFormat;
using checkpoint::ResolveWeightDtype;
using checkpoint::StorageDtype;
using checkpoint::TensorSource;

namespace {

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// Norms 1, everything else uniform with standard deviation 0.02 (as HF
// initialises linear layers).
const float kDummyHalfWidth = 0.02f * std::sqrt(3.0f);

// The dtype `spec`'s tensor is held in: its fixed dtype (quantized tensors),
// else the dtype policy's.
DataType HeldDtype(const TensorSpec& spec, DataType weight_dtype) {
  return spec.fixed_dtype.value_or(StorageDtype(spec.role, weight_dtype));
}

absl::Status Unsupported(const ModelDescription& desc, const std::string& layer,
                         WeightFormat format, LinearOp op, const kernels::Backend& backend) {
  return absl::FailedPreconditionError(
      absl::StrCat(desc.config_file, ": ", desc.architecture, " ", layer, ": weight format ",
                   WeightFormatName(format), " is not supported by ", LinearOpName(op), " on the ",
                   backend.device().ToString(), " backend"));
}

}  // namespace

bool IsLocalExpert(const std::vector<uint32_t>& expert_to_rank, uint32_t rank, int expert) {
  return expert_to_rank.empty() || expert_to_rank[static_cast<size_t>(expert)] == rank;
}

absl::Status CheckLinearFormatsSupported(const ModelDescription& desc,
                                         const std::vector<TensorSpec>& specs,
                                         const kernels::Backend& backend) {
  // Each (op, format) pair once: a model has thousands of expert layers.
  std::set<std::pair<LinearOp, WeightFormat>> checked;
  for (const TensorSpec& spec : specs) {
    if (spec.part != LinearPart::kWeight) continue;
    if (!checked.insert({spec.linear.op, spec.linear.format}).second) continue;
    if (!backend.Supports(spec.linear.op, spec.linear.format)) {
      return Unsupported(desc, absl::StrCat("layer ", spec.layer, " '", spec.name, "'"),
                         spec.linear.format, spec.linear.op, backend);
    }
  }
  if (desc.tie_word_embeddings &&
      !backend.Supports(LinearOp::kMatMul, WeightFormat::kUnquantized)) {
    return Unsupported(desc, "lm_head (tied to model.embed_tokens.weight)",
                       WeightFormat::kUnquantized, LinearOp::kMatMul, backend);
  }
  return absl::OkStatus();
}

absl::StatusOr<kernels::LinearWeight> AssembleLinearWeight(
    const TensorSpec& spec, const std::function<const kernels::Tensor*(const std::string&)>& find) {
  if (spec.part != LinearPart::kWeight) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.name, ": not a linear layer's weight entry (part ", LinearPartName(spec.part), ")"));
  }
  auto get = [&](const std::string& name) -> absl::StatusOr<kernels::Tensor> {
    if (name.empty()) return kernels::Tensor();  // the format has no such tensor
    const kernels::Tensor* t = find(name);
    if (t == nullptr) {
      return absl::NotFoundError(absl::StrCat("linear layer '", spec.name, "' (",
                                              TensorRoleName(spec.role), "): missing tensor '",
                                              name, "'"));
    }
    return *t;
  };
  kernels::LinearWeight w;
  w.format = spec.linear.format;
  ASSIGN_OR_RETURN(w.weight, get(spec.name));
  ASSIGN_OR_RETURN(w.scales, get(spec.linear.scales_name));
  ASSIGN_OR_RETURN(w.zero_points, get(spec.linear.zero_points_name));
  w.group_size = spec.linear.group_size;
  w.block_shape = spec.linear.block_shape;
  return w;
}

const kernels::LinearWeight* ModelWeights::FindLinear(const std::string& name) const {
  auto it = linears_.find(name);
  return it == linears_.end() ? nullptr : &it->second;
}

const kernels::Tensor* ModelWeights::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<const kernels::Tensor*> ModelWeights::Get(const std::string& name) const {
  if (const kernels::Tensor* t = Find(name)) return t;
  return absl::NotFoundError(absl::StrCat("no weight '", name, "' on this worker"));
}

absl::StatusOr<ModelWeights> LoadWeights(const ModelDescription& desc, const std::string& model_dir,
                                         const LoadOptions& options) {
  RETURN_IF_ERROR(CheckQuantizationSupported(desc, options.backend));
  if (!options.expert_to_rank.empty() &&
      options.expert_to_rank.size() != static_cast<size_t>(desc.moe.num_experts)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert placement covers ", options.expert_to_rank.size(), " experts but ",
        desc.architecture, " has ", desc.moe.num_experts));
  }
  const std::vector<TensorSpec> specs = ExpectedTensors(desc);
  if (options.device != nullptr) {
    RETURN_IF_ERROR(CheckLinearFormatsSupported(desc, specs, *options.device));
  }
  ModelWeights w;
  w.desc_ = desc;
  LoadReport& report = w.report_;
  const auto held = [&options](int e) {
    return IsLocalExpert(options.expert_to_rank, options.rank, e) ||
           std::binary_search(options.extra_experts.begin(), options.extra_experts.end(), e);
  };
  // Whether the load takes `spec`: another rank's expert, or (experts only)
  // anything but a routed expert, is skipped.
  const auto takes = [&options, &held](const TensorSpec& spec) {
    return spec.expert >= 0 ? held(spec.expert) : !options.experts_only;
  };
  for (int e = 0; e < desc.moe.num_experts; ++e) {
    if (held(e)) report.local_experts.push_back(e);
  }

  CheckpointBinding binding;
  if (options.format == LoadFormat::kSafetensors) {
    ASSIGN_OR_RETURN(std::unique_ptr<safetensors::SafetensorsCheckpoint> opened,
                     safetensors::SafetensorsCheckpoint::Open(model_dir));
    w.checkpoint_ = std::move(opened);
    binding = BindCheckpoint(desc, specs, *w.checkpoint_);
    RETURN_IF_ERROR(binding.ToStatus(desc, model_dir));
    report.unexpected = binding.unexpected;
    report.packed_layers = binding.packed_layers;
    if (!binding.unexpected.empty()) {
      size_t shown = std::min<size_t>(binding.unexpected.size(), 10);
      LOG_WARN("{}: {} checkpoint tensor(s) not used by {}: {}{}", model_dir,
               binding.unexpected.size(), desc.architecture,
               absl::StrJoin(binding.unexpected.begin(), binding.unexpected.begin() + shown, ", "),
               shown < binding.unexpected.size() ? ", ..." : "");
    }
  }
  ASSIGN_OR_RETURN(report.weight_dtype,
                   ResolveWeightDtype(options.dtype, desc, binding.bytes_by_dtype));
  if (options.backend == "cpu" && report.weight_dtype != DataType::kFloat32) {
    LOG_INFO("cpu backend keeps {} weights and computes in float32", DataTypeName(report.weight_dtype));
  }

  // A device must hold every tensor of this rank: refuse up front, with the
  // numbers, rather than fail part-way.
  if (options.device != nullptr && options.device->device().type != kernels::DeviceType::kCpu) {
    uint64_t needed = 0;
    for (const TensorSpec& spec : specs) {
      if (!takes(spec)) continue;
      needed += static_cast<uint64_t>(NumElements(spec.shape)) *
                DataTypeSize(HeldDtype(spec, report.weight_dtype));
    }
    ASSIGN_OR_RETURN(kernels::DeviceProperties props,
                     kernels::QueryDevice(options.device->device()));
    if (needed > props.free_memory_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          model_dir, ": the ", DataTypeName(report.weight_dtype), " weights of rank ",
          options.rank, " need ", needed, " bytes (", needed >> 20, " MiB) but ",
          props.spec.ToString(), " (", props.name, ") has ", props.free_memory_bytes, " (",
          props.free_memory_bytes >> 20, " MiB) free of ", props.total_memory_bytes,
          "; use more expert-parallel workers, a smaller --dtype, or a larger GPU"));
    }
  }

  std::map<std::pair<DataType, DataType>, int64_t> casts;
  uint64_t total_bytes = 0, total_tensors = 0;
  for (const TensorSpec& spec : specs) {
    if (!takes(spec)) continue;
    total_bytes += static_cast<uint64_t>(NumElements(spec.shape)) *
                   DataTypeSize(HeldDtype(spec, report.weight_dtype));
    ++total_tensors;
  }
  ProgressLog progress(absl::StrCat("reading weights of rank ", options.rank), "tensors",
                       total_bytes, total_tensors);
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& spec = specs[i];
    if (!takes(spec)) continue;
    DataType target = HeldDtype(spec, report.weight_dtype);
    kernels::Tensor t;
    if (options.format == LoadFormat::kDummy) {
      // Seeded per tensor name: the same values whatever the rank, placement
      // or device.
      const uint64_t state0 = options.seed ^ Fnv1a(spec.name);
      if (options.device != nullptr) {
        ASSIGN_OR_RETURN(t, options.device->Empty(target, spec.shape));
        RETURN_IF_ERROR(
            options.device->FillDummy(&t, state0, kDummyHalfWidth, IsNormRole(spec.role)));
      } else {
        ASSIGN_OR_RETURN(t, kernels::EmptyHostTensor(target, spec.shape));
        RETURN_IF_ERROR(
            kernels::FillDummyHost(&t, state0, kDummyHalfWidth, IsNormRole(spec.role)));
      }
    } else {
      const TensorSource& src = binding.sources[i];
      ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, w.checkpoint_->Data(src.checkpoint_name));
      const int64_t numel = NumElements(spec.shape);
      size_t src_elem = DataTypeSize(src.dtype);
      const uint8_t* begin = bytes.data() + src.element_offset * static_cast<int64_t>(src_elem);
      size_t src_bytes = static_cast<size_t>(numel) * src_elem;
      if (begin + src_bytes > bytes.data() + bytes.size()) {
        return absl::DataLossError(absl::StrCat(spec.name, ": slice of ", src.checkpoint_name,
                                                " runs past its end"));
      }
      report.bytes_read += src_bytes;
      if (src.dtype == target) {
        // Zero copy: a read-only view into the mapped file.
        t.dtype = target;
        t.shape = spec.shape;
        t.storage = kernels::ExternalHostStorage(begin, src_bytes, w.checkpoint_);
      } else {
        if (!CanConvert(src.dtype, target)) {
          return absl::InvalidArgumentError(absl::StrCat(
              src.checkpoint_name, ": ", DataTypeName(src.dtype), " cannot be converted to ",
              DataTypeName(target)));
        }
        ASSIGN_OR_RETURN(t, kernels::EmptyHostTensor(target, spec.shape));
        RETURN_IF_ERROR(ConvertElements(begin, src.dtype, t.mutable_data(), target, numel));
        ++casts[{src.dtype, target}];
      }
    }
    report.bytes_held += t.nbytes();
    ++report.num_tensors;
    progress.Add(t.nbytes());
    w.tensors_.emplace(spec.name, std::move(t));
  }
  progress.Finish();
  for (const TensorSpec& spec : specs) {
    if (spec.part != LinearPart::kWeight || w.Find(spec.name) == nullptr) continue;
    ASSIGN_OR_RETURN(
        kernels::LinearWeight linear,
        AssembleLinearWeight(spec, [&w](const std::string& name) { return w.Find(name); }));
    w.linears_.emplace(spec.name, std::move(linear));
  }
  for (const auto& [pair, count] : casts) {
    std::string line = absl::StrCat("casting ", DataTypeName(pair.first), " checkpoint to ",
                                    DataTypeName(pair.second), " (", count, " tensors)");
    LOG_INFO("{}", line);
    report.casts.push_back(std::move(line));
  }
  return w;
}

void ModelWeights::DropExperts(const std::vector<int>& keep) {
  const auto kept = [&keep](int e) { return std::binary_search(keep.begin(), keep.end(), e); };
  for (const TensorSpec& spec : ExpectedTensors(desc_)) {
    if (spec.expert < 0 || kept(spec.expert)) continue;
    linears_.erase(spec.name);
    auto it = tensors_.find(spec.name);
    if (it == tensors_.end()) continue;
    report_.bytes_held -= std::min<uint64_t>(report_.bytes_held, it->second.nbytes());
    --report_.num_tensors;
    tensors_.erase(it);
  }
  std::vector<int> left;
  for (int e : report_.local_experts) {
    if (kept(e)) left.push_back(e);
  }
  report_.local_experts = std::move(left);
}

absl::Status AddExperts(const std::string& model_dir, const LoadOptions& options,
                        const std::vector<int>& experts, ModelWeights* weights) {
  LoadOptions only = options;
  only.expert_to_rank.assign(static_cast<size_t>(weights->desc_.moe.num_experts), 1);
  only.rank = 0;  // no expert is "own": exactly the missing ones are loaded
  only.extra_experts.clear();
  for (int e : experts) {
    if (e < 0 || e >= weights->desc_.moe.num_experts) {
      return absl::InvalidArgumentError(absl::StrCat("AddExperts: expert ", e, " outside [0, ",
                                                     weights->desc_.moe.num_experts, ")"));
    }
    if (!std::binary_search(weights->report_.local_experts.begin(),
                            weights->report_.local_experts.end(), e)) {
      only.extra_experts.push_back(e);
    }
  }
  std::sort(only.extra_experts.begin(), only.extra_experts.end());
  only.extra_experts.erase(std::unique(only.extra_experts.begin(), only.extra_experts.end()),
                           only.extra_experts.end());
  if (only.extra_experts.empty()) return absl::OkStatus();
  only.experts_only = true;
  ASSIGN_OR_RETURN(ModelWeights more, LoadWeights(weights->desc_, model_dir, only));
  for (auto& [name, t] : more.tensors_) weights->tensors_.insert_or_assign(name, std::move(t));
  for (auto& [name, l] : more.linears_) weights->linears_.insert_or_assign(name, std::move(l));
  if (more.checkpoint_ != nullptr) weights->more_checkpoints_.push_back(more.checkpoint_);
  LoadReport& report = weights->report_;
  report.bytes_held += more.report_.bytes_held;
  report.bytes_read += more.report_.bytes_read;
  report.num_tensors += more.report_.num_tensors;
  report.local_experts.insert(report.local_experts.end(), more.report_.local_experts.begin(),
                              more.report_.local_experts.end());
  std::sort(report.local_experts.begin(), report.local_experts.end());
  return absl::OkStatus();
}

}  // namespace epserve::weights
