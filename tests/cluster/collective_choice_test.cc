// ChooseCollectiveBackend: the router's choice of gloo or nccl for a group,
// as a table over requested backend x workers' capabilities and devices.
#include "router/cluster/collective_choice.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace epserve::router {
namespace {

using ::testing::HasSubstr;

CollectiveCandidate Gpu(uint32_t rank, const std::string& host, int ordinal,
                        std::vector<std::string> backends = {"gloo", "nccl"}) {
  return {rank, "w" + std::to_string(rank), host, "cuda:" + std::to_string(ordinal),
          std::move(backends)};
}
CollectiveCandidate Cpu(uint32_t rank, const std::string& host) {
  return {rank, "w" + std::to_string(rank), host, "cpu", {"gloo"}};
}

struct ChoiceCase {
  std::string name;
  std::string requested;
  std::vector<CollectiveCandidate> workers;
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string chosen_or_message;  // the backend chosen, or parts of the error
  std::string message_also = "";
};

void PrintTo(const ChoiceCase& c, std::ostream* os) { *os << c.name; }

class CollectiveChoiceTest : public ::testing::TestWithParam<ChoiceCase> {};

TEST_P(CollectiveChoiceTest, ChoosesOrRefuses) {
  const ChoiceCase& c = GetParam();
  absl::StatusOr<std::string> got = ChooseCollectiveBackend(c.requested, c.workers);
  ASSERT_EQ(got.status().code(), c.code) << got.status();
  if (got.ok()) {
    EXPECT_EQ(*got, c.chosen_or_message);
  } else {
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.chosen_or_message));
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.message_also));
  }
}

using Code = absl::StatusCode;

INSTANTIATE_TEST_SUITE_P(
    Table, CollectiveChoiceTest,
    ::testing::Values(
        ChoiceCase{"AutoGpusOnTheirOwnGpusIsNccl",
                   "auto",
                   {Gpu(0, "a", 0), Gpu(1, "a", 1)},
                   Code::kOk,
                   "nccl"},
        ChoiceCase{"AutoGpusOnTwoHostsSameOrdinalIsNccl",
                   "auto",
                   {Gpu(0, "a", 0), Gpu(1, "b", 0)},
                   Code::kOk,
                   "nccl"},
        ChoiceCase{"AutoCpuWorkersIsGloo", "auto", {Cpu(0, "a"), Cpu(1, "a")}, Code::kOk, "gloo"},
        ChoiceCase{"AutoGpusSharingAGpuIsGloo",
                   "auto",
                   {Gpu(0, "a", 0), Gpu(1, "a", 0)},
                   Code::kOk,
                   "gloo"},
        ChoiceCase{"AutoOneWorkerWithoutNcclIsGloo",
                   "auto",
                   {Gpu(0, "a", 0), Gpu(1, "a", 1, {"gloo"})},
                   Code::kOk,
                   "gloo"},
        ChoiceCase{
            "AutoMixedCpuAndGpuIsGloo", "auto", {Gpu(0, "a", 0), Cpu(1, "a")}, Code::kOk, "gloo"},
        ChoiceCase{"AutoGroupOfOneIsGloo", "auto", {Gpu(0, "a", 0)}, Code::kOk, "gloo"},
        ChoiceCase{"WorkersListingNothingOfferGloo",
                   "auto",
                   {{0, "w0", "a", "", {}}, {1, "w1", "a", "", {}}},
                   Code::kOk,
                   "gloo"},
        ChoiceCase{"GlooEvenOnGpus", "gloo", {Gpu(0, "a", 0), Gpu(1, "a", 1)}, Code::kOk, "gloo"},
        ChoiceCase{"NcclOnGpus", "nccl", {Gpu(0, "a", 0), Gpu(1, "a", 1)}, Code::kOk, "nccl"},
        ChoiceCase{"NcclGroupOfOne", "nccl", {Gpu(0, "a", 0)}, Code::kOk, "nccl"},
        ChoiceCase{"NcclWithACpuWorkerNamesIt",
                   "nccl",
                   {Gpu(0, "a", 0), Cpu(1, "b")},
                   Code::kFailedPrecondition,
                   "worker w1 (rank 1 on b, cpu) does not offer nccl",
                   "it offers gloo"},
        ChoiceCase{"NcclWithAWorkerBuiltWithoutNccl",
                   "nccl",
                   {Gpu(0, "a", 0), Gpu(1, "a", 1, {"gloo"})},
                   Code::kFailedPrecondition,
                   "worker w1 (rank 1 on a, cuda:1) does not offer nccl"},
        ChoiceCase{"NcclWithWorkersSharingAGpuNamesBoth",
                   "nccl",
                   {Gpu(0, "a", 1), Gpu(1, "b", 1), Gpu(2, "a", 1)},
                   Code::kFailedPrecondition,
                   "worker w0 (rank 0 on a, cuda:1) and worker w2 (rank 2 on a, cuda:1) share one "
                   "device",
                   "NCCL needs one GPU per rank"},
        ChoiceCase{"GlooWithAWorkerWithoutGloo",
                   "gloo",
                   {Gpu(0, "a", 0, {"nccl"}), Gpu(1, "a", 1)},
                   Code::kFailedPrecondition,
                   "worker w0 (rank 0 on a, cuda:0) does not offer gloo",
                   "it offers nccl"},
        ChoiceCase{"UnknownRequest",
                   "mpi",
                   {Cpu(0, "a")},
                   Code::kInvalidArgument,
                   "collective backend \"mpi\" is unknown (expected auto, gloo or nccl)"},
        ChoiceCase{"NoWorkers", "auto", {}, Code::kInvalidArgument, "no workers"}),
    [](const ::testing::TestParamInfo<ChoiceCase>& p) { return p.param.name; });

}  // namespace
}  // namespace epserve::router
