#include "cli/run/inspect_command.h"

#include <algorithm>
#include <iostream>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/run/args.h"
#include "common/checkpoint/checkpoint_binding.h"
#include "common/checkpoint/dtype_policy.h"
#include "common/checkpoint/load_format.h"
#include "common/checkpoint/quantization.h"
#include "common/model_config/model_config.h"
#include "common/model_config/tensor_spec.h"
#include "common/placement.h"
#include "common/safetensors/checkpoint.h"
#include "common/shape.h"
#include "kernels/registry.h"
#include "nlohmann/json.hpp"
#include "worker/weights/weight_loader.h"

namespace epserve::cli {
namespace {

using json = nlohmann::json;

json Describe(const ModelDescription& d) {
  json layers = json::array();
  for (LayerKind k : d.layer_kinds()) layers.push_back(LayerKindName(k));
  json rope = {{"theta", d.rope.theta},
               {"type", RopeTypeName(d.rope.type)},
               {"factor", d.rope.factor},
               {"neox_layout", d.rope.layout == RopeLayout::kNeox}};
  if (d.rope.original_max_position_embeddings > 0) {
    rope["original_max_position_embeddings"] = d.rope.original_max_position_embeddings;
  }
  json out = {{"architecture", d.architecture},
              {"model_type", d.model_type},
              {"config_file", d.config_file},
              {"num_layers", d.num_layers},
              {"layer_kinds", layers},
              {"hidden_size", d.hidden_size},
              {"num_heads", d.num_heads},
              {"num_kv_heads", d.num_kv_heads},
              {"head_dim", d.head_dim},
              {"intermediate_size", d.intermediate_size},
              {"vocab_size", d.vocab_size},
              {"max_position_embeddings", d.max_position_embeddings},
              {"tie_word_embeddings", d.tie_word_embeddings},
              {"attention_bias", d.attention_bias},
              {"qk_norm", QkNormKindName(d.qk_norm)},
              {"rms_norm_eps", d.rms_norm_eps},
              {"rope", rope},
              {"config_dtype", d.dtype ? json(DataTypeName(*d.dtype)) : json(nullptr)},
              {"quantization", QuantMethodName(d.quantization.method)}};
  if (d.is_moe()) {
    out["moe"] = {{"num_experts", d.moe.num_experts},
                  {"top_k", d.moe.routing.top_k},
                  {"num_moe_layers", d.num_moe_layers()},
                  {"moe_intermediate_size", d.moe.moe_intermediate_size},
                  {"norm_topk_prob", d.moe.routing.renormalize},
                  {"shared_expert_intermediate_size", d.moe.shared_expert_intermediate_size},
                  {"shared_expert_gate", d.moe.shared_expert_gate}};
  }
  out["parameters"] = {{"total", d.total_params()},
                       {"active_per_token", d.active_params_per_token()}};
  return out;
}

}  // namespace

int RunInspectCommand(int argc, char** argv) { return RunInspectCommand(argc, argv, std::cout, std::cerr); }

int RunInspectCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = ParseArgs(
          argc, argv, {"model", "load-format", "dtype", "expert-parallel", "placement", "device"},
          {}, args)) {
    return UsageError(err, "inspect", *e);
  }
  if (!args.has("model")) return UsageError(err, "inspect", "--model DIR is required");
  auto format = checkpoint::ParseLoadFormat(args.get("load-format", "auto"));
  if (!format.ok()) return UsageError(err, "inspect", std::string(format.status().message()));
  int world = 1;
  if (args.has("expert-parallel") &&
      (!absl::SimpleAtoi(args.get("expert-parallel"), &world) || world < 1)) {
    return UsageError(err, "inspect", "--expert-parallel must be a positive integer");
  }
  auto strategy = ParsePlacementStrategy(args.get("placement", "linear"));
  if (!strategy.ok()) return UsageError(err, "inspect", std::string(strategy.status().message()));
  std::optional<kernels::DeviceSpec> device;
  if (args.has("device")) {
    auto parsed = kernels::ParseDevice(args.get("device"));
    if (!parsed.ok()) return UsageError(err, "inspect", absl::StrCat(parsed.status().message()));
    device = *parsed;
  }

  const std::string dir = args.get("model");
  auto desc = LoadModelConfig(dir);
  if (!desc.ok()) {
    err << "epserve-run inspect: error: " << desc.status().message() << "\n";
    return 1;
  }
  json report = Describe(*desc);
  report["model_dir"] = dir;
  report["load_format"] = *format == checkpoint::LoadFormat::kDummy ? "dummy" : "safetensors";
  bool loadable = true;
  std::vector<std::string> problems;
  if (absl::Status q = checkpoint::CheckQuantizationSupported(
          *desc, device.has_value() && device->type != kernels::DeviceType::kCpu ? "cuda" : "cpu");
      !q.ok()) {
    loadable = false;
    problems.emplace_back(q.message());
  }

  const std::vector<TensorSpec> specs = ExpectedTensors(*desc);
  std::map<DataType, uint64_t> checkpoint_bytes;
  if (*format == checkpoint::LoadFormat::kSafetensors) {
    auto checkpoint = safetensors::SafetensorsCheckpoint::Open(dir);
    if (!checkpoint.ok()) {
      loadable = false;
      problems.emplace_back(checkpoint.status().message());
    } else {
      checkpoint::CheckpointBinding b = checkpoint::BindCheckpoint(*desc, specs, **checkpoint);
      checkpoint_bytes = b.bytes_by_dtype;
      if (!b.ok()) {
        loadable = false;
        problems.emplace_back(b.ToStatus(*desc, dir).message());
      }
      report["checkpoint"] = {{"files", (*checkpoint)->Files()},
                              {"num_tensors", (*checkpoint)->TensorNames().size()},
                              {"missing", b.missing},
                              {"shape_mismatches", b.shape_mismatches},
                              {"unexpected", b.unexpected},
                              {"packed_expert_layers", b.packed_layers}};
      json by_dtype = json::object();
      for (const auto& [type, bytes] : b.bytes_by_dtype) by_dtype[DataTypeName(type)] = bytes;
      report["checkpoint"]["bytes_by_dtype"] = by_dtype;
    }
  }
  auto weight_dtype = checkpoint::ResolveWeightDtype(args.get("dtype", "auto"), *desc, checkpoint_bytes);
  if (!weight_dtype.ok()) return UsageError(err, "inspect", std::string(weight_dtype.status().message()));
  report["weight_dtype"] = DataTypeName(*weight_dtype);

  // Bytes the loaded model occupies, by storage dtype, and per rank.
  std::vector<uint32_t> placement;
  if (desc->is_moe()) {
    auto placed = PlaceExperts(static_cast<uint32_t>(desc->moe.num_experts),
                               static_cast<uint32_t>(world), *strategy);
    if (!placed.ok()) return UsageError(err, "inspect", std::string(placed.status().message()));
    placement = *placed;
  } else if (world > 1) {
    return UsageError(err, "inspect", "--expert-parallel needs a MoE model");
  }
  std::map<std::string, uint64_t> loaded_bytes;
  std::vector<uint64_t> rank_bytes(static_cast<size_t>(world), 0);
  // Linear layers by storage format: how many, and their bytes (weight and
  // companions: scales, zero points).
  std::map<std::string, WeightFormat> module_format;
  for (const TensorSpec& s : specs) {
    if (s.part == LinearPart::kWeight) {
      module_format[s.name.substr(0, s.name.rfind('.'))] = s.linear.format;
    }
  }
  json formats = json::object();
  for (const TensorSpec& s : specs) {
    // Quantized tensors keep their own dtype; the rest follow the policy.
    DataType t = s.fixed_dtype.value_or(checkpoint::StorageDtype(s.role, *weight_dtype));
    uint64_t bytes = static_cast<uint64_t>(NumElements(s.shape)) * DataTypeSize(t);
    loaded_bytes[DataTypeName(t)] += bytes;
    if (s.part != LinearPart::kNone) {
      auto it = module_format.find(s.name.substr(0, s.name.rfind('.')));
      if (it != module_format.end()) {
        json& f = formats[WeightFormatName(it->second)];
        if (f.is_null()) f = {{"layers", 0}, {"bytes", 0}};
        if (s.part == LinearPart::kWeight) f["layers"] = f["layers"].get<int64_t>() + 1;
        f["bytes"] = f["bytes"].get<uint64_t>() + bytes;
      }
    }
    for (int r = 0; r < world; ++r) {
      if (s.expert < 0 || weights::IsLocalExpert(placement, static_cast<uint32_t>(r), s.expert)) {
        rank_bytes[static_cast<size_t>(r)] += bytes;
      }
    }
  }
  report["loaded_bytes_by_dtype"] = loaded_bytes;
  report["linear_formats"] = formats;
  if (desc->is_moe()) {
    json ranks = json::array();
    for (int r = 0; r < world; ++r) {
      std::vector<int> experts;
      for (size_t e = 0; e < placement.size(); ++e) {
        if (placement[e] == static_cast<uint32_t>(r)) experts.push_back(static_cast<int>(e));
      }
      ranks.push_back({{"rank", r}, {"experts", experts}, {"bytes", rank_bytes[static_cast<size_t>(r)]}});
    }
    report["expert_parallel"] = {{"world_size", world},
                                 {"placement", PlacementStrategyName(*strategy)},
                                 {"ranks", ranks}};
  }
  // With --device: every rank's weights must fit that device's memory (one
  // rank per device; KV cache and activations need more on top).
  if (device.has_value()) {
    absl::StatusOr<kernels::DeviceProperties> props = kernels::QueryDevice(*device);
    if (!props.ok()) {
      loadable = false;
      problems.emplace_back(props.status().message());
    } else {
      const uint64_t most = *std::max_element(rank_bytes.begin(), rank_bytes.end());
      report["device"] = {{"name", props->name},
                          {"spec", props->spec.ToString()},
                          {"total_memory_bytes", props->total_memory_bytes},
                          {"largest_rank_bytes", most}};
      if (most > props->total_memory_bytes) {
        loadable = false;
        problems.emplace_back(absl::StrCat(
            "the weights need ", most, " bytes", world > 1 ? " on the largest rank" : "", ", ",
            props->spec.ToString(), " (", props->name, ") has ", props->total_memory_bytes));
      }
    }
  }
  report["loadable"] = loadable;
  report["problems"] = problems;
  out << report.dump(2) << "\n";
  return loadable ? 0 : 1;
}

}  // namespace epserve::cli
