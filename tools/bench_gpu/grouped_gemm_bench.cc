#include "tools/bench_gpu/grouped_gemm_bench.h"

#include <algorithm>
#include <memory>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "tools/bench_gpu/reference.h"

namespace epserve::bench_gpu {
namespace {

// The grouped kernel switches from its GEMV path to tensor-core tiles above
// this mean of rows per routed expert (kernels/cuda/grouped_gemm.cu).
constexpr double kMemoryBoundRowsPerExpert = 32.0;

// Rows per expert when each of `num_tokens` tokens picks `top_k` distinct
// experts uniformly at random.
std::vector<int32_t> RandomExpertCounts(int num_experts, int top_k, int64_t num_tokens,
                                        std::mt19937_64& gen) {
  std::vector<int32_t> counts(static_cast<size_t>(num_experts), 0);
  std::vector<int> ids(static_cast<size_t>(num_experts));
  for (int64_t t = 0; t < num_tokens; ++t) {
    std::iota(ids.begin(), ids.end(), 0);
    // Partial Fisher-Yates: the first top_k entries are a uniform k-subset.
    for (int j = 0; j < top_k; ++j) {
      std::uniform_int_distribution<int> pick(j, num_experts - 1);
      std::swap(ids[static_cast<size_t>(j)], ids[static_cast<size_t>(pick(gen))]);
      ++counts[static_cast<size_t>(ids[static_cast<size_t>(j)])];
    }
  }
  return counts;
}

}  // namespace

absl::Status RunGroupedGemmBench(const GroupedGemmCase& c, const GroupedGemmOptions& options,
                                 Report& report) {
  if (c.num_experts <= 0 || c.top_k <= 0 || c.top_k > c.num_experts || c.hidden <= 0 ||
      c.width <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grouped-gemm: expected 0 < topk <= experts, hidden > 0, width > 0; found experts ",
        c.num_experts, ", topk ", c.top_k, ", hidden ", c.hidden, ", width ", c.width));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend,
                   kernels::CreateBackend(options.device));
  const int64_t e = c.num_experts, k = c.hidden, n = c.width;
  const double weight_bytes_per_expert = static_cast<double>(n * k) * 2.0;
  Line("grouped-gemm %s: E %d top-%d, K (hidden) %d, N (width) %d, bf16 weights %.2f GB", c.label,
       c.num_experts, c.top_k, k, n, weight_bytes_per_expert * static_cast<double>(e) / 1e9);

  // E x [N, K] bf16 expert weights, made on the device.
  std::vector<kernels::LinearWeight> weights;
  weights.reserve(static_cast<size_t>(e));
  for (int64_t i = 0; i < e; ++i) {
    ASSIGN_OR_RETURN(kernels::Tensor w, backend->Empty(DataType::kBFloat16, {n, k}));
    RETURN_IF_ERROR(backend->FillDummy(&w, options.seed * 1000003u + static_cast<uint64_t>(i),
                                       0.03f, /*ones=*/false));
    weights.push_back(kernels::LinearWeight::Unquantized(std::move(w)));
  }
  std::mt19937_64 gen(options.seed);
  const int device = options.device.ordinal;

  for (int64_t tokens : c.tokens) {
    if (tokens <= 0) return absl::InvalidArgumentError("grouped-gemm: --tokens must be > 0");
    const int64_t r = tokens * c.top_k;
    const std::vector<int32_t> counts = RandomExpertCounts(c.num_experts, c.top_k, tokens, gen);
    std::vector<int32_t> offsets(static_cast<size_t>(e + 1), 0);
    for (int64_t i = 0; i < e; ++i) offsets[i + 1] = offsets[i] + counts[i];
    const int64_t distinct =
        std::count_if(counts.begin(), counts.end(), [](int32_t x) { return x > 0; });

    ASSIGN_OR_RETURN(kernels::Tensor rows, backend->Empty(DataType::kFloat32, {r, k}));
    RETURN_IF_ERROR(backend->FillDummy(&rows, options.seed + static_cast<uint64_t>(tokens), 1.0f,
                                       /*ones=*/false));
    ASSIGN_OR_RETURN(kernels::Tensor dev_offsets, backend->Empty(DataType::kInt32, {e + 1}));
    RETURN_IF_ERROR(
        backend->CopyFromHost(offsets.data(), offsets.size() * sizeof(int32_t), &dev_offsets));
    ASSIGN_OR_RETURN(kernels::Tensor out, backend->Empty(DataType::kFloat32, {r, n}));

    ASSIGN_OR_RETURN(
        double grouped_s,
        BestOfOnStream(device, backend->stream(), options.repetitions, /*flush_l2=*/true, [&]() {
          return backend->GroupedExpertMatMul(rows, dev_offsets, weights, &out);
        }));
    ASSIGN_OR_RETURN(
        double dense_s,
        BestOfOnStream(device, backend->stream(), options.repetitions, /*flush_l2=*/true, [&]() {
          return backend->MatMul(rows, weights[0], kernels::Tensor{}, &out);
        }));
    // Errors the kernels flagged (bad offsets, missing experts) surface here.
    RETURN_IF_ERROR(backend->Synchronize());

    const double flops =
        2.0 * static_cast<double>(r) * static_cast<double>(n) * static_cast<double>(k);
    const double grouped_tflops = flops / grouped_s / 1e12;
    const double dense_tflops = flops / dense_s / 1e12;
    const double rows_per_expert = static_cast<double>(r) / static_cast<double>(distinct);
    Line(
        "  tokens %5d rows %6d experts hit %3d (%.1f rows each): grouped %8.1f us %7.2f TFLOP/s"
        " | dense %8.1f us %7.2f TFLOP/s | grouped/dense %.2f",
        tokens, r, distinct, rows_per_expert, grouped_s * 1e6, grouped_tflops, dense_s * 1e6,
        dense_tflops, grouped_tflops / dense_tflops);
    report.Add({"grouped_gemm_tflops", c.label, tokens, grouped_tflops, "TFLOP/s",
                grouped_tflops / dense_tflops});
    report.Add(
        {"dense_equal_flops_tflops", c.label, tokens, dense_tflops, "TFLOP/s", std::nullopt});
    if (rows_per_expert <= kMemoryBoundRowsPerExpert) {
      const double gb_per_s =
          static_cast<double>(distinct) * weight_bytes_per_expert / grouped_s / 1e9;
      std::optional<double> ratio;
      if (options.bandwidth_gb_per_s) ratio = gb_per_s / *options.bandwidth_gb_per_s;
      Line("    weights read %.1f MB -> %.0f GB/s%s",
           static_cast<double>(distinct) * weight_bytes_per_expert / 1e6, gb_per_s,
           ratio ? absl::StrCat(" = ", absl::StrFormat("%.2f", *ratio), " x copy bandwidth")
                 : std::string());
      report.Add({"grouped_gemm_weight_read", c.label, tokens, gb_per_s, "GB/s", ratio});
    }
  }
  return backend->Synchronize();
}

}  // namespace epserve::bench_gpu
