// The communicators: one typed suite run over every backend, each created
// through CreateCommunicator (LocalCommunicator at world size 1, Gloo at 2-4
// ranks as threads of this process over TCP on loopback, bootstrapped
// through an in-memory rendezvous); then what only one backend has, and
// CreateCommunicator's choices and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <functional>
#include <numeric>
#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/comm/alltoall_check.h"
#include "worker/comm/communicator_factory.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/local_communicator.h"

namespace epserve::comm {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

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

// One communicator backend at one world size, created through
// CreateCommunicator as the worker creates it.
template <int kWorldSize>
struct LocalBackend {
  static constexpr int kWorld = kWorldSize;
  static constexpr const char* kName = "gloo";  // world size 1 is local whatever the name
  static constexpr const char* kExpectedBackend = "local";
};
template <int kWorldSize>
struct GlooBackend {
  static constexpr int kWorld = kWorldSize;
  static constexpr const char* kName = "gloo";
  static constexpr const char* kExpectedBackend = "gloo";
};

// Forms a group of Param::kWorld ranks (threads of this process, loopback)
// and runs `body(comm)` on each rank's thread.
template <typename Param>
void RunRanks(const std::function<void(Communicator&)>& body, const std::string& prefix) {
  InMemoryRendezvous rendezvous;
  std::vector<std::thread> threads;
  for (int r = 0; r < Param::kWorld; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions options;
      options.backend = Param::kName;
      options.rank = r;
      options.world_size = Param::kWorld;
      options.key_prefix = prefix;
      auto comm = CreateCommunicator(options, rendezvous);
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_EQ((*comm)->rank(), r);
      EXPECT_EQ((*comm)->world_size(), Param::kWorld);
      EXPECT_EQ((*comm)->backend(), Param::kExpectedBackend);
      body(**comm);
    });
  }
  for (auto& t : threads) t.join();
}

template <typename Param>
class CommunicatorTest : public ::testing::Test {
 protected:
  static constexpr int kWorld = Param::kWorld;
  void Run(const std::function<void(Communicator&)>& body) {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    RunRanks<Param>(body, std::string(info->name()) + "/");
  }
};

using Backends = ::testing::Types<LocalBackend<1>, GlooBackend<2>, GlooBackend<3>, GlooBackend<4>>;

class BackendNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::string(T::kExpectedBackend) + std::to_string(T::kWorld);
  }
};

TYPED_TEST_SUITE(CommunicatorTest, Backends, BackendNames);

TYPED_TEST(CommunicatorTest, AllToAllVWithUnevenAndEmptyBlocks) {
  constexpr int kWorld = TestFixture::kWorld;
  // Rank s sends count(s, d) floats to rank d; rank 1 sends nothing to 2.
  auto count = [](int s, int d) -> int64_t { return (s == 1 && d == 2) ? 0 : 1 + 2 * s + d; };
  auto value = [](int s, int d, int64_t i) { return static_cast<float>(100 * s + 10 * d) + i; };
  this->Run([&](Communicator& comm) {
    int me = comm.rank();
    std::vector<int64_t> send_counts(kWorld), recv_counts(kWorld);
    std::vector<float> send;
    for (int d = 0; d < kWorld; ++d) {
      send_counts[d] = count(me, d);
      recv_counts[d] = count(d, me);
      for (int64_t i = 0; i < send_counts[d]; ++i) send.push_back(value(me, d, i));
    }
    std::vector<float> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0}));
    ASSERT_TRUE(
        comm.AllToAllV(send.data(), send_counts, recv.data(), recv_counts, sizeof(float), nullptr)
            .ok());
    size_t pos = 0;
    for (int s = 0; s < kWorld; ++s) {
      for (int64_t i = 0; i < recv_counts[s]; ++i) EXPECT_EQ(recv[pos++], value(s, me, i));
    }
  });
}

TYPED_TEST(CommunicatorTest, AllToAllVWithNoTokensAnywhere) {
  this->Run([&](Communicator& comm) {
    std::vector<int64_t> zeros(TestFixture::kWorld, 0);
    EXPECT_TRUE(comm.AllToAllV(nullptr, zeros, nullptr, zeros, 4, nullptr).ok());
  });
}

TYPED_TEST(CommunicatorTest, AllGatherAllReduceBarrier) {
  constexpr int kWorld = TestFixture::kWorld;
  this->Run([&](Communicator& comm) {
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
    EXPECT_EQ(x[1], kWorld * (kWorld - 1) / 2);
    std::vector<int64_t> n = {int64_t{1} << 40};
    ASSERT_TRUE(comm.AllReduceSum(n.data(), 1, DataType::kInt64, nullptr).ok());
    EXPECT_EQ(n[0], kWorld * (int64_t{1} << 40));
    EXPECT_TRUE(comm.Barrier().ok());
  });
}

TYPED_TEST(CommunicatorTest, WarmUpCheckPasses) {
  constexpr int kWorld = TestFixture::kWorld;
  this->Run([&](Communicator& comm) {
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

TYPED_TEST(CommunicatorTest, BadCountsAreRejectedBeforeAnyTraffic) {
  constexpr int kWorld = TestFixture::kWorld;
  this->Run([&](Communicator& comm) {
    std::vector<int64_t> too_many(kWorld + 1, 1);
    int32_t buf[8] = {};
    auto s = comm.AllToAllV(buf, too_many, buf, too_many, 4, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    std::vector<int64_t> neg(kWorld, 1);
    neg[0] = -1;
    EXPECT_EQ(comm.AllToAllV(buf, neg, buf, neg, 4, nullptr).code(),
              absl::StatusCode::kInvalidArgument);
    // The group is still usable after refused calls.
    EXPECT_TRUE(comm.Barrier().ok());
  });
}

TYPED_TEST(CommunicatorTest, AllToAllVStridedMovesRegionsInPlace) {
  constexpr int kWorld = TestFixture::kWorld;
  constexpr int64_t kSendStride = 5, kRecvStride = 6;
  // Rank s sends count(s, d) <= 5 int32 to rank d: zero for some pairs, the
  // full stride for others.
  auto count = [](int s, int d) -> int64_t { return (s + 2 * d) % 6 == 3 ? 0 : (s + d) % 5 + 1; };
  auto value = [](int s, int d, int64_t i) { return static_cast<int32_t>(1000 * s + 10 * d + i); };
  this->Run([&](Communicator& comm) {
    const int me = comm.rank();
    std::vector<int64_t> send_counts(kWorld), recv_counts(kWorld);
    std::vector<int32_t> send(kWorld * kSendStride, -7), recv(kWorld * kRecvStride, -9);
    for (int d = 0; d < kWorld; ++d) {
      send_counts[d] = count(me, d);
      recv_counts[d] = count(d, me);
      for (int64_t i = 0; i < send_counts[d]; ++i) send[d * kSendStride + i] = value(me, d, i);
    }
    ASSERT_TRUE(comm.AllToAllVStrided(send.data(), kSendStride, send_counts, recv.data(),
                                      kRecvStride, recv_counts, sizeof(int32_t), nullptr)
                    .ok());
    for (int s = 0; s < kWorld; ++s) {
      for (int64_t i = 0; i < kRecvStride; ++i) {
        // Slots past the count are untouched.
        const int32_t expected = i < recv_counts[s] ? value(s, me, i) : -9;
        EXPECT_EQ(recv[s * kRecvStride + i], expected) << "from rank " << s << ", slot " << i;
      }
    }
  });
}

TYPED_TEST(CommunicatorTest, AllToAllVStridedWithNoTokensAnywhere) {
  this->Run([&](Communicator& comm) {
    std::vector<int64_t> zeros(TestFixture::kWorld, 0);
    EXPECT_TRUE(comm.AllToAllVStrided(nullptr, 4, zeros, nullptr, 4, zeros, 2, nullptr).ok());
  });
}

TYPED_TEST(CommunicatorTest, AllToAllVStridedRefusesCountsOutsideTheStride) {
  constexpr int kWorld = TestFixture::kWorld;
  this->Run([&](Communicator& comm) {
    std::vector<int32_t> buf(4 * kWorld);
    std::vector<int64_t> ok(kWorld, 2), above(kWorld, 2), negative(kWorld, 2);
    above[kWorld - 1] = 5;
    negative[0] = -1;
    absl::Status s = comm.AllToAllVStrided(buf.data(), 4, above, buf.data(), 4, ok, 4, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(absl::StrCat("rank ", kWorld - 1, ": counts (send 5")));
    s = comm.AllToAllVStrided(buf.data(), 4, ok, buf.data(), 4, negative, 4, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    std::vector<int64_t> short_counts(kWorld + 1, 1);
    s = comm.AllToAllVStrided(buf.data(), 4, short_counts, buf.data(), 4, short_counts, 4, nullptr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("expected ", kWorld, " counts")));
    // The group is still usable after refused calls.
    EXPECT_TRUE(comm.Barrier().ok());
    EXPECT_TRUE(comm.WatchStream(nullptr).ok());
    EXPECT_TRUE(comm.AsyncError().ok());
  });
}

// ---- Gloo only: stream refusal, dtypes, group formation and failures ----

TEST(GlooCommunicator, StreamsAndUnsupportedTypesAreRefused) {
  RunRanks<GlooBackend<2>>(
      [](Communicator& comm) {
        std::vector<int64_t> one = {1};
        int32_t buf[4] = {};
        auto s = comm.AllToAllV(buf, one, buf, one, 4, nullptr);
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_THAT(std::string(s.message()), HasSubstr("expected 2 counts"));
        int stream_token = 0;
        EXPECT_EQ(comm.Barrier().code(), absl::StatusCode::kOk);
        std::vector<int64_t> ones = {1, 1};
        EXPECT_EQ(comm.AllToAllV(buf, ones, buf, ones, 4, &stream_token).code(),
                  absl::StatusCode::kInvalidArgument);
        float x[1] = {1.0f};
        auto unsupported = comm.AllReduceSum(x, 1, DataType::kBFloat16, nullptr);
        EXPECT_EQ(unsupported.code(), absl::StatusCode::kUnimplemented);
      },
      "gloo_refusals/");
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

// A peer that closes its sockets while this rank still writes to them: the
// exchange fails with a status, the process does not die of SIGPIPE.
TEST(GlooCommunicator, PeerThatGoesAwayMidExchangeFailsWithoutKillingTheProcess) {
  InMemoryRendezvous rendezvous;
  std::thread rank1([&] {
    auto comm = GlooCommunicator::Create(Options(1, 2, "gone/", milliseconds(2000)), rendezvous);
    ASSERT_TRUE(comm.ok());
    // One collective first, so that both ends of every connection are set
    // up: Gloo's event loop raises (ending the process) on socket errors
    // while it still sets a connection up, which no caller can catch. Then
    // it leaves: the communicator and its sockets close here.
    ASSERT_TRUE((*comm)->Barrier().ok());
  });
  auto comm = GlooCommunicator::Create(Options(0, 2, "gone/", milliseconds(2000)), rendezvous);
  ASSERT_TRUE(comm.ok()) << comm.status();
  ASSERT_TRUE((*comm)->Barrier().ok());
  rank1.join();
  // Gloo writes with plain write(): SIGPIPE is ignored once a group exists.
  struct sigaction current {};
  ASSERT_EQ(sigaction(SIGPIPE, nullptr, &current), 0);
  EXPECT_EQ(current.sa_handler, SIG_IGN);
  // Enough bytes to still be writing when the peer's reset arrives.
  const int64_t rows = int64_t{16} << 20;
  std::vector<char> send(static_cast<size_t>(2 * rows)), recv(static_cast<size_t>(2 * rows));
  absl::Status s = absl::OkStatus();
  for (int i = 0; i < 4 && s.ok(); ++i) {
    s = (*comm)->AllToAllV(send.data(), {rows, rows}, recv.data(), {rows, rows}, 1, nullptr);
  }
  EXPECT_FALSE(s.ok());
}

TEST(GlooCommunicator, InvalidOptions) {
  InMemoryRendezvous rendezvous;
  EXPECT_EQ(GlooCommunicator::Create(Options(2, 2, "x/"), rendezvous).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      GlooCommunicator::Create(Options(0, 2, "x/", milliseconds(0)), rendezvous).status().code(),
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

struct FactoryCase {
  std::string name;
  std::string backend;
  int rank = 0;
  int world_size = 1;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string created_or_message;  // the backend() created, or a part of the error
};

void PrintTo(const FactoryCase& c, std::ostream* os) { *os << c.name; }

class CommunicatorFactoryTest : public ::testing::TestWithParam<FactoryCase> {};

TEST_P(CommunicatorFactoryTest, CreatesOrRefuses) {
  const FactoryCase& c = GetParam();
  InMemoryRendezvous rendezvous;
  CommunicatorOptions options;
  options.backend = c.backend;
  options.rank = c.rank;
  options.world_size = c.world_size;
  options.key_prefix = "factory/";
  options.timeout = milliseconds(300);
  auto comm = CreateCommunicator(options, rendezvous);
  ASSERT_EQ(comm.status().code(), c.code) << comm.status();
  if (comm.ok()) {
    EXPECT_EQ((*comm)->backend(), c.created_or_message);
  } else {
    EXPECT_THAT(std::string(comm.status().message()), HasSubstr(c.created_or_message));
  }
}

std::vector<FactoryCase> FactoryCases() {
  std::vector<FactoryCase> cases = {

      FactoryCase{"GlooAtWorldOneIsLocal", "gloo", 0, 1, absl::StatusCode::kOk, "local"},
      FactoryCase{"UnnamedAtWorldOneIsLocal", "", 0, 1, absl::StatusCode::kOk, "local"},
      FactoryCase{"UnknownListsTheKnown", "mpi", 0, 2, absl::StatusCode::kInvalidArgument,
                  "collective backend \"mpi\" is unknown (known: gloo, nccl)"},
      FactoryCase{"UnknownAtWorldOne", "mpi", 0, 1, absl::StatusCode::kInvalidArgument,
                  "known: gloo, nccl"},
      FactoryCase{"RankOutsideTheWorld", "gloo", 2, 2, absl::StatusCode::kInvalidArgument,
                  "rank 2 of world size 2"},
      FactoryCase{"EmptyWorld", "gloo", 0, 0, absl::StatusCode::kInvalidArgument,
                  "expected 0 <= rank < world size"},
      // Gloo at world size 2 with the peer missing: Gloo was chosen and
      // waited for it (Unavailable naming the rank), the empty name too.
      FactoryCase{"GlooWaitsForItsPeers", "gloo", 0, 2, absl::StatusCode::kUnavailable,
                  "rank 0 of 2"},
      FactoryCase{"UnnamedIsGloo", "", 1, 2, absl::StatusCode::kUnavailable, "rank 1 of 2"}};
#ifndef EPSERVE_WITH_NCCL
  // Built with NCCL, "nccl" is tested where GPUs are
  // (tests/comm/nccl_communicator_test.cc).
  cases.push_back({"NcclIsNotBuilt", "nccl", 0, 2, absl::StatusCode::kUnimplemented,
                   "collective backend \"nccl\" is not built in this binary"});
  cases.push_back({"NcclAtWorldOneIsNotBuiltEither", "nccl", 0, 1, absl::StatusCode::kUnimplemented,
                   "is not built in this binary"});
#endif
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Choices, CommunicatorFactoryTest, ::testing::ValuesIn(FactoryCases()),
                         [](const ::testing::TestParamInfo<FactoryCase>& p) {
                           return p.param.name;
                         });

}  // namespace
}  // namespace epserve::comm
