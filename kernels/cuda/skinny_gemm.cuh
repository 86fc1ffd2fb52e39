// Skinny GEMM for decode: a few float32 activation rows times a large bf16 /
// fp16 / float32 weight matrix in nn.Linear layout, in one memory-bound
// launch (no cast kernel, no cuBLAS). Callers check SkinnyGemmApplies and
// fall back to cuBLAS otherwise.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// Most activation rows (tokens) SkinnyGemm takes.
inline constexpr int64_t kMaxSkinnyRows = 16;
// Most weights SkinnyGemmShared takes.
inline constexpr int kMaxSkinnyShared = 4;

// Whether SkinnyGemm takes t rows of width k at these pointers:
// 1 <= t <= kMaxSkinnyRows, 0 <= k < 2^27, k % 8 == 0, x and w 16-byte
// aligned. Every weight type (bf16, fp16, float32) is taken.
bool SkinnyGemmApplies(int64_t t, int64_t k, const void* x, const void* w);

// y[T, N] = x[T, K] · w[N, K]^T (+ bias[N]), x and y float32 row-major, w of
// w_type (bf16, fp16 or float32), bias of bias_type or null. One launch; each
// weight element is read once, with 16-byte loads. Requires 1 <= T <=
// kMaxSkinnyRows and K % 8 == 0 (K < 2^27) and 16-byte aligned x and w
// (InvalidArgument otherwise, so the caller can fall back to cuBLAS). y must
// not overlap x, w or bias. No host synchronisation; safe to capture in a
// CUDA graph (launch shape from host-known sizes only).
//
// Numerics: for bf16 / fp16 weights x is rounded to w's type (as the cuBLAS
// path for more rows does) and w is widened exactly; for float32 weights x
// and w are used as they are (plain fp32, no TF32, as cuBLAS SGEMM with the
// default math mode). Products are fp32 fmas summed in a fixed order that
// depends only on (N, K, w_type) and the device's SM count: deterministic,
// and each output row is bit-identical whatever T is and whatever the other
// rows hold. The bias is added last, in fp32.
absl::Status SkinnyGemm(const float* x, int64_t t, int64_t k, const void* w, Elem w_type,
                        int64_t n, const void* bias, Elem bias_type, float* y,
                        cudaStream_t stream);

// One weight of SkinnyGemmShared: y[T, n] = x · w[n, K]^T (+ bias[n]).
struct SkinnyOutput {
  const void* w;
  int64_t n;
  const void* bias;  // or null
  float* y;
};

// SkinnyGemm for up to kMaxSkinnyShared weights of one type reading the same
// x (the q, k and v projections), in one launch: each output bit-identical
// to its own SkinnyGemm (same K split). Same requirements as SkinnyGemm for
// each weight; biases, where present, all of bias_type.
absl::Status SkinnyGemmShared(const float* x, int64_t t, int64_t k,
                              absl::Span<const SkinnyOutput> outputs, Elem w_type, Elem bias_type,
                              cudaStream_t stream);

}  // namespace epserve::kernels::cuda
