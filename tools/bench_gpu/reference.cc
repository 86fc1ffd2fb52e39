#include "tools/bench_gpu/reference.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <limits>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"

namespace epserve::bench_gpu {
namespace {

// cudaMalloc'd memory, freed on scope exit.
struct DeviceBuffer {
  void* data = nullptr;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (data != nullptr) cudaFree(data);
  }
};

// A start/stop event pair, destroyed on scope exit.
struct EventPair {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  EventPair() = default;
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
  ~EventPair() {
    if (start != nullptr) cudaEventDestroy(start);
    if (stop != nullptr) cudaEventDestroy(stop);
  }
  absl::Status Create() {
    RETURN_IF_CUDA_ERROR(cudaEventCreate(&start));
    RETURN_IF_CUDA_ERROR(cudaEventCreate(&stop));
    return absl::OkStatus();
  }
};

struct OwnedStream {
  cudaStream_t stream = nullptr;
  OwnedStream() = default;
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  ~OwnedStream() {
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

struct CublasHandle {
  cublasHandle_t handle = nullptr;
  CublasHandle() = default;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() {
    if (handle != nullptr) cublasDestroy(handle);
  }
};

// Seconds between the pair's events, after waiting for the stop event.
absl::StatusOr<double> Elapsed(const EventPair& ev) {
  RETURN_IF_CUDA_ERROR(cudaEventSynchronize(ev.stop));
  float ms = 0;
  RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  return static_cast<double>(ms) * 1e-3;
}

}  // namespace

absl::StatusOr<CopyBandwidth> MeasureCopyBandwidth(int device, uint64_t bytes, int repetitions) {
  if (bytes == 0 || repetitions <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("copy bandwidth: expected bytes > 0 and repetitions > 0, found ", bytes,
                     " and ", repetitions));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  DeviceBuffer src, dst;
  RETURN_IF_CUDA_ERROR(cudaMalloc(&src.data, bytes));
  RETURN_IF_CUDA_ERROR(cudaMalloc(&dst.data, bytes));
  // Touch every page before timing.
  RETURN_IF_CUDA_ERROR(cudaMemset(src.data, 1, bytes));
  RETURN_IF_CUDA_ERROR(cudaMemset(dst.data, 0, bytes));
  OwnedStream s;
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  EventPair ev;
  RETURN_IF_ERROR(ev.Create());
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDeviceToDevice, s.stream));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s.stream));
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions; ++r) {
    RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.start, s.stream));
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDeviceToDevice, s.stream));
    RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.stop, s.stream));
    ASSIGN_OR_RETURN(double t, Elapsed(ev));
    best = std::min(best, t);
  }
  CopyBandwidth out;
  out.bytes = bytes;
  out.best_seconds = best;
  out.gb_per_s = 2.0 * static_cast<double>(bytes) / best / 1e9;
  return out;
}

absl::StatusOr<std::vector<GemmResult>> MeasureGemms(int device,
                                                     const std::vector<GemmShape>& shapes,
                                                     int repetitions) {
  if (repetitions <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm: expected repetitions > 0, found ", repetitions));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  OwnedStream s;
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  CublasHandle h;
  RETURN_IF_CUBLAS_ERROR(cublasCreate(&h.handle));
  RETURN_IF_CUBLAS_ERROR(cublasSetStream(h.handle, s.stream));
  EventPair ev;
  RETURN_IF_ERROR(ev.Create());
  const float alpha = 1.0f, beta = 0.0f;
  std::vector<GemmResult> results;
  for (const GemmShape& shape : shapes) {
    if (shape.m <= 0 || shape.n <= 0 || shape.k <= 0 ||
        std::max({shape.m, shape.n, shape.k}) > std::numeric_limits<int>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gemm '", shape.label, "': bad shape m=", shape.m, " n=", shape.n, " k=", shape.k));
    }
    const int m = static_cast<int>(shape.m), n = static_cast<int>(shape.n),
              k = static_cast<int>(shape.k);
    DeviceBuffer x, w, y;  // bf16 [m, k], [n, k], [m, n]
    RETURN_IF_CUDA_ERROR(cudaMalloc(&x.data, static_cast<size_t>(shape.m * shape.k) * 2));
    RETURN_IF_CUDA_ERROR(cudaMalloc(&w.data, static_cast<size_t>(shape.n * shape.k) * 2));
    RETURN_IF_CUDA_ERROR(cudaMalloc(&y.data, static_cast<size_t>(shape.m * shape.n) * 2));
    // bf16 0x3C3C ~ 0.0115 everywhere: finite sums, non-zero operands.
    RETURN_IF_CUDA_ERROR(cudaMemset(x.data, 0x3C, static_cast<size_t>(shape.m * shape.k) * 2));
    RETURN_IF_CUDA_ERROR(cudaMemset(w.data, 0x3C, static_cast<size_t>(shape.n * shape.k) * 2));
    // Column-major view of the row-major product: y^T[n, m] = w[n, k] . x^T[k, m].
    auto gemm = [&]() {
      return cublasGemmEx(h.handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w.data, CUDA_R_16BF,
                          k, x.data, CUDA_R_16BF, k, &beta, y.data, CUDA_R_16BF, n,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    };
    for (int i = 0; i < 2; ++i) RETURN_IF_CUBLAS_ERROR(gemm());
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s.stream));
    double best = std::numeric_limits<double>::infinity();
    for (int r = 0; r < repetitions; ++r) {
      RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.start, s.stream));
      RETURN_IF_CUBLAS_ERROR(gemm());
      RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.stop, s.stream));
      ASSIGN_OR_RETURN(double t, Elapsed(ev));
      best = std::min(best, t);
    }
    GemmResult res;
    res.shape = shape;
    res.best_seconds = best;
    res.tflops = 2.0 * static_cast<double>(shape.m) * static_cast<double>(shape.n) *
                 static_cast<double>(shape.k) / best / 1e12;
    results.push_back(std::move(res));
  }
  return results;
}

absl::StatusOr<double> BestOfOnStream(int device, void* stream, int repetitions, bool flush_l2,
                                      const std::function<absl::Status()>& body) {
  if (repetitions <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timing: expected repetitions > 0, found ", repetitions));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  DeviceBuffer flush;
  size_t flush_bytes = 0;
  if (flush_l2) {
    int l2 = 0;
    RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    flush_bytes = 4 * static_cast<size_t>(std::max(l2, 1 << 20));
    RETURN_IF_CUDA_ERROR(cudaMalloc(&flush.data, flush_bytes));
  }
  EventPair ev;
  RETURN_IF_ERROR(ev.Create());
  RETURN_IF_ERROR(body());
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s));
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repetitions; ++r) {
    if (flush_l2) RETURN_IF_CUDA_ERROR(cudaMemsetAsync(flush.data, r & 0xFF, flush_bytes, s));
    RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.start, s));
    RETURN_IF_ERROR(body());
    RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.stop, s));
    ASSIGN_OR_RETURN(double t, Elapsed(ev));
    best = std::min(best, t);
  }
  return best;
}

absl::StatusOr<double> MeanOnStream(int device, void* stream, int iterations,
                                    const std::function<absl::Status()>& body) {
  if (iterations <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timing: expected iterations > 0, found ", iterations));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  EventPair ev;
  RETURN_IF_ERROR(ev.Create());
  RETURN_IF_ERROR(body());
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s));
  RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.start, s));
  for (int i = 0; i < iterations; ++i) RETURN_IF_ERROR(body());
  RETURN_IF_CUDA_ERROR(cudaEventRecord(ev.stop, s));
  ASSIGN_OR_RETURN(double t, Elapsed(ev));
  return t / iterations;
}

absl::StatusOr<int> CudaDeviceCount() {
  int n = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDeviceCount(&n));
  return n;
}

absl::Status ReleasePooledMemory(int device) {
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  RETURN_IF_CUDA_ERROR(cudaDeviceSynchronize());
  cudaMemPool_t pool = nullptr;
  RETURN_IF_CUDA_ERROR(cudaDeviceGetDefaultMemPool(&pool, device));
  RETURN_IF_CUDA_ERROR(cudaMemPoolTrimTo(pool, 0));
  return absl::OkStatus();
}

}  // namespace epserve::bench_gpu
