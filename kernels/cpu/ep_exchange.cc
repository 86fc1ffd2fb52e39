// The expert-parallel exchange's pack and unpack ops (ops.h, "Expert-parallel
// exchange"): the reference the GPU kernels reproduce.
//
//   hidden, topk ─EpDispatchPack─► send slots (rank-major), token_slots
//   recv slots ─EpDispatchUnpack─► expert-major rows, expert_offsets, route_rows
//   expert_out ─EpCombinePack─► one weighted partial sum per received slot
//   returned slots ─EpCombineUnpack─► out [T,H]
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/status.h"
#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {
namespace {

// Row `row` of a [N, width] float32 or bfloat16 tensor, as float32.
void ReadRow(const Tensor& t, int64_t row, int64_t width, float* out) {
  if (t.dtype == DataType::kFloat32) {
    std::memcpy(out, t.data_as<float>() + row * width, width * sizeof(float));
    return;
  }
  const uint16_t* in = t.data_as<uint16_t>() + row * width;
  for (int64_t i = 0; i < width; ++i) out[i] = Bf16ToFp32(in[i]);
}

// Writes float32 values into row `row` of a float32 or bfloat16 tensor.
void WriteRow(const float* in, int64_t row, int64_t width, Tensor* t) {
  if (t->dtype == DataType::kFloat32) {
    std::memcpy(t->mutable_data_as<float>() + row * width, in, width * sizeof(float));
    return;
  }
  uint16_t* out = t->mutable_data_as<uint16_t>() + row * width;
  for (int64_t i = 0; i < width; ++i) out[i] = Fp32ToBf16(in[i]);
}

// The received counts, each checked against the capacity.
absl::StatusOr<std::vector<int64_t>> ReadCounts(const char* op, const Tensor& counts,
                                                int64_t capacity) {
  const int32_t* c = counts.data_as<int32_t>();
  std::vector<int64_t> out(counts.shape[0]);
  for (int64_t q = 0; q < counts.shape[0]; ++q) {
    if (c[q] < 0 || c[q] > capacity) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": recv_counts[", q, "] = ", c[q],
                                                     " is outside [0, ", capacity,
                                                     "] (the slots per rank)"));
    }
    out[q] = c[q];
  }
  return out;
}

}  // namespace

absl::Status CpuBackend::EpDispatchPackImpl(const Tensor& hidden, const Tensor& topk_ids,
                                            const Tensor& topk_weights,
                                            const Tensor& expert_to_rank, Tensor* send_rows,
                                            Tensor* send_routes, Tensor* send_counts,
                                            Tensor* token_slots) {
  const int64_t t = hidden.shape[0], h = hidden.shape[1], k = topk_ids.shape[1];
  const int64_t e = expert_to_rank.shape[0], w = send_counts->shape[0];
  const int64_t c = send_rows->shape[0] / w;
  const int32_t* ids = topk_ids.data_as<int32_t>();
  const int32_t* owner = expert_to_rank.data_as<int32_t>();
  for (int64_t x = 0; x < e; ++x) {
    if (owner[x] < 0 || owner[x] >= w) {
      return absl::InvalidArgumentError(absl::StrCat("EpDispatchPack: expert_to_rank[", x,
                                                     "] = ", owner[x], " is outside the ranks [0, ",
                                                     w, ")"));
    }
  }
  for (int64_t a = 0; a < t * k; ++a) {
    if (ids[a] < 0 || ids[a] >= e) {
      return absl::InvalidArgumentError(absl::StrCat("EpDispatchPack: topk_ids[", a / k, ", ",
                                                     a % k, "] = ", ids[a],
                                                     " is outside the experts [0, ", e, ")"));
    }
  }
  const int32_t* weights = topk_weights.data_as<int32_t>();  // float bits, copied as they are
  int32_t* counts = send_counts->mutable_data_as<int32_t>();
  int32_t* slots = token_slots->mutable_data_as<int32_t>();
  int32_t* routes = send_routes->mutable_data_as<int32_t>();
  std::fill(counts, counts + w, 0);
  std::vector<float> row(h);
  for (int64_t tok = 0; tok < t; ++tok) {
    int32_t* my_slots = slots + tok * w;
    std::fill(my_slots, my_slots + w, -1);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = owner[ids[tok * k + j]];
      if (my_slots[r] < 0) my_slots[r] = counts[r]++;
    }
    ReadRow(hidden, tok, h, row.data());
    for (int64_t r = 0; r < w; ++r) {
      if (my_slots[r] < 0) continue;
      const int64_t s = r * c + my_slots[r];
      WriteRow(row.data(), s, h, send_rows);
      int32_t* route = routes + s * 2 * k;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t id = ids[tok * k + j];
        route[j] = owner[id] == r ? id : -1;
        route[k + j] = weights[tok * k + j];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::EpDispatchUnpackImpl(const Tensor& recv_rows, const Tensor& recv_routes,
                                              const Tensor& recv_counts, Tensor* rows,
                                              Tensor* expert_offsets, Tensor* route_rows) {
  const char* op = "EpDispatchUnpack";
  const int64_t w = recv_counts.shape[0], slots = recv_rows.shape[0], c = slots / w;
  const int64_t h = recv_rows.shape[1], k = recv_routes.shape[1] / 2;
  const int64_t e = expert_offsets->shape[0] - 1, m = rows->shape[0];
  ASSIGN_OR_RETURN(std::vector<int64_t> counts, ReadCounts(op, recv_counts, c));
  const int32_t* routes = recv_routes.data_as<int32_t>();
  std::vector<int64_t> per_expert(e + 1, 0);
  for (int64_t q = 0; q < w; ++q) {
    for (int64_t i = 0; i < counts[q]; ++i) {
      const int32_t* route = routes + (q * c + i) * 2 * k;
      for (int64_t j = 0; j < k; ++j) {
        if (route[j] < 0) continue;
        if (route[j] >= e) {
          return absl::InvalidArgumentError(absl::StrCat(op, ": recv_routes[", q * c + i, ", ", j,
                                                         "] = ", route[j],
                                                         " is outside the experts [0, ", e, ")"));
        }
        ++per_expert[route[j] + 1];
      }
    }
  }
  for (int64_t x = 0; x < e; ++x) per_expert[x + 1] += per_expert[x];
  if (per_expert[e] > m) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": the received slots make ", per_expert[e],
                                                   " expert rows; rows holds ", m));
  }
  int32_t* offsets = expert_offsets->mutable_data_as<int32_t>();
  for (int64_t x = 0; x <= e; ++x) offsets[x] = static_cast<int32_t>(per_expert[x]);
  int32_t* where = route_rows->mutable_data_as<int32_t>();
  std::fill(where, where + slots * k, -1);
  std::vector<int64_t> cursor(per_expert.begin(), per_expert.end() - 1);
  std::vector<float> row(h);
  for (int64_t q = 0; q < w; ++q) {
    for (int64_t i = 0; i < counts[q]; ++i) {  // slot order within an expert
      const int64_t s = q * c + i;
      const int32_t* route = routes + s * 2 * k;
      ReadRow(recv_rows, s, h, row.data());
      for (int64_t j = 0; j < k; ++j) {
        if (route[j] < 0) continue;
        const int64_t dst = cursor[route[j]]++;
        where[s * k + j] = static_cast<int32_t>(dst);
        std::memcpy(rows->mutable_data_as<float>() + dst * h, row.data(), h * sizeof(float));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::EpCombinePackImpl(const Tensor& expert_out, const Tensor& recv_routes,
                                           const Tensor& recv_counts, const Tensor& route_rows,
                                           Tensor* back_rows) {
  const char* op = "EpCombinePack";
  const int64_t w = recv_counts.shape[0], slots = back_rows->shape[0], c = slots / w;
  const int64_t h = expert_out.shape[1], k = route_rows.shape[1], m = expert_out.shape[0];
  ASSIGN_OR_RETURN(std::vector<int64_t> counts, ReadCounts(op, recv_counts, c));
  const int32_t* routes = recv_routes.data_as<int32_t>();
  const int32_t* where = route_rows.data_as<int32_t>();
  const float* src = expert_out.data_as<float>();
  std::vector<float> acc(h);
  for (int64_t q = 0; q < w; ++q) {
    for (int64_t i = 0; i < counts[q]; ++i) {
      const int64_t s = q * c + i;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t r = where[s * k + j];
        if (r < 0) continue;
        if (r >= m) {
          return absl::InvalidArgumentError(absl::StrCat(op, ": route_rows[", s, ", ", j, "] = ", r,
                                                         " is outside expert_out's ", m, " rows"));
        }
        float wj;
        std::memcpy(&wj, routes + s * 2 * k + k + j, sizeof(float));
        const float* y = src + int64_t{r} * h;
        for (int64_t x = 0; x < h; ++x) acc[x] = std::fma(wj, y[x], acc[x]);
      }
      WriteRow(acc.data(), s, h, back_rows);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::EpCombineUnpackImpl(const Tensor& returned_rows, const Tensor& token_slots,
                                             Tensor* out) {
  const int64_t t = token_slots.shape[0], w = token_slots.shape[1];
  const int64_t c = returned_rows.shape[0] / w, h = returned_rows.shape[1];
  const int32_t* slots = token_slots.data_as<int32_t>();
  for (int64_t a = 0; a < t * w; ++a) {
    if (slots[a] >= c) {
      return absl::InvalidArgumentError(absl::StrCat("EpCombineUnpack: token_slots[", a / w, ", ",
                                                     a % w, "] = ", slots[a], " is outside the ", c,
                                                     " slots per rank"));
    }
  }
  float* dst = out->mutable_data_as<float>();
  std::vector<float> row(h);
  for (int64_t tok = 0; tok < t; ++tok) {
    float* o = dst + tok * h;
    std::fill(o, o + h, 0.0f);
    for (int64_t r = 0; r < w; ++r) {
      const int32_t i = slots[tok * w + r];
      if (i < 0) continue;
      ReadRow(returned_rows, r * c + i, h, row.data());
      for (int64_t x = 0; x < h; ++x) o[x] += row[x];
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
