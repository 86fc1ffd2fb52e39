#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/cuda/copy_rows.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
// Rows of one row block handled by one thread block (grid.y slices).
constexpr int kRowsPerSlice = 16;

// grid.x: row blocks; grid.y: slices of kRowsPerSlice rows of a row block.
// With the same element type the bits are copied as they are; otherwise each
// element goes through float32.
template <typename Src, typename Dst>
__global__ void CopyRowsKernel(const Src* __restrict__ src, int64_t src_rows,
                               const int32_t* __restrict__ blocks, int64_t width,
                               Dst* __restrict__ dst, int64_t dst_rows, uint32_t* errors) {
  const int64_t b = blockIdx.x;
  const int64_t from = blocks[3 * b], to = blocks[3 * b + 1], rows = blocks[3 * b + 2];
  if (rows < 0 || from < 0 || to < 0 || from + rows > src_rows || to + rows > dst_rows) {
    if (blockIdx.y == 0 && threadIdx.x == 0) atomicOr(errors, kErrCopyRowsBlock);
    return;
  }
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * kRowsPerSlice; r < rows;
       r += static_cast<int64_t>(gridDim.y) * kRowsPerSlice) {
    const int64_t end = r + kRowsPerSlice < rows ? r + kRowsPerSlice : rows;
    for (int64_t row = r; row < end; ++row) {
      const Src* in = src + (from + row) * width;
      Dst* out = dst + (to + row) * width;
      for (int64_t i = threadIdx.x; i < width; i += kThreads) {
        if constexpr (std::is_same_v<Src, Dst>) {
          out[i] = in[i];
        } else {
          out[i] = FromF32<Dst>(ToF32<Src>(in[i]));
        }
      }
    }
  }
}

}  // namespace

absl::Status CopyRows(const void* src, Elem src_type, int64_t src_rows, const int32_t* blocks,
                      int64_t num_blocks, int64_t width, void* dst, Elem dst_type, int64_t dst_rows,
                      uint32_t* errors, cudaStream_t stream) {
  if (num_blocks == 0 || width == 0) return absl::OkStatus();
  if (num_blocks > 0x7fffffff) {
    return absl::InvalidArgumentError("CopyRows: more than 2^31 - 1 row blocks");
  }
  // Enough slices to cover the larger of the two row counts' average block;
  // each thread block strides over its block's slices.
  const int64_t max_rows = src_rows > dst_rows ? src_rows : dst_rows;
  const int64_t slices = CeilDiv(CeilDiv(max_rows, num_blocks), kRowsPerSlice);
  const dim3 grid(static_cast<unsigned>(num_blocks),
                  static_cast<unsigned>(slices < 1 ? 1 : (slices > 65535 ? 65535 : slices)));
  return DispatchElem(src_type, [&](auto src_tag) {
    using Src = decltype(src_tag);
    return DispatchElem(dst_type, [&](auto dst_tag) {
      using Dst = decltype(dst_tag);
      CopyRowsKernel<Src, Dst>
          <<<grid, kThreads, 0, stream>>>(static_cast<const Src*>(src), src_rows, blocks, width,
                                          static_cast<Dst*>(dst), dst_rows, errors);
      return LaunchStatus("CopyRows");
    });
  });
}

}  // namespace epserve::kernels::cuda
