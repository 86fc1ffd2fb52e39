// The device references every ratio is taken against, measured with the
// CUDA runtime and cuBLAS directly (not through epserve's backend):
//  * copy bandwidth: device-to-device cudaMemcpyAsync, counted as read +
//    write bytes (the roofline bandwidth of decode);
//  * cuBLAS bf16 GEMM (fp32 accumulation, tensor cores) throughput (the
//    compute roofline of prefill).
// And the few CUDA-side helpers the epserve-API benches need: event timing
// on the backend's stream, the number of GPUs, and handing pooled memory back
// to the driver. Only this file's .cc includes CUDA headers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tools/bench_gpu/model_cost.h"

namespace epserve::bench_gpu {

struct CopyBandwidth {
  uint64_t bytes = 0;  // size of one copy
  double best_seconds = 0;
  double gb_per_s = 0;  // 2 x bytes / best_seconds / 1e9
};

// Copies a `bytes` buffer to another on `device`, best of `repetitions`
// (after one untimed copy).
absl::StatusOr<CopyBandwidth> MeasureCopyBandwidth(int device, uint64_t bytes, int repetitions);

struct GemmResult {
  GemmShape shape;
  double best_seconds = 0;
  double tflops = 0;  // 2 m n k / best_seconds / 1e12
};

// cublasGemmEx y[m, n] = x[m, k] . w[n, k]^T, all bf16, CUBLAS_COMPUTE_32F,
// best of `repetitions` per shape (after two untimed calls).
absl::StatusOr<std::vector<GemmResult>> MeasureGemms(int device,
                                                     const std::vector<GemmShape>& shapes,
                                                     int repetitions);

// Times `body`, which enqueues device work on `stream` (a cudaStream_t, e.g.
// Backend::stream()), with CUDA events recorded on that stream: one untimed
// call, then `repetitions` timed ones; returns the best, in seconds. With
// `flush_l2`, a buffer of four times the L2 size is overwritten on the stream
// before every timed call (outside the events), so weights small enough to
// stay in L2 are still read from memory.
absl::StatusOr<double> BestOfOnStream(int device, void* stream, int repetitions, bool flush_l2,
                                      const std::function<absl::Status()>& body);

// Times `body` like BestOfOnStream (no L2 flush) but as a throughput: one
// untimed call, then `iterations` calls back to back between two events;
// returns the mean seconds per call. Host launch time that the device does
// not hide is part of it (what an eager step pays).
absl::StatusOr<double> MeanOnStream(int device, void* stream, int iterations,
                                    const std::function<absl::Status()>& body);

// cudaGetDeviceCount; an error naming the CUDA error when no device is usable.
absl::StatusOr<int> CudaDeviceCount();

// Hands the memory cached in `device`'s default memory pool back to the
// driver. epserve's CUDA backend keeps freed pool memory (release threshold
// = max), so after a model is destroyed cudaMemGetInfo, and with it the
// weight loader's free-memory check, would still count it as used.
absl::Status ReleasePooledMemory(int device);

}  // namespace epserve::bench_gpu
