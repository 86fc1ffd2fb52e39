// Multi-rank tests of the communicators: N ranks as threads of this process
// over Gloo's TCP transport on loopback, bootstrapped through an in-memory
// rendezvous.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <numeric>
#include <thread>

#include "worker/comm/alltoall_check.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/local_communicator.h"

namespace epserve::comm {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;

GlooOptions Options(int rank, int world, const std::string& prefix,
                    milliseconds timeout = milliseconds(10000)) {
  GlooOptions o;
  o.rank = rank;
  o.world_size = world;
  o.hostname = "127.0.0.1";
  o.key_prefix = prefix;
  o.timeout = timeout;
  return o;
}

// Forms a group of `world` ranks and runs `body(comm)` on each rank's thread.
void RunRanks(int world, const std::function<void(Communicator&)>& body,
              const std::string& prefix = "test/") {
  InMemoryRendezvous rendezvous;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::Create(Options(r, world, prefix), rendezvous);
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_EQ((*comm)->rank(), r);
      EXPECT_EQ((*comm)->world_size(), world);
      body(**comm);
    });
  }
  for (auto& t : threads) t.join();
}

TEST(GlooCommunicator, AllToAllVWithUnevenAndEmptyBlocks) {
  constexpr int kWorld = 3;
  // Rank s sends count(s, d) floats to rank d; rank 1 sends nothing to 2.
  auto count = [](int s, int d) -> int64_t { return (s == 1 && d == 2) ? 0 : 1 + 2 * s + d; };
  auto value = [](int s, int d, int64_t i) { return static_cast<float>(100 * s + 10 * d) + i; };
  RunRanks(kWorld, [&](Communicator& comm) {
    int me = comm.rank();
    std::vector<int64_t> send_counts(kWorld), recv_counts(kWorld);
    std::vector<float> send;
    for (int d = 0; d < kWorld; ++d) {
      send_counts[d] = count(me, d);
      recv_counts[d] = count(d, me);
      for (int64_t i = 0; i < send_counts[d]; ++i) send.push_back(value(me, d, i));
    }
    std::vector<float> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
    ASSERT_TRUE(comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts, sizeof(float),
                               nullptr)
                    .ok());
    size_t pos = 0;
    for (int s = 0; s < kWorld; ++s) {
      for (int64_t i = 0; i < recv_counts[s]; ++i) EXPECT_EQ(recv[pos++], value(s, me, i));
    }
  });
}

TEST(GlooCommunicator, AllToAllVWithNoTokensAnywhere) {
  RunRanks(2, [](Communicator& comm) {
    std::vector<int64_t> zeros(2, 0);
    EXPECT_TRUE(comm.AllToAllV(nullptr, zeros, nullptr, zeros, 4, nullptr).ok());
  });
}

TEST(GlooCommunicator, AllGatherAllReduceBarrier) {
  static constexpr int kWorld = 4;
  RunRanks(kWorld, [](Communicator& comm) {
    int me = comm.rank();
    int32_t mine[2] = {me, me * me};
    std::vector<int32_t> all(2 * kWorld, -1);
    ASSERT_TRUE(comm.AllGather(mine, all.data(), sizeof(mine), nullptr).ok());
    for (int r = 0; r < kWorld; ++r) {
      EXPECT_EQ(all[2 * r], r);
      EXPECT_EQ(all[2 * r + 1], r * r);
    }
    std::vector<float> x = {1.0f, static_cast<float>(me)};
    ASSERT_TRUE(comm.AllReduceSum(x.data(), x.size(), DataType::kFloat32, nullptr).ok());
    EXPECT_EQ(x[0], kWorld);
    EXPECT_EQ(x[1], 0 + 1 + 2 + 3);
    std::vector<int64_t> n = {int64_t{1} << 40};
    ASSERT_TRUE(comm.AllReduceSum(n.data(), 1, DataType::kInt64, nullptr).ok());
    EXPECT_EQ(n[0], kWorld * (int64_t{1} << 40));
    EXPECT_TRUE(comm.Barrier().ok());
    auto unsupported = comm.AllReduceSum(x.data(), 1, DataType::kBFloat16, nullptr);
    EXPECT_EQ(unsupported.code(), absl::StatusCode::kUnimplemented);
  });
}

TEST(GlooCommunicator, WarmUpCheckPassesOnThreeRanks) {
  static constexpr int kWorld = 3;
  RunRanks(kWorld, [](Communicator& comm) {
    auto result = RunAllToAllCheck(comm);
    ASSERT_TRUE(result.ok()) << result.status();
    uint64_t sent = 0, received = 0;
    for (int d = 0; d < kWorld; ++d) {
      sent += AllToAllCheckCount(comm.rank(), d) * sizeof(int32_t);
      received += AllToAllCheckCount(d, comm.rank()) * sizeof(int32_t);
    }
    EXPECT_EQ(result->bytes_sent, sent);
    EXPECT_EQ(result->bytes_received, received);
  });
}

TEST(GlooCommunicator, BadArgumentsAreRejectedBeforeAnyTraffic) {
  RunRanks(2, [](Communicator& comm) {
    std::vector<int64_t> one = {1};
    int32_t buf[4] = {};
    auto s = comm.AllToAllV(buf, one, buf, one, 4, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.message()), HasSubstr("expected 2 counts"));
    std::vector<int64_t> neg = {1, -1};
    EXPECT_EQ(comm.AllToAllV(buf, neg, buf, neg, 4, nullptr).code(),
              absl::StatusCode::kInvalidArgument);
    int stream_token = 0;
    EXPECT_EQ(comm.Barrier().code(), absl::StatusCode::kOk);
    std::vector<int64_t> ones = {1, 1};
    EXPECT_EQ(comm.AllToAllV(buf, ones, buf, ones, 4, &stream_token).code(),
              absl::StatusCode::kInvalidArgument);
  });
}

TEST(GlooCommunicator, MissingRankFailsWithinTimeoutInsteadOfHanging) {
  InMemoryRendezvous rendezvous;
  auto start = std::chrono::steady_clock::now();
  // World of 2, only rank 0 shows up.
  auto comm = GlooCommunicator::Create(Options(0, 2, "lonely/", milliseconds(500)), rendezvous);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(comm.status().message()), HasSubstr("rank 0 of 2"));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

TEST(GlooCommunicator, PeerThatStopsParticipatingTimesOutAndBreaksTheGroup) {
  InMemoryRendezvous rendezvous;
  std::atomic<bool> rank1_done{false};
  std::thread rank1([&] {
    auto comm = GlooCommunicator::Create(Options(1, 2, "stall/", milliseconds(500)), rendezvous);
    ASSERT_TRUE(comm.ok());
    // Never joins the collective below; stays alive until rank 0 gave up.
    while (!rank1_done) std::this_thread::sleep_for(milliseconds(10));
  });
  auto comm = GlooCommunicator::Create(Options(0, 2, "stall/", milliseconds(500)), rendezvous);
  ASSERT_TRUE(comm.ok()) << comm.status();
  auto start = std::chrono::steady_clock::now();
  absl::Status s = (*comm)->Barrier();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  // Broken from now on: fails at once, never hangs.
  absl::Status again = (*comm)->Barrier();
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.message()), HasSubstr("earlier failure"));
  rank1_done = true;
  rank1.join();
}

TEST(GlooCommunicator, InvalidOptions) {
  InMemoryRendezvous rendezvous;
  EXPECT_EQ(GlooCommunicator::Create(Options(2, 2, "x/"), rendezvous).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Create(Options(0, 2, "x/", milliseconds(0)), rendezvous)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LocalCommunicator, CopiesAndChecksCounts) {
  LocalCommunicator comm;
  float in[3] = {1, 2, 3}, out[3] = {};
  std::vector<int64_t> three = {3};
  ASSERT_TRUE(comm.AllToAllV(in, three, out, three, sizeof(float), nullptr).ok());
  EXPECT_EQ(out[2], 3);
  std::vector<int64_t> two = {2};
  EXPECT_EQ(comm.AllToAllV(in, three, out, two, sizeof(float), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  auto check = RunAllToAllCheck(comm);
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(check->bytes_sent, AllToAllCheckCount(0, 0) * sizeof(int32_t));
}

}  // namespace
}  // namespace epserve::comm
