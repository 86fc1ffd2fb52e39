// The CUDA backend's expert-parallel exchange ops (EpDispatchPack,
// EpDispatchUnpack, EpCombinePack, EpCombineUnpack) against the CPU reference
// backend, on random routings: every rank's experts picked, all tokens to one
// rank, ranks holding no expert, top-k 1 / 2 / 8 (several picks on one rank),
// W = 1, 2, 3, 4, 8 ranks, T = 0, 1, 5, 128, 600 tokens, H = 64 and 2048,
// float32 and bfloat16 wire rows. Then the whole exchange chain for W ranks in
// one process (the exchange is CopyRows between the ranks' buffers, on the
// device), the chain captured in a CUDA graph, and the content errors the
// device reports at the next CopyToHost.
//
// Tolerances: none. EpDispatchPack, EpCombinePack and EpCombineUnpack are
// byte-equal to the CPU (the same slot plan; float32 sums in the same order,
// fmaf / std::fma in EpCombinePack). EpDispatchUnpack: expert_offsets equal
// and every route entry's row byte-equal (the order of rows within an expert
// is unspecified). The chain's outputs are byte-equal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels::testing {
namespace {

using CudaEpExchangeTest = GpuCpuTest;
using Bytes = std::vector<uint8_t>;

constexpr int64_t kExperts = 128;
constexpr uint8_t kSentinel = 0xA5;  // bytes of slots / rows an op must leave alone

// ---- routings ----

enum class Placement {
  kBlocks,      // expert e on rank e * W / E: several picks of a token on one rank
  kOneRank,     // blocks, every pick among the last rank's experts
  kEmptyRanks,  // experts only on even ranks
  kRoundRobin,  // expert e on rank e % W
};

struct Routing {
  std::vector<int32_t> ids;             // [T, k], k distinct experts per token
  std::vector<float> weights;           // [T, k]
  std::vector<int32_t> expert_to_rank;  // [E]
};

Routing MakeRouting(int64_t t, int64_t k, int64_t w, Placement placement, uint32_t seed) {
  Routing r;
  r.expert_to_rank.resize(kExperts);
  for (int64_t e = 0; e < kExperts; ++e) {
    switch (placement) {
      case Placement::kBlocks:
      case Placement::kOneRank:
        r.expert_to_rank[e] = static_cast<int32_t>(e * w / kExperts);
        break;
      case Placement::kEmptyRanks:
        r.expert_to_rank[e] = static_cast<int32_t>(2 * (e % ((w + 1) / 2)));
        break;
      case Placement::kRoundRobin:
        r.expert_to_rank[e] = static_cast<int32_t>(e % w);
        break;
    }
  }
  std::vector<int32_t> pool;
  for (int64_t e = 0; e < kExperts; ++e) {
    if (placement != Placement::kOneRank || r.expert_to_rank[e] == w - 1) {
      pool.push_back(static_cast<int32_t>(e));
    }
  }
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> weight(0.0f, 1.0f);
  for (int64_t i = 0; i < t; ++i) {
    std::shuffle(pool.begin(), pool.end(), gen);
    for (int64_t j = 0; j < k; ++j) {
      r.ids.push_back(pool[static_cast<size_t>(j)]);
      r.weights.push_back(weight(gen));
    }
  }
  return r;
}

// ---- backend-neutral helpers (the CPU backend's tensors are host tensors) ----

absl::StatusOr<Tensor> Filled(Backend& b, DataType dtype, std::vector<int64_t> shape,
                              uint8_t byte) {
  ASSIGN_OR_RETURN(Tensor t, b.Empty(dtype, std::move(shape)));
  const Bytes fill(t.nbytes(), byte);
  RETURN_IF_ERROR(b.CopyFromHost(fill.data(), fill.size(), &t));
  return t;
}

absl::StatusOr<Bytes> Read(Backend& b, const Tensor& t) {
  Bytes out(t.nbytes());
  RETURN_IF_ERROR(b.CopyToHost(t, out.data(), out.size()));
  return out;
}

template <typename T>
std::vector<T> As(const Bytes& bytes) {
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

// `t` seen as float32 [rows, cols] (bit copies of int32 data through CopyRows).
Tensor AsF32Rows(Tensor t, int64_t rows, int64_t cols) {
  t.dtype = DataType::kFloat32;
  t.shape = {rows, cols};
  return t;
}

struct PackResult {
  Tensor rows, routes, counts, slots;  // on the backend
  Bytes rows_bytes, routes_bytes;
  std::vector<int32_t> counts_host, slots_host;
};

absl::StatusOr<PackResult> RunPack(Backend& b, const Tensor& hidden, const Routing& routing,
                                   int64_t k, int64_t w, int64_t c, DataType wire) {
  const int64_t t = hidden.shape[0], h = hidden.shape[1];
  PackResult p;
  ASSIGN_OR_RETURN(Tensor x, b.ToDevice(hidden));
  ASSIGN_OR_RETURN(Tensor ids, b.ToDevice(MakeI32({t, k}, routing.ids)));
  ASSIGN_OR_RETURN(Tensor weights, b.ToDevice(MakeF32({t, k}, routing.weights)));
  ASSIGN_OR_RETURN(Tensor e2r, b.ToDevice(MakeI32({kExperts}, routing.expert_to_rank)));
  ASSIGN_OR_RETURN(p.rows, Filled(b, wire, {w * c, h}, kSentinel));
  ASSIGN_OR_RETURN(p.routes, Filled(b, DataType::kInt32, {w * c, 2 * k}, kSentinel));
  ASSIGN_OR_RETURN(p.counts, Filled(b, DataType::kInt32, {w}, kSentinel));
  ASSIGN_OR_RETURN(p.slots, Filled(b, DataType::kInt32, {t, w}, kSentinel));
  RETURN_IF_ERROR(b.EpDispatchPack(x, ids, weights, e2r, &p.rows, &p.routes, &p.counts, &p.slots));
  ASSIGN_OR_RETURN(p.rows_bytes, Read(b, p.rows));
  ASSIGN_OR_RETURN(p.routes_bytes, Read(b, p.routes));
  ASSIGN_OR_RETURN(Bytes counts, Read(b, p.counts));
  ASSIGN_OR_RETURN(Bytes slots, Read(b, p.slots));
  p.counts_host = As<int32_t>(counts);
  p.slots_host = As<int32_t>(slots);
  return p;
}

struct UnpackResult {
  Tensor rows, offsets, route_rows;
  Bytes rows_bytes;
  std::vector<int32_t> offsets_host, route_rows_host;
};

absl::StatusOr<UnpackResult> RunUnpack(Backend& b, const Tensor& recv_rows,
                                       const Tensor& recv_routes, const Tensor& recv_counts,
                                       int64_t m) {
  const int64_t slots = recv_rows.shape[0], h = recv_rows.shape[1];
  const int64_t k = recv_routes.shape[1] / 2;
  UnpackResult u;
  ASSIGN_OR_RETURN(u.rows, Filled(b, DataType::kFloat32, {m, h}, kSentinel));
  ASSIGN_OR_RETURN(u.offsets, Filled(b, DataType::kInt32, {kExperts + 1}, kSentinel));
  ASSIGN_OR_RETURN(u.route_rows, Filled(b, DataType::kInt32, {slots, k}, kSentinel));
  RETURN_IF_ERROR(
      b.EpDispatchUnpack(recv_rows, recv_routes, recv_counts, &u.rows, &u.offsets, &u.route_rows));
  ASSIGN_OR_RETURN(u.rows_bytes, Read(b, u.rows));
  ASSIGN_OR_RETURN(Bytes offsets, Read(b, u.offsets));
  ASSIGN_OR_RETURN(Bytes route_rows, Read(b, u.route_rows));
  u.offsets_host = As<int32_t>(offsets);
  u.route_rows_host = As<int32_t>(route_rows);
  return u;
}

// The GPU's unpack against the CPU's: offsets equal; each route entry has a
// row on both or neither, inside its expert's range on the GPU, with the same
// bytes; the GPU's rows are distinct; rows past offsets[E] keep the sentinel.
void ExpectSameUnpack(const UnpackResult& gpu, const UnpackResult& cpu,
                      const std::vector<int32_t>& routes, int64_t k, int64_t h) {
  ASSERT_EQ(gpu.offsets_host, cpu.offsets_host);
  ASSERT_EQ(gpu.route_rows_host.size(), cpu.route_rows_host.size());
  const size_t row_bytes = static_cast<size_t>(h) * 4;
  std::vector<bool> used(gpu.rows_bytes.size() / std::max<size_t>(row_bytes, 1), false);
  for (size_t a = 0; a < gpu.route_rows_host.size(); ++a) {
    const int32_t g = gpu.route_rows_host[a], c = cpu.route_rows_host[a];
    ASSERT_EQ(g >= 0, c >= 0) << "route entry " << a;
    if (g < 0) {
      ASSERT_EQ(g, -1) << "route entry " << a;
      continue;
    }
    const int64_t slot = static_cast<int64_t>(a) / k, j = static_cast<int64_t>(a) % k;
    const int32_t e = routes[static_cast<size_t>(slot * 2 * k + j)];
    ASSERT_GE(g, gpu.offsets_host[e]) << "route entry " << a << " expert " << e;
    ASSERT_LT(g, gpu.offsets_host[e + 1]) << "route entry " << a << " expert " << e;
    ASSERT_FALSE(used[g]) << "row " << g << " taken twice";
    used[g] = true;
    ASSERT_EQ(0, std::memcmp(gpu.rows_bytes.data() + g * row_bytes,
                             cpu.rows_bytes.data() + c * row_bytes, row_bytes))
        << "route entry " << a << ": GPU row " << g << " vs CPU row " << c;
  }
  const size_t used_bytes = static_cast<size_t>(gpu.offsets_host.back()) * row_bytes;
  EXPECT_TRUE(std::all_of(gpu.rows_bytes.begin() + used_bytes, gpu.rows_bytes.end(), [](uint8_t v) {
    return v == kSentinel;
  })) << "rows past expert_offsets[E] were written";
}

std::string Describe(int64_t w, int64_t t, int64_t k, int64_t h, DataType wire, int placement) {
  return absl::StrCat("W=", w, " T=", t, " k=", k, " H=", h, " wire=", DataTypeName(wire),
                      " placement=", placement);
}

constexpr Placement kPlacements[] = {Placement::kBlocks, Placement::kOneRank,
                                     Placement::kEmptyRanks, Placement::kRoundRobin};

// ---- EpDispatchPack ----

TEST_F(CudaEpExchangeTest, DispatchPackIsByteEqualToCpu) {
  int round = 0;
  for (int64_t w : {1, 2, 3, 4, 8}) {
    for (int64_t t : {0, 1, 5, 128, 600}) {
      for (int64_t k : {1, 2, 8}) {
        for (DataType wire : {DataType::kFloat32, DataType::kBFloat16}) {
          ++round;
          const int64_t h = round % 2 == 0 ? 64 : 2048;
          const int placement = round % 4;
          SCOPED_TRACE(Describe(w, t, k, h, wire, placement));
          const int64_t c = t + 3;  // slots past the counts keep their bytes
          const Routing routing = MakeRouting(t, k, w, kPlacements[placement], 1000 + round);
          const Tensor hidden = MakeF32({t, h}, Random(t * h, 2000 + round));
          auto cpu = RunPack(*cpu_, hidden, routing, k, w, c, wire);
          ASSERT_TRUE(cpu.ok()) << cpu.status();
          auto gpu = RunPack(*gpu_, hidden, routing, k, w, c, wire);
          ASSERT_TRUE(gpu.ok()) << gpu.status();
          ASSERT_EQ(gpu->counts_host, cpu->counts_host);
          ASSERT_EQ(gpu->slots_host, cpu->slots_host);
          ASSERT_TRUE(gpu->routes_bytes == cpu->routes_bytes);
          ASSERT_TRUE(gpu->rows_bytes == cpu->rows_bytes);
          if (kPlacements[placement] == Placement::kOneRank && t > 0) {
            EXPECT_EQ(gpu->counts_host[w - 1], static_cast<int32_t>(t));
          }
        }
      }
    }
  }
}

// ---- EpDispatchUnpack, EpCombinePack ----

// Receive buffers as a peer would fill them: counts in [0, C] (0 and C
// included), valid slots with each entry an expert (or -1 about a third of
// the time), slots past the counts garbage the ops must not read.
struct RecvBuffers {
  Tensor rows, routes, counts;  // host
  std::vector<int32_t> routes_host;
  int64_t num_rows = 0;  // valid route entries with an expert
};

RecvBuffers MakeRecv(int64_t w, int64_t c, int64_t k, int64_t h, DataType wire, uint32_t seed) {
  std::mt19937 gen(seed);
  RecvBuffers r;
  std::vector<int32_t> counts(static_cast<size_t>(w));
  for (int64_t q = 0; q < w; ++q) {
    // The last rank fills its region, rank 0 sends nothing (W > 1).
    counts[q] = q == w - 1 ? static_cast<int32_t>(c)
                : q == 0   ? 0
                           : static_cast<int32_t>(gen() % (c + 1));
  }
  std::uniform_real_distribution<float> weight(0.0f, 1.0f);
  r.routes_host.assign(static_cast<size_t>(w * c * 2 * k), 0);
  for (int64_t q = 0; q < w; ++q) {
    for (int64_t i = 0; i < c; ++i) {
      int32_t* route = r.routes_host.data() + (q * c + i) * 2 * k;
      for (int64_t j = 0; j < k; ++j) {
        if (i >= counts[q]) {
          route[j] = 1000000 + static_cast<int32_t>(j);  // never read
        } else {
          route[j] = gen() % 3 == 0 ? -1 : static_cast<int32_t>(gen() % kExperts);
          r.num_rows += route[j] >= 0;
        }
        const float wj = weight(gen);
        std::memcpy(&route[k + j], &wj, 4);
      }
    }
  }
  r.rows = MakeTyped(wire, {w * c, h}, Random(w * c * h, seed + 1));
  r.routes = MakeI32({w * c, 2 * k}, r.routes_host);
  r.counts = MakeI32({w}, counts);
  return r;
}

TEST_F(CudaEpExchangeTest, DispatchUnpackAndCombinePackMatchCpu) {
  int round = 0;
  for (int64_t w : {1, 2, 3, 4, 8}) {
    for (int64_t c : {1, 5, 128, 600}) {
      for (int64_t k : {1, 2, 8}) {
        for (DataType wire : {DataType::kFloat32, DataType::kBFloat16}) {
          ++round;
          const int64_t h = round % 2 == 0 ? 64 : 2048;
          if (h == 2048 && w * c > 1200) continue;  // keep the buffers small
          SCOPED_TRACE(
              absl::StrCat("W=", w, " C=", c, " k=", k, " H=", h, " wire=", DataTypeName(wire)));
          const RecvBuffers recv = MakeRecv(w, c, k, h, wire, 3000 + round);
          const int64_t m = recv.num_rows + 7;  // rows past offsets[E] keep their bytes
          auto cpu = RunUnpack(*cpu_, recv.rows, recv.routes, recv.counts, m);
          ASSERT_TRUE(cpu.ok()) << cpu.status();
          auto gpu = RunUnpack(*gpu_, Up(recv.rows), Up(recv.routes), Up(recv.counts), m);
          ASSERT_TRUE(gpu.ok()) << gpu.status();
          ASSERT_EQ(cpu->offsets_host.back(), recv.num_rows);
          ExpectSameUnpack(*gpu, *cpu, recv.routes_host, k, h);
          if (HasFatalFailure()) return;

          // EpCombinePack on the CPU's route_rows: the same bytes.
          const Tensor expert_out = MakeF32({m, h}, Random(m * h, 4000 + round));
          auto back_cpu = Filled(*cpu_, wire, {w * c, h}, kSentinel);
          auto back_gpu = Filled(*gpu_, wire, {w * c, h}, kSentinel);
          ASSERT_TRUE(back_cpu.ok() && back_gpu.ok());
          ASSERT_TRUE(
              cpu_->EpCombinePack(expert_out, recv.routes, recv.counts, cpu->route_rows, &*back_cpu)
                  .ok());
          absl::Status s = gpu_->EpCombinePack(Up(expert_out), Up(recv.routes), Up(recv.counts),
                                               Up(cpu->route_rows), &*back_gpu);
          ASSERT_TRUE(s.ok()) << s;
          auto bytes_cpu = Read(*cpu_, *back_cpu);
          auto bytes_gpu = Read(*gpu_, *back_gpu);
          ASSERT_TRUE(bytes_cpu.ok() && bytes_gpu.ok());
          ASSERT_TRUE(*bytes_gpu == *bytes_cpu);
        }
      }
    }
  }
}

// ---- EpCombineUnpack ----

TEST_F(CudaEpExchangeTest, CombineUnpackIsByteEqualToCpu) {
  int round = 0;
  for (int64_t w : {1, 2, 3, 4, 8}) {
    for (int64_t t : {0, 1, 5, 128, 600}) {
      for (DataType wire : {DataType::kFloat32, DataType::kBFloat16}) {
        ++round;
        const int64_t h = round % 2 == 0 ? 64 : 2048, k = round % 3 == 0 ? 1 : 8;
        const int placement = round % 4;
        SCOPED_TRACE(Describe(w, t, k, h, wire, placement));
        const int64_t c = t + 2;
        // token_slots of a real plan (the CPU's), returned rows random.
        const Routing routing = MakeRouting(t, k, w, kPlacements[placement], 5000 + round);
        auto plan =
            RunPack(*cpu_, MakeF32({t, h}, Random(t * h, 5100 + round)), routing, k, w, c, wire);
        ASSERT_TRUE(plan.ok()) << plan.status();
        const Tensor returned = MakeTyped(wire, {w * c, h}, Random(w * c * h, 5200 + round));
        Tensor out_cpu = Zeros({t, h});
        ASSERT_TRUE(cpu_->EpCombineUnpack(returned, plan->slots, &out_cpu).ok());
        auto out_gpu = Filled(*gpu_, DataType::kFloat32, {t, h}, kSentinel);
        ASSERT_TRUE(out_gpu.ok());
        absl::Status s = gpu_->EpCombineUnpack(Up(returned), Up(plan->slots), &*out_gpu);
        ASSERT_TRUE(s.ok()) << s;
        EXPECT_EQ(Down(*out_gpu), ToVector(out_cpu));
      }
    }
  }
}

// ---- the whole chain, W ranks in one process ----

// Region `src_region` of every rank's `src` tensor goes to region `r` (the
// sender) of rank `src_region`'s `dst`: dst[q] rows [r*C, (r+1)*C) = src[r]
// rows [q*C, (q+1)*C). Rows are moved with CopyRows on the backend.
absl::Status Exchange(Backend& b, const std::vector<Tensor>& src, std::vector<Tensor>& dst,
                      int64_t region_rows) {
  const int64_t w = static_cast<int64_t>(src.size());
  for (int64_t r = 0; r < w; ++r) {
    for (int64_t q = 0; q < w; ++q) {
      ASSIGN_OR_RETURN(Tensor blocks,
                       b.ToDevice(MakeI32({1, 3}, {static_cast<int32_t>(q * region_rows),
                                                   static_cast<int32_t>(r * region_rows),
                                                   static_cast<int32_t>(region_rows)})));
      RETURN_IF_ERROR(b.CopyRows(src[r], blocks, &dst[q]));
    }
  }
  return absl::OkStatus();
}

struct ChainResult {
  std::vector<std::vector<int32_t>> counts, offsets;
  std::vector<Bytes> out;
};

// pack -> exchange -> unpack -> expert e's output row = (e + 1) * row ->
// combine pack -> exchange back -> combine unpack, for every rank.
absl::StatusOr<ChainResult> RunChain(Backend& b, const std::vector<Tensor>& hidden,
                                     const std::vector<Routing>& routing, int64_t k, int64_t c,
                                     DataType wire) {
  const int64_t w = static_cast<int64_t>(hidden.size()), h = hidden[0].shape[1];
  const int64_t m = w * c * k;  // rows sized by capacity
  std::vector<PackResult> packs;
  for (int64_t r = 0; r < w; ++r) {
    ASSIGN_OR_RETURN(PackResult p, RunPack(b, hidden[r], routing[r], k, w, c, wire));
    packs.push_back(std::move(p));
  }
  std::vector<Tensor> send_rows, send_routes, send_counts, recv_rows, recv_routes, recv_counts;
  for (int64_t r = 0; r < w; ++r) {
    send_rows.push_back(packs[r].rows);
    send_routes.push_back(AsF32Rows(packs[r].routes, w * c, 2 * k));
    send_counts.push_back(AsF32Rows(packs[r].counts, w, 1));
    ASSIGN_OR_RETURN(Tensor rows, b.Empty(wire, {w * c, h}));
    ASSIGN_OR_RETURN(Tensor routes, b.Empty(DataType::kInt32, {w * c, 2 * k}));
    ASSIGN_OR_RETURN(Tensor counts, b.Empty(DataType::kInt32, {w}));
    recv_rows.push_back(rows);
    recv_routes.push_back(AsF32Rows(routes, w * c, 2 * k));
    recv_counts.push_back(AsF32Rows(counts, w, 1));
  }
  RETURN_IF_ERROR(Exchange(b, send_rows, recv_rows, c));
  RETURN_IF_ERROR(Exchange(b, send_routes, recv_routes, c));
  RETURN_IF_ERROR(Exchange(b, send_counts, recv_counts, 1));

  ChainResult result;
  std::vector<Tensor> back_rows, returned;
  for (int64_t q = 0; q < w; ++q) {
    Tensor routes = recv_routes[q], counts = recv_counts[q];
    routes.dtype = counts.dtype = DataType::kInt32;
    counts.shape = {w};
    ASSIGN_OR_RETURN(UnpackResult u, RunUnpack(b, recv_rows[q], routes, counts, m));
    // The fake experts, on the host: row i of expert e times (e + 1).
    std::vector<float> out = As<float>(u.rows_bytes);
    for (int64_t e = 0; e < kExperts; ++e) {
      for (int64_t i = u.offsets_host[e] * h; i < u.offsets_host[e + 1] * h; ++i) {
        out[i] *= static_cast<float>(e + 1);
      }
    }
    ASSIGN_OR_RETURN(Tensor expert_out, b.ToDevice(MakeF32({m, h}, out)));
    ASSIGN_OR_RETURN(Tensor back, b.Empty(wire, {w * c, h}));
    RETURN_IF_ERROR(b.EpCombinePack(expert_out, routes, counts, u.route_rows, &back));
    back_rows.push_back(back);
    ASSIGN_OR_RETURN(Tensor ret, b.Empty(wire, {w * c, h}));
    returned.push_back(ret);
    result.offsets.push_back(u.offsets_host);
  }
  RETURN_IF_ERROR(Exchange(b, back_rows, returned, c));
  for (int64_t r = 0; r < w; ++r) {
    ASSIGN_OR_RETURN(Tensor out, b.Empty(DataType::kFloat32, {hidden[r].shape[0], h}));
    RETURN_IF_ERROR(b.EpCombineUnpack(returned[r], packs[r].slots, &out));
    ASSIGN_OR_RETURN(Bytes bytes, Read(b, out));
    result.out.push_back(std::move(bytes));
    result.counts.push_back(packs[r].counts_host);
  }
  return result;
}

TEST_F(CudaEpExchangeTest, ChainOverRanksIsByteEqualToCpu) {
  int round = 0;
  for (int64_t w : {1, 2, 3, 4, 8}) {
    for (int64_t t : {0, 1, 5, 128}) {
      for (int64_t k : {1, 2, 8}) {
        ++round;
        const DataType wire = round % 2 == 0 ? DataType::kFloat32 : DataType::kBFloat16;
        const int64_t h = round % 3 == 0 ? 2048 : 64;
        const int placement = round % 4;
        SCOPED_TRACE(Describe(w, t, k, h, wire, placement));
        std::vector<Tensor> hidden;
        std::vector<Routing> routing;
        for (int64_t r = 0; r < w; ++r) {
          hidden.push_back(MakeF32({t, h}, Random(t * h, 6000 + 10 * round + r)));
          routing.push_back(MakeRouting(t, k, w, kPlacements[placement], 7000 + 10 * round + r));
        }
        auto cpu = RunChain(*cpu_, hidden, routing, k, t + 1, wire);
        ASSERT_TRUE(cpu.ok()) << cpu.status();
        auto gpu = RunChain(*gpu_, hidden, routing, k, t + 1, wire);
        ASSERT_TRUE(gpu.ok()) << gpu.status();
        EXPECT_EQ(gpu->counts, cpu->counts);
        EXPECT_EQ(gpu->offsets, cpu->offsets);
        for (int64_t r = 0; r < w; ++r) {
          EXPECT_TRUE(gpu->out[r] == cpu->out[r]) << "rank " << r;
        }
      }
    }
  }
}

// One rank (the exchange is the identity) with the expert step replaced by
// using the unpacked rows as expert outputs: the four ops captured in a graph
// give, replayed on new inputs, what they give when run eagerly.
TEST_F(CudaEpExchangeTest, GraphReplayEqualsEager) {
  const int64_t t = 128, h = 2048, k = 8, c = t, m = t * k;
  const DataType wire = DataType::kBFloat16;
  Tensor hidden = GpuEmpty(DataType::kFloat32, {t, h});
  Tensor ids = GpuEmpty(DataType::kInt32, {t, k});
  Tensor weights = GpuEmpty(DataType::kFloat32, {t, k});
  Tensor e2r = Up(MakeI32({kExperts}, std::vector<int32_t>(kExperts, 0)));
  Tensor send_rows = GpuEmpty(wire, {c, h}), send_routes = GpuEmpty(DataType::kInt32, {c, 2 * k});
  Tensor counts = GpuEmpty(DataType::kInt32, {1}), slots = GpuEmpty(DataType::kInt32, {t, 1});
  Tensor rows = GpuEmpty(DataType::kFloat32, {m, h});
  Tensor offsets = GpuEmpty(DataType::kInt32, {kExperts + 1});
  Tensor route_rows = GpuEmpty(DataType::kInt32, {c, k});
  Tensor back = GpuEmpty(wire, {c, h}), out = GpuEmpty(DataType::kFloat32, {t, h});
  auto body = [&]() -> absl::Status {
    RETURN_IF_ERROR(
        gpu_->EpDispatchPack(hidden, ids, weights, e2r, &send_rows, &send_routes, &counts, &slots));
    RETURN_IF_ERROR(
        gpu_->EpDispatchUnpack(send_rows, send_routes, counts, &rows, &offsets, &route_rows));
    RETURN_IF_ERROR(gpu_->EpCombinePack(rows, send_routes, counts, route_rows, &back));
    return gpu_->EpCombineUnpack(back, slots, &out);
  };
  auto upload = [&](uint32_t seed) {
    const Routing routing = MakeRouting(t, k, 1, Placement::kBlocks, seed);
    const std::vector<float> x = Random(t * h, seed + 1);
    ASSERT_TRUE(gpu_->CopyFromHost(x.data(), x.size() * 4, &hidden).ok());
    ASSERT_TRUE(gpu_->CopyFromHost(routing.ids.data(), routing.ids.size() * 4, &ids).ok());
    ASSERT_TRUE(
        gpu_->CopyFromHost(routing.weights.data(), routing.weights.size() * 4, &weights).ok());
  };
  upload(8000);
  ASSERT_TRUE(body().ok());  // first run outside the capture
  auto graph = gpu_->Capture(body);
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (uint32_t round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    upload(8100 + 10 * round);
    ASSERT_TRUE((*graph)->Replay().ok());
    const std::vector<float> replayed = Down(out);
    const std::vector<int32_t> replayed_offsets = DownInt(offsets);
    ASSERT_TRUE(body().ok());
    EXPECT_EQ(replayed, Down(out));
    EXPECT_EQ(replayed_offsets, DownInt(offsets));
  }
}

// Stream marks around the exchange kernels: taken eagerly and at every
// replay of a graph they were captured into (event record nodes).
TEST_F(CudaEpExchangeTest, TimestampsTimeEagerWorkAndGraphReplays) {
  const int64_t t = 512, h = 4096, k = 8, c = t, m = t * k;
  const DataType wire = DataType::kBFloat16;
  Tensor hidden = Up(MakeF32({t, h}, Random(t * h, 9500)));
  const Routing routing = MakeRouting(t, k, 1, Placement::kBlocks, 9501);
  Tensor ids = Up(MakeI32({t, k}, routing.ids));
  Tensor weights = Up(MakeF32({t, k}, routing.weights));
  Tensor e2r = Up(MakeI32({kExperts}, std::vector<int32_t>(kExperts, 0)));
  Tensor send_rows = GpuEmpty(wire, {c, h}), send_routes = GpuEmpty(DataType::kInt32, {c, 2 * k});
  Tensor counts = GpuEmpty(DataType::kInt32, {1}), slots = GpuEmpty(DataType::kInt32, {t, 1});
  Tensor rows = GpuEmpty(DataType::kFloat32, {m, h});
  Tensor offsets = GpuEmpty(DataType::kInt32, {kExperts + 1});
  Tensor route_rows = GpuEmpty(DataType::kInt32, {c, k});
  auto marks = gpu_->CreateTimestamps(4);
  ASSERT_TRUE(marks.ok()) << marks.status();
  auto body = [&](int first) -> absl::Status {
    RETURN_IF_ERROR((*marks)->Record(first));
    RETURN_IF_ERROR(
        gpu_->EpDispatchPack(hidden, ids, weights, e2r, &send_rows, &send_routes, &counts, &slots));
    RETURN_IF_ERROR(
        gpu_->EpDispatchUnpack(send_rows, send_routes, counts, &rows, &offsets, &route_rows));
    return (*marks)->Record(first + 1);
  };
  EXPECT_EQ((*marks)->Seconds(0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(body(0).ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  absl::StatusOr<double> eager = (*marks)->Seconds(0, 1);
  ASSERT_TRUE(eager.ok()) << eager.status();
  // 512 x 4096 float32 rows read, bfloat16 written, 4096 float32 rows
  // written: several µs on any GPU, well under a second.
  EXPECT_GT(*eager, 1e-6);
  EXPECT_LT(*eager, 1.0);

  auto graph = gpu_->Capture([&] { return body(2); });
  ASSERT_TRUE(graph.ok()) << graph.status();
  // Captured, never replayed: no time yet, and the failed query is not
  // reported by the next launch.
  absl::StatusOr<double> early = (*marks)->Seconds(2, 3);
  if (!early.ok()) {
    EXPECT_EQ(early.status().code(), absl::StatusCode::kUnavailable) << early.status();
  }
  ASSERT_TRUE(body(0).ok());
  ASSERT_TRUE((*graph)->Replay().ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  absl::StatusOr<double> replayed = (*marks)->Seconds(2, 3);
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_GT(*replayed, 1e-6);
  EXPECT_LT(*replayed, 1.0);
  // The eager marks come before the replay's.
  absl::StatusOr<double> between = (*marks)->Seconds(1, 2);
  ASSERT_TRUE(between.ok()) << between.status();
  EXPECT_GE(*between, 0.0);
  EXPECT_EQ((*marks)->Record(4).code(), absl::StatusCode::kOutOfRange);
}

// ---- content errors: reported at the next CopyToHost, naming the op ----

// Enqueues `op` (which must succeed: the error is found on the device), then
// expects the next CopyToHost to fail naming `name`, and the one after to
// pass (the error is reported once).
template <typename Op>
void ExpectDeviceError(Backend& gpu, const Tensor& readable, const char* name, Op op) {
  absl::Status s = op();
  ASSERT_TRUE(s.ok()) << s;
  std::vector<uint8_t> host(readable.nbytes());
  s = gpu.CopyToHost(readable, host.data(), host.size());
  ASSERT_FALSE(s.ok()) << name << ": no error reported";
  EXPECT_NE(s.message().find(name), std::string::npos) << s;
  EXPECT_TRUE(gpu.CopyToHost(readable, host.data(), host.size()).ok());
}

TEST_F(CudaEpExchangeTest, ContentErrorsAreReportedNamingTheOp) {
  const int64_t t = 2, k = 2, h = 64, w = 2, c = 2;
  Tensor hidden = Up(MakeF32({t, h}, Random(t * h, 9000)));
  Tensor weights = Up(MakeF32({t, k}, {0.5f, 0.5f, 0.25f, 0.75f}));
  Tensor e2r_ok = Up(MakeI32({kExperts}, std::vector<int32_t>(kExperts, 1)));
  Tensor send_rows = GpuEmpty(DataType::kFloat32, {w * c, h});
  Tensor send_routes = GpuEmpty(DataType::kInt32, {w * c, 2 * k});
  Tensor counts = GpuEmpty(DataType::kInt32, {w}), slots = GpuEmpty(DataType::kInt32, {t, w});

  for (int64_t tokens : {t, int64_t{300}}) {  // one kernel, then plan + rows
    SCOPED_TRACE(absl::StrCat("EpDispatchPack: expert id E, T=", tokens));
    // Every token picks experts 0 and 3 (rank 1), token 0 also E.
    std::vector<int32_t> ids(static_cast<size_t>(tokens * k));
    for (int64_t i = 0; i < tokens; ++i) {
      ids[i * k] = 0;
      ids[i * k + 1] = 3;
    }
    ids[1] = static_cast<int32_t>(kExperts);
    Tensor x = Up(MakeF32({tokens, h}, Random(tokens * h, 9003)));
    Tensor wts = Up(MakeF32({tokens, k}, Random(tokens * k, 9004, 0.0f, 1.0f)));
    Tensor rows = GpuEmpty(DataType::kFloat32, {w * tokens, h});
    Tensor routes = GpuEmpty(DataType::kInt32, {w * tokens, 2 * k});
    Tensor token_slots = GpuEmpty(DataType::kInt32, {tokens, w});
    ExpectDeviceError(*gpu_, counts, "EpDispatchPack", [&] {
      return gpu_->EpDispatchPack(x, Up(MakeI32({tokens, k}, ids)), wts, e2r_ok, &rows, &routes,
                                  &counts, &token_slots);
    });
    // The bad pick is dropped; every token still goes to rank 1, in order.
    EXPECT_EQ(DownInt(counts), (std::vector<int32_t>{0, static_cast<int32_t>(tokens)}));
    const std::vector<int32_t> got = DownInt(token_slots);
    for (int64_t i = 0; i < tokens; ++i) {
      EXPECT_EQ(got[i * w], -1) << "token " << i;
      EXPECT_EQ(got[i * w + 1], i) << "token " << i;
    }
  }
  {
    SCOPED_TRACE("EpDispatchPack: rank W");
    std::vector<int32_t> e2r(kExperts, 0);
    e2r[3] = static_cast<int32_t>(w);
    Tensor ids = Up(MakeI32({t, k}, {0, 1, 3, 4}));
    ExpectDeviceError(*gpu_, counts, "EpDispatchPack", [&] {
      return gpu_->EpDispatchPack(hidden, ids, weights, Up(MakeI32({kExperts}, e2r)), &send_rows,
                                  &send_routes, &counts, &slots);
    });
  }

  // Receive side: rank 0 sent one slot (expert 5), rank 1 none.
  std::vector<int32_t> routes(static_cast<size_t>(w * c * 2 * k), -1);
  routes[0] = 5;
  Tensor recv_rows = Up(MakeF32({w * c, h}, Random(w * c * h, 9001)));
  Tensor rows = GpuEmpty(DataType::kFloat32, {4, h});
  Tensor offsets = GpuEmpty(DataType::kInt32, {kExperts + 1});
  Tensor route_rows = GpuEmpty(DataType::kInt32, {w * c, k});
  auto unpack = [&](const std::vector<int32_t>& r, const std::vector<int32_t>& n, Tensor* out) {
    return [&, r, n, out] {
      return gpu_->EpDispatchUnpack(recv_rows, Up(MakeI32({w * c, 2 * k}, r)), Up(MakeI32({w}, n)),
                                    out, &offsets, &route_rows);
    };
  };
  {
    SCOPED_TRACE("EpDispatchUnpack: count above C");
    ExpectDeviceError(*gpu_, offsets, "EpDispatchUnpack",
                      unpack(routes, {1, static_cast<int32_t>(c + 1)}, &rows));
  }
  {
    SCOPED_TRACE("EpDispatchUnpack: expert id E");
    std::vector<int32_t> bad = routes;
    bad[1] = static_cast<int32_t>(kExperts);
    ExpectDeviceError(*gpu_, offsets, "EpDispatchUnpack", unpack(bad, {1, 0}, &rows));
    EXPECT_EQ(DownInt(offsets).back(), 1);  // the good entry still has its row
  }
  {
    SCOPED_TRACE("EpDispatchUnpack: more rows than M");
    std::vector<int32_t> many = routes;
    many[1] = 6;
    many[2 * k] = 7;  // slot 1 of rank 0
    Tensor two_rows = GpuEmpty(DataType::kFloat32, {2, h});
    ExpectDeviceError(*gpu_, offsets, "EpDispatchUnpack", unpack(many, {2, 0}, &two_rows));
    EXPECT_EQ(DownInt(offsets).back(), 2);  // clamped to M
  }
  {
    SCOPED_TRACE("EpCombinePack: route row outside expert_out");
    Tensor expert_out = Up(MakeF32({4, h}, Random(4 * h, 9002)));
    std::vector<int32_t> rr(static_cast<size_t>(w * c * k), -1);
    rr[0] = 4;
    Tensor back = GpuEmpty(DataType::kFloat32, {w * c, h});
    ExpectDeviceError(*gpu_, back, "EpCombinePack", [&] {
      return gpu_->EpCombinePack(expert_out, Up(MakeI32({w * c, 2 * k}, routes)),
                                 Up(MakeI32({w}, {1, 0})), Up(MakeI32({w * c, k}, rr)), &back);
    });
  }
  {
    SCOPED_TRACE("EpCombineUnpack: slot C");
    Tensor out = GpuEmpty(DataType::kFloat32, {t, h});
    ExpectDeviceError(*gpu_, out, "EpCombineUnpack", [&] {
      return gpu_->EpCombineUnpack(recv_rows,
                                   Up(MakeI32({t, w}, {0, static_cast<int32_t>(c), 1, -1})), &out);
    });
  }
}

}  // namespace
}  // namespace epserve::kernels::testing
