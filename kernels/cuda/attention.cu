// Paged attention (contract: attention.cuh, kernels/ops.h; CPU reference:
// kernels/cpu/attention.cc): parameter checks, the split-K policy, the
// workspace, and the choice of kernel.
//
// A "query vector" is one (query row, q head) pair. The G = Hq / Hkv heads
// of a kv head share every key/value row, so each kernel gives one CTA a set
// of query vectors of one sequence and one kv head and reads each K/V row of
// the range it covers once for all of them.
//
//   num_tokens == num_seqs (every q_len is 1), bf16/f16 cache, D >= 64:
//     DecodeKernel (attention_decode.cu): flash-decoding on tensor cores,
//     the context split into `num_splits` ranges.
//   otherwise, bf16/f16 cache, D >= 64:
//     PrefillKernel (attention_prefill.cu): flash attention on tensor cores.
//   f32 cache or D not in {64, 128, 256}, any batch:
//     GenericKernel (attention_prefill.cu): fp32 FMA, split-K when decoding.
//   num_splits > 1: CombineKernel (attention_decode.cu) merges the partials
//     of the workspace.
//
// Graph capture: grids depend on num_tokens, num_seqs, the head counts and
// max_blocks_per_seq * block_size only. Shared pieces and the metadata rules:
// attention_common.cuh.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {
namespace {

using attention_internal::DispatchHeadDim;
using attention_internal::kDecodeHeads;
using attention_internal::KernelArgs;
using attention_internal::kGenericVectors;
using attention_internal::kLog2e;
using attention_internal::kMaxSplits;
using attention_internal::kMinSplitTokens;
using attention_internal::kPrefillVectors;
using attention_internal::kTargetCtas;
using attention_internal::kTensorCoreKernels;
using attention_internal::kWarps;
using attention_internal::LaunchCombine;
using attention_internal::LaunchDecode;
using attention_internal::LaunchGeneric;
using attention_internal::LaunchPrefill;

bool IsDecodeBatch(const PagedAttentionParams& p) {
  return p.num_tokens > 0 && p.num_tokens == p.num_seqs;
}

// Split-K factor: decode batches only (prefill rows never split), a pure
// function of the sizes so the workspace can be sized ahead of time.
int64_t NumSplits(const PagedAttentionParams& p) {
  if (!IsDecodeBatch(p) || p.num_kv_heads <= 0 || p.num_q_heads <= 0) return 1;
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t ctas =
      p.num_seqs * p.num_kv_heads * CeilDiv(std::max<int64_t>(group, 1), kDecodeHeads);
  const int64_t by_context =
      CeilDiv(std::max<int64_t>(p.max_blocks_per_seq * p.block_size, 1), kMinSplitTokens);
  const int64_t wanted = CeilDiv(kTargetCtas, std::max<int64_t>(ctas, 1));
  return std::clamp<int64_t>(std::min(wanted, by_context), 1, kMaxSplits);
}

absl::Status CheckParams(const PagedAttentionParams& p) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: ", parts...));
  };
  if (p.q == nullptr || p.k_cache == nullptr || p.v_cache == nullptr || p.out == nullptr ||
      p.query_start == nullptr || p.context_lens == nullptr || p.errors == nullptr) {
    return bad("q, k_cache, v_cache, out, query_start, context_lens and errors must be set");
  }
  if (p.block_tables == nullptr && p.max_blocks_per_seq > 0) {
    return bad("block_tables is null with max_blocks_per_seq ", p.max_blocks_per_seq);
  }
  if (p.num_kv_heads <= 0 || p.num_q_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    return bad("num_q_heads (", p.num_q_heads, ") must be a positive multiple of num_kv_heads (",
               p.num_kv_heads, ")");
  }
  if (p.block_size <= 0 || p.num_blocks < 0 || p.max_blocks_per_seq < 0) {
    return bad("expected block_size > 0, num_blocks >= 0, max_blocks_per_seq >= 0; found ",
               p.block_size, ", ", p.num_blocks, ", ", p.max_blocks_per_seq);
  }
  if (p.num_seqs <= 0 || p.num_tokens < 0) {
    return bad("expected num_seqs > 0 and num_tokens >= 0 for ", p.num_tokens,
               " query rows; found num_seqs ", p.num_seqs);
  }
  RETURN_IF_ERROR(DispatchHeadDim(p.head_dim, [](auto) { return absl::OkStatus(); }));
  for (const void* ptr :
       {static_cast<const void*>(p.q), static_cast<const void*>(p.out), p.k_cache, p.v_cache}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) {
      return bad("q, out, k_cache and v_cache must be 16-byte aligned");
    }
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale))
    return bad("scale must be > 0, found ", p.scale);
  constexpr int64_t kIntMax = INT32_MAX;
  // Query vectors (rows x heads) and grid sizes are int on the device.
  if (p.num_tokens * p.num_q_heads >= kIntMax || p.num_seqs >= kIntMax / 64 ||
      p.block_size >= kIntMax || p.max_blocks_per_seq >= kIntMax ||
      p.max_blocks_per_seq * p.block_size >= kIntMax || p.num_kv_heads > 65535) {
    return bad("sizes exceed the kernel's int range (num_tokens ", p.num_tokens, ", num_q_heads ",
               p.num_q_heads, ", num_seqs ", p.num_seqs, ", block_size ", p.block_size,
               ", max_blocks_per_seq ", p.max_blocks_per_seq, ", num_kv_heads ", p.num_kv_heads,
               ")");
  }
  return absl::OkStatus();
}

template <typename T, int D>
absl::Status Launch(const KernelArgs& a, const PagedAttentionParams& p, cudaStream_t stream) {
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  if constexpr (kTensorCoreKernels<T, D>) {
    if (IsDecodeBatch(p)) {
      const int64_t blocks = p.num_seqs * a.num_splits * CeilDiv(group, kDecodeHeads);
      const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.num_kv_heads));
      RETURN_IF_ERROR((LaunchDecode<T, D>(a, grid, stream)));
    } else {
      const int64_t tiles = CeilDiv(p.num_tokens * group, kPrefillVectors) + p.num_seqs;
      const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.num_kv_heads));
      RETURN_IF_ERROR((LaunchPrefill<T, D>(a, grid, stream)));
    }
  } else {
    const int64_t tiles = CeilDiv(p.num_tokens * group, kGenericVectors) + p.num_seqs;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.num_kv_heads),
                    static_cast<unsigned>(a.num_splits));
    RETURN_IF_ERROR((LaunchGeneric<T, D>(a, grid, stream)));
  }
  if (a.num_splits > 1) {
    const int64_t items = p.num_tokens * p.num_q_heads;
    RETURN_IF_ERROR(
        LaunchCombine<D>(a, dim3(static_cast<unsigned>(CeilDiv(items, kWarps))), stream));
  }
  return absl::OkStatus();
}

}  // namespace

size_t PagedAttentionWorkspaceBytes(const PagedAttentionParams& p) {
  const int64_t splits = NumSplits(p);
  if (splits <= 1 || p.head_dim <= 0) return 0;
  // [splits, T, Hq, D] partial outputs, then [splits, T, Hq] (max, sum).
  return static_cast<size_t>(splits * p.num_tokens * p.num_q_heads * (p.head_dim + 2)) *
         sizeof(float);
}

absl::Status PagedAttention(const PagedAttentionParams& p, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  if (p.num_tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckParams(p));
  const size_t needed = PagedAttentionWorkspaceBytes(p);
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: workspace of ", needed,
                                                   " bytes needed, ", workspace_bytes, " given"));
  }
  if (needed > 0 && reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    return absl::InvalidArgumentError("PagedAttention: workspace must be 16-byte aligned");
  }
  KernelArgs a{};
  a.q = p.q;
  a.k_cache = p.k_cache;
  a.v_cache = p.v_cache;
  a.query_start = p.query_start;
  a.context_lens = p.context_lens;
  a.block_tables = p.block_tables;
  a.out = p.out;
  a.errors = p.errors;
  a.num_blocks = p.num_blocks;
  a.block_size = static_cast<int>(p.block_size);
  a.num_kv_heads = static_cast<int>(p.num_kv_heads);
  a.num_q_heads = static_cast<int>(p.num_q_heads);
  a.group = static_cast<int>(p.num_q_heads / p.num_kv_heads);
  a.max_blocks_per_seq = static_cast<int>(p.max_blocks_per_seq);
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.num_tokens = static_cast<int>(p.num_tokens);
  a.num_splits = static_cast<int>(NumSplits(p));
  a.scale_log2 = p.scale * kLog2e;
  if (a.num_splits > 1) {
    a.ws_acc = static_cast<float*>(workspace);
    a.ws_ml = reinterpret_cast<float2*>(a.ws_acc +
                                        a.num_splits * p.num_tokens * p.num_q_heads * p.head_dim);
  }
  return DispatchElem(p.cache_type, [&](auto elem) -> absl::Status {
    using T = decltype(elem);
    return DispatchHeadDim(p.head_dim, [&](auto dim) -> absl::Status {
      return Launch<T, decltype(dim)::value>(a, p, stream);
    });
  });
}

}  // namespace epserve::kernels::cuda
