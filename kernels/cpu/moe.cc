// MoE token permutation, grouped expert GEMM and weighted un-permutation.
//
//   hidden [T,H] ─MoePermute─► rows [T*k,H]: expert 0's rows | expert 1's | ...
//                              expert_offsets [E+1], both index maps
//   rows ─GroupedExpertMatMul(weights[e])─► per-expert outputs, same order
//   expert_out ─MoeUnpermute(topk_weights)─► out [T,H] in token order
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {

absl::Status CpuBackend::MoePermuteImpl(const Tensor& hidden, const Tensor& topk_ids,
                                        MoePermutation* out) {
  const int64_t t = hidden.shape[0], h = hidden.shape[1], k = topk_ids.shape[1];
  const int64_t r = t * k;
  const int64_t e = out->expert_offsets.shape[0] - 1;
  const int32_t* ids = topk_ids.data_as<int32_t>();
  std::vector<int64_t> count(e + 1, 0);
  for (int64_t a = 0; a < r; ++a) {
    if (ids[a] < 0 || ids[a] >= e) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoePermute: topk_ids[", a / k, ", ", a % k, "] = ", ids[a],
                       " is outside the experts [0, ", e, ")"));
    }
    ++count[ids[a] + 1];
  }
  int32_t* offsets = out->expert_offsets.mutable_data_as<int32_t>();
  std::vector<int64_t> cursor(e);
  offsets[0] = 0;
  for (int64_t i = 0; i < e; ++i) {
    count[i + 1] += count[i];
    offsets[i + 1] = static_cast<int32_t>(count[i + 1]);
    cursor[i] = count[i];
  }
  int32_t* p2a = out->permuted_to_assignment.mutable_data_as<int32_t>();
  int32_t* a2p = out->assignment_to_permuted.mutable_data_as<int32_t>();
  for (int64_t a = 0; a < r; ++a) {  // ascending assignment order within an expert
    const int64_t row = cursor[ids[a]]++;
    p2a[row] = static_cast<int32_t>(a);
    a2p[a] = static_cast<int32_t>(row);
  }
  const float* src = hidden.data_as<float>();
  float* dst = out->rows.mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (r * h >= (1 << 15))
  for (int64_t row = 0; row < r; ++row) {
    std::copy_n(src + (p2a[row] / k) * h, h, dst + row * h);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::GroupedExpertMatMulImpl(const Tensor& rows, const Tensor& expert_offsets,
                                                 absl::Span<const LinearWeight> weights,
                                                 Tensor* out) {
  const int64_t num_rows = rows.shape[0], k = rows.shape[1];
  const int64_t e = static_cast<int64_t>(weights.size());
  const int32_t* off = expert_offsets.data_as<int32_t>();
  auto bad = [](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("GroupedExpertMatMul: ", msg));
  };
  if (off[0] != 0) return bad(absl::StrCat("expert_offsets[0]: expected 0, found ", off[0]));
  if (off[e] > num_rows) {  // rows past off[e] (a capacity-sized buffer) are left as they are
    return bad(absl::StrCat("expert_offsets[", e, "]: expected at most ", num_rows,
                            " (rows), found ", off[e]));
  }
  for (int64_t i = 0; i < e; ++i) {
    if (off[i + 1] < off[i]) {
      return bad(absl::StrCat("expert_offsets: expected non-decreasing, found ", off[i],
                              " then ", off[i + 1], " at expert ", i));
    }
    if (off[i + 1] > off[i] && !weights[i].defined()) {
      // Never drop routed rows silently: this worker does not hold expert i.
      return absl::FailedPreconditionError(absl::StrCat(
          "GroupedExpertMatMul: ", off[i + 1] - off[i], " rows are routed to expert ", i,
          ", whose weights this backend was not given (weights[", i, "] is undefined)"));
    }
  }
  if (num_rows == 0) return absl::OkStatus();
  const int64_t n = out->shape[1];
  const float* x = rows.data_as<float>();
  float* y = out->mutable_data_as<float>();
  // Experts run one after another; each GEMM is threaded by OpenBLAS.
  for (int64_t i = 0; i < e; ++i) {
    const int64_t cnt = off[i + 1] - off[i];
    if (cnt == 0) continue;
    LinearF32(x + int64_t{off[i]} * k, cnt, weights[i], /*bias=*/nullptr, DataType::kFloat32,
              y + int64_t{off[i]} * n, n, num_threads_);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::MoeUnpermuteImpl(const Tensor& expert_out, const Tensor& topk_weights,
                                          const MoePermutation& perm, Tensor* out) {
  const int64_t t = topk_weights.shape[0], k = topk_weights.shape[1];
  const int64_t h = expert_out.shape[1], r = t * k;
  const int32_t* a2p = perm.assignment_to_permuted.data_as<int32_t>();
  for (int64_t a = 0; a < r; ++a) {
    if (a2p[a] < 0 || a2p[a] >= r) {
      return absl::InvalidArgumentError(
          absl::StrCat("MoeUnpermute: perm.assignment_to_permuted[", a, "] = ", a2p[a],
                       " is outside [0, ", r, ")"));
    }
  }
  const float* w = topk_weights.data_as<float>();
  const float* src = expert_out.data_as<float>();
  float* dst = out->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (t * h >= (1 << 15))
  for (int64_t tok = 0; tok < t; ++tok) {
    float* o = dst + tok * h;
    std::fill(o, o + h, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const float wj = w[tok * k + j];
      const float* row = src + int64_t{a2p[tok * k + j]} * h;
      for (int64_t i = 0; i < h; ++i) o[i] += wj * row[i];
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
