// Per-row statistics of logits on the GPU, so that only sampled ids and the
// requested logprobs travel to the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// For each row of logits [rows, vocab] (float32), with NaN counted as -inf
// (the CPU reference is kernels/cpu/logits_stats.cc):
//  * argmax: the lowest id of the row maximum (+inf included); 0 when no
//    entry is above -inf;
//  * row_max: that maximum (+inf, finite, or -inf);
//  * logsumexp: max + log(sum(exp(x - max))) in float32 (float32 tree of
//    expf; the CPU sums in double) when max is finite, else max itself
//    (+inf / -inf: such rows go to the host sampler, whose SanitizeLogits
//    gives them their meaning).
// Any of argmax / max / logsumexp may be null.
absl::Status RowArgmaxLogsumexp(const float* logits, int64_t rows, int64_t vocab, int32_t* argmax,
                                float* row_max, float* logsumexp, cudaStream_t stream);

// The n (1..min(kMaxTopLogprobs, vocab)) largest logits of each row,
// descending, ties by lower id first, NaN as -inf (+inf kept): ids [rows, n],
// values [rows, n] (the logits, NaN as -inf; the caller subtracts
// logsumexp). As kernels/cpu/logits_stats.cc.
inline constexpr int kMaxTopLogprobs = 20;
absl::Status RowTopN(const float* logits, int64_t rows, int64_t vocab, int n, int32_t* ids,
                     float* values, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
