// Backend::SampleTokens on the GPU: the worker's sampler (worker/sampling,
// sampler.h), one thread block per row.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/ops.h"

namespace epserve::kernels::cuda {

// rows/edits are device copies of SampleTokens' arguments; `work` holds
// [num_rows, vocab] float32 (each row's processed logits); `packed` as
// SampleTokens describes.
absl::Status SampleRows(const float* logits, int64_t vocab, const SampleRow* rows, int num_rows,
                        const SampleEdit* edits, float* work, int top_n, bool processed_logprobs,
                        int32_t* packed, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
