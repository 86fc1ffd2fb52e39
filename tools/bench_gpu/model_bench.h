// Decode and prefill of a whole model through step::StepExecutor, with dummy
// bf16 weights made on the GPU from config.json alone:
//
//   decode B:  B prompts of context-1 random tokens, prefilled in plans of
//              <= max_plan_tokens tokens ─► warm-up steps (graph capture)
//              ─► `steps` timed steps, every sequence feeding back its
//              greedy token; tokens/s = B x steps / wall time.
//              Ratio = roofline time / step time, the roofline being the
//              bytes a step must read (model_cost.h) / copy bandwidth.
//   prefill L: `num_seqs` fresh prompts of L random tokens in one plan, one
//              warm-up then best of `prefill_repetitions`; FLOPs
//              (model_cost.h) / time against the cuBLAS GEMM peak.
//
// Execute() returns once the sampled ids are on the host, so wall-clock time
// around it is the real step time (graph replay or eager, plus sampling).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/device.h"
#include "tools/bench_gpu/report.h"

namespace epserve::bench_gpu {

struct ModelBenchOptions {
  kernels::DeviceSpec device;
  // decode; empty: none
  std::vector<int64_t> batches;
  int64_t context = 512;
  int64_t steps = 32;
  int64_t warmup_steps = 3;
  bool eager = false;  // no CUDA graphs
  // prefill: prompt lengths; empty: none
  std::vector<int64_t> prefill_tokens;
  int64_t prefill_seqs = 1;
  int prefill_repetitions = 3;
  // Prompt tokens per StepPlan while filling the decode contexts.
  int64_t max_plan_tokens = 8192;
  // GPU memory left for activations, graphs and cuBLAS after weights and KV.
  double reserve_gib = 6.0;
  uint64_t seed = 1;
  // References measured earlier in the run (unset: no ratio).
  std::optional<double> bandwidth_gb_per_s;
  std::optional<double> gemm_peak_tflops;
};

// Loads `model_dir` (config.json; dummy weights), runs the decode batches and
// prefill lengths, adds the measurements to `report`, and destroys the model
// before returning. A load failure (e.g. too little GPU memory) is returned
// as the loader's error; a failing batch is printed and the next one runs.
absl::Status RunModelBench(const std::string& model_dir, const ModelBenchOptions& options,
                           Report& report);

// "qwen3-30b-a3b" for "tools/configs/qwen3-30b-a3b/".
std::string ConfigName(const std::string& model_dir);

}  // namespace epserve::bench_gpu
