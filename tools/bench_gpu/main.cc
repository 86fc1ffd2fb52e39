// epserve-bench-gpu: epserve's GPU performance against the device's own
// references, one subcommand per measurement (see kUsage). Results: human
// lines on stdout as they are taken, then one JSON object (report.h) on
// stdout and in --json.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/flags/flags_util.h"
#include "common/logging.h"
#include "common/model_config/model_config.h"
#include "common/status.h"
#include "kernels/device.h"
#include "kernels/registry.h"
#include "tools/bench_gpu/alltoall_bench.h"
#include "tools/bench_gpu/grouped_gemm_bench.h"
#include "tools/bench_gpu/model_bench.h"
#include "tools/bench_gpu/model_cost.h"
#include "tools/bench_gpu/reference.h"
#include "tools/bench_gpu/report.h"

ABSL_FLAG(std::string, device, "cuda:0", "CUDA device to measure: cuda or cuda:K");
ABSL_FLAG(std::string, json, "", "Also write the JSON results to this file");
ABSL_FLAG(std::string, model, "", "decode, prefill: model directory (config.json is enough)");
ABSL_FLAG(std::string, models,
          "tools/configs/qwen3-30b-a3b,tools/configs/mixtral-8x7b-v0.1,tools/configs/qwen3-8b",
          "all, gemm-peak: comma-separated model directories (one loaded at a time)");
ABSL_FLAG(std::string, batch, "1,8,64,256", "decode: comma-separated batch sizes");
ABSL_FLAG(int64_t, context, 512, "decode: tokens of context per sequence");
ABSL_FLAG(int64_t, steps, 32, "decode: timed steps per batch size");
ABSL_FLAG(int64_t, warmup_steps, 3, "decode: untimed steps first (graph capture)");
ABSL_FLAG(bool, eager, false, "decode: no CUDA graphs");
ABSL_FLAG(std::string, tokens, "",
          "prefill: comma-separated prompt lengths (default 2048); grouped-gemm: token counts "
          "(default 1,64,512,2048); alltoall: tokens per rank (default 1,8,128,512)");
ABSL_FLAG(int64_t, seqs, 1, "prefill: prompts per step");
// grouped-gemm shape: with none of the four given, the Qwen3-30B-A3B and the
// Mixtral-8x7B expert shapes; otherwise one case, unset ones as Qwen3-30B-A3B.
ABSL_FLAG(int, experts, 0, "grouped-gemm, alltoall: experts (128)");
ABSL_FLAG(int, topk, 0, "grouped-gemm, alltoall: experts per token (8)");
ABSL_FLAG(std::string, hidden, "",
          "grouped-gemm: K, the hidden size (2048); alltoall: comma-separated hidden sizes "
          "(2048,4096,7168)");
ABSL_FLAG(int64_t, width, 0, "grouped-gemm: N, the expert width (768)");
ABSL_FLAG(int, gpus, 0, "alltoall: GPUs of the NCCL part (0: all; fewer than 2: skipped)");
ABSL_FLAG(int64_t, large_tokens, 4096,
          "alltoall: tokens per rank of the bandwidth case of the NCCL part (0: none)");
ABSL_FLAG(int, iterations, 100, "alltoall: timed calls per case");
ABSL_FLAG(double, copy_gib, 2.0, "bandwidth: size of the copied buffer, GiB");
ABSL_FLAG(int64_t, max_plan_tokens, 8192, "decode: prompt tokens per plan while filling contexts");
ABSL_FLAG(double, reserve_gib, 6.0,
          "decode, prefill: GPU memory kept free for activations and graphs beside weights "
          "and KV cache, GiB");
ABSL_FLAG(uint64_t, seed, 1, "Seed of dummy weights, prompts and routing");
ABSL_FLAG(std::string, log_level, "warn", "trace, debug, info, warn or error (stderr)");

namespace epserve::bench_gpu {
namespace {

constexpr char kUsage[] =
    "epserve-bench-gpu: epserve on a GPU against the GPU's own references.\n\n"
    "  epserve-bench-gpu bandwidth      device-to-device copy, 2 x bytes / time\n"
    "  epserve-bench-gpu gemm-peak      cuBLAS bf16 GEMM: 8192^3 and the prefill shapes\n"
    "  epserve-bench-gpu decode  --model DIR [--batch 1,8,64,256 --context 512 --steps 32 "
    "--eager]\n"
    "  epserve-bench-gpu prefill --model DIR [--tokens 2048 --seqs 1]\n"
    "  epserve-bench-gpu grouped-gemm [--experts 128 --topk 8 --hidden 2048 --width 768 "
    "--tokens 1,64,512,2048]\n"
    "  epserve-bench-gpu alltoall [--hidden 2048,4096,7168 --tokens 1,8,128,512 --experts 128 "
    "--topk 8\n"
    "                               --gpus 0 --large_tokens 4096 --iterations 100]\n"
    "                               expert-parallel exchange: its kernels on one GPU, and\n"
    "                               dispatch / combine over NCCL against an all-to-all on\n"
    "                               2, 4, 8 ... GPUs when there are\n"
    "  epserve-bench-gpu all [--models DIR,DIR,...]\n\n"
    "Models use dummy bf16 weights made on the GPU (config.json is enough; see\n"
    "tools/configs). Add --json FILE to keep the results; --helpfull lists the flags.";

constexpr int kRepetitions = 10;         // bandwidth, gemm-peak
constexpr int kGroupedRepetitions = 20;  // grouped-gemm
constexpr int64_t kPeakGemmSize = 8192;  // the square reference GEMM
constexpr int64_t kDefaultPrefillTokens = 2048;

absl::StatusOr<std::vector<int64_t>> ParseList(const std::string& flag, const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, ": expected comma-separated positive integers, found '", part, "'"));
    }
    out.push_back(v);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": expected at least one value"));
  }
  return out;
}

// --tokens, or `fallback` when it was not given.
absl::StatusOr<std::vector<int64_t>> TokensFlag(const std::string& fallback) {
  const std::string t = absl::GetFlag(FLAGS_tokens);
  return ParseList("tokens", t.empty() ? fallback : t);
}

std::vector<std::string> ModelsFlag() {
  return absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipWhitespace());
}

// The run's references, measured once and shared by the model benches.
struct References {
  std::optional<double> bandwidth_gb_per_s;
  std::optional<double> gemm_peak_tflops;
};

absl::Status Bandwidth(const kernels::DeviceSpec& device, References& refs, Report& report) {
  const uint64_t bytes =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_copy_gib) * static_cast<double>(1ull << 30));
  ASSIGN_OR_RETURN(CopyBandwidth bw, MeasureCopyBandwidth(device.ordinal, bytes, kRepetitions));
  Line("bandwidth: device-to-device copy of %.2f GiB: best %.3f ms -> %.0f GB/s (read + write)",
       static_cast<double>(bw.bytes) / static_cast<double>(1ull << 30), bw.best_seconds * 1e3,
       bw.gb_per_s);
  report.Add({"copy_bandwidth", "", std::nullopt, bw.gb_per_s, "GB/s", std::nullopt});
  refs.bandwidth_gb_per_s = bw.gb_per_s;
  return report.Flush();
}

// The square peak, then (with_prefill_shapes) the weight GEMMs of a prefill
// of every --models config.
absl::Status GemmPeak(const kernels::DeviceSpec& device, bool with_prefill_shapes, References& refs,
                      Report& report) {
  std::vector<GemmShape> shapes = {
      {absl::StrCat("square ", kPeakGemmSize), kPeakGemmSize, kPeakGemmSize, kPeakGemmSize}};
  if (with_prefill_shapes) {
    ASSIGN_OR_RETURN(std::vector<int64_t> tokens, TokensFlag(absl::StrCat(kDefaultPrefillTokens)));
    for (const std::string& dir : ModelsFlag()) {
      absl::StatusOr<ModelDescription> desc = LoadModelConfig(dir);
      if (!desc.ok()) {
        Line("gemm-peak: %s: %s", dir, desc.status().ToString());
        continue;
      }
      for (const GemmShape& s : PrefillGemmShapes(*desc, ConfigName(dir), tokens.front())) {
        shapes.push_back(s);
      }
    }
  }
  ASSIGN_OR_RETURN(std::vector<GemmResult> results,
                   MeasureGemms(device.ordinal, shapes, kRepetitions));
  const double peak = results.front().tflops;
  for (const GemmResult& r : results) {
    Line(
        "gemm-peak: cuBLAS bf16 %-32s m %6d n %6d k %6d: %9.1f us %7.1f TFLOP/s (%.2f of "
        "square)",
        r.shape.label, r.shape.m, r.shape.n, r.shape.k, r.best_seconds * 1e6, r.tflops,
        r.tflops / peak);
    report.Add(
        {"cublas_gemm_tflops", r.shape.label, r.shape.m, r.tflops, "TFLOP/s", r.tflops / peak});
  }
  refs.gemm_peak_tflops = peak;
  return report.Flush();
}

// --hidden, or `fallback` when it was not given.
absl::StatusOr<std::vector<int64_t>> HiddenFlag(const std::string& fallback) {
  const std::string h = absl::GetFlag(FLAGS_hidden);
  return ParseList("hidden", h.empty() ? fallback : h);
}

// The --experts/--topk/--hidden/--width case, or (`defaults`, or none of
// them given) Qwen3-30B-A3B's and Mixtral-8x7B's expert gate/up projection.
absl::StatusOr<std::vector<GroupedGemmCase>> GroupedGemmCases(bool defaults) {
  const GroupedGemmCase qwen{"qwen3-30b-a3b expert", 128, 8, 2048, 768, {}};
  const GroupedGemmCase mixtral{"mixtral-8x7b expert", 8, 2, 4096, 14336, {}};
  const int experts = absl::GetFlag(FLAGS_experts), topk = absl::GetFlag(FLAGS_topk);
  const int64_t width = absl::GetFlag(FLAGS_width);
  int64_t hidden = 0;
  if (!absl::GetFlag(FLAGS_hidden).empty()) {
    ASSIGN_OR_RETURN(std::vector<int64_t> sizes, HiddenFlag(""));
    if (sizes.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--hidden: grouped-gemm takes one size, found ", sizes.size(), " ('",
                       absl::GetFlag(FLAGS_hidden), "')"));
    }
    hidden = sizes.front();
  }
  if (defaults || (experts == 0 && topk == 0 && hidden == 0 && width == 0)) {
    return std::vector<GroupedGemmCase>{qwen, mixtral};
  }
  GroupedGemmCase c = qwen;
  if (experts != 0) c.num_experts = experts;
  if (topk != 0) c.top_k = topk;
  if (hidden != 0) c.hidden = hidden;
  if (width != 0) c.width = width;
  c.label = absl::StrCat("E", c.num_experts, " top", c.top_k, " ", c.hidden, "x", c.width);
  return std::vector<GroupedGemmCase>{c};
}

absl::Status GroupedGemm(const kernels::DeviceSpec& device, bool defaults, const References& refs,
                         Report& report) {
  ASSIGN_OR_RETURN(std::vector<int64_t> tokens, TokensFlag("1,64,512,2048"));
  GroupedGemmOptions options;
  options.device = device;
  options.repetitions = kGroupedRepetitions;
  options.seed = absl::GetFlag(FLAGS_seed);
  options.bandwidth_gb_per_s = refs.bandwidth_gb_per_s;
  ASSIGN_OR_RETURN(std::vector<GroupedGemmCase> cases, GroupedGemmCases(defaults));
  for (GroupedGemmCase c : cases) {
    c.tokens = tokens;
    Line("");
    absl::Status s = RunGroupedGemmBench(c, options, report);
    if (!s.ok()) Line("grouped-gemm %s: error: %s", c.label, s.ToString());
    RETURN_IF_ERROR(ReleasePooledMemory(device.ordinal));
    RETURN_IF_ERROR(report.Flush());
  }
  return absl::OkStatus();
}

// alltoall's options from the flags (`defaults`: the sizes whatever
// the flags say, for `all`).
absl::StatusOr<AllToAllOptions> AllToAllFlags(const kernels::DeviceSpec& device, bool defaults,
                                              const References& refs) {
  AllToAllOptions o;
  o.device = device;
  if (!defaults) {
    ASSIGN_OR_RETURN(o.hidden, HiddenFlag("2048,4096,7168"));
    ASSIGN_OR_RETURN(o.tokens, TokensFlag("1,8,128,512"));
    if (absl::GetFlag(FLAGS_experts) != 0) o.num_experts = absl::GetFlag(FLAGS_experts);
    if (absl::GetFlag(FLAGS_topk) != 0) o.top_k = absl::GetFlag(FLAGS_topk);
    o.iterations = absl::GetFlag(FLAGS_iterations);
  }
  o.gpus = absl::GetFlag(FLAGS_gpus);
  o.large_tokens = absl::GetFlag(FLAGS_large_tokens);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.bandwidth_gb_per_s = refs.bandwidth_gb_per_s;
  RETURN_IF_ERROR(CheckAllToAllOptions(o));
  return o;
}

// Both parts; the NCCL part runs (and is reported) even when the local one
// failed. Prints the section's wall time.
absl::Status AllToAll(const kernels::DeviceSpec& device, bool defaults, const References& refs,
                      Report& report) {
  ASSIGN_OR_RETURN(AllToAllOptions options, AllToAllFlags(device, defaults, refs));
  const auto start = std::chrono::steady_clock::now();
  Line("");
  const absl::Status local = RunLocalExchangeBench(options, report);
  if (!local.ok()) Line("alltoall local kernels: error: %s", local.ToString());
  RETURN_IF_ERROR(report.Flush());
  Line("");
  const absl::Status nccl = RunNcclExchangeBench(options, report);
  if (!nccl.ok()) Line("alltoall nccl: error: %s", nccl.ToString());
  RETURN_IF_ERROR(report.Flush());
  Line("alltoall: %.1f s",
       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return local.ok() ? nccl : local;
}

absl::StatusOr<ModelBenchOptions> ModelOptions(const kernels::DeviceSpec& device,
                                               const References& refs, bool decode, bool prefill) {
  ModelBenchOptions o;
  o.device = device;
  if (decode) {
    ASSIGN_OR_RETURN(o.batches, ParseList("batch", absl::GetFlag(FLAGS_batch)));
  }
  if (prefill) {
    ASSIGN_OR_RETURN(o.prefill_tokens, TokensFlag(absl::StrCat(kDefaultPrefillTokens)));
  }
  o.context = absl::GetFlag(FLAGS_context);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.eager = absl::GetFlag(FLAGS_eager);
  o.prefill_seqs = absl::GetFlag(FLAGS_seqs);
  o.max_plan_tokens = absl::GetFlag(FLAGS_max_plan_tokens);
  o.reserve_gib = absl::GetFlag(FLAGS_reserve_gib);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.bandwidth_gb_per_s = refs.bandwidth_gb_per_s;
  o.gemm_peak_tflops = refs.gemm_peak_tflops;
  return o;
}

// One model at a time; a model that fails (e.g. does not fit) is reported
// and the next one runs.
absl::Status Models(const std::vector<std::string>& dirs, const ModelBenchOptions& options,
                    Report& report) {
  for (const std::string& dir : dirs) {
    absl::Status s = RunModelBench(dir, options, report);
    if (!s.ok()) Line("model %s: error: %s", dir, s.ToString());
    // The executor is gone; give its pooled memory back before the next load.
    RETURN_IF_ERROR(ReleasePooledMemory(options.device.ordinal));
    RETURN_IF_ERROR(report.Flush());
  }
  return absl::OkStatus();
}

absl::Status Run(const std::string& command, const kernels::DeviceSpec& device, Report& report) {
  References refs;
  if (command == "bandwidth") return Bandwidth(device, refs, report);
  if (command == "gemm-peak") return GemmPeak(device, /*with_prefill_shapes=*/true, refs, report);
  if (command == "grouped-gemm") {
    RETURN_IF_ERROR(Bandwidth(device, refs, report));
    return GroupedGemm(device, /*defaults=*/false, refs, report);
  }
  if (command == "alltoall") {
    RETURN_IF_ERROR(Bandwidth(device, refs, report));
    return AllToAll(device, /*defaults=*/false, refs, report);
  }
  if (command == "decode" || command == "prefill") {
    const std::string model = absl::GetFlag(FLAGS_model);
    if (model.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(command, ": --model DIR is required"));
    }
    const bool decode = command == "decode";
    if (decode) {
      RETURN_IF_ERROR(Bandwidth(device, refs, report));
    } else {
      RETURN_IF_ERROR(GemmPeak(device, /*with_prefill_shapes=*/false, refs, report));
    }
    ASSIGN_OR_RETURN(ModelBenchOptions options, ModelOptions(device, refs, decode, !decode));
    return Models({model}, options, report);
  }
  if (command == "all") {
    RETURN_IF_ERROR(Bandwidth(device, refs, report));
    RETURN_IF_ERROR(GemmPeak(device, /*with_prefill_shapes=*/true, refs, report));
    // The kernel-level cases first: a model run that breaks the device
    // would otherwise take them with it.
    RETURN_IF_ERROR(GroupedGemm(device, /*defaults=*/true, refs, report));
    RETURN_IF_ERROR(AllToAll(device, /*defaults=*/true, refs, report));
    ASSIGN_OR_RETURN(ModelBenchOptions options, ModelOptions(device, refs, true, true));
    return Models(ModelsFlag(), options, report);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown command '", command,
      "' (expected bandwidth, gemm-peak, decode, prefill, grouped-gemm, alltoall or all)"));
}

int Main(int argc, char** argv) {
  std::vector<std::string> rest = ParseFlags(argc, argv, kUsage);
  if (rest.size() != 2) {
    Die(rest.size() < 2 ? "expected a command (see --help)"
                        : absl::StrCat("unexpected argument '", rest[2], "'"),
        2);
  }
  if (!InitLogging("bench-gpu", absl::GetFlag(FLAGS_log_level))) {
    Die(absl::StrCat("--log-level: unknown level '", absl::GetFlag(FLAGS_log_level), "'"), 2);
  }
  absl::StatusOr<kernels::DeviceSpec> device = kernels::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok() || device->type != kernels::DeviceType::kCuda) {
    Die(absl::StrCat("--device: expected cuda or cuda:K, found '", absl::GetFlag(FLAGS_device),
                     "'"),
        2);
  }
  absl::StatusOr<kernels::DeviceProperties> props = kernels::QueryDevice(*device);
  if (!props.ok()) Die(props.status().ToString());
  const std::string device_name = absl::StrCat(props->name, " (", device->ToString(), ")");
  const std::string date = UtcNow();
  Line("epserve-bench-gpu %s: %s, %d SMs, compute capability %s, %.1f GiB (%.1f GiB free); %s",
       rest[1], device_name, props->compute_units, props->compute_capability,
       static_cast<double>(props->total_memory_bytes) / static_cast<double>(1ull << 30),
       static_cast<double>(props->free_memory_bytes) / static_cast<double>(1ull << 30), date);

  Report report(device_name, date, absl::GetFlag(FLAGS_json));
  const absl::Status status = Run(rest[1], *device, report);
  if (!status.ok()) Line("error: %s", status.ToString());
  Line("");
  std::fputs(report.Json().c_str(), stdout);
  std::fputc('\n', stdout);
  const absl::Status flushed = report.Flush();
  if (!flushed.ok()) Die(flushed.message());
  return status.ok() ? 0 : 1;
}

}  // namespace
}  // namespace epserve::bench_gpu

int main(int argc, char** argv) { return epserve::bench_gpu::Main(argc, argv); }
