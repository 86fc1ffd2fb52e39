// Elementwise and row-wise kernels (see elementwise.cuh for the contracts).
//
// Every launcher: precondition checks, nothing launched for empty inputs,
// one launch, no host synchronisation. Run-time widths become the template
// parameter W (elements per thread access): 4 (16-byte float4 loads) when
// every pointer and row stride allows it, else 1. Large inputs are covered
// by grid-stride loops over a capped grid.
//
// Floating point follows the CPU reference operation by operation where the
// order is fixed (rope rotation, bias / gate products): __fmul_rn and friends
// keep nvcc from contracting a*b + c into an fma the CPU does not do.
// Reductions (RMSNorm) are fp32 warp / block trees; the CPU sums in double.
#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/elementwise_device.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;            // default block size
constexpr int64_t kMaxBlocks = 1 << 14;  // grid cap; grid-stride loops beyond
constexpr int kMaxGridY = 65535;

// ---- Launch shapes --------------------------------------------------------

unsigned int Blocks(int64_t work_items, int threads) {
  return static_cast<unsigned int>(std::min(CeilDiv(work_items, threads), kMaxBlocks));
}

// Grid for RowsKernel: x over the packs of a row, y over rows.
dim3 RowsGrid(int64_t rows, int64_t packs_per_row) {
  const unsigned int x = Blocks(packs_per_row, kThreads);
  const int64_t y = std::min<int64_t>({rows, std::max<int64_t>(1, kMaxBlocks / x), kMaxGridY});
  return dim3(x, static_cast<unsigned int>(y));
}

// ---- Generic kernels --------------------------------------------------------

// op.Apply<W>(i) for every i = 0, W, 2W, ... below n - n % W, then
// op.Apply<1>(i) for the remaining n % W elements.
template <int W, typename Op>
__global__ void FlatKernel(int64_t n, Op op) {
  const int64_t num_packs = n / W;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t p = first; p < num_packs; p += stride) op.template Apply<W>(p * W);
  if constexpr (W > 1) {
    if (first < n - num_packs * W) op.template Apply<1>(num_packs * W + first);
  }
}

template <typename Op>
absl::Status LaunchFlat(int64_t n, bool vectorise, Op op, cudaStream_t stream, const char* name) {
  if (vectorise) {
    FlatKernel<4><<<Blocks(n / 4 + 1, kThreads), kThreads, 0, stream>>>(n, op);
  } else {
    FlatKernel<1><<<Blocks(n, kThreads), kThreads, 0, stream>>>(n, op);
  }
  return LaunchStatus(name);
}

// op.Apply<W>(r, c) for every row r < rows and column c = 0, W, ... < width
// (width a multiple of W).
template <int W, typename Op>
__global__ void RowsKernel(int64_t rows, int64_t width, Op op) {
  const int64_t num_packs = width / W;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    for (int64_t p = first; p < num_packs; p += stride) op.template Apply<W>(r, p * W);
  }
}

template <typename Op>
absl::Status LaunchRows(int64_t rows, int64_t width, bool vectorise, Op op, cudaStream_t stream,
                        const char* name) {
  if (vectorise) {
    RowsKernel<4><<<RowsGrid(rows, width / 4), kThreads, 0, stream>>>(rows, width, op);
  } else {
    RowsKernel<1><<<RowsGrid(rows, width), kThreads, 0, stream>>>(rows, width, op);
  }
  return LaunchStatus(name);
}

// ---- Ops --------------------------------------------------------------------

template <typename T>
struct CastOp {
  const float* x;
  T* dst;
  template <int W>
  __device__ void Apply(int64_t i) const {
    Store<T, W>(dst + i, Load<float, W>(x + i));
  }
};

template <typename T>
struct AddBiasOp {
  float* y;  // [rows, n]
  const T* bias;
  int64_t n;
  template <int W>
  __device__ void Apply(int64_t r, int64_t c) const {
    float* yr = y + r * n + c;
    Pack<W> a = Load<float, W>(yr);
    const Pack<W> b = Load<T, W>(bias + c);
#pragma unroll
    for (int j = 0; j < W; ++j) a.v[j] = __fadd_rn(a.v[j], b.v[j]);
    Store<float, W>(yr, a);
  }
};

template <typename T>
struct EmbeddingOp {
  const int32_t* ids;
  const T* table;  // [vocab, hidden]
  int64_t vocab, hidden;
  float* out;  // [num_tokens, hidden]
  uint32_t* errors;
  template <int W>
  __device__ void Apply(int64_t t, int64_t c) const {
    const int32_t id = ids[t];
    float* dst = out + t * hidden + c;
    if (id < 0 || id >= vocab) {
      if (c == 0) atomicOr(errors, kErrEmbeddingId);
      Store<float, W>(dst, Zeros<W>());
      return;
    }
    Store<float, W>(dst, Load<T, W>(table + static_cast<int64_t>(id) * hidden + c));
  }
};

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + expf(-g)); }

struct SiluAndMulOp {
  const float* gate;  // row r at gate + r * in_stride
  const float* up;    // row r at up + r * in_stride
  int64_t in_stride;
  int64_t width;
  float* out;  // [rows, width]
  template <int W>
  __device__ void Apply(int64_t r, int64_t c) const {
    const Pack<W> g = Load<float, W>(gate + r * in_stride + c);
    const Pack<W> u = Load<float, W>(up + r * in_stride + c);
    Pack<W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) o.v[j] = Silu(g.v[j]) * u.v[j];
    Store<float, W>(out + r * width + c, o);
  }
};

struct AddOp {
  const float* a;
  const float* b;
  float* out;
  template <int W>
  __device__ void Apply(int64_t i) const {
    const Pack<W> x = Load<float, W>(a + i);
    const Pack<W> y = Load<float, W>(b + i);
    Pack<W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) o.v[j] = x.v[j] + y.v[j];
    Store<float, W>(out + i, o);
  }
};

struct SigmoidGateMulAddOp {
  const float* gate_logit;  // [rows]
  const float* x;           // [rows, hidden]
  int64_t hidden;
  float* out;  // [rows, hidden]
  template <int W>
  __device__ void Apply(int64_t r, int64_t c) const {
    const float s = 1.0f / (1.0f + expf(-gate_logit[r]));
    const Pack<W> xv = Load<float, W>(x + r * hidden + c);
    float* o = out + r * hidden + c;
    Pack<W> ov = Load<float, W>(o);
#pragma unroll
    for (int j = 0; j < W; ++j) ov.v[j] = __fadd_rn(ov.v[j], __fmul_rn(s, xv.v[j]));
    Store<float, W>(o, ov);
  }
};

template <typename T>
struct WriteKvCacheOp {
  const float* k;  // [num_tokens, width]
  const float* v;
  const int32_t* slots;
  int64_t width, num_slots;
  T* k_cache;  // [num_slots, width]
  T* v_cache;
  uint32_t* errors;
  template <int W>
  __device__ void Apply(int64_t t, int64_t c) const {
    const int32_t slot = slots[t];
    if (slot == -1) return;
    if (slot < 0 || slot >= num_slots) {
      if (c == 0) atomicOr(errors, kErrKvSlot);
      return;
    }
    const int64_t src = t * width + c, dst = static_cast<int64_t>(slot) * width + c;
    Store<T, W>(k_cache + dst, Load<float, W>(k + src));
    Store<T, W>(v_cache + dst, Load<float, W>(v + src));
  }
};

// The host loader's SplitMix64 step for the state after `calls` calls.
__device__ __forceinline__ uint64_t SplitMix64At(uint64_t state0, uint64_t calls) {
  uint64_t z = state0 + calls * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
struct FillDummyOp {
  T* dst;
  uint64_t state0;
  float half_width;
  bool ones;
  template <int W>
  __device__ void Apply(int64_t i) const {
    Pack<W> out;
#pragma unroll
    for (int j = 0; j < W; ++j) {
      if (ones) {
        out.v[j] = 1.0f;
      } else {
        const uint64_t z = SplitMix64At(state0, static_cast<uint64_t>(i + j) + 1);
        // (z >> 40) has 24 bits, so u and 2u are exact; the host's
        // (2u - 1) * half_width in two roundings, no fma.
        const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
        out.v[j] = __fmul_rn(__fsub_rn(2.0f * u, 1.0f), half_width);
      }
    }
    Store<T, W>(dst + i, out);
  }
};

// ---- RMSNorm ------------------------------------------------------------------

// kWarp: one warp per row (narrow rows); else one block per row.
template <int W, bool kWarp>
__global__ void RmsNormKernel(const float* x, float* residual, const float* w, float eps,
                              int64_t rows, int64_t hidden, float* y) {
  __shared__ float smem[32];
  if constexpr (kWarp) {
    const int warps = blockDim.x / 32;
    const int lane = threadIdx.x % 32;
    for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / 32; row < rows;
         row += static_cast<int64_t>(gridDim.x) * warps) {
      const int64_t off = row * hidden;
      NormRow<W, true>(x + off, residual != nullptr ? residual + off : nullptr, w, y + off, hidden,
                       eps, lane, 32, smem);
    }
  } else {
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
      const int64_t off = row * hidden;
      NormRow<W, false>(x + off, residual != nullptr ? residual + off : nullptr, w, y + off, hidden,
                        eps, threadIdx.x, blockDim.x, smem);
    }
  }
}

template <int W>
absl::Status LaunchRmsNorm(const float* x, float* residual, const float* w, float eps, int64_t rows,
                           int64_t hidden, float* y, cudaStream_t stream) {
  const int64_t num_packs = hidden / W;
  if (num_packs <= 32 * kNormCache) {
    constexpr int kRowsPerBlock = kThreads / 32;
    RmsNormKernel<W, true><<<Blocks(rows, kRowsPerBlock), kThreads, 0, stream>>>(
        x, residual, w, eps, rows, hidden, y);
  } else {
    // Enough threads that the register cache holds the row (up to 1024).
    const int64_t threads =
        std::min<int64_t>(1024, CeilDiv(CeilDiv(num_packs, kNormCache), 32) * 32);
    RmsNormKernel<W, false>
        <<<static_cast<unsigned int>(std::min(rows, kMaxBlocks)),
           static_cast<unsigned int>(threads), 0, stream>>>(x, residual, w, eps, rows, hidden, y);
  }
  return LaunchStatus("RmsNorm");
}

// ---- Rope ---------------------------------------------------------------------

// One block per token: the token's cos/sin table goes to shared memory
// ([cos | sin], head_dim/2 each), then the threads rotate every q and k head.
// kPairs rotation pairs per thread step (float4 accesses for 4 neox pairs or
// 2 interleaved pairs).
template <int kPairs, bool kNeox>
__global__ void RopeKernel(const float* inv_freq, float attention_factor, int64_t head_dim,
                           const int32_t* positions, int64_t num_tokens, float* q, int64_t q_heads,
                           float* k, int64_t k_heads, uint32_t* errors) {
  extern __shared__ float table[];
  const int64_t half = head_dim / 2;
  float* cos_t = table;
  float* sin_t = table + half;
  const int64_t steps_per_head = half / kPairs;
  const int64_t steps = (q_heads + k_heads) * steps_per_head;
  for (int64_t t = blockIdx.x; t < num_tokens; t += gridDim.x) {
    const int32_t pos = positions[t];
    if (pos < 0) {  // uniform over the block
      if (threadIdx.x == 0) atomicOr(errors, kErrPosition);
      continue;
    }
    __syncthreads();  // the previous token's table is no longer read
    FillRopeTable(pos, inv_freq, attention_factor, half, cos_t, sin_t);
    __syncthreads();
    for (int64_t step = threadIdx.x; step < steps; step += blockDim.x) {
      const int64_t head = step / steps_per_head;
      const int64_t i0 = (step % steps_per_head) * kPairs;
      float* h = head < q_heads ? q + (t * q_heads + head) * head_dim
                                : k + (t * k_heads + (head - q_heads)) * head_dim;
      RopeStep<kPairs, kNeox>(h, h, static_cast<float*>(nullptr), half, i0, cos_t, sin_t);
    }
  }
}

template <int kPairs, bool kNeox>
absl::Status LaunchRope(const float* inv_freq, float attention_factor, int64_t head_dim,
                        const int32_t* positions, int64_t num_tokens, float* q, int64_t q_heads,
                        float* k, int64_t k_heads, uint32_t* errors, cudaStream_t stream) {
  constexpr int kRopeThreads = 128;
  const size_t smem = static_cast<size_t>(head_dim) * sizeof(float);
  RopeKernel<kPairs, kNeox>
      <<<static_cast<unsigned int>(std::min(num_tokens, kMaxBlocks)), kRopeThreads, smem, stream>>>(
          inv_freq, attention_factor, head_dim, positions, num_tokens, q, q_heads, k, k_heads,
          errors);
  return LaunchStatus("Rope");
}

absl::Status Negative(const char* op, const char* name, int64_t value) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", name, ": expected >= 0, found ", value));
}

}  // namespace

absl::Status CastFromF32(const float* x, int64_t n, Elem dst_type, void* dst, cudaStream_t stream) {
  if (n < 0) return Negative("CastFromF32", "n", n);
  if (n == 0) return absl::OkStatus();
  return DispatchElem(dst_type, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = IsAligned(x, 16) && IsAligned(dst, 4 * sizeof(T));
    return LaunchFlat(n, vec, CastOp<T>{x, static_cast<T*>(dst)}, stream, "CastFromF32");
  });
}

absl::Status AddBias(float* y, const void* bias, Elem bias_type, int64_t rows, int64_t n,
                     cudaStream_t stream) {
  if (rows < 0) return Negative("AddBias", "rows", rows);
  if (n < 0) return Negative("AddBias", "n", n);
  if (rows == 0 || n == 0) return absl::OkStatus();
  return DispatchElem(bias_type, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = n % 4 == 0 && IsAligned(y, 16) && IsAligned(bias, 4 * sizeof(T));
    return LaunchRows(rows, n, vec, AddBiasOp<T>{y, static_cast<const T*>(bias), n}, stream,
                      "AddBias");
  });
}

absl::Status Embedding(const int32_t* ids, int64_t num_tokens, const void* table, Elem table_type,
                       int64_t vocab, int64_t hidden, float* out, uint32_t* errors,
                       cudaStream_t stream) {
  if (num_tokens < 0) return Negative("Embedding", "num_tokens", num_tokens);
  if (vocab < 0) return Negative("Embedding", "vocab", vocab);
  if (hidden < 0) return Negative("Embedding", "hidden", hidden);
  if (num_tokens == 0 || hidden == 0) return absl::OkStatus();
  return DispatchElem(table_type, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = hidden % 4 == 0 && IsAligned(table, 4 * sizeof(T)) && IsAligned(out, 16);
    return LaunchRows(num_tokens, hidden, vec,
                      EmbeddingOp<T>{ids, static_cast<const T*>(table), vocab, hidden, out, errors},
                      stream, "Embedding");
  });
}

absl::Status RmsNorm(const float* x, float* residual, const float* w, float eps, int64_t rows,
                     int64_t hidden, float* y, cudaStream_t stream) {
  if (rows < 0) return Negative("RmsNorm", "rows", rows);
  if (hidden < 0) return Negative("RmsNorm", "hidden", hidden);
  if (rows == 0 || hidden == 0) return absl::OkStatus();
  const bool vec = hidden % 4 == 0 && IsAligned(x, 16) && IsAligned(w, 16) && IsAligned(y, 16) &&
                   (residual == nullptr || IsAligned(residual, 16));
  return vec ? LaunchRmsNorm<4>(x, residual, w, eps, rows, hidden, y, stream)
             : LaunchRmsNorm<1>(x, residual, w, eps, rows, hidden, y, stream);
}

absl::Status HeadRmsNorm(float* x, const float* w, float eps, int64_t num_segments,
                         int64_t head_dim, cudaStream_t stream) {
  if (num_segments < 0) return Negative("HeadRmsNorm", "num_segments", num_segments);
  if (head_dim < 0) return Negative("HeadRmsNorm", "head_dim", head_dim);
  if (num_segments == 0 || head_dim == 0) return absl::OkStatus();
  return RmsNorm(x, /*residual=*/nullptr, w, eps, /*rows=*/num_segments, /*hidden=*/head_dim,
                 /*y=*/x, stream);
}

absl::Status Rope(const float* inv_freq, float attention_factor, bool neox, int64_t head_dim,
                  const int32_t* positions, int64_t num_tokens, float* q, int64_t q_heads, float* k,
                  int64_t k_heads, uint32_t* errors, cudaStream_t stream) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Rope: head_dim: expected a positive even number, found ", head_dim));
  }
  if (num_tokens < 0) return Negative("Rope", "num_tokens", num_tokens);
  if (q_heads < 0) return Negative("Rope", "q_heads", q_heads);
  if (k_heads < 0) return Negative("Rope", "k_heads", k_heads);
  if (num_tokens == 0 || q_heads + k_heads == 0) return absl::OkStatus();
  const int64_t half = head_dim / 2;
  const bool aligned = IsAligned(q, 16) && (k_heads == 0 || IsAligned(k, 16));
  if (neox) {
    if (aligned && half % 4 == 0) {
      return LaunchRope<4, true>(inv_freq, attention_factor, head_dim, positions, num_tokens, q,
                                 q_heads, k, k_heads, errors, stream);
    }
    return LaunchRope<1, true>(inv_freq, attention_factor, head_dim, positions, num_tokens, q,
                               q_heads, k, k_heads, errors, stream);
  }
  if (aligned && half % 2 == 0) {
    return LaunchRope<2, false>(inv_freq, attention_factor, head_dim, positions, num_tokens, q,
                                q_heads, k, k_heads, errors, stream);
  }
  return LaunchRope<1, false>(inv_freq, attention_factor, head_dim, positions, num_tokens, q,
                              q_heads, k, k_heads, errors, stream);
}

absl::Status SiluAndMul(const float* gate, const float* up, int64_t rows, int64_t width, float* out,
                        cudaStream_t stream) {
  if (rows < 0) return Negative("SiluAndMul", "rows", rows);
  if (width < 0) return Negative("SiluAndMul", "width", width);
  if (rows == 0 || width == 0) return absl::OkStatus();
  // Packed: row r is [gate(width) | up(width)].
  const int64_t in_stride = up == nullptr ? 2 * width : width;
  const float* up_rows = up == nullptr ? gate + width : up;
  const bool vec =
      width % 4 == 0 && IsAligned(gate, 16) && IsAligned(up_rows, 16) && IsAligned(out, 16);
  return LaunchRows(rows, width, vec, SiluAndMulOp{gate, up_rows, in_stride, width, out}, stream,
                    "SiluAndMul");
}

absl::Status Add(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream) {
  if (n < 0) return Negative("Add", "n", n);
  if (n == 0) return absl::OkStatus();
  const bool vec = IsAligned(a, 16) && IsAligned(b, 16) && IsAligned(out, 16);
  return LaunchFlat(n, vec, AddOp{a, b, out}, stream, "Add");
}

absl::Status SigmoidGateMulAdd(const float* gate_logit, const float* x, int64_t rows,
                               int64_t hidden, float* out, cudaStream_t stream) {
  if (rows < 0) return Negative("SigmoidGateMulAdd", "rows", rows);
  if (hidden < 0) return Negative("SigmoidGateMulAdd", "hidden", hidden);
  if (rows == 0 || hidden == 0) return absl::OkStatus();
  const bool vec = hidden % 4 == 0 && IsAligned(x, 16) && IsAligned(out, 16);
  return LaunchRows(rows, hidden, vec, SigmoidGateMulAddOp{gate_logit, x, hidden, out}, stream,
                    "SigmoidGateMulAdd");
}

absl::Status WriteKvCache(const float* k, const float* v, const int32_t* slots, int64_t num_tokens,
                          int64_t width, int64_t num_slots, Elem cache_type, void* k_cache,
                          void* v_cache, uint32_t* errors, cudaStream_t stream) {
  if (num_tokens < 0) return Negative("WriteKvCache", "num_tokens", num_tokens);
  if (width < 0) return Negative("WriteKvCache", "width", width);
  if (num_slots < 0) return Negative("WriteKvCache", "num_slots", num_slots);
  if (num_tokens == 0 || width == 0) return absl::OkStatus();
  return DispatchElem(cache_type, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = width % 4 == 0 && IsAligned(k, 16) && IsAligned(v, 16) &&
                     IsAligned(k_cache, 4 * sizeof(T)) && IsAligned(v_cache, 4 * sizeof(T));
    return LaunchRows(num_tokens, width, vec,
                      WriteKvCacheOp<T>{k, v, slots, width, num_slots, static_cast<T*>(k_cache),
                                        static_cast<T*>(v_cache), errors},
                      stream, "WriteKvCache");
  });
}

absl::Status FillDummy(void* dst, Elem type, int64_t n, uint64_t state0, float half_width,
                       bool ones, cudaStream_t stream) {
  if (n < 0) return Negative("FillDummy", "n", n);
  if (n == 0) return absl::OkStatus();
  return DispatchElem(type, [&](auto tag) {
    using T = decltype(tag);
    return LaunchFlat(n, IsAligned(dst, 4 * sizeof(T)),
                      FillDummyOp<T>{static_cast<T*>(dst), state0, half_width, ones}, stream,
                      "FillDummy");
  });
}

}  // namespace epserve::kernels::cuda
