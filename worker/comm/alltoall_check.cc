#include "worker/comm/alltoall_check.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#ifdef EPSERVE_WITH_NCCL
#include <cuda_runtime_api.h>

#include "common/cuda/cuda_status.h"
#include "worker/comm/nccl_communicator.h"
#endif

namespace epserve::comm {
namespace {

int32_t Value(int src, int dst, int64_t i) {
  return static_cast<int32_t>(src * 1000003 + dst * 1009 + i);
}

// Device communicators: the check's host vectors staged through device
// memory of the communicator's GPU, exchanged on a stream of its own.
absl::Status DeviceAllToAllV(Communicator& comm, const std::vector<int32_t>& send,
                             absl::Span<const int64_t> send_counts, std::vector<int32_t>& recv,
                             absl::Span<const int64_t> recv_counts) {
#ifdef EPSERVE_WITH_NCCL
  auto* nccl = dynamic_cast<NcclCommunicator*>(&comm);
  if (nccl == nullptr) {
    return absl::UnimplementedError(absl::StrCat("all-to-all-v check: the ", comm.backend(),
                                                 " communicator has device buffers on an "
                                                 "unknown device"));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(nccl->cuda_device()));
  struct Resources {
    int32_t* send = nullptr;
    int32_t* recv = nullptr;
    cudaStream_t stream = nullptr;
    ~Resources() {
      if (stream != nullptr) (void)cudaStreamDestroy(stream);
      (void)cudaFree(send);
      (void)cudaFree(recv);
    }
  } dev;
  const size_t send_bytes = send.size() * sizeof(int32_t);
  const size_t recv_bytes = recv.size() * sizeof(int32_t);
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&dev.stream, cudaStreamNonBlocking));
  RETURN_IF_CUDA_ERROR(cudaMalloc(&dev.send, std::max<size_t>(send_bytes, 1)));
  RETURN_IF_CUDA_ERROR(cudaMalloc(&dev.recv, std::max<size_t>(recv_bytes, 1)));
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(dev.send, send.data(), send_bytes, cudaMemcpyHostToDevice, dev.stream));
  RETURN_IF_ERROR(
      comm.AllToAllV(dev.send, send_counts, dev.recv, recv_counts, sizeof(int32_t), dev.stream));
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(recv.data(), dev.recv, recv_bytes, cudaMemcpyDeviceToHost, dev.stream));
  // The communicator's watchdog aborts an exchange stuck past its timeout,
  // which drains the stream; the bound here only guards against a watchdog
  // that never fires.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (true) {
    const cudaError_t done = cudaStreamQuery(dev.stream);
    if (done == cudaSuccess) break;
    if (done != cudaErrorNotReady) RETURN_IF_CUDA_ERROR(done);
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError("all-to-all-v check: the device exchange never ended");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return comm.AsyncError();
#else
  (void)send;
  (void)send_counts;
  (void)recv;
  (void)recv_counts;
  return absl::UnimplementedError(absl::StrCat("all-to-all-v check: the ", comm.backend(),
                                               " communicator has device buffers, and this "
                                               "binary is built without CUDA"));
#endif
}

}  // namespace

int64_t AllToAllCheckCount(int src, int dst) { return 16 * (src + 1) + 3 * dst; }

absl::StatusOr<AllToAllCheckResult> RunAllToAllCheck(Communicator& comm) {
  const int me = comm.rank();
  const int n = comm.world_size();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<int32_t> send;
  for (int dst = 0; dst < n; ++dst) {
    send_counts[dst] = AllToAllCheckCount(me, dst);
    recv_counts[dst] = AllToAllCheckCount(dst, me);
    for (int64_t i = 0; i < send_counts[dst]; ++i) send.push_back(Value(me, dst, i));
  }
  int64_t total_recv = 0;
  for (int64_t c : recv_counts) total_recv += c;
  std::vector<int32_t> recv(static_cast<size_t>(total_recv), -1);
  if (comm.device_buffers()) {
    RETURN_IF_ERROR(DeviceAllToAllV(comm, send, send_counts, recv, recv_counts));
  } else {
    RETURN_IF_ERROR(comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts,
                                   sizeof(int32_t), /*stream=*/nullptr));
  }
  size_t pos = 0;
  for (int src = 0; src < n; ++src) {
    for (int64_t i = 0; i < recv_counts[src]; ++i, ++pos) {
      if (recv[pos] != Value(src, me, i)) {
        return absl::DataLossError(absl::StrCat("all-to-all-v check on rank ", me,
                                                ": element ", i, " from rank ", src, " is ",
                                                recv[pos], ", expected ", Value(src, me, i)));
      }
    }
  }
  return AllToAllCheckResult{send.size() * sizeof(int32_t), recv.size() * sizeof(int32_t)};
}

}  // namespace epserve::comm
