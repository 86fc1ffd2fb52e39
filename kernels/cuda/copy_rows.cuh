// CopyRows on the GPU (semantics of kernels/ops.h): blocks of rows from src
// to dst, converting the element type.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// For each of the num_blocks blocks (src row, dst row, rows) of `blocks`
// (device, int32): dst rows [dst row, + rows) = src rows [src row, + rows),
// width `width`, src of `src_type` and dst of `dst_type`. A block outside
// [0, src_rows) or [0, dst_rows) sets kErrCopyRowsBlock and is skipped.
// One launch: a block of threads per (row block, slice of rows).
absl::Status CopyRows(const void* src, Elem src_type, int64_t src_rows, const int32_t* blocks,
                      int64_t num_blocks, int64_t width, void* dst, Elem dst_type, int64_t dst_rows,
                      uint32_t* errors, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
