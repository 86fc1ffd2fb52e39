// GroupedExpertMatMul: out rows of expert e = rows of e · weights[e]^T, every
// expert in one launch. GroupedExpertGateUp: silu(rows · gate[e]^T) *
// (rows · up[e]^T), the first half of the experts' SwiGLU MLPs.
//
// Row tiles. The grid's x index is a row tile; expert e owns
// ceil(count_e / BM) consecutive tile indices, experts in id order:
//
//   expert_offsets  0        5            5     13 ...   (device)
//   tiles (BM=4)    [e0 t0][e0 t1]  (e1: none)  [e2 t0][e2 t1] ...
//   blockIdx.x      0      1                    2      3      ...  past the last: exit
//
// Each CTA loads expert_offsets into shared memory and one warp scans the
// per-expert tile counts to find its expert and rows (FindRowTile); the
// experts' weight pointers are read speculatively (thread e reads expert e's)
// while the offsets are still in flight. The grid is sized from host-known
// bounds only: at most min(R, (R + min(R, E) * (BM - 1)) / BM) tiles. grid.y
// is the N tile.
//
// Three kernels, chosen on the host from the mean rows per routed expert
// (R / min(R, E)):
//  * GemvKernel (grouped_gemm_gemv.cu; bf16/fp16, mean <= 32; decode):
//    memory-bound on weights.
//    A CTA (4 warps) owns 8/16/32 rows x BN = 16/32/64 weight rows (for
//    GateUp: BN gate rows and the same BN up rows); the warps split K in
//    32-wide chunks. Each thread streams the 16-byte pieces it will use as
//    mma.sync m16n8k16 fragments (weights are the MMA's M side, token rows
//    its N side) with cp.async into its own slots of a per-warp ring of
//    stages in shared memory, so many chunks are in flight without holding
//    registers, and reads them back itself (no barrier in the main loop).
//    Every weight byte of the tile is read once per CTA. The warps' partial
//    sums meet in shared memory and are added in a fixed order. BN is the
//    narrowest for which the grid fits in one wave (more CTAs, same bytes
//    in flight), else the widest.
//  * TcKernel (bf16/fp16, mean > 32; prefill): BM = 64/128 x BN = 128 x
//    BK = 32, 8 warps (2 x 4), mma.sync m16n8k16 from ldmatrix, weights by
//    double-buffered cp.async, rows loaded as float32 one tile ahead into
//    registers and stored to shared memory rounded to the weight type.
//  * F32Kernel (float32 weights; tiny test models): 64 x 64 x 16 tiles in
//    fp32, any N and K.
// GateUp on TcKernel / F32Kernel: the gate product goes to the workspace,
// then the up launch's epilogue writes silu(gate) * up.
// Rows of an expert whose weight pointer is null get zeros and set
// kErrMissingExpert.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/grouped_gemm.cuh"
#include "kernels/cuda/grouped_gemm_common.cuh"

namespace epserve::kernels::cuda::grouped_gemm_internal {
namespace {

absl::Status Bad(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// ---- large M: TcKernel --------------------------------------------------------

constexpr int kTcThreads = 256;  // 8 warps: 2 along M x 4 along N
constexpr int kTcBn = 128;
constexpr int kTcBk = 32;
constexpr int kTcLd = kTcBk + 8;  // 80-byte smem rows: ldmatrix bank-conflict free

template <typename T, int kBm>
__global__ void __launch_bounds__(kTcThreads, 2) TcKernel(const Problem p) {
  constexpr int kWm = kBm / 2;                         // warp tile rows
  constexpr int kMi = kWm / 16;                        // m16 tiles per warp
  constexpr int kNi = 4;                               // n8 tiles per warp (32 columns)
  constexpr int kXv = kBm * kTcBk / 4 / kTcThreads;    // float4 of rows per thread per stage
  constexpr int kWv = kTcBn * kTcBk / 8 / kTcThreads;  // 16-byte weight chunks per thread
  __shared__ alignas(16) T s_a[2][kBm][kTcLd];
  __shared__ alignas(16) T s_b[2][kTcBn][kTcLd];
  __shared__ int s_off[kMaxExperts + 1];
  __shared__ RowTile s_tile;

  const int n0 = blockIdx.y * kTcBn;
  const RowTile rt = FindRowTile(p, kBm, blockIdx.x, s_off, &s_tile);
  if (rt.expert < 0) return;
  const T* w = static_cast<const T*>(rt.w);
  if (w == nullptr) {
    MissingExpert(rt, n0, kTcBn, p);
    return;
  }
  const int k = p.k, n = p.n;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const float* x = p.rows + static_cast<int64_t>(rt.row_begin) * k;
  const int num_k_tiles = (k + kTcBk - 1) / kTcBk;

  float4 xr[kXv];
  auto load_x = [&](int kt) {
#pragma unroll
    for (int v = 0; v < kXv; ++v) {
      const int idx = tid + v * kTcThreads;
      const int r = idx >> 3, c = (idx & 7) * 4;
      const int kk = kt * kTcBk + c;
      // Branch-free: rows past the tile read row 0 (never stored); k past
      // the end reads k = 0 and is zeroed.
      const bool k_in = kk < k;
      const int64_t off = static_cast<int64_t>(r < rt.num_rows ? r : 0) * k + (k_in ? kk : 0);
      xr[v] = __ldg(reinterpret_cast<const float4*>(x + off));
      if (!k_in) xr[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  };
  auto store_x = [&](int stage) {
#pragma unroll
    for (int v = 0; v < kXv; ++v) {
      const int idx = tid + v * kTcThreads;
      const int r = idx >> 3, c = (idx & 7) * 4;
      *reinterpret_cast<uint2*>(&s_a[stage][r][c]) =
          make_uint2(Pack2<T>(xr[v].x, xr[v].y), Pack2<T>(xr[v].z, xr[v].w));
    }
  };
  auto load_w = [&](int kt, int stage) {
#pragma unroll
    for (int v = 0; v < kWv; ++v) {
      const int idx = tid + v * kTcThreads;
      const int r = idx >> 2, c = (idx & 3) * 8;
      const int kk = kt * kTcBk + c;
      const bool in = n0 + r < n && kk < k;  // k % 8 == 0
      const T* src = in ? w + static_cast<int64_t>(n0 + r) * k + kk : w;
      CpAsync16(&s_b[stage][r][c], src, in);
    }
  };

  float acc[kMi][kNi][4];
#pragma unroll
  for (int i = 0; i < kMi; ++i)
#pragma unroll
    for (int j = 0; j < kNi; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

  if (num_k_tiles > 0) {
    load_x(0);
    load_w(0, 0);
    CpAsyncCommit();
    store_x(0);
  }
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < num_k_tiles;
    if (more) {
      load_w(kt + 1, cur ^ 1);
      load_x(kt + 1);
    }
    CpAsyncCommit();  // possibly empty: keeps the group count uniform
    CpAsyncWait<1>();
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kTcBk; ks += 16) {
      uint32_t a[kMi][4];
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
        LdMatrixX4(a[i], &s_a[cur][warp_m * kWm + i * 16 + (lane & 15)][ks + (lane >> 4) * 8]);
      }
      uint32_t b[kNi][2];
#pragma unroll
      for (int p = 0; p < kNi / 2; ++p) {
        uint32_t r4[4];
        LdMatrixX4(r4, &s_b[cur][warp_n * 32 + p * 16 + (lane & 7) + ((lane >> 4) << 3)]
                           [ks + ((lane >> 3) & 1) * 8]);
        b[2 * p][0] = r4[0];
        b[2 * p][1] = r4[1];
        b[2 * p + 1][0] = r4[2];
        b[2 * p + 1][1] = r4[3];
      }
#pragma unroll
      for (int i = 0; i < kMi; ++i)
#pragma unroll
        for (int j = 0; j < kNi; ++j)
          Mma16816<T>(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][0], b[j][1]);
    }
    if (more) store_x(cur ^ 1);
    __syncthreads();
  }

  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int i = 0; i < kMi; ++i) {
#pragma unroll
    for (int j = 0; j < kNi; ++j) {
      const int col = n0 + warp_n * 32 + j * 8 + 2 * q;
      if (col >= n) continue;  // n even: col + 1 < n too
      const int r = warp_m * kWm + i * 16 + g;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (r + 8 * h >= rt.num_rows) continue;
        const int64_t o = static_cast<int64_t>(rt.row_begin + r + 8 * h) * n + col;
        float2 v = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        if (p.gate != nullptr) {  // GateUp's up launch
          const float2 gv = *reinterpret_cast<const float2*>(p.gate + o);
          v = make_float2(Silu(gv.x) * v.x, Silu(gv.y) * v.y);
        }
        *reinterpret_cast<float2*>(p.out + o) = v;
      }
    }
  }
}

// ---- float32 weights: F32Kernel -----------------------------------------------

constexpr int kF32Bm = 64, kF32Bn = 64, kF32Bk = 16, kF32Threads = 256;
static_assert(kF32Bm == kF32Bn && kF32Bm * kF32Bk % kF32Threads == 0,
              "F32Kernel loads both tiles in one loop");

__global__ void __launch_bounds__(kF32Threads) F32Kernel(const Problem p) {
  __shared__ float s_a[kF32Bk][kF32Bm + 4];
  __shared__ float s_b[kF32Bk][kF32Bn + 4];
  __shared__ int s_off[kMaxExperts + 1];
  __shared__ RowTile s_tile;

  const int n0 = blockIdx.y * kF32Bn;
  const RowTile rt = FindRowTile(p, kF32Bm, blockIdx.x, s_off, &s_tile);
  if (rt.expert < 0) return;
  const float* w = static_cast<const float*>(rt.w);
  if (w == nullptr) {
    MissingExpert(rt, n0, kF32Bn, p);
    return;
  }
  const int k = p.k, n = p.n;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const float* x = p.rows + static_cast<int64_t>(rt.row_begin) * k;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += kF32Bk) {
#pragma unroll
    for (int v = 0; v < kF32Bm * kF32Bk / kF32Threads; ++v) {
      const int idx = tid + v * kF32Threads;
      const int r = idx / kF32Bk, kk = idx % kF32Bk;
      s_a[kk][r] = r < rt.num_rows && k0 + kk < k ? x[static_cast<int64_t>(r) * k + k0 + kk] : 0.0f;
      s_b[kk][r] = n0 + r < n && k0 + kk < k ? w[static_cast<int64_t>(n0 + r) * k + k0 + kk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kF32Bk; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = s_a[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = s_b[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 16 * i;
    if (r >= rt.num_rows) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + tx + 16 * j;
      if (col >= n) continue;
      const int64_t o = static_cast<int64_t>(rt.row_begin + r) * n + col;
      // GateUp's up launch: silu(gate) * up.
      p.out[o] = p.gate != nullptr ? Silu(p.gate[o]) * acc[i][j] : acc[i][j];
    }
  }
}

}  // namespace

// ---- host ---------------------------------------------------------------------

absl::StatusOr<int> CurrentDevice() {
  int device = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) {
    return absl::InternalError(
        absl::StrCat("GroupedExpertMatMul: device ", device, " is outside the per-device caches"));
  }
  return device;
}

absl::Status Launch(void (*kernel)(Problem), const char* name, int64_t bm, int64_t bn, int threads,
                    int smem, const Problem& p, cudaStream_t stream) {
  const int64_t row_tiles = RowTileBound(p.num_rows, p.num_experts, bm);
  const int64_t n_tiles = CeilDiv(p.n, bn);
  if (n_tiles > 65535) {
    return Bad("GroupedExpertMatMul", absl::StrCat("n = ", p.n, " is too large"));
  }
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(n_tiles));
  kernel<<<grid, threads, smem, stream>>>(p);
  return LaunchStatus(name);
}

namespace {

// SM count of the current device, queried once per device (no stream work,
// so it is safe during graph capture).
absl::StatusOr<int> NumSms() {
  static std::atomic<int> cache[kMaxDevices] = {};
  ASSIGN_OR_RETURN(const int device, CurrentDevice());
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms > 0) return sms;
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  sms = std::max(sms, 1);
  cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

bool AlignedTo(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Shared argument checks of GroupedExpertMatMul and GroupedExpertGateUp.
absl::Status CheckArgs(const char* op, const float* rows, int64_t num_rows, int64_t k,
                       int64_t num_experts, Elem weight_type, int64_t n, const float* out) {
  if (num_rows < 0 || k < 0 || n < 0) {
    return Bad(op, absl::StrCat("sizes: expected >= 0, found rows=", num_rows, " k=", k, " n=", n));
  }
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return Bad(op, absl::StrCat("num_experts: expected 1..", kMaxExperts, ", found ", num_experts));
  }
  if (num_rows > INT_MAX || k > INT_MAX || n > INT_MAX) {
    return Bad(op, absl::StrCat("rows=", num_rows, " k=", k, " n=", n, ": expected int32 sizes"));
  }
  if (weight_type != Elem::kF32 && (n % 16 != 0 || k % 16 != 0)) {
    return Bad(op, absl::StrCat("bfloat16/float16 weights need n and k multiples of 16, found n=",
                                n, " k=", k));
  }
  if (num_rows > 0 && n > 0 && weight_type != Elem::kF32 &&
      (!AlignedTo(rows, 16) || !AlignedTo(out, 8))) {
    return Bad(op, "rows must be 16-byte and out 8-byte aligned");
  }
  return absl::OkStatus();
}

// Mean rows per routed expert; the host cannot see the real distribution.
int64_t MeanRows(int64_t num_rows, int64_t num_experts) {
  return CeilDiv(num_rows, std::max<int64_t>(1, std::min(num_rows, num_experts)));
}

// GemvKernel takes batches of up to this many mean rows per expert; 0 sends
// every bf16/fp16 problem to TcKernel.
constexpr int64_t kGemvMaxMeanRows = 32;

// GateUp runs as gate -> workspace, then up with a silu-mul epilogue.
bool GateUpInTwoLaunches(int64_t num_rows, int64_t num_experts, Elem weight_type) {
  return weight_type == Elem::kF32 || MeanRows(num_rows, num_experts) > kGemvMaxMeanRows;
}

// One GEMM (or GateUp's fused GEMV) on the kernel the sizes call for.
absl::Status Dispatch(const Problem& p, Elem weight_type, bool fused, cudaStream_t stream) {
  if (weight_type == Elem::kF32) {
    return Launch(F32Kernel, "F32Kernel", kF32Bm, kF32Bn, kF32Threads, 0, p, stream);
  }
  const int64_t mean_rows = MeanRows(p.num_rows, p.num_experts);
  ASSIGN_OR_RETURN(const int num_sms, NumSms());
  return DispatchElem(weight_type, [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float>) {
      return absl::InternalError("GroupedExpertMatMul: float32 reached the tensor-core path");
    } else {
      if (mean_rows <= kGemvMaxMeanRows) {
        if (fused) {
          if (mean_rows <= 8) return LaunchGemv<T, 1, true>(p, num_sms, stream);
          if (mean_rows <= 16) return LaunchGemv<T, 2, true>(p, num_sms, stream);
          return LaunchGemv<T, 4, true>(p, num_sms, stream);
        }
        if (mean_rows <= 8) return LaunchGemv<T, 1, false>(p, num_sms, stream);
        if (mean_rows <= 16) return LaunchGemv<T, 2, false>(p, num_sms, stream);
        return LaunchGemv<T, 4, false>(p, num_sms, stream);
      }
      if (fused) return absl::InternalError("GroupedExpertGateUp: fused launch for large M");
      if (mean_rows <= 96) {
        return Launch(TcKernel<T, 64>, "TcKernel", 64, kTcBn, kTcThreads, 0, p, stream);
      }
      return Launch(TcKernel<T, 128>, "TcKernel", 128, kTcBn, kTcThreads, 0, p, stream);
    }
  });
}

}  // namespace
}  // namespace epserve::kernels::cuda::grouped_gemm_internal

namespace epserve::kernels::cuda {
namespace {

using grouped_gemm_internal::AlignedTo;
using grouped_gemm_internal::Bad;
using grouped_gemm_internal::CheckArgs;
using grouped_gemm_internal::Dispatch;
using grouped_gemm_internal::GateUpInTwoLaunches;
using grouped_gemm_internal::Problem;

}  // namespace

size_t GroupedExpertMatMulWorkspaceBytes(int64_t /*num_rows*/, int64_t /*k*/, int64_t /*n*/,
                                         int64_t /*num_experts*/, Elem /*weight_type*/) {
  return 0;
}

absl::Status GroupedExpertMatMul(const float* rows, int64_t num_rows, int64_t k,
                                 const int32_t* expert_offsets, int64_t num_experts,
                                 const void* const* expert_weights, Elem weight_type, int64_t n,
                                 float* out, void* /*workspace*/, size_t /*workspace_bytes*/,
                                 uint32_t* errors, cudaStream_t stream) {
  RETURN_IF_ERROR(
      CheckArgs("GroupedExpertMatMul", rows, num_rows, k, num_experts, weight_type, n, out));
  if (num_rows == 0 || n == 0) return absl::OkStatus();
  const Problem p{rows,
                  static_cast<int>(num_rows),
                  static_cast<int>(k),
                  expert_offsets,
                  static_cast<int>(num_experts),
                  expert_weights,
                  nullptr,
                  static_cast<int>(n),
                  out,
                  nullptr,
                  errors};
  return Dispatch(p, weight_type, /*fused=*/false, stream);
}

size_t GroupedExpertGateUpWorkspaceBytes(int64_t num_rows, int64_t /*k*/, int64_t n,
                                         int64_t num_experts, Elem weight_type) {
  if (num_rows <= 0 || n <= 0 || num_experts < 1) return 0;
  if (!GateUpInTwoLaunches(num_rows, num_experts, weight_type)) return 0;
  return static_cast<size_t>(num_rows) * static_cast<size_t>(n) * sizeof(float);
}

absl::Status GroupedExpertGateUp(const float* rows, int64_t num_rows, int64_t k,
                                 const int32_t* expert_offsets, int64_t num_experts,
                                 const void* const* gate_weights, const void* const* up_weights,
                                 Elem weight_type, int64_t n, float* out, void* workspace,
                                 size_t workspace_bytes, uint32_t* errors, cudaStream_t stream) {
  constexpr const char* kOp = "GroupedExpertGateUp";
  RETURN_IF_ERROR(CheckArgs(kOp, rows, num_rows, k, num_experts, weight_type, n, out));
  if (num_rows == 0 || n == 0) return absl::OkStatus();
  Problem p{rows,
            static_cast<int>(num_rows),
            static_cast<int>(k),
            expert_offsets,
            static_cast<int>(num_experts),
            gate_weights,
            up_weights,
            static_cast<int>(n),
            out,
            nullptr,
            errors};
  if (!GateUpInTwoLaunches(num_rows, num_experts, weight_type)) {
    return Dispatch(p, weight_type, /*fused=*/true, stream);  // one launch, both matrices
  }
  const size_t need = GroupedExpertGateUpWorkspaceBytes(num_rows, k, n, num_experts, weight_type);
  if (workspace == nullptr || workspace_bytes < need || !AlignedTo(workspace, 16)) {
    return Bad(kOp, absl::StrCat("workspace: expected ", need, " bytes, 16-byte aligned, found ",
                                 workspace_bytes, " at ", reinterpret_cast<uintptr_t>(workspace)));
  }
  float* gate_out = static_cast<float*>(workspace);
  // gate -> workspace; then up, whose epilogue writes silu(gate) * up.
  p.weights2 = nullptr;
  p.out = gate_out;
  RETURN_IF_ERROR(Dispatch(p, weight_type, /*fused=*/false, stream));
  p.weights = up_weights;
  p.out = out;
  p.gate = gate_out;
  return Dispatch(p, weight_type, /*fused=*/false, stream);
}

}  // namespace epserve::kernels::cuda
