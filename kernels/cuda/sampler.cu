// The worker's sampler on the GPU (see sampler.cuh and
// worker/sampling/sampler.h for the order of the steps), one block of
// kThreads per row. A row's processed logits live in `work`; each step is a
// pass over them:
//
//   copy raw (count raw +inf) ─► edits ─► sanitise ─► greedy: argmax
//                                                 └─► ÷ temperature, max
//                                                     ─► top_k threshold (radix select, counts)
//                                                     ─► top_p threshold (radix select, mass)
//                                                     ─► inverse CDF in id order (block scan)
//   ─► logprob of the token and the top-n (n passes, each the best entry
//      after the previous one), of the raw or the processed distribution.
//
// Arithmetic follows the host sampler operation by operation: float32
// logits and exp, double sums, IEEE division and no fused multiply-adds
// (the __f*_rn intrinsics), so the kept set and the draw equal the host's
// except where a value lies within the last-ulp difference of exp.
//
// Thresholds are found by radix selection on an order-preserving 32-bit key
// of the float (four 8-bit digits, most significant first): the largest key
// t whose "at or above t" count (top_k) or probability mass (top_p) reaches
// the target. Histogram updates are aggregated per warp over lanes with the
// same digit (__match_any_sync), since logits concentrate in few exponents.
#include <math_constants.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend_impl.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sampler.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;

// ---- Philox4x32-10, as worker/sampling/philox.cc ---------------------------

__device__ __forceinline__ double UniformDouble(uint64_t seed, uint64_t step) {
  uint32_t c0 = static_cast<uint32_t>(step), c1 = static_cast<uint32_t>(step >> 32), c2 = 0,
           c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  const uint64_t bits = (static_cast<uint64_t>(c0) << 32) | c1;
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// ---- keys and block reductions --------------------------------------------

// Order-preserving key of a non-NaN float; -0 and +0 share one key.
__device__ __forceinline__ uint32_t Key(float v) {
  if (v == 0.0f) v = 0.0f;
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// "a comes before b": larger value first, then lower id.
__device__ __forceinline__ bool Before(float av, int32_t ai, float bv, int32_t bi) {
  return av > bv || (av == bv && ai < bi);
}

struct Scratch {
  double hist_mass[256];
  int hist_count[256];
  double slot[kWarps][32];  // per-warp lane values for aggregated adds
  double red_d[kWarps];
  float red_f[kWarps];
  int32_t red_i[kWarps];
  uint32_t pick_digit;
  double pick_mass;  // mass of the digits above the chosen one
  int pick_count;
  int32_t found;
};

// One value per thread combined over the block with `op` (warp shuffles,
// then the warps' results in `slots`, in warp order); every thread gets it.
template <typename T, typename Op>
__device__ __forceinline__ T BlockReduce(T v, Op op, T (&slots)[kWarps]) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = v;
  __syncthreads();
  T t = slots[0];
  for (int w = 1; w < kWarps; ++w) t = op(t, slots[w]);
  return t;
}

__device__ __forceinline__ int BlockSumInt(int v, Scratch& s) {
  return BlockReduce(v, [](int a, int b) { return a + b; }, s.red_i);
}
__device__ __forceinline__ double BlockSumDouble(double v, Scratch& s) {
  return BlockReduce(v, [](double a, double b) { return a + b; }, s.red_d);
}
__device__ __forceinline__ float BlockMax(float v, Scratch& s) {
  return BlockReduce(v, [](float a, float b) { return fmaxf(a, b); }, s.red_f);
}

// The best (value, id) of the block by Before; id INT32_MAX when empty.
__device__ __forceinline__ void BlockBest(float& v, int32_t& id, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFull, v, o);
    const int32_t oi = __shfl_xor_sync(kFull, id, o);
    if (Before(ov, oi, v, id)) {
      v = ov;
      id = oi;
    }
  }
  __syncthreads();
  if (threadIdx.x % 32 == 0) {
    s.red_f[threadIdx.x / 32] = v;
    s.red_i[threadIdx.x / 32] = id;
  }
  __syncthreads();
  v = -CUDART_INF_F;
  id = INT32_MAX;
  for (int w = 0; w < kWarps; ++w) {
    if (Before(s.red_f[w], s.red_i[w], v, id)) {
      v = s.red_f[w];
      id = s.red_i[w];
    }
  }
}

// Exclusive prefix sum of one double per thread (thread order); *total
// gets the block's sum.
__device__ __forceinline__ double BlockExclusiveScan(double v, double* total, Scratch& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  double inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(kFull, inc, o);
    if (lane >= o) inc += up;
  }
  __syncthreads();
  if (lane == 31) s.red_d[warp] = inc;
  __syncthreads();
  double before = 0.0, all = 0.0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += s.red_d[w];
    all += s.red_d[w];
  }
  *total = all;
  return before + inc - v;
}

// Adds `mass` (when `active`) to digit `digit`'s count and mass, one shared
// atomic per group of lanes with the same digit. All lanes of the warp call.
__device__ __forceinline__ void HistAdd(bool active, uint32_t digit, double mass, Scratch& s) {
  const unsigned act = __ballot_sync(kFull, active);
  if (!active) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned peers = __match_any_sync(act, digit);
  s.slot[warp][lane] = mass;
  __syncwarp(act);
  if (lane == __ffs(peers) - 1) {
    double sum = 0.0;
    for (unsigned m = peers; m != 0; m &= m - 1) sum += s.slot[warp][__ffs(m) - 1];
    atomicAdd(&s.hist_count[digit], __popc(peers));
    atomicAdd(&s.hist_mass[digit], sum);
  }
  __syncwarp(act);
}

// The largest key t with (count or mass of {i : pred(i), key(i) >= t}) >=
// target; `by_mass` selects the measure, weight(i) the mass. Returns t and
// in *above the measure of {key > t} and in *at_count the count of {key == t}.
// When rounding leaves the target unreached, t is the smallest key present.
template <typename Pred, typename KeyOf, typename Weight>
__device__ uint32_t RadixSelect(int64_t n, Pred pred, KeyOf key_of, Weight weight, bool by_mass,
                                double target, double* above, int* at_count, Scratch& s) {
  uint32_t prefix = 0, mask = 0;
  double above_total = 0.0;
  double remaining = target;
  int count_at = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += kThreads) {
      s.hist_mass[d] = 0.0;
      s.hist_count[d] = 0;
    }
    __syncthreads();
    for (int64_t base = 0; base < n; base += kThreads) {
      const int64_t i = base + threadIdx.x;
      bool active = false;
      uint32_t digit = 0;
      double m = 0.0;
      if (i < n && pred(i)) {
        const uint32_t k = key_of(i);
        if ((k & mask) == prefix) {
          active = true;
          digit = (k >> shift) & 0xffu;
          m = by_mass ? weight(i) : 0.0;
        }
      }
      HistAdd(active, digit, m, s);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double acc = 0.0;
      int lowest = -1;
      int chosen = -1;
      for (int d = 255; d >= 0; --d) {
        const double here = by_mass ? s.hist_mass[d] : static_cast<double>(s.hist_count[d]);
        if (s.hist_count[d] == 0) continue;
        lowest = d;
        if (acc + here >= remaining) {
          chosen = d;
          break;
        }
        acc += here;
      }
      if (chosen < 0) {  // rounding: keep everything down to the lowest digit
        chosen = lowest < 0 ? 0 : lowest;
        acc = 0.0;
        for (int d = 255; d > chosen; --d) {
          acc += by_mass ? s.hist_mass[d] : static_cast<double>(s.hist_count[d]);
        }
      }
      s.pick_digit = static_cast<uint32_t>(chosen);
      s.pick_mass = acc;
      s.pick_count = s.hist_count[chosen];
    }
    __syncthreads();
    prefix |= s.pick_digit << shift;
    mask |= 0xffu << shift;
    above_total += s.pick_mass;
    remaining -= s.pick_mass;
    count_at = s.pick_count;
    __syncthreads();
  }
  *above = above_total;
  *at_count = count_at;
  return prefix;
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* __restrict__ logits, int64_t vocab, const SampleRow* __restrict__ rows,
                 const SampleEdit* __restrict__ edits, float* __restrict__ work, int top_n,
                 bool processed_logprobs, int32_t* __restrict__ packed) {
  __shared__ Scratch s;
  const SampleRow r = rows[blockIdx.x];
  const float* raw = logits + static_cast<int64_t>(r.logits_row) * vocab;
  float* x = work + static_cast<int64_t>(blockIdx.x) * vocab;
  int32_t* out = packed + static_cast<int64_t>(blockIdx.x) * (kSampleHeader + 2 * top_n);
  const int tid = threadIdx.x;
  const float kInf = CUDART_INF_F;

  // 1. Copy; count the raw +inf (the raw logprobs' sanitising needs it).
  int raw_pos_inf = 0;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    const float v = raw[i];
    x[i] = v;
    raw_pos_inf += v == kInf;
  }
  raw_pos_inf = BlockSumInt(raw_pos_inf, s);  // its barrier orders the copy

  // 2. min_tokens mask, then repetition, frequency, presence (each id once).
  for (int32_t e = r.edits_begin + tid; e < r.edits_end; e += kThreads) {
    const SampleEdit ed = edits[e];
    float v = x[ed.token_id];
    if (ed.mask) v = -kInf;
    if (ed.in_history && r.repetition_penalty != 1.0f) {
      v = v > 0.0f ? __fdiv_rn(v, r.repetition_penalty) : __fmul_rn(v, r.repetition_penalty);
    }
    if (ed.output_count > 0 && (r.frequency_penalty != 0.0f || r.presence_penalty != 0.0f)) {
      v = __fsub_rn(v, __fmul_rn(r.frequency_penalty, static_cast<float>(ed.output_count)));
      v = __fsub_rn(v, r.presence_penalty);
    }
    x[ed.token_id] = v;
  }
  __syncthreads();

  // 3. Sanitise: NaN -> -inf; any +inf: those share the mass (0), the rest -inf.
  int pos_inf = 0, finite = 0;
  for (int64_t i = tid; i < vocab; i += kThreads) {
    float v = x[i];
    if (v != v) {
      v = -kInf;
      x[i] = v;
    }
    pos_inf += v == kInf;
    finite += v != kInf && v != -kInf;
  }
  pos_inf = BlockSumInt(pos_inf, s);
  finite = BlockSumInt(finite, s);
  if (pos_inf == 0 && finite == 0) {
    if (tid == 0) {
      out[0] = 0;
      out[1] = kSampleNoFiniteLogit;
      out[2] = 0;
    }
    for (int j = tid; j < top_n; j += kThreads) {
      out[kSampleHeader + j] = -1;
      out[kSampleHeader + top_n + j] = __float_as_int(-kInf);
    }
    return;
  }
  if (pos_inf > 0) {
    for (int64_t i = tid; i < vocab; i += kThreads) x[i] = x[i] == kInf ? 0.0f : -kInf;
  }
  __syncthreads();

  const bool greedy = r.temperature == 0.0f;
  int32_t token = 0;
  float row_max = 0.0f;
  uint32_t topk_key = 0;  // keep key >= topk_key
  bool use_top_p = false;
  uint32_t topp_key = 0;  // keep key > topp_key, and ties with ~id >= topp_id_key
  uint32_t topp_id_key = 0;
  if (greedy) {
    float v = -kInf;
    int32_t id = INT32_MAX;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      if (Before(x[i], static_cast<int32_t>(i), v, id)) {
        v = x[i];
        id = static_cast<int32_t>(i);
      }
    }
    BlockBest(v, id, s);
    token = id;
  } else {
    // 4. Temperature and the row maximum.
    float m = -kInf;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const float v = __fdiv_rn(x[i], r.temperature);
      x[i] = v;
      m = fmaxf(m, v);
    }
    row_max = BlockMax(m, s);  // its barriers order the writes
    const double log_min_p = r.log_min_p;
    auto candidate = [&](int64_t i) {
      const float v = x[i];
      return v != -kInf && static_cast<double>(v) - static_cast<double>(row_max) >= log_min_p;
    };
    auto value_key = [&](int64_t i) { return Key(x[i]); };
    auto weight = [&](int64_t i) {
      return static_cast<double>(expf(__fsub_rn(x[i], row_max)));
    };
    // 5. top_k: every candidate >= the k-th largest (ties kept).
    if (r.top_k > 0) {
      int n_cand = 0;
      for (int64_t i = tid; i < vocab; i += kThreads) n_cand += candidate(i);
      n_cand = BlockSumInt(n_cand, s);
      if (r.top_k < n_cand) {
        double above = 0.0;
        int at = 0;
        topk_key = RadixSelect(vocab, candidate, value_key, weight, /*by_mass=*/false,
                               static_cast<double>(r.top_k), &above, &at, s);
      }
    }
    auto kept2 = [&](int64_t i) { return candidate(i) && Key(x[i]) >= topk_key; };
    // 6. top_p: the smallest prefix in (value desc, id asc) order whose mass
    // reaches top_p of the kept mass.
    if (r.top_p < 1.0f) {
      double total = 0.0;
      for (int64_t i = tid; i < vocab; i += kThreads) total += kept2(i) ? weight(i) : 0.0;
      total = BlockSumDouble(total, s);
      const double target = static_cast<double>(r.top_p) * total;
      double above = 0.0;
      int ties = 0;
      topp_key = RadixSelect(vocab, kept2, value_key, weight, /*by_mass=*/true, target, &above,
                             &ties, s);
      use_top_p = true;
      // Ties at the threshold are kept in id order while the mass before
      // them is below the target.
      if (tid == 0) {
        uint32_t b = topp_key;
        b = (b & 0x80000000u) ? (b & 0x7fffffffu) : ~b;  // back to the float
        const float tv = __uint_as_float(b);
        const double w = static_cast<double>(expf(__fsub_rn(tv, row_max)));
        double prefix = above;
        int n = 0;
        while (n < ties && prefix < target) {
          ++n;
          prefix += w;
        }
        s.pick_count = n < 1 ? 1 : n;
        s.found = ties;
      }
      __syncthreads();
      const int keep_ties = s.pick_count;
      const int all_ties = s.found;
      __syncthreads();
      if (keep_ties < all_ties) {
        const uint32_t tk = topp_key;
        auto tie = [&](int64_t i) { return kept2(i) && Key(x[i]) == tk; };
        auto id_key = [&](int64_t i) { return ~static_cast<uint32_t>(i); };
        double a = 0.0;
        int c = 0;
        topp_id_key = RadixSelect(vocab, tie, id_key, weight, /*by_mass=*/false,
                                  static_cast<double>(keep_ties), &a, &c, s);
      } else {
        topp_id_key = 0;
      }
    }
    auto kept = [&](int64_t i) {
      if (!kept2(i)) return false;
      if (!use_top_p) return true;
      const uint32_t k = Key(x[i]);
      return k > topp_key || (k == topp_key && ~static_cast<uint32_t>(i) >= topp_id_key);
    };
    // 7. Inverse CDF in ascending id order: each thread a contiguous chunk.
    const int64_t chunk = (vocab + kThreads - 1) / kThreads;
    const int64_t lo = tid * chunk;
    const int64_t hi = lo + chunk < vocab ? lo + chunk : vocab;
    double mine = 0.0;
    int32_t last_kept = -1;
    for (int64_t i = lo; i < hi; ++i) {
      if (kept(i)) {
        mine += weight(i);
        last_kept = static_cast<int32_t>(i);
      }
    }
    double total = 0.0;
    const double before = BlockExclusiveScan(mine, &total, s);
    const double target = UniformDouble(r.seed, r.step) * total;
    if (tid == 0) s.found = INT32_MAX;
    __syncthreads();
    if (before <= target && mine > 0.0) {
      double cumulative = before;
      for (int64_t i = lo; i < hi; ++i) {
        if (!kept(i)) continue;
        cumulative += weight(i);
        if (cumulative > target) {
          atomicMin(&s.found, static_cast<int32_t>(i));
          break;
        }
      }
    }
    __syncthreads();
    token = s.found;
    if (token == INT32_MAX) {  // rounding left the target unreached: the last kept id
      token = BlockReduce(last_kept, [](int32_t a, int32_t b) { return a > b ? a : b; }, s.red_i);
    }
    // x now stands for the processed distribution only where kept.
    if (processed_logprobs && (r.logprobs || r.num_top_logprobs > 0)) {
      __syncthreads();
      for (int64_t i = tid; i < vocab; i += kThreads) {
        if (!kept(i)) x[i] = -kInf;
      }
      __syncthreads();
    }
  }

  // 8. Logprobs of the raw (sanitised) or the processed distribution.
  const bool raw_dist = !processed_logprobs;
  auto dist = [&](int64_t i) -> float {
    if (!raw_dist) return x[i];
    const float v = raw[i];
    if (raw_pos_inf > 0) return v == kInf ? 0.0f : -kInf;
    return v != v ? -kInf : v;
  };
  float logprob = 0.0f;
  if (r.logprobs || r.num_top_logprobs > 0) {
    float m = -kInf;
    for (int64_t i = tid; i < vocab; i += kThreads) m = fmaxf(m, dist(i));
    const float dmax = BlockMax(m, s);
    double lse = -CUDART_INF;
    if (dmax != -kInf) {
      double sum = 0.0;
      for (int64_t i = tid; i < vocab; i += kThreads) {
        sum += exp(static_cast<double>(dist(i)) - static_cast<double>(dmax));
      }
      sum = BlockSumDouble(sum, s);
      lse = static_cast<double>(dmax) + log(sum);
    }
    if (r.logprobs) {
      const float chosen = dist(token);
      logprob = chosen == -kInf ? chosen : static_cast<float>(static_cast<double>(chosen) - lse);
    }
    float prev_v = kInf;
    int32_t prev_id = -1;
    for (int j = 0; j < top_n; ++j) {
      if (j >= r.num_top_logprobs) {
        if (tid == 0) {
          out[kSampleHeader + j] = -1;
          out[kSampleHeader + top_n + j] = __float_as_int(-kInf);
        }
        continue;
      }
      float v = -kInf;
      int32_t id = INT32_MAX;
      for (int64_t i = tid; i < vocab; i += kThreads) {
        const float d = dist(i);
        const int32_t ii = static_cast<int32_t>(i);
        if (Before(prev_v, prev_id, d, ii) && Before(d, ii, v, id)) {
          v = d;
          id = ii;
        }
      }
      BlockBest(v, id, s);
      if (tid == 0) {
        out[kSampleHeader + j] = id;
        const float lp = v == -kInf ? v : static_cast<float>(static_cast<double>(v) - lse);
        out[kSampleHeader + top_n + j] = __float_as_int(lp);
      }
      prev_v = v;
      prev_id = id;
    }
  } else if (tid == 0) {
    for (int j = 0; j < top_n; ++j) {
      out[kSampleHeader + j] = -1;
      out[kSampleHeader + top_n + j] = __float_as_int(-kInf);
    }
  }
  if (tid == 0) {
    out[0] = token;
    out[1] = kSampleOk;
    out[2] = __float_as_int(logprob);
  }
}

}  // namespace

absl::Status SampleRows(const float* logits, int64_t vocab, const SampleRow* rows, int num_rows,
                        const SampleEdit* edits, float* work, int top_n, bool processed_logprobs,
                        int32_t* packed, cudaStream_t stream) {
  if (num_rows == 0) return absl::OkStatus();
  SampleKernel<<<num_rows, kThreads, 0, stream>>>(logits, vocab, rows, edits, work, top_n,
                                                  processed_logprobs, packed);
  return LaunchStatus("SampleTokens");
}

// Rows and edits travel in one upload from pinned memory; each row's
// processed logits get a scratch row of the vocabulary.
absl::Status CudaBackend::SampleTokensImpl(const Tensor& logits, absl::Span<const SampleRow> rows,
                                           absl::Span<const SampleEdit> edits, int64_t top_n,
                                           bool processed_logprobs, Tensor* packed) {
  const int64_t vocab = logits.shape[1];
  const size_t rows_bytes = rows.size() * sizeof(SampleRow);
  const size_t edits_offset = (rows_bytes + 15) / 16 * 16;
  const size_t edits_bytes = edits.size() * sizeof(SampleEdit);
  const size_t bytes = edits_offset + edits_bytes;
  if (sample_args_copied_ == nullptr) {
    RETURN_IF_CUDA_ERROR(cudaEventCreateWithFlags(&sample_args_copied_, cudaEventDisableTiming));
  } else {
    RETURN_IF_CUDA_ERROR(cudaEventSynchronize(sample_args_copied_));  // the last upload is done
  }
  if (sample_args_host_ == nullptr || sample_args_host_->size_bytes() < bytes) {
    ASSIGN_OR_RETURN(sample_args_host_, AllocateStagingHost(std::max<size_t>(bytes, 64 << 10) * 2));
  }
  auto* host = static_cast<unsigned char*>(sample_args_host_->mutable_data());
  std::memcpy(host, rows.data(), rows_bytes);
  if (edits_bytes > 0) std::memcpy(host + edits_offset, edits.data(), edits_bytes);
  ASSIGN_OR_RETURN(Tensor args, Scratch(bytes));
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(args.mutable_data_as<unsigned char>(), host, bytes,
                                       cudaMemcpyHostToDevice, s()));
  RETURN_IF_CUDA_ERROR(cudaEventRecord(sample_args_copied_, s()));
  ASSIGN_OR_RETURN(Tensor work, Empty(DataType::kFloat32,
                                      {static_cast<int64_t>(rows.size()), vocab}));
  const unsigned char* base = args.data_as<unsigned char>();
  return cuda::SampleRows(logits.data_as<float>(), vocab,
                          reinterpret_cast<const SampleRow*>(base), static_cast<int>(rows.size()),
                          reinterpret_cast<const SampleEdit*>(base + edits_offset),
                          work.mutable_data_as<float>(), static_cast<int>(top_n),
                          processed_logprobs, packed->mutable_data_as<int32_t>(), s());
}

}  // namespace epserve::kernels::cuda
