// Part 2 of alltoall_bench.h: SlotTokenDispatcher over NCCL between GPUs,
// against an all-to-all of equal counts in the same group.
//
//   main ── for W = 2, 4, ... ≤ G: W threads, thread r on cuda:r ──► join, report
//   thread r: backend, NCCL communicator (InMemoryRendezvous)
//     │ barrier
//     ├─ case (hidden, tokens): dispatcher, eager steps, graph replays,
//     │                         the all-to-all baseline ─► results[case][r]
//     │ barrier (rank 0 prints the case: max over ranks of the medians)
//     └─ next case; every thread stops after a barrier at which any failed
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/placement.h"
#include "common/status.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "tools/bench_gpu/alltoall_bench.h"
#include "tools/bench_gpu/reference.h"
#include "worker/comm/communicator_factory.h"
#include "worker/comm/rendezvous.h"
#include "worker/moe/slot_dispatcher.h"

namespace epserve::bench_gpu {
namespace {

using kernels::Tensor;

constexpr double kExchangeTargetUs = 30.0;    // each side at 128 tokens, hidden 2048
constexpr double kBusBandwidthTarget = 0.80;  // dispatch / all-to-all at the large size
constexpr int kWarmupIterations = 3;
constexpr int kLargeIterations = 20;
// Forming the group and every collective (back-to-back iterations included).
constexpr std::chrono::seconds kCommTimeout{60};

struct Case {
  int64_t hidden = 0;
  int64_t tokens = 0;  // per rank = decode_capacity
  bool large = false;
};

// One rank's medians of one case, seconds; unset: not measured.
struct RankTimes {
  bool complete = false;  // every part of the case ran on this rank
  double dispatch_eager = 0, combine_eager = 0, alltoall = 0;
  std::optional<double> dispatch_graph, combine_graph;
};

// Max over ranks of the medians, and the derived bandwidths.
struct CaseSummary {
  RankTimes worst;
  double row_bytes = 0;       // per rank: W * C rows in the wire dtype
  double alltoall_busbw = 0;  // GB/s
  double dispatch_busbw = 0;  // GB/s, the same bytes over the eager dispatch
};

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

// nccl-tests' all-to-all: algbw = bytes per rank / time, busbw = algbw (W-1)/W.
double BusBandwidthGbPerS(double bytes, double seconds, int world) {
  return bytes / seconds / 1e9 * static_cast<double>(world - 1) / static_cast<double>(world);
}

CaseSummary Summarize(const Case& c, int world, const std::vector<RankTimes>& ranks) {
  CaseSummary s;
  s.worst = ranks.front();
  auto max_opt = [](std::optional<double>& a, const std::optional<double>& b) {
    a = (a && b) ? std::optional<double>(std::max(*a, *b)) : std::nullopt;
  };
  for (const RankTimes& r : ranks) {
    s.worst.dispatch_eager = std::max(s.worst.dispatch_eager, r.dispatch_eager);
    s.worst.combine_eager = std::max(s.worst.combine_eager, r.combine_eager);
    s.worst.alltoall = std::max(s.worst.alltoall, r.alltoall);
    max_opt(s.worst.dispatch_graph, r.dispatch_graph);
    max_opt(s.worst.combine_graph, r.combine_graph);
  }
  s.row_bytes = static_cast<double>(world) * static_cast<double>(c.tokens) *
                static_cast<double>(c.hidden) * static_cast<double>(DataTypeSize(kWireDtype));
  s.alltoall_busbw = BusBandwidthGbPerS(s.row_bytes, s.worst.alltoall, world);
  s.dispatch_busbw = BusBandwidthGbPerS(s.row_bytes, s.worst.dispatch_eager, world);
  return s;
}

std::string OptUs(const std::optional<double>& s) {
  return s ? absl::StrFormat("%7.1f", *s * 1e6) : std::string("      -");
}

void PrintCase(const Case& c, const CaseSummary& s) {
  Line(
      "  hidden %4d tokens %4d%s: dispatch eager %7.1f graph %s us | combine eager %7.1f graph "
      "%s us (target %.0f) | all-to-all %8.2f MB/rank %8.1f us busbw %6.1f GB/s | dispatch busbw "
      "%6.1f GB/s = %.2f x all-to-all",
      c.hidden, c.tokens, c.large ? " (large)" : "", s.worst.dispatch_eager * 1e6,
      OptUs(s.worst.dispatch_graph), s.worst.combine_eager * 1e6, OptUs(s.worst.combine_graph),
      kExchangeTargetUs, s.row_bytes / 1e6, s.worst.alltoall * 1e6, s.alltoall_busbw,
      s.dispatch_busbw, s.dispatch_busbw / s.alltoall_busbw);
}

void ReportCase(const Case& c, int world, const CaseSummary& s, Report& report) {
  const std::string config = absl::StrCat("nccl w", world, " h", c.hidden);
  auto us = [&](const char* name, const char* mode, double seconds) {
    report.Add({name, absl::StrCat(config, " ", mode), c.tokens, seconds * 1e6, "us",
                seconds * 1e6 / kExchangeTargetUs});
  };
  us("ep_dispatch_us", "eager", s.worst.dispatch_eager);
  us("ep_combine_us", "eager", s.worst.combine_eager);
  if (s.worst.dispatch_graph) us("ep_dispatch_us", "graph", *s.worst.dispatch_graph);
  if (s.worst.combine_graph) us("ep_combine_us", "graph", *s.worst.combine_graph);
  report.Add({"nccl_alltoall_us", config, c.tokens, s.worst.alltoall * 1e6, "us", std::nullopt});
  report.Add({"nccl_alltoall_busbw", config, c.tokens, s.alltoall_busbw, "GB/s", std::nullopt});
  report.Add({"ep_dispatch_busbw", config, c.tokens, s.dispatch_busbw, "GB/s",
              s.dispatch_busbw / s.alltoall_busbw});
}

struct Group;

// Runs once per barrier phase, after every thread arrived and before any
// leaves: the failures of the phase become the decision every thread reads.
struct PhaseEnd {
  Group* group;
  void operator()() noexcept;
};

// What the threads of one group share.
struct Group {
  explicit Group(int world, size_t num_cases)
      : world(world),
        barrier(world, PhaseEnd{this}),
        results(num_cases, std::vector<RankTimes>(static_cast<size_t>(world))) {}
  const int world;
  comm::InMemoryRendezvous rendezvous;
  std::barrier<PhaseEnd> barrier;
  std::atomic<bool> failed{false};
  bool stop = false;  // written by PhaseEnd only; read after a barrier
  std::mutex mu;
  absl::Status first_error;
  std::vector<std::vector<RankTimes>> results;  // [case][rank]

  void Fail(int rank, const absl::Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    if (first_error.ok()) first_error = Annotate(s, absl::StrCat("rank ", rank));
    failed = true;
  }
};

void PhaseEnd::operator()() noexcept { group->stop = group->failed.load(); }

// One rank's state across the cases of its group.
struct RankContext {
  int rank = 0;
  const AllToAllOptions* options = nullptr;
  Group* group = nullptr;
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<comm::Communicator> comm;
};

// Iteration i recorded marks 3i (before), 3i+1 (between the two parts) and
// 3i+2 (after), and the stream has passed them: the seconds of its first and
// second part.
absl::Status ReadIntervals(kernels::Backend::Timestamps& ev, int iterations,
                           std::vector<double>* first, std::vector<double>* second) {
  first->clear();
  second->clear();
  for (int i = 0; i < iterations; ++i) {
    ASSIGN_OR_RETURN(double a, ev.Seconds(3 * i, 3 * i + 1));
    ASSIGN_OR_RETURN(double b, ev.Seconds(3 * i + 1, 3 * i + 2));
    first->push_back(a);
    second->push_back(b);
  }
  return absl::OkStatus();
}

absl::Status RunRankCase(RankContext& ctx, const Case& c, RankTimes* times) {
  const AllToAllOptions& o = *ctx.options;
  kernels::Backend& backend = *ctx.backend;
  const int world = ctx.group->world;
  const int iterations = c.large ? std::min(o.iterations, kLargeIterations) : o.iterations;
  const int64_t t = c.tokens, h = c.hidden, k = o.top_k;

  moe::SlotDispatcherOptions d;
  d.num_experts = o.num_experts;
  d.top_k = o.top_k;
  d.hidden = h;
  ASSIGN_OR_RETURN(d.expert_to_rank,
                   PlaceExperts(static_cast<uint32_t>(o.num_experts), static_cast<uint32_t>(world),
                                PlacementStrategy::kLinear));
  d.wire_dtype = kWireDtype;
  d.decode_capacity = t;
  ASSIGN_OR_RETURN(std::unique_ptr<moe::SlotTokenDispatcher> dispatcher,
                   moe::SlotTokenDispatcher::Create(backend, d, ctx.comm.get()));

  std::mt19937_64 gen(o.seed * 1000003u + static_cast<uint64_t>(ctx.rank) * 7919u +
                      static_cast<uint64_t>(h * 131 + t));
  const Routing routing = RandomRouting(o.num_experts, o.top_k, t, gen);
  ASSIGN_OR_RETURN(Tensor hidden, backend.Empty(DataType::kFloat32, {t, h}));
  RETURN_IF_ERROR(backend.FillDummy(&hidden, o.seed + static_cast<uint64_t>(ctx.rank), 1.0f,
                                    /*ones=*/false));
  ASSIGN_OR_RETURN(Tensor ids, backend.Empty(DataType::kInt32, {t, k}));
  RETURN_IF_ERROR(
      backend.CopyFromHost(routing.ids.data(), routing.ids.size() * sizeof(int32_t), &ids));
  ASSIGN_OR_RETURN(Tensor weights, backend.Empty(DataType::kFloat32, {t, k}));
  RETURN_IF_ERROR(backend.CopyFromHost(routing.weights.data(),
                                       routing.weights.size() * sizeof(float), &weights));
  ASSIGN_OR_RETURN(Tensor out, backend.Empty(DataType::kFloat32, {t, h}));

  // The experts do nothing: the dispatched rows go back as expert_out.
  moe::DispatchedTokens dispatched;
  auto dispatch = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(dispatched, dispatcher->Dispatch(hidden, ids, weights));
    return absl::OkStatus();
  };
  auto combine = [&]() { return dispatcher->Combine(dispatched.rows, &out); };
  auto begin_step = [&]() -> absl::Status {
    dispatcher->BeginStep(t);
    if (!dispatcher->fixed_capacity_step()) {
      return absl::InternalError(
          absl::StrCat("SlotTokenDispatcher did not take the fixed-capacity exchange for ", t,
                       " tokens with decode_capacity ", t));
    }
    return absl::OkStatus();
  };
  auto end_step = [&]() -> absl::Status {
    RETURN_IF_ERROR(backend.Synchronize());
    return dispatcher->EndStep();
  };

  // Eager: every iteration's Dispatch and Combine between events, enqueued
  // back to back (the ranks run in lockstep after the first exchange).
  for (int i = 0; i < kWarmupIterations; ++i) {
    RETURN_IF_ERROR(begin_step());
    RETURN_IF_ERROR(dispatch());
    RETURN_IF_ERROR(combine());
  }
  RETURN_IF_ERROR(end_step());
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend::Timestamps> ev,
                   backend.CreateTimestamps(3 * iterations));
  std::vector<double> first, second;
  RETURN_IF_ERROR(begin_step());
  for (int i = 0; i < iterations; ++i) {
    RETURN_IF_ERROR(ev->Record(3 * i));
    RETURN_IF_ERROR(dispatch());
    RETURN_IF_ERROR(ev->Record(3 * i + 1));
    RETURN_IF_ERROR(combine());
    RETURN_IF_ERROR(ev->Record(3 * i + 2));
  }
  RETURN_IF_ERROR(end_step());
  RETURN_IF_ERROR(ReadIntervals(*ev, iterations, &first, &second));
  times->dispatch_eager = Median(first);
  times->combine_eager = Median(second);

  // Graphs: Dispatch and Combine captured separately, replayed in turn.
  if (backend.SupportsGraphs()) {
    RETURN_IF_ERROR(begin_step());
    if (!dispatcher->step_capturable()) {
      return absl::InternalError("SlotTokenDispatcher: a fixed-capacity step is not capturable");
    }
    ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend::Graph> dispatch_graph,
                     backend.Capture(dispatch));
    ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend::Graph> combine_graph,
                     backend.Capture(combine));
    for (int i = 0; i < kWarmupIterations; ++i) {
      RETURN_IF_ERROR(dispatch_graph->Replay());
      RETURN_IF_ERROR(combine_graph->Replay());
    }
    RETURN_IF_ERROR(dispatcher->AfterGraphLaunch());
    RETURN_IF_ERROR(end_step());
    RETURN_IF_ERROR(begin_step());
    for (int i = 0; i < iterations; ++i) {
      RETURN_IF_ERROR(ev->Record(3 * i));
      RETURN_IF_ERROR(dispatch_graph->Replay());
      RETURN_IF_ERROR(ev->Record(3 * i + 1));
      RETURN_IF_ERROR(combine_graph->Replay());
      RETURN_IF_ERROR(ev->Record(3 * i + 2));
    }
    RETURN_IF_ERROR(dispatcher->AfterGraphLaunch());
    RETURN_IF_ERROR(end_step());
    RETURN_IF_ERROR(ReadIntervals(*ev, iterations, &first, &second));
    times->dispatch_graph = Median(first);
    times->combine_graph = Median(second);
  }
  dispatched = {};
  dispatcher.reset();

  // The baseline: the dispatch's row bytes, C rows to every rank, as one
  // grouped send/receive of equal sizes.
  ASSIGN_OR_RETURN(Tensor send, backend.Empty(kWireDtype, {world * t, h}));
  RETURN_IF_ERROR(backend.FillDummy(&send, o.seed, 1.0f, /*ones=*/false));
  ASSIGN_OR_RETURN(Tensor recv, backend.Empty(kWireDtype, {world * t, h}));
  const std::vector<int64_t> counts(static_cast<size_t>(world), t);
  const size_t row_bytes = static_cast<size_t>(h) * DataTypeSize(kWireDtype);
  auto alltoall = [&]() {
    return ctx.comm->AllToAllV(send.data(), counts, recv.mutable_data(), counts, row_bytes,
                               backend.stream());
  };
  for (int i = 0; i < kWarmupIterations; ++i) RETURN_IF_ERROR(alltoall());
  RETURN_IF_ERROR(backend.Synchronize());
  // The same event layout with an empty second part.
  for (int i = 0; i < iterations; ++i) {
    RETURN_IF_ERROR(ev->Record(3 * i));
    RETURN_IF_ERROR(alltoall());
    RETURN_IF_ERROR(ev->Record(3 * i + 1));
    RETURN_IF_ERROR(ev->Record(3 * i + 2));
  }
  RETURN_IF_ERROR(backend.Synchronize());
  RETURN_IF_ERROR(ctx.comm->AsyncError());
  RETURN_IF_ERROR(ReadIntervals(*ev, iterations, &first, &second));
  times->alltoall = Median(first);
  times->complete = true;
  return absl::OkStatus();
}

absl::Status SetUpRank(RankContext& ctx) {
  ASSIGN_OR_RETURN(ctx.backend, kernels::CreateBackend({kernels::DeviceType::kCuda, ctx.rank}));
  comm::CommunicatorOptions c;
  c.backend = "nccl";
  c.rank = ctx.rank;
  c.world_size = ctx.group->world;
  c.key_prefix = absl::StrCat("alltoall/w", ctx.group->world, "/");
  c.timeout = kCommTimeout;
  c.cuda_device = ctx.rank;
  ASSIGN_OR_RETURN(ctx.comm, comm::CreateCommunicator(c, ctx.group->rendezvous));
  return absl::OkStatus();
}

void RankMain(int rank, const AllToAllOptions* options, const std::vector<Case>* cases,
              Group* group) {
  RankContext ctx;
  ctx.rank = rank;
  ctx.options = options;
  ctx.group = group;
  absl::Status s = SetUpRank(ctx);
  if (!s.ok()) group->Fail(rank, s);
  group->barrier.arrive_and_wait();
  for (size_t i = 0; i < cases->size() && !group->stop; ++i) {
    s = RunRankCase(ctx, (*cases)[i], &group->results[i][static_cast<size_t>(rank)]);
    if (!s.ok())
      group->Fail(rank, Annotate(s, absl::StrCat("hidden ", (*cases)[i].hidden, " tokens ",
                                                 (*cases)[i].tokens)));
    if (s.ok() && ctx.backend != nullptr) {
      absl::Status released = ReleasePooledMemory(rank);
      if (!released.ok()) group->Fail(rank, released);
    }
    group->barrier.arrive_and_wait();
    if (rank == 0 && !group->stop) {
      PrintCase((*cases)[i], Summarize((*cases)[i], group->world, group->results[i]));
    }
  }
  // The communicator goes before the backend whose stream it was used on.
  ctx.comm.reset();
  ctx.backend.reset();
}

// 2, 4, 8, ... up to `gpus`, and `gpus` itself.
std::vector<int> Worlds(int gpus) {
  std::vector<int> worlds;
  for (int w = 2; w <= gpus; w *= 2) worlds.push_back(w);
  if (!worlds.empty() && worlds.back() != gpus) worlds.push_back(gpus);
  return worlds;
}

void Skip(const std::string& reason, int found, Report& report) {
  Line("alltoall nccl: skipped: %s", reason);
  report.Add({"alltoall_nccl_skipped", reason, std::nullopt, static_cast<double>(found), "GPUs",
              std::nullopt});
}

}  // namespace

absl::Status RunNcclExchangeBench(const AllToAllOptions& o, Report& report) {
  RETURN_IF_ERROR(CheckAllToAllOptions(o));
  ASSIGN_OR_RETURN(int found, CudaDeviceCount());
  if (!comm::NcclBuilt()) {
    Skip("this binary is built without NCCL", found, report);
    return report.Flush();
  }
  const int gpus = o.gpus == 0 ? found : o.gpus;
  if (gpus > found) {
    Skip(absl::StrCat("--gpus ", gpus, " but found ", found, " GPUs"), found, report);
    return report.Flush();
  }
  if (gpus < 2) {
    Skip(absl::StrCat("needs 2 GPUs, found ", found, o.gpus != 0 ? " (--gpus 1)" : ""), found,
         report);
    return report.Flush();
  }
  // NVLink multicast stays off (the project's setting for NCCL groups);
  // a value already in the environment wins.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);

  std::vector<Case> cases;
  for (int64_t h : o.hidden) {
    for (int64_t t : o.tokens) cases.push_back({h, t, false});
    if (o.large_tokens > 0) cases.push_back({h, o.large_tokens, true});
  }
  for (int world : Worlds(gpus)) {
    if (world > o.num_experts) {
      Line("alltoall nccl W %d: skipped, fewer experts (%d) than ranks", world, o.num_experts);
      continue;
    }
    Line(
        "alltoall nccl W %d (cuda:0-%d): E %d top-%d, %s wire, fixed capacity C = tokens per "
        "rank, median of %d (large: %d) iterations, max over ranks; targets: each side <= %.0f "
        "us at 128 tokens, hidden 2048; dispatch busbw >= %.2f x all-to-all at the large size",
        world, world - 1, o.num_experts, o.top_k, DataTypeName(kWireDtype), o.iterations,
        std::min(o.iterations, kLargeIterations), kExchangeTargetUs, kBusBandwidthTarget);
    Group group(world, cases.size());
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) threads.emplace_back(RankMain, r, &o, &cases, &group);
    for (std::thread& th : threads) th.join();
    // Cases every rank finished (the failing case and those after are left out).
    for (size_t i = 0; i < cases.size(); ++i) {
      bool complete = true;
      for (const RankTimes& r : group.results[i]) complete = complete && r.complete;
      if (!complete) break;
      ReportCase(cases[i], world, Summarize(cases[i], world, group.results[i]), report);
    }
    RETURN_IF_ERROR(report.Flush());
    if (!group.first_error.ok()) {
      return Annotate(group.first_error, absl::StrCat("alltoall nccl W ", world));
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::bench_gpu
