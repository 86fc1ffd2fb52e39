// NcclCommunicator on GPUs (label gpu). Ranks are threads of this process,
// one per GPU (cudaSetDevice per thread), bootstrapped through an in-memory
// rendezvous and created through CreateCommunicator as the worker creates
// them. One-GPU tests: every operation at world size 1 (also captured into a
// CUDA graph), the refusal of two ranks on one GPU, a rank that never joins.
// Multi-GPU tests (2, 4, 8 ranks): every operation against expected values,
// strided regions with zero counts, a rank that stops calling collectives.
// Without a GPU, with fewer GPUs than a test needs, or in a binary built
// without NCCL, tests skip and say why.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#ifdef EPSERVE_WITH_NCCL
#include <cuda_runtime_api.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "worker/comm/alltoall_check.h"
#include "worker/comm/communicator_factory.h"
#include "worker/comm/nccl_communicator.h"
#endif

namespace epserve::comm {
namespace {

#ifndef EPSERVE_WITH_NCCL

TEST(NcclCommunicator, NotBuilt) {
  GTEST_SKIP() << "this binary is built without NCCL (needs -DEPSERVE_CUDA=ON with nvcc and "
                  "NCCL's nccl.h / libnccl found)";
}

#else

using std::chrono::milliseconds;
using ::testing::HasSubstr;

int NumGpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

// Empty when `n` GPUs are here, else why not.
std::string NeedGpus(int n) {
  int found = 0;
  cudaError_t err = cudaGetDeviceCount(&found);
  if (err != cudaSuccess) {
    return absl::StrCat("no usable CUDA device: ", cudaGetErrorString(err));
  }
  if (found < n) return absl::StrCat("needs ", n, " GPUs, found ", found);
  return "";
}

#define SKIP_UNLESS_GPUS(n)                        \
  do {                                             \
    std::string reason_ = NeedGpus(n);             \
    if (!reason_.empty()) GTEST_SKIP() << reason_; \
  } while (0)

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// A device array of T on the current device.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&data_), std::max<size_t>(n, 1) * sizeof(T)),
              cudaSuccess);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    EXPECT_EQ(cudaMemcpy(data_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceArray() { (void)cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return data_; }
  std::vector<T> ToHost() const {
    std::vector<T> out(n_);
    EXPECT_EQ(cudaMemcpy(out.data(), data_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  void Fill(const T& value) {
    std::vector<T> host(n_, value);
    EXPECT_EQ(cudaMemcpy(data_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }

 private:
  size_t n_;
  T* data_ = nullptr;
};

// Waits for `stream` with a bound (the communicator's watchdog drains a
// stuck stream by aborting; this bound only keeps a broken test from
// hanging).
::testing::AssertionResult WaitStream(cudaStream_t stream, milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    cudaError_t done = cudaStreamQuery(stream);
    if (done == cudaSuccess) return ::testing::AssertionSuccess();
    if (done != cudaErrorNotReady) {
      return ::testing::AssertionFailure() << "cudaStreamQuery: " << cudaGetErrorString(done);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return ::testing::AssertionFailure() << "stream not done after " << limit.count() << " ms";
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

CommunicatorOptions NcclOptionsFor(int rank, int world, int device, const std::string& prefix,
                                   milliseconds timeout) {
  CommunicatorOptions o;
  o.backend = "nccl";
  o.rank = rank;
  o.world_size = world;
  o.cuda_device = device;
  o.key_prefix = prefix;
  o.timeout = timeout;
  return o;
}

// Forms a group of `world` ranks, rank r on GPU r, and runs body(comm,
// stream) on each rank's thread with that GPU current.
void RunRanks(int world, const std::string& prefix,
              const std::function<void(Communicator&, cudaStream_t)>& body,
              milliseconds timeout = milliseconds(30000)) {
  InMemoryRendezvous rendezvous;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_CUDA(cudaSetDevice(r));
      auto comm = CreateCommunicator(NcclOptionsFor(r, world, r, prefix, timeout), rendezvous);
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_EQ((*comm)->backend(), "nccl");
      EXPECT_TRUE((*comm)->device_buffers());
      EXPECT_EQ((*comm)->rank(), r);
      EXPECT_EQ((*comm)->world_size(), world);
      cudaStream_t stream = nullptr;
      ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      body(**comm, stream);
      EXPECT_TRUE(WaitStream(stream, timeout + milliseconds(5000)));
      EXPECT_TRUE((*comm)->AsyncError().ok()) << (*comm)->AsyncError();
      (void)cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
}

// ---- every operation, checked against expected values, at any world ----

// Rank s sends count(s, d) floats to rank d; some pairs send nothing.
int64_t PairCount(int s, int d) { return (s + 3 * d) % 4 == 1 ? 0 : 1 + 2 * s + 3 * d; }
float PairValue(int s, int d, int64_t i) { return static_cast<float>(1000 * s + 10 * d) + i; }

void CheckAllToAllV(Communicator& comm, cudaStream_t stream) {
  const int n = comm.world_size(), me = comm.rank();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<float> send;
  for (int d = 0; d < n; ++d) {
    send_counts[d] = PairCount(me, d);
    recv_counts[d] = PairCount(d, me);
    for (int64_t i = 0; i < send_counts[d]; ++i) send.push_back(PairValue(me, d, i));
  }
  const int64_t total_recv = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
  DeviceArray<float> d_send(send);
  DeviceArray<float> d_recv(static_cast<size_t>(total_recv));
  d_recv.Fill(-1.0f);
  ASSERT_TRUE(
      comm.AllToAllV(d_send.get(), send_counts, d_recv.get(), recv_counts, sizeof(float), stream)
          .ok());
  ASSERT_TRUE(WaitStream(stream, milliseconds(30000)));
  std::vector<float> recv = d_recv.ToHost();
  size_t pos = 0;
  for (int s = 0; s < n; ++s) {
    for (int64_t i = 0; i < recv_counts[s]; ++i, ++pos) {
      EXPECT_EQ(recv[pos], PairValue(s, me, i)) << "rank " << me << " from " << s << " #" << i;
    }
  }
}

void CheckAllToAllVStrided(Communicator& comm, cudaStream_t stream) {
  const int n = comm.world_size(), me = comm.rank();
  constexpr int64_t kSendStride = 40, kRecvStride = 48;
  // Counts up to the full stride, zero for some pairs (also to itself).
  auto count = [](int s, int d) -> int64_t {
    return (s + d) % 3 == 2 ? 0 : std::min<int64_t>(40, 7 * s + 5 * d + 1);
  };
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<int32_t> send(n * kSendStride, -7);
  for (int d = 0; d < n; ++d) {
    send_counts[d] = count(me, d);
    recv_counts[d] = count(d, me);
    for (int64_t i = 0; i < send_counts[d]; ++i) {
      send[d * kSendStride + i] = static_cast<int32_t>(PairValue(me, d, i));
    }
  }
  DeviceArray<int32_t> d_send(send);
  DeviceArray<int32_t> d_recv(static_cast<size_t>(n * kRecvStride));
  d_recv.Fill(-9);
  ASSERT_TRUE(comm.AllToAllVStrided(d_send.get(), kSendStride, send_counts, d_recv.get(),
                                    kRecvStride, recv_counts, sizeof(int32_t), stream)
                  .ok());
  ASSERT_TRUE(WaitStream(stream, milliseconds(30000)));
  std::vector<int32_t> recv = d_recv.ToHost();
  for (int s = 0; s < n; ++s) {
    for (int64_t i = 0; i < kRecvStride; ++i) {
      const int32_t expected = i < recv_counts[s] ? static_cast<int32_t>(PairValue(s, me, i)) : -9;
      EXPECT_EQ(recv[s * kRecvStride + i], expected) << "rank " << me << " from " << s << " #" << i;
    }
  }
  // Counts above the stride are refused before anything is enqueued.
  std::vector<int64_t> above = send_counts;
  above[0] = kSendStride + 1;
  absl::Status refused = comm.AllToAllVStrided(d_send.get(), kSendStride, above, d_recv.get(),
                                               kRecvStride, recv_counts, 4, stream);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("rank 0: counts (send 41"));
}

void CheckAllGatherAllReduceBarrier(Communicator& comm, cudaStream_t stream) {
  const int n = comm.world_size(), me = comm.rank();
  DeviceArray<int32_t> mine(std::vector<int32_t>{me, me * me, 7});
  DeviceArray<int32_t> all(static_cast<size_t>(3 * n));
  ASSERT_TRUE(comm.AllGather(mine.get(), all.get(), 3 * sizeof(int32_t), stream).ok());
  DeviceArray<float> x(std::vector<float>{1.0f, static_cast<float>(me), 0.5f});
  ASSERT_TRUE(comm.AllReduceSum(x.get(), 3, DataType::kFloat32, stream).ok());
  DeviceArray<int64_t> big(std::vector<int64_t>{int64_t{1} << 40});
  ASSERT_TRUE(comm.AllReduceSum(big.get(), 1, DataType::kInt64, stream).ok());
  ASSERT_TRUE(WaitStream(stream, milliseconds(30000)));
  std::vector<int32_t> gathered = all.ToHost();
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(gathered[3 * r], r);
    EXPECT_EQ(gathered[3 * r + 1], r * r);
    EXPECT_EQ(gathered[3 * r + 2], 7);
  }
  std::vector<float> sum = x.ToHost();
  EXPECT_EQ(sum[0], n);
  EXPECT_EQ(sum[1], n * (n - 1) / 2);
  EXPECT_EQ(sum[2], 0.5f * n);
  EXPECT_EQ(big.ToHost()[0], n * (int64_t{1} << 40));
  EXPECT_TRUE(comm.Barrier().ok());
  // Types NCCL cannot sum are refused, and the group stays usable.
  absl::Status fp8 = comm.AllReduceSum(x.get(), 1, DataType::kFloat8E4M3, stream);
  EXPECT_EQ(fp8.code(), absl::StatusCode::kUnimplemented) << fp8;
  std::vector<int64_t> wrong(n + 1, 1);
  EXPECT_EQ(comm.AllToAllV(x.get(), wrong, x.get(), wrong, 4, stream).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(comm.Barrier().ok());
}

void CheckEverything(Communicator& comm, cudaStream_t stream) {
  CheckAllToAllV(comm, stream);
  CheckAllToAllVStrided(comm, stream);
  CheckAllGatherAllReduceBarrier(comm, stream);
  // Nothing to move anywhere: every rank still joins.
  std::vector<int64_t> zeros(comm.world_size(), 0);
  EXPECT_TRUE(comm.AllToAllV(nullptr, zeros, nullptr, zeros, 2, stream).ok());
  EXPECT_TRUE(comm.AllToAllVStrided(nullptr, 8, zeros, nullptr, 8, zeros, 2, stream).ok());
  // The worker's warm-up check stages its host vectors through the GPU.
  auto check = RunAllToAllCheck(comm);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_GT(check->bytes_received, 0u);
}

// ---- one GPU ----

TEST(NcclCommunicatorOneGpu, EveryOperationAtWorldSizeOne) {
  SKIP_UNLESS_GPUS(1);
  RunRanks(1, "one/", CheckEverything);
}

TEST(NcclCommunicatorOneGpu, AllToAllVCapturedIntoAGraphAndReplayedUnderTheWatchdog) {
  SKIP_UNLESS_GPUS(1);
  RunRanks(1, "graph/", [](Communicator& comm, cudaStream_t stream) {
    std::vector<int64_t> counts = {6};
    DeviceArray<float> send(std::vector<float>{1, 2, 3, 4, 5, 6});
    DeviceArray<float> recv(8);
    recv.Fill(-1.0f);
    // Warm the connection outside capture (NCCL sets up peers lazily).
    ASSERT_TRUE(comm.AllToAllV(send.get(), counts, recv.get(), counts, 4, stream).ok());
    ASSERT_TRUE(WaitStream(stream, milliseconds(10000)));
    recv.Fill(-1.0f);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    absl::Status captured = comm.AllToAllV(send.get(), counts, recv.get(), counts, 4, stream);
    // WatchStream refuses a capturing stream (replays are watched instead).
    EXPECT_EQ(comm.WatchStream(stream).code(), absl::StatusCode::kInvalidArgument);
    ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
    ASSERT_TRUE(captured.ok()) << captured;
    // Nothing ran during capture.
    EXPECT_EQ(recv.ToHost()[0], -1.0f);
    ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 3; ++replay) {
      ASSERT_CUDA(cudaGraphLaunch(exec, stream));
      ASSERT_TRUE(comm.WatchStream(stream).ok());
    }
    ASSERT_TRUE(WaitStream(stream, milliseconds(10000)));
    EXPECT_TRUE(comm.AsyncError().ok()) << comm.AsyncError();
    std::vector<float> got = recv.ToHost();
    EXPECT_EQ(got, (std::vector<float>{1, 2, 3, 4, 5, 6, -1, -1}));
    (void)cudaGraphExecDestroy(exec);
    (void)cudaGraphDestroy(graph);
  });
}

TEST(NcclCommunicatorOneGpu, TwoRanksOnOneGpuAreRefusedWithTheReason) {
  SKIP_UNLESS_GPUS(1);
  InMemoryRendezvous rendezvous;
  std::vector<absl::Status> results(2);
  std::vector<std::thread> threads;
  threads.reserve(2);
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_CUDA(cudaSetDevice(0));
      auto comm =
          CreateCommunicator(NcclOptionsFor(r, 2, 0, "shared/", milliseconds(5000)), rendezvous);
      results[r] = comm.status();
      if (comm.ok()) {
        // An NCCL that allows it must then also exchange correctly.
        cudaStream_t stream = nullptr;
        ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        CheckAllGatherAllReduceBarrier(**comm, stream);
        (void)cudaStreamDestroy(stream);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  for (int r = 0; r < 2; ++r) {
    if (results[r].ok()) continue;
    EXPECT_THAT(std::string(results[r].message()),
                HasSubstr(absl::StrCat("NCCL init of rank ", r, " of 2")))
        << results[r];
  }
  // When NCCL refuses, at least one rank says why in the words above.
  if (!results[0].ok() || !results[1].ok()) {
    const bool explained = absl::StrContains(results[0].message(), "one GPU per rank") ||
                           absl::StrContains(results[1].message(), "one GPU per rank");
    EXPECT_TRUE(explained) << results[0] << " / " << results[1];
  }
}

TEST(NcclCommunicatorOneGpu, RankZeroNeverJoinsAndTheOthersSayWhatTheyWaitedFor) {
  SKIP_UNLESS_GPUS(1);
  InMemoryRendezvous rendezvous;
  const auto start = std::chrono::steady_clock::now();
  auto comm =
      CreateCommunicator(NcclOptionsFor(1, 2, 0, "no_root/", milliseconds(500)), rendezvous);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("rank 1 of 2"));
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr(NcclUniqueIdKey("no_root/")));
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("rank 0 did not join"));
}

TEST(NcclCommunicatorOneGpu, PeerNeverJoinsAndInitEndsWithinTheTimeout) {
  SKIP_UNLESS_GPUS(1);
  InMemoryRendezvous rendezvous;
  const auto start = std::chrono::steady_clock::now();
  auto comm =
      CreateCommunicator(NcclOptionsFor(0, 2, 0, "no_peer/", milliseconds(1000)), rendezvous);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("NCCL init of rank 0 of 2"));
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("within 1000 ms"));
  // Rank 0 published the unique id before it waited.
  auto published = rendezvous.TryGet(NcclUniqueIdKey("no_peer/"));
  ASSERT_TRUE(published.ok());
  EXPECT_TRUE(published->has_value());
}

TEST(NcclCommunicatorOneGpu, InvalidOptionsAreRefused) {
  SKIP_UNLESS_GPUS(1);
  InMemoryRendezvous rendezvous;
  auto no_such_gpu = CreateCommunicator(
      NcclOptionsFor(0, 1, NumGpus() + 3, "bad/", milliseconds(500)), rendezvous);
  EXPECT_EQ(no_such_gpu.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_such_gpu.status().message()),
              HasSubstr(absl::StrCat("cuda:", NumGpus() + 3)));
  NcclOptions zero_timeout;
  zero_timeout.timeout = milliseconds(0);
  EXPECT_EQ(NcclCommunicator::Create(zero_timeout, rendezvous).status().code(),
            absl::StatusCode::kInvalidArgument);
  NcclOptions negative_init;
  negative_init.init_timeout = milliseconds(-1);
  EXPECT_EQ(NcclCommunicator::Create(negative_init, rendezvous).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto version = NcclRuntimeVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_THAT(*version, ::testing::StartsWith("2."));
}

// ---- several GPUs ----

class NcclCommunicatorMultiGpu : public ::testing::TestWithParam<int> {};

TEST_P(NcclCommunicatorMultiGpu, EveryOperationAgainstExpectedValues) {
  const int world = GetParam();
  SKIP_UNLESS_GPUS(world);
  RunRanks(world, absl::StrCat("multi", world, "/"), CheckEverything);
}

TEST_P(NcclCommunicatorMultiGpu, LargeStridedExchange) {
  const int world = GetParam();
  SKIP_UNLESS_GPUS(world);
  RunRanks(world, absl::StrCat("large", world, "/"), [](Communicator& comm, cudaStream_t stream) {
    const int n = comm.world_size(), me = comm.rank();
    constexpr int64_t kStride = int64_t{1} << 20;  // 2 MiB of uint16 per region
    std::vector<int64_t> send_counts(n), recv_counts(n);
    for (int d = 0; d < n; ++d) {
      send_counts[d] = kStride - 1000 * (me + d);
      recv_counts[d] = kStride - 1000 * (d + me);
    }
    std::vector<uint16_t> send(n * kStride);
    for (int d = 0; d < n; ++d) {
      for (int64_t i = 0; i < kStride; ++i) {
        send[d * kStride + i] = static_cast<uint16_t>(me * 7919 + d * 131 + i);
      }
    }
    DeviceArray<uint16_t> d_send(send);
    DeviceArray<uint16_t> d_recv(static_cast<size_t>(n * kStride));
    ASSERT_TRUE(comm.AllToAllVStrided(d_send.get(), kStride, send_counts, d_recv.get(), kStride,
                                      recv_counts, sizeof(uint16_t), stream)
                    .ok());
    ASSERT_TRUE(WaitStream(stream, milliseconds(30000)));
    std::vector<uint16_t> recv = d_recv.ToHost();
    int64_t bad = 0;
    for (int s = 0; s < n; ++s) {
      for (int64_t i = 0; i < recv_counts[s]; ++i) {
        bad += recv[s * kStride + i] != static_cast<uint16_t>(s * 7919 + me * 131 + i);
      }
    }
    EXPECT_EQ(bad, 0) << "rank " << me;
  });
}

TEST_P(NcclCommunicatorMultiGpu, RankThatStopsCallingCollectivesIsAbortedByTheWatchdog) {
  const int world = GetParam();
  SKIP_UNLESS_GPUS(world);
  constexpr milliseconds kTimeout(3000);
  InMemoryRendezvous rendezvous;
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      ASSERT_CUDA(cudaSetDevice(r));
      // Forming 8 ranks may take longer than one collective may.
      NcclOptions options;
      options.rank = r;
      options.world_size = world;
      options.cuda_device = r;
      options.key_prefix = "fault/";
      options.timeout = kTimeout;
      options.init_timeout = milliseconds(60000);
      auto comm = NcclCommunicator::Create(options, rendezvous);
      ASSERT_TRUE(comm.ok()) << comm.status();
      cudaStream_t stream = nullptr;
      ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      // Every rank runs one exchange, so that the peers are connected.
      CheckAllToAllV(**comm, stream);
      if (r == world - 1) {
        // The silent rank: alive, but never calls the next collective.
        while (finished.load() < world - 1) std::this_thread::sleep_for(milliseconds(10));
      } else {
        std::vector<int64_t> counts(world, 64);
        DeviceArray<float> send(static_cast<size_t>(64 * world));
        DeviceArray<float> recv(static_cast<size_t>(64 * world));
        const auto start = std::chrono::steady_clock::now();
        absl::Status enqueued =
            (*comm)->AllToAllV(send.get(), counts, recv.get(), counts, 4, stream);
        // Either the enqueue itself gives up, or the watchdog aborts the
        // stuck kernel and the stream drains.
        EXPECT_TRUE(WaitStream(stream, kTimeout + milliseconds(10000)));
        const auto elapsed = std::chrono::steady_clock::now() - start;
        EXPECT_LT(elapsed, kTimeout + std::chrono::seconds(5));
        absl::Status error = enqueued.ok() ? (*comm)->AsyncError() : enqueued;
        EXPECT_FALSE(error.ok());
        EXPECT_THAT(std::string(error.message()), HasSubstr("AllToAllV"));
        EXPECT_THAT(std::string(error.message()),
                    HasSubstr(absl::StrCat("rank ", r, " of ", world)));
        EXPECT_THAT(std::string(error.message()), HasSubstr("3000 ms"));
        // Broken from now on: every call fails at once.
        absl::Status again = (*comm)->Barrier();
        EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
        EXPECT_THAT(std::string(again.message()), HasSubstr("earlier failure"));
        finished.fetch_add(1);
      }
      (void)cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
}

INSTANTIATE_TEST_SUITE_P(Ranks, NcclCommunicatorMultiGpu, ::testing::Values(2, 4, 8),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return absl::StrCat(p.param, "Gpus");
                         });

#endif  // EPSERVE_WITH_NCCL

}  // namespace
}  // namespace epserve::comm
