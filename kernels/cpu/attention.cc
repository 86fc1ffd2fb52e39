// Paged KV cache writes and paged attention (prefill, chunked prefill and
// decode in one op).
//
//   k_cache [num_blocks, block_size, Hkv, D]:  token j of sequence s is at
//   block block_tables[s, j / block_size], row j % block_size.
//
// Work is split over (query token, kv head) items — one item computes the
// G = Hq/Hkv query heads sharing that kv head, so each key/value row is
// widened once per item. Every output element is computed by exactly one
// item in a fixed order, so results do not depend on thread count or on the
// other sequences in the batch.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {

absl::Status CpuBackend::WriteKvCacheImpl(const Tensor& k, const Tensor& v,
                                          const Tensor& slot_mapping, Tensor* k_cache,
                                          Tensor* v_cache) {
  const int64_t t = k.shape[0];
  const int64_t num_slots = k_cache->shape[0] * k_cache->shape[1];
  const int64_t width = k.shape[1];  // Hkv * D
  const int32_t* slots = slot_mapping.data_as<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    if (slots[i] < -1 || slots[i] >= num_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("WriteKvCache: slot_mapping[", i, "] = ", slots[i],
                       " is outside the cache [0, ", num_slots, ") (-1 skips a token)"));
    }
  }
  const size_t elem = DataTypeSize(k_cache->dtype);
  char* kc = static_cast<char*>(k_cache->mutable_data());
  char* vc = static_cast<char*>(v_cache->mutable_data());
  const float* ks = k.data_as<float>();
  const float* vs = v.data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (t * width >= (1 << 15))
  for (int64_t i = 0; i < t; ++i) {
    if (slots[i] < 0) continue;
    const size_t off = static_cast<size_t>(slots[i]) * static_cast<size_t>(width) * elem;
    NarrowFromF32(ks + i * width, width, k_cache->dtype, kc + off);
    NarrowFromF32(vs + i * width, width, v_cache->dtype, vc + off);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::PagedAttentionImpl(const PagedAttentionArgs& args, float scale,
                                            Tensor* out) {
  const Tensor& q = *args.q;
  const Tensor& kc = *args.k_cache;
  const Tensor& vc = *args.v_cache;
  const AttentionMetadata& m = *args.metadata;
  const int64_t num_tokens = q.shape[0];
  const int64_t num_blocks = kc.shape[0], block_size = kc.shape[1];
  const int64_t num_kv = kc.shape[2], d = kc.shape[3];
  const int64_t num_q = args.num_q_heads, group = num_q / num_kv;
  const int64_t num_seqs = m.context_lens.shape[0];
  const int64_t max_blocks = m.block_tables.shape[1];
  const int32_t* qstart = m.query_start.data_as<int32_t>();
  const int32_t* ctx = m.context_lens.data_as<int32_t>();
  const int32_t* tables = m.block_tables.data_as<int32_t>();

  // Content checks, before any work: the layout of queries over sequences
  // and every block each sequence will read.
  auto bad = [](const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: ", msg));
  };
  if (qstart[0] != 0) return bad(absl::StrCat("metadata.query_start[0]: expected 0, found ", qstart[0]));
  if (qstart[num_seqs] != num_tokens) {
    return bad(absl::StrCat("metadata.query_start[", num_seqs, "]: expected ", num_tokens,
                            " (q rows), found ", qstart[num_seqs]));
  }
  int64_t max_ctx = 0;
  std::vector<int32_t> token_seq(num_tokens);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t q_len = int64_t{qstart[s + 1]} - qstart[s];
    if (q_len < 0) {
      return bad(absl::StrCat("metadata.query_start: expected ascending, found ", qstart[s],
                              " then ", qstart[s + 1], " at sequence ", s));
    }
    if (ctx[s] < q_len) {
      return bad(absl::StrCat("metadata.context_lens[", s, "]: expected >= q_len ", q_len,
                              ", found ", ctx[s]));
    }
    const int64_t needed = (int64_t{ctx[s]} + block_size - 1) / block_size;
    if (needed > max_blocks) {
      return bad(absl::StrCat("metadata.block_tables: sequence ", s, " needs ", needed,
                              " blocks for context ", ctx[s], ", table has ", max_blocks));
    }
    for (int64_t b = 0; b < needed; ++b) {
      const int32_t id = tables[s * max_blocks + b];
      if (id < 0 || id >= num_blocks) {
        return bad(absl::StrCat("metadata.block_tables[", s, ", ", b, "] = ", id,
                                " is outside the cache [0, ", num_blocks, ")"));
      }
    }
    for (int64_t i = qstart[s]; i < qstart[s + 1]; ++i) token_seq[i] = static_cast<int32_t>(s);
    max_ctx = std::max<int64_t>(max_ctx, ctx[s]);
  }

  const size_t elem = DataTypeSize(kc.dtype);
  const size_t token_stride = static_cast<size_t>(num_kv * d) * elem;  // one cache row
  const char* kbase = static_cast<const char*>(kc.data());
  const char* vbase = static_cast<const char*>(vc.data());
  const float* qs = q.data_as<float>();
  float* os = out->mutable_data_as<float>();
  const bool f32_cache = kc.dtype == DataType::kFloat32;
  const int64_t num_items = num_tokens * num_kv;

#pragma omp parallel num_threads(num_threads_) if (num_items > 1)
  {
    std::vector<float> scores(static_cast<size_t>(group * std::max<int64_t>(max_ctx, 1)));
    std::vector<float> acc(static_cast<size_t>(group * d));
    std::vector<float> row(static_cast<size_t>(d));
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < num_items; ++item) {
      const int64_t t = item / num_kv, kv = item % num_kv;
      const int64_t s = token_seq[t];
      const int64_t q_len = int64_t{qstart[s + 1]} - qstart[s];
      const int64_t pos = ctx[s] - q_len + (t - qstart[s]);  // attends to [0, pos]
      const int64_t n = pos + 1;
      const int32_t* table = tables + s * max_blocks;
      auto cache_row = [&](const char* base, int64_t j) -> const float* {
        const char* p = base + static_cast<size_t>(table[j / block_size]) *
                                   static_cast<size_t>(block_size) * token_stride +
                        static_cast<size_t>(j % block_size) * token_stride +
                        static_cast<size_t>(kv * d) * elem;
        if (f32_cache) return reinterpret_cast<const float*>(p);
        if (kc.dtype == DataType::kBFloat16) {  // inline: the hot path of a bf16 cache
          const auto* h = reinterpret_cast<const uint16_t*>(p);
          for (int64_t c = 0; c < d; ++c) row[c] = Bf16Bits(h[c]);
        } else {
          WidenToF32(p, kc.dtype, d, row.data());
        }
        return row.data();
      };
      const float* qrow = qs + t * num_q * d + kv * group * d;  // G heads, contiguous
      // scores[g, j] = scale * q_g · k_j
      for (int64_t j = 0; j < n; ++j) {
        const float* kr = cache_row(kbase, j);
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = qrow + g * d;
          float dot = 0.0f;
          // Vectorised with a fixed lane order: deterministic, fp32.
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < d; ++c) dot += qg[c] * kr[c];
          scores[g * n + j] = dot * scale;
        }
      }
      // Stable softmax per head (max subtracted); fp32.
      for (int64_t g = 0; g < group; ++g) {
        float* sg = scores.data() + g * n;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, sg[j]);
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          sg[j] = std::exp(sg[j] - mx);
          sum += sg[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; ++j) sg[j] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        const float* vr = cache_row(vbase, j);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * n + j];
          float* ag = acc.data() + g * d;
#pragma omp simd
          for (int64_t c = 0; c < d; ++c) ag[c] += p * vr[c];
        }
      }
      std::copy(acc.begin(), acc.end(), os + t * num_q * d + kv * group * d);
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
