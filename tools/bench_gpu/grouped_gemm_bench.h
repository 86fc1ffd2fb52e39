// Backend::GroupedExpertMatMul (the MoE expert GEMM) against Backend::MatMul
// with the same FLOPs, on bf16 weights and float32 token rows:
//
//   T tokens ─uniform random top-k of E─► R = T*k rows grouped by expert
//   grouped: rows [R, K] · weights[e] [N, K]^T per expert  ─► [R, N]
//   dense:   rows [R, K] · one [N, K]^T                    ─► [R, N]
//
// Both through epserve's backend, timed with CUDA events on its stream, best
// of 20 from a cold L2. For memory-bound sizes (at most 32 rows per routed
// expert, the grouped kernel's GEMV regime) also the weight bytes the grouped
// GEMM must read (distinct routed experts x N x K x 2) per second against the
// copy bandwidth.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/device.h"
#include "tools/bench_gpu/report.h"

namespace epserve::bench_gpu {

struct GroupedGemmCase {
  std::string label;  // "qwen3-30b-a3b gate" ...
  int num_experts = 128;
  int top_k = 8;
  int64_t hidden = 2048;  // K
  int64_t width = 768;    // N
  std::vector<int64_t> tokens = {1, 64, 512, 2048};
};

struct GroupedGemmOptions {
  kernels::DeviceSpec device;
  int repetitions = 20;
  uint64_t seed = 1;
  std::optional<double> bandwidth_gb_per_s;  // for the weight-read ratio
};

absl::Status RunGroupedGemmBench(const GroupedGemmCase& c, const GroupedGemmOptions& options,
                                 Report& report);

}  // namespace epserve::bench_gpu
