// The expert-parallel exchange on GPUs (epserve-bench-gpu alltoall), top-k of
// E experts, bfloat16 on the wire, for every hidden size and tokens per rank:
//
// 1. Local kernels (one GPU): the exchange's own kernels with W = 1, 2, 4, 8
//    simulated ranks (linear expert placement, random distinct top-k), the
//    receive side fed with the send side's buffers (as if every rank sent the
//    same), C = tokens slots per rank:
//      dispatch = EpDispatchPack + EpDispatchUnpack
//      combine  = EpCombinePack + EpCombineUnpack
//    timed as the mean of back-to-back eager calls and of replays of a CUDA
//    graph holding the pair (decode's case), in µs per call, with the row
//    and route bytes the kernels read and write per second against the copy
//    bandwidth.
//
// 2. NCCL between GPUs (G >= 2): for W = 2, 4, 8, ... up to G (and G), one
//    thread per GPU, an NCCL communicator per rank and a SlotTokenDispatcher
//    per rank doing fixed-capacity steps (decode_capacity = tokens per rank);
//    the experts do nothing (the dispatched rows are passed back as
//    expert_out). Dispatch and Combine timed separately with CUDA events on
//    each rank's stream, eagerly and as replays of captured graphs: median
//    over iterations, max over ranks. In the same group the baseline: an
//    all-to-all of equal counts (grouped ncclSend/ncclRecv, the
//    communicator's AllToAllV) of the dispatch's row bytes, its latency and
//    bus bandwidth (nccl-tests: algbw = bytes per rank / time, busbw = algbw
//    (W-1)/W), also at a large size (default 4096 tokens per rank) where the
//    dispatch's bus bandwidth is compared with the baseline's.
//
// Part 1 lives in alltoall_bench.cc, part 2 in alltoall_nccl_bench.cc.
//
// Targets (issue 14): local dispatch pack + unpack <= 10 µs at 128 tokens,
// hidden 2048; over NVLink at 128 tokens per rank, hidden 2048, each of
// dispatch and combine <= 30 µs; at 4096 tokens per rank the dispatch >= 80 %
// of the all-to-all's bus bandwidth.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "kernels/device.h"
#include "tools/bench_gpu/report.h"

namespace epserve::bench_gpu {

struct AllToAllOptions {
  kernels::DeviceSpec device;  // part 1
  int num_experts = 128;
  int top_k = 8;
  std::vector<int64_t> hidden = {2048, 4096, 7168};
  std::vector<int64_t> tokens = {1, 8, 128, 512};   // per rank
  std::vector<int> simulated_ranks = {1, 2, 4, 8};  // part 1
  // Part 2: GPUs to use (0: all there are); the large size's tokens per rank
  // (0: none).
  int gpus = 0;
  int64_t large_tokens = 4096;
  int iterations = 100;  // timed calls per case (the large size: at most 20)
  uint64_t seed = 1;
  std::optional<double> bandwidth_gb_per_s;  // the copy bandwidth, for ratios
};

// The dtype rows cross between ranks in (both directions).
inline constexpr DataType kWireDtype = DataType::kBFloat16;

// Top-k routing of `tokens` tokens: each picks top_k distinct experts
// uniformly at random, with positive weights summing to 1.
struct Routing {
  std::vector<int32_t> ids;    // [tokens, top_k]
  std::vector<float> weights;  // [tokens, top_k]
};
Routing RandomRouting(int num_experts, int top_k, int64_t tokens, std::mt19937_64& gen);

// Slots the routing fills: over tokens, the number of distinct ranks
// (expert_to_rank[id]) among its picks.
int64_t CountSlots(const Routing& routing, int top_k, const std::vector<uint32_t>& expert_to_rank);

// InvalidArgument naming the option when a size is out of range (experts,
// top-k <= experts, hidden, tokens, ranks, gpus, iterations).
absl::Status CheckAllToAllOptions(const AllToAllOptions& options);

// Part 1 on options.device.
absl::Status RunLocalExchangeBench(const AllToAllOptions& options, Report& report);

// Part 2; without NCCL in the build or fewer than 2 GPUs (after
// options.gpus), prints and records why it was skipped and returns OK.
absl::Status RunNcclExchangeBench(const AllToAllOptions& options, Report& report);

}  // namespace epserve::bench_gpu
