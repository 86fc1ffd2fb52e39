#include "tools/bench_gpu/alltoall_bench.h"

#include <algorithm>
#include <bit>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/placement.h"
#include "common/status.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "tools/bench_gpu/reference.h"

namespace epserve::bench_gpu {
namespace {

using kernels::Tensor;

// Most ranks the exchange's pack kernel takes (a token's destinations are a
// 64-bit mask).
constexpr int kMaxRanks = 64;

// The target for the local kernels of one side, in µs (stated for
// 128 tokens, hidden 2048; every row reports its ratio to it).
constexpr double kLocalTargetUs = 10.0;

// The tensors of one simulated exchange: W regions of C slots, the receive
// side fed with the send side's contents.
struct LocalExchange {
  Tensor hidden, topk_ids, topk_weights, expert_to_rank;    // [T,H] [T,k] [T,k] [E]
  Tensor send_rows, send_routes, send_counts, token_slots;  // [W*C,H] [W*C,2k] [W] [T,W]
  Tensor recv_rows, recv_routes, recv_counts;               // as the send side
  Tensor rows, expert_offsets, route_rows;                  // [W*C*k,H] [E+1] [W*C,k]
  Tensor back_rows, out;                                    // [W*C,H] [T,H]
};

// Copies device tensor `src` into `dst` (same byte size) through the host.
absl::Status CopyThroughHost(kernels::Backend& backend, const Tensor& src, Tensor* dst) {
  std::vector<char> host(src.nbytes());
  RETURN_IF_ERROR(backend.CopyToHost(src, host.data(), host.size()));
  return backend.CopyFromHost(host.data(), host.size(), dst);
}

absl::StatusOr<LocalExchange> MakeLocalExchange(kernels::Backend& backend, const AllToAllOptions& o,
                                                int64_t hidden, int world, int64_t tokens,
                                                const std::vector<uint32_t>& placement,
                                                const Routing& routing) {
  const int64_t t = tokens, h = hidden, k = o.top_k, e = o.num_experts, w = world, c = tokens;
  LocalExchange x;
  ASSIGN_OR_RETURN(x.hidden, backend.Empty(DataType::kFloat32, {t, h}));
  RETURN_IF_ERROR(backend.FillDummy(&x.hidden, o.seed + static_cast<uint64_t>(h), 1.0f,
                                    /*ones=*/false));
  ASSIGN_OR_RETURN(x.topk_ids, backend.Empty(DataType::kInt32, {t, k}));
  RETURN_IF_ERROR(
      backend.CopyFromHost(routing.ids.data(), routing.ids.size() * sizeof(int32_t), &x.topk_ids));
  ASSIGN_OR_RETURN(x.topk_weights, backend.Empty(DataType::kFloat32, {t, k}));
  RETURN_IF_ERROR(backend.CopyFromHost(routing.weights.data(),
                                       routing.weights.size() * sizeof(float), &x.topk_weights));
  const std::vector<int32_t> owners(placement.begin(), placement.end());
  ASSIGN_OR_RETURN(x.expert_to_rank, backend.Empty(DataType::kInt32, {e}));
  RETURN_IF_ERROR(
      backend.CopyFromHost(owners.data(), owners.size() * sizeof(int32_t), &x.expert_to_rank));
  for (Tensor* rows : {&x.send_rows, &x.recv_rows, &x.back_rows}) {
    ASSIGN_OR_RETURN(*rows, backend.Empty(kWireDtype, {w * c, h}));
  }
  for (Tensor* routes : {&x.send_routes, &x.recv_routes}) {
    ASSIGN_OR_RETURN(*routes, backend.Empty(DataType::kInt32, {w * c, 2 * k}));
  }
  for (Tensor* counts : {&x.send_counts, &x.recv_counts}) {
    ASSIGN_OR_RETURN(*counts, backend.Empty(DataType::kInt32, {w}));
  }
  ASSIGN_OR_RETURN(x.token_slots, backend.Empty(DataType::kInt32, {t, w}));
  // As many rows as SlotTokenDispatcher reserves for W*C received slots.
  ASSIGN_OR_RETURN(x.rows, backend.Empty(DataType::kFloat32, {w * c * k, h}));
  ASSIGN_OR_RETURN(x.expert_offsets, backend.Empty(DataType::kInt32, {e + 1}));
  ASSIGN_OR_RETURN(x.route_rows, backend.Empty(DataType::kInt32, {w * c, k}));
  ASSIGN_OR_RETURN(x.out, backend.Empty(DataType::kFloat32, {t, h}));
  return x;
}

absl::Status DispatchSide(kernels::Backend& backend, LocalExchange& x) {
  RETURN_IF_ERROR(backend.EpDispatchPack(x.hidden, x.topk_ids, x.topk_weights, x.expert_to_rank,
                                         &x.send_rows, &x.send_routes, &x.send_counts,
                                         &x.token_slots));
  return backend.EpDispatchUnpack(x.recv_rows, x.recv_routes, x.recv_counts, &x.rows,
                                  &x.expert_offsets, &x.route_rows);
}

// The dispatched rows stand in for the experts' output, as in the NCCL part.
absl::Status CombineSide(kernels::Backend& backend, LocalExchange& x) {
  RETURN_IF_ERROR(
      backend.EpCombinePack(x.rows, x.recv_routes, x.recv_counts, x.route_rows, &x.back_rows));
  return backend.EpCombineUnpack(x.back_rows, x.token_slots, &x.out);
}

struct SideTimes {
  double eager_s = 0;
  std::optional<double> graph_s;  // unset: the backend has no graphs
};

absl::StatusOr<SideTimes> TimeSide(kernels::Backend& backend, int device, int iterations,
                                   const std::function<absl::Status()>& body) {
  SideTimes out;
  ASSIGN_OR_RETURN(out.eager_s, MeanOnStream(device, backend.stream(), iterations, body));
  if (backend.SupportsGraphs()) {
    ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend::Graph> graph, backend.Capture(body));
    ASSIGN_OR_RETURN(out.graph_s, MeanOnStream(device, backend.stream(), iterations,
                                               [&]() { return graph->Replay(); }));
  }
  return out;
}

// Row and route bytes the two kernels of one side read and write (counts,
// offsets and slot tables left out). `slots`: the filled slots; the picks
// (T*k) are the rows grouped by expert.
struct SideBytes {
  double dispatch = 0, combine = 0;
};

SideBytes LocalBytes(int64_t tokens, int64_t hidden, int top_k, int64_t slots) {
  const double t = static_cast<double>(tokens), h = static_cast<double>(hidden);
  const double picks = t * top_k, s = static_cast<double>(slots);
  const double wire_row = h * static_cast<double>(DataTypeSize(kWireDtype));
  const double route = 2.0 * top_k * sizeof(int32_t);
  SideBytes b;
  // Pack: hidden read, slots written; unpack: slots read, picks written.
  b.dispatch = t * h * 4 + s * (wire_row + route) + s * (wire_row + route) + picks * h * 4;
  // Pack: picks read, routes read, slots written; unpack: slots read, out written.
  b.combine = picks * h * 4 + s * route + s * wire_row + s * wire_row + t * h * 4;
  return b;
}

void ReportSide(const char* side, const std::string& config, int64_t tokens, const SideTimes& times,
                double bytes, const AllToAllOptions& o, Report& report) {
  const double eager_us = times.eager_s * 1e6;
  report.Add({absl::StrCat("ep_local_", side, "_us"), absl::StrCat(config, " eager"), tokens,
              eager_us, "us", eager_us / kLocalTargetUs});
  if (!times.graph_s) return;
  const double graph_us = *times.graph_s * 1e6;
  report.Add({absl::StrCat("ep_local_", side, "_us"), absl::StrCat(config, " graph"), tokens,
              graph_us, "us", graph_us / kLocalTargetUs});
  const double gb_per_s = bytes / *times.graph_s / 1e9;
  std::optional<double> ratio;
  if (o.bandwidth_gb_per_s) ratio = gb_per_s / *o.bandwidth_gb_per_s;
  report.Add({absl::StrCat("ep_local_", side, "_gb_per_s"), absl::StrCat(config, " graph"), tokens,
              gb_per_s, "GB/s", ratio});
}

std::string SideLine(const char* side, const SideTimes& times, double bytes,
                     const AllToAllOptions& o) {
  std::string line = absl::StrFormat("%s eager %7.1f us", side, times.eager_s * 1e6);
  if (times.graph_s) {
    const double gb_per_s = bytes / *times.graph_s / 1e9;
    absl::StrAppend(&line,
                    absl::StrFormat(" graph %7.1f us (%.2f of %.0f) %7.2f MB %6.0f GB/s",
                                    *times.graph_s * 1e6, *times.graph_s * 1e6 / kLocalTargetUs,
                                    kLocalTargetUs, bytes / 1e6, gb_per_s));
    if (o.bandwidth_gb_per_s) {
      absl::StrAppend(&line, absl::StrFormat(" (%.2f x copy)", gb_per_s / *o.bandwidth_gb_per_s));
    }
  }
  return line;
}

}  // namespace

Routing RandomRouting(int num_experts, int top_k, int64_t tokens, std::mt19937_64& gen) {
  Routing r;
  r.ids.reserve(static_cast<size_t>(tokens * top_k));
  r.weights.reserve(static_cast<size_t>(tokens * top_k));
  std::vector<int32_t> ids(static_cast<size_t>(num_experts));
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(ids.begin(), ids.end(), 0);
    float sum = 0;
    // Partial Fisher-Yates: the first top_k entries are a uniform k-subset.
    for (int j = 0; j < top_k; ++j) {
      std::uniform_int_distribution<int> pick(j, num_experts - 1);
      std::swap(ids[static_cast<size_t>(j)], ids[static_cast<size_t>(pick(gen))]);
      r.ids.push_back(ids[static_cast<size_t>(j)]);
      r.weights.push_back(weight(gen));
      sum += r.weights.back();
    }
    for (int j = 0; j < top_k; ++j) r.weights[r.weights.size() - 1 - j] /= sum;
  }
  return r;
}

int64_t CountSlots(const Routing& routing, int top_k, const std::vector<uint32_t>& expert_to_rank) {
  int64_t slots = 0;
  const size_t tokens = routing.ids.size() / static_cast<size_t>(top_k);
  for (size_t t = 0; t < tokens; ++t) {
    uint64_t ranks = 0;  // at most 64 ranks (the pack kernel's limit)
    for (int j = 0; j < top_k; ++j) {
      ranks |= uint64_t{1} << expert_to_rank[static_cast<size_t>(
                   routing.ids[t * static_cast<size_t>(top_k) + static_cast<size_t>(j)])];
    }
    slots += std::popcount(ranks);
  }
  return slots;
}

absl::Status CheckAllToAllOptions(const AllToAllOptions& o) {
  auto bad = [](const std::string& what, const std::string& expected, const std::string& found) {
    return absl::InvalidArgumentError(
        absl::StrCat("alltoall: ", what, ": expected ", expected, ", found ", found));
  };
  if (o.num_experts < 1) return bad("--experts", "at least 1", absl::StrCat(o.num_experts));
  if (o.top_k < 1 || o.top_k > o.num_experts) {
    return bad("--topk", absl::StrCat("in [1, ", o.num_experts, "] (the experts)"),
               absl::StrCat(o.top_k));
  }
  if (o.hidden.empty()) return bad("--hidden", "at least one size", "none");
  for (int64_t h : o.hidden) {
    if (h < 1) return bad("--hidden", "sizes of at least 1", absl::StrCat(h));
  }
  if (o.tokens.empty()) return bad("--tokens", "at least one count", "none");
  for (int64_t t : o.tokens) {
    if (t < 1) return bad("--tokens", "counts of at least 1", absl::StrCat(t));
  }
  for (int w : o.simulated_ranks) {
    if (w < 1 || w > kMaxRanks) {
      return bad("simulated ranks", absl::StrCat("in [1, ", kMaxRanks, "]"), absl::StrCat(w));
    }
  }
  if (o.gpus < 0 || o.gpus > kMaxRanks) {
    return bad("--gpus", absl::StrCat("0 (all) or up to ", kMaxRanks), absl::StrCat(o.gpus));
  }
  if (o.large_tokens < 0) {
    return bad("--large_tokens", "0 (none) or more", absl::StrCat(o.large_tokens));
  }
  if (o.iterations < 1) return bad("--iterations", "at least 1", absl::StrCat(o.iterations));
  return absl::OkStatus();
}

absl::Status RunLocalExchangeBench(const AllToAllOptions& o, Report& report) {
  RETURN_IF_ERROR(CheckAllToAllOptions(o));
  ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend> backend, kernels::CreateBackend(o.device));
  const int device = o.device.ordinal;
  Line(
      "alltoall local kernels: E %d top-%d, %s wire, C = tokens slots per simulated rank, "
      "receive side = a copy of the send side; mean of %d calls; target %.0f us per side at "
      "128 tokens, hidden 2048",
      o.num_experts, o.top_k, DataTypeName(kWireDtype), o.iterations, kLocalTargetUs);
  std::mt19937_64 gen(o.seed);
  for (int64_t hidden : o.hidden) {
    for (int world : o.simulated_ranks) {
      if (world > o.num_experts) {
        Line("  hidden %d W %d: skipped, fewer experts (%d) than ranks", hidden, world,
             o.num_experts);
        continue;
      }
      ASSIGN_OR_RETURN(std::vector<uint32_t> placement,
                       PlaceExperts(static_cast<uint32_t>(o.num_experts),
                                    static_cast<uint32_t>(world), PlacementStrategy::kLinear));
      for (int64_t tokens : o.tokens) {
        const Routing routing = RandomRouting(o.num_experts, o.top_k, tokens, gen);
        const int64_t slots = CountSlots(routing, o.top_k, placement);
        ASSIGN_OR_RETURN(LocalExchange x,
                         MakeLocalExchange(*backend, o, hidden, world, tokens, placement, routing));
        // One pack fills the send side; the receive side gets its contents.
        RETURN_IF_ERROR(backend->EpDispatchPack(x.hidden, x.topk_ids, x.topk_weights,
                                                x.expert_to_rank, &x.send_rows, &x.send_routes,
                                                &x.send_counts, &x.token_slots));
        RETURN_IF_ERROR(CopyThroughHost(*backend, x.send_rows, &x.recv_rows));
        RETURN_IF_ERROR(CopyThroughHost(*backend, x.send_routes, &x.recv_routes));
        RETURN_IF_ERROR(CopyThroughHost(*backend, x.send_counts, &x.recv_counts));
        std::vector<int32_t> counts(static_cast<size_t>(world));
        RETURN_IF_ERROR(
            backend->CopyToHost(x.send_counts, counts.data(), counts.size() * sizeof(int32_t)));
        if (std::accumulate(counts.begin(), counts.end(), int64_t{0}) != slots) {
          return absl::InternalError(absl::StrCat(
              "alltoall local: hidden ", hidden, " W ", world, " tokens ", tokens,
              ": EpDispatchPack filled ", std::accumulate(counts.begin(), counts.end(), int64_t{0}),
              " slots, the routing has ", slots));
        }
        ASSIGN_OR_RETURN(SideTimes dispatch, TimeSide(*backend, device, o.iterations,
                                                      [&]() { return DispatchSide(*backend, x); }));
        ASSIGN_OR_RETURN(SideTimes combine, TimeSide(*backend, device, o.iterations,
                                                     [&]() { return CombineSide(*backend, x); }));
        // The send side alone (permute into rank-major slots + pack).
        ASSIGN_OR_RETURN(SideTimes pack, TimeSide(*backend, device, o.iterations, [&]() {
                           return backend->EpDispatchPack(
                               x.hidden, x.topk_ids, x.topk_weights, x.expert_to_rank, &x.send_rows,
                               &x.send_routes, &x.send_counts, &x.token_slots);
                         }));
        // Content errors the kernels flagged (counts, ids, slots) surface here.
        std::vector<int32_t> offsets(static_cast<size_t>(o.num_experts) + 1);
        RETURN_IF_ERROR(backend->CopyToHost(x.expert_offsets, offsets.data(),
                                            offsets.size() * sizeof(int32_t)));
        if (offsets.back() != tokens * o.top_k) {
          return absl::InternalError(absl::StrCat(
              "alltoall local: hidden ", hidden, " W ", world, " tokens ", tokens,
              ": unpack produced ", offsets.back(), " rows, expected ", tokens * o.top_k));
        }
        const SideBytes bytes = LocalBytes(tokens, hidden, o.top_k, slots);
        Line("  hidden %4d W %d tokens %4d slots %5d: %s (pack %.1f us) | %s", hidden, world,
             tokens, slots, SideLine("dispatch", dispatch, bytes.dispatch, o),
             pack.graph_s.value_or(pack.eager_s) * 1e6,
             SideLine("combine", combine, bytes.combine, o));
        const std::string config = absl::StrCat("h", hidden, " w", world);
        ReportSide("dispatch", config, tokens, dispatch, bytes.dispatch, o, report);
        ReportSide("combine", config, tokens, combine, bytes.combine, o, report);
        report.Add({"ep_local_pack_us", absl::StrCat(config, pack.graph_s ? " graph" : " eager"),
                    tokens, pack.graph_s.value_or(pack.eager_s) * 1e6, "us",
                    pack.graph_s.value_or(pack.eager_s) * 1e6 / kLocalTargetUs});
      }
      RETURN_IF_ERROR(report.Flush());
    }
  }
  RETURN_IF_ERROR(backend->Synchronize());
  backend.reset();
  return ReleasePooledMemory(device);
}

}  // namespace epserve::bench_gpu
