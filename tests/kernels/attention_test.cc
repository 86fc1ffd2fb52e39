// WriteKvCache + PagedAttention: against a naive causal GQA reference in
// double; chunked prefill, prefill-then-decode and batch composition give
// bit-identical outputs to one full prefill. AttentionPrologue: the
// separate ops (HeadRmsNorm, Rope, WriteKvCache) bit for bit; its errors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

struct Seq {
  int64_t len = 0;
  std::vector<float> q, k, v;   // [len, Hq*D], [len, Hkv*D], [len, Hkv*D]
  std::vector<int32_t> blocks;  // this sequence's block table
};

// One step's work for a sequence: tokens [start, start + n).
struct Work {
  int seq;
  int64_t start, n;
};

class PagedFixture {
 public:
  PagedFixture(int64_t hq, int64_t hkv, int64_t d, int64_t block_size, DataType cache_type,
               std::vector<int64_t> lens, uint32_t seed = 40)
      : hq_(hq), hkv_(hkv), d_(d), bs_(block_size) {
    int64_t total_blocks = 0;
    for (int64_t len : lens) total_blocks += (len + bs_ - 1) / bs_;
    num_blocks_ = total_blocks + 3;  // spare blocks nobody uses
    std::vector<int32_t> ids(num_blocks_);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(seed));  // scattered blocks
    size_t next = 0;
    for (size_t s = 0; s < lens.size(); ++s) {
      Seq q;
      q.len = lens[s];
      q.q = Random(q.len * hq * d, seed + 10 * s + 1);
      q.k = RoundTo(cache_type, Random(q.len * hkv * d, seed + 10 * s + 2));
      q.v = RoundTo(cache_type, Random(q.len * hkv * d, seed + 10 * s + 3));
      for (int64_t b = 0; b < (q.len + bs_ - 1) / bs_; ++b) q.blocks.push_back(ids[next++]);
      seqs_.push_back(std::move(q));
    }
    k_cache_ = *EmptyHostTensor(cache_type, {num_blocks_, bs_, hkv, d});
    v_cache_ = *EmptyHostTensor(cache_type, {num_blocks_, bs_, hkv, d});
  }

  // Writes the K/V of `work` and attends; returns out rows per work item.
  std::vector<std::vector<float>> Step(Backend& backend, const std::vector<Work>& work) {
    std::vector<float> q, k, v;
    std::vector<int32_t> slots, qstart = {0}, ctx, tables;
    int64_t max_blocks = 1;
    for (const Work& w : work) max_blocks = std::max<int64_t>(max_blocks, seqs_[w.seq].blocks.size());
    for (const Work& w : work) {
      const Seq& s = seqs_[w.seq];
      q.insert(q.end(), s.q.begin() + w.start * hq_ * d_, s.q.begin() + (w.start + w.n) * hq_ * d_);
      k.insert(k.end(), s.k.begin() + w.start * hkv_ * d_, s.k.begin() + (w.start + w.n) * hkv_ * d_);
      v.insert(v.end(), s.v.begin() + w.start * hkv_ * d_, s.v.begin() + (w.start + w.n) * hkv_ * d_);
      for (int64_t j = w.start; j < w.start + w.n; ++j) {
        slots.push_back(static_cast<int32_t>(s.blocks[j / bs_] * bs_ + j % bs_));
      }
      qstart.push_back(static_cast<int32_t>(qstart.back() + w.n));
      ctx.push_back(static_cast<int32_t>(w.start + w.n));
      for (int64_t b = 0; b < max_blocks; ++b) {
        tables.push_back(b < static_cast<int64_t>(s.blocks.size()) ? s.blocks[b] : -7);
      }
    }
    const int64_t t = qstart.back();
    Tensor kt = MakeF32({t, hkv_ * d_}, k), vt = MakeF32({t, hkv_ * d_}, v);
    absl::Status st = backend.WriteKvCache(kt, vt, MakeI32({t}, slots), &k_cache_, &v_cache_);
    EXPECT_TRUE(st.ok()) << st;
    AttentionMetadata m{MakeI32({static_cast<int64_t>(qstart.size())}, qstart),
                        MakeI32({static_cast<int64_t>(ctx.size())}, ctx),
                        MakeI32({static_cast<int64_t>(work.size()), max_blocks}, tables)};
    Tensor qt = MakeF32({t, hq_ * d_}, q), out = Zeros({t, hq_ * d_});
    PagedAttentionArgs args{&qt, &k_cache_, &v_cache_, &m, hq_, 0.0f};
    st = backend.PagedAttention(args, &out);
    EXPECT_TRUE(st.ok()) << st;
    std::vector<float> all = ToVector(out);
    std::vector<std::vector<float>> per;
    for (size_t i = 0; i < work.size(); ++i) {
      per.emplace_back(all.begin() + qstart[i] * hq_ * d_, all.begin() + qstart[i + 1] * hq_ * d_);
    }
    return per;
  }

  // Naive causal GQA attention of the whole sequence, double accumulation.
  std::vector<double> Reference(int seq) const {
    const Seq& s = seqs_[seq];
    const int64_t g = hq_ / hkv_;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d_));
    std::vector<double> out(s.len * hq_ * d_, 0.0);
    for (int64_t i = 0; i < s.len; ++i) {
      for (int64_t h = 0; h < hq_; ++h) {
        const int64_t kv = h / g;
        std::vector<double> p(i + 1);
        double mx = -1e300, sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0.0;
          for (int64_t c = 0; c < d_; ++c) {
            dot += static_cast<double>(s.q[(i * hq_ + h) * d_ + c]) * s.k[(j * hkv_ + kv) * d_ + c];
          }
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t c = 0; c < d_; ++c) {
            out[(i * hq_ + h) * d_ + c] += p[j] / sum * s.v[(j * hkv_ + kv) * d_ + c];
          }
        }
      }
    }
    return out;
  }

  const Seq& seq(int i) const { return seqs_[i]; }
  Tensor& k_cache() { return k_cache_; }
  Tensor& v_cache() { return v_cache_; }

 private:
  int64_t hq_, hkv_, d_, bs_, num_blocks_ = 0;
  std::vector<Seq> seqs_;
  Tensor k_cache_, v_cache_;
};

std::vector<float> Concat(const std::vector<std::vector<float>>& parts) {
  std::vector<float> all;
  for (const auto& p : parts) all.insert(all.end(), p.begin(), p.end());
  return all;
}

struct AttnCase {
  int64_t group;  // Hq / Hkv
  int64_t block_size;
  DataType cache_type;
};

class PagedAttentionTest : public ::testing::TestWithParam<AttnCase> {
 protected:
  static constexpr int64_t kHkv = 2, kD = 12;
  PagedFixture Make() const {
    const AttnCase c = GetParam();
    return PagedFixture(kHkv * c.group, kHkv, kD, c.block_size, c.cache_type, {1, 17, 40});
  }
};

TEST_P(PagedAttentionTest, FullPrefillMatchesReference) {
  auto backend = cpu::CreateCpuBackend();
  PagedFixture f = Make();
  auto out = f.Step(*backend, {{0, 0, 1}, {1, 0, 17}, {2, 0, 40}});
  double worst = 0.0;
  for (int s = 0; s < 3; ++s) {
    std::vector<double> ref = f.Reference(s);
    ASSERT_EQ(out[s].size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      worst = std::max(worst, std::fabs(out[s][i] - ref[i]));
      ASSERT_NEAR(out[s][i], ref[i], 1e-5) << "seq " << s << " element " << i;
    }
  }
  RecordProperty("max_abs_error", std::to_string(worst));
}

TEST_P(PagedAttentionTest, ChunkedPrefillEqualsFullPrefill) {
  auto backend = cpu::CreateCpuBackend();
  PagedFixture full = Make();
  std::vector<float> want = full.Step(*backend, {{2, 0, 40}})[0];
  for (int64_t chunk : {1, 3, 7, 16}) {
    PagedFixture f = Make();
    std::vector<std::vector<float>> parts;
    for (int64_t start = 0; start < 40; start += chunk) {
      parts.push_back(f.Step(*backend, {{2, start, std::min(chunk, 40 - start)}})[0]);
    }
    EXPECT_EQ(Concat(parts), want) << "chunk " << chunk;
  }
}

TEST_P(PagedAttentionTest, PrefillThenDecodeEqualsFullPrefill) {
  auto backend = cpu::CreateCpuBackend();
  PagedFixture full = Make();
  std::vector<float> want = full.Step(*backend, {{1, 0, 17}})[0];
  PagedFixture f = Make();
  std::vector<std::vector<float>> parts = {f.Step(*backend, {{1, 0, 12}})[0]};
  for (int64_t pos = 12; pos < 17; ++pos) parts.push_back(f.Step(*backend, {{1, pos, 1}})[0]);
  EXPECT_EQ(Concat(parts), want);
}

TEST_P(PagedAttentionTest, BatchInvariance) {
  // Sequence 2 alone vs. in a batch with a decode and a prefill chunk.
  auto backend = cpu::CreateCpuBackend();
  PagedFixture alone = Make();
  alone.Step(*backend, {{2, 0, 30}});
  std::vector<float> want = alone.Step(*backend, {{2, 30, 10}})[0];
  PagedFixture mixed = Make();
  mixed.Step(*backend, {{1, 0, 16}, {2, 0, 30}, {0, 0, 1}});
  auto got = mixed.Step(*backend, {{1, 16, 1}, {2, 30, 10}});
  EXPECT_EQ(got[1], want);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionTest,
    ::testing::Values(AttnCase{1, 1, DataType::kFloat32}, AttnCase{1, 16, DataType::kFloat32},
                      AttnCase{2, 1, DataType::kFloat32}, AttnCase{2, 16, DataType::kFloat32},
                      AttnCase{4, 1, DataType::kFloat32}, AttnCase{4, 16, DataType::kFloat32},
                      AttnCase{2, 16, DataType::kBFloat16}, AttnCase{4, 1, DataType::kFloat16}));

TEST(PagedAttentionErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  PagedFixture f(4, 2, 8, 4, DataType::kFloat32, {6});
  Tensor q = Zeros({6, 32}), out = Zeros({6, 32});
  AttentionMetadata m{MakeI32({2}, {0, 6}), MakeI32({1}, {6}), MakeI32({1, 2}, {0, 99})};
  PagedAttentionArgs args{&q, &f.k_cache(), &f.v_cache(), &m, 4, 0.0f};
  absl::Status s = backend->PagedAttention(args, &out);
  EXPECT_THAT(s.message(), HasSubstr("metadata.block_tables[0, 1] = 99 is outside the cache"));
  m.context_lens = MakeI32({1}, {5});
  s = backend->PagedAttention(args, &out);
  EXPECT_THAT(s.message(), HasSubstr("metadata.context_lens[0]: expected >= q_len 6, found 5"));
  args.num_q_heads = 3;
  s = backend->PagedAttention(args, &out);
  EXPECT_THAT(s.message(), HasSubstr("num_q_heads: expected a positive multiple of num_kv_heads 2"));
  Tensor k = Zeros({2, 16}), v = Zeros({2, 16});
  s = backend->WriteKvCache(k, v, MakeI32({2}, {3, 1000}), &f.k_cache(), &f.v_cache());
  EXPECT_THAT(s.message(), HasSubstr("WriteKvCache: slot_mapping[1] = 1000 is outside the cache"));
  Tensor k_bad = Zeros({2, 15});
  s = backend->WriteKvCache(k_bad, v, MakeI32({2}, {3, 1}), &f.k_cache(), &f.v_cache());
  EXPECT_THAT(s.message(), HasSubstr("WriteKvCache: k: expected shape [*, 16], found [2, 15]"));
}

// AttentionPrologue on the CPU is HeadRmsNorm (q, k), Rope and WriteKvCache
// run one after the other, bit for bit.
TEST(AttentionPrologue, EqualsTheSeparateOps) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 5, hq = 4, hkv = 2, d = 16, num_blocks = 4, bs = 4;
  RopeConfig rope;
  rope.theta = 1e6;
  Tensor q_norm = MakeF32({d}, Random(d, 1, 0.5f, 1.5f));
  Tensor k_norm = MakeF32({d}, Random(d, 2, 0.5f, 1.5f));
  Tensor pos = MakeI32({t}, {0, 3, 7, 8, 1000});
  Tensor slots = MakeI32({t}, {5, -1, 0, 15, 9});
  Tensor v = MakeF32({t, hkv * d}, Random(t * hkv * d, 3));
  for (bool norm : {true, false}) {
    for (DataType cache_type : {DataType::kFloat32, DataType::kBFloat16}) {
      SCOPED_TRACE(::testing::Message() << "norm=" << norm << " " << DataTypeName(cache_type));
      const std::vector<int64_t> cache_shape = {num_blocks, bs, hkv, d};
      const std::vector<float> cache_init = Random(num_blocks * bs * hkv * d, 4);
      Tensor q1 = MakeF32({t, hq * d}, Random(t * hq * d, 5, -3.0f, 3.0f));
      Tensor k1 = MakeF32({t, hkv * d}, Random(t * hkv * d, 6, -3.0f, 3.0f));
      Tensor q2 = MakeF32({t, hq * d}, ToVector(q1)), k2 = MakeF32({t, hkv * d}, ToVector(k1));
      Tensor kc1 = MakeTyped(cache_type, cache_shape, cache_init);
      Tensor vc1 = MakeTyped(cache_type, cache_shape, cache_init);
      Tensor kc2 = MakeTyped(cache_type, cache_shape, cache_init);
      Tensor vc2 = MakeTyped(cache_type, cache_shape, cache_init);
      if (norm) {
        ASSERT_TRUE(backend->HeadRmsNorm(&q1, q_norm, 1e-6f).ok());
        ASSERT_TRUE(backend->HeadRmsNorm(&k1, k_norm, 1e-6f).ok());
      }
      ASSERT_TRUE(backend->Rope(rope, d, pos, &q1, &k1).ok());
      ASSERT_TRUE(backend->WriteKvCache(k1, v, slots, &kc1, &vc1).ok());

      AttentionPrologueArgs a;
      a.q = &q2;
      a.k = &k2;
      a.v = &v;
      a.q_norm = norm ? &q_norm : nullptr;
      a.k_norm = norm ? &k_norm : nullptr;
      a.norm_eps = 1e-6f;
      a.rope = rope;
      a.head_dim = d;
      a.positions = &pos;
      a.slot_mapping = &slots;
      a.k_cache = &kc2;
      a.v_cache = &vc2;
      absl::Status s = backend->AttentionPrologue(a);
      ASSERT_TRUE(s.ok()) << s;
      EXPECT_EQ(ToVector(q2), ToVector(q1));
      EXPECT_EQ(ToVector(k2), ToVector(k1));
      EXPECT_EQ(std::memcmp(kc2.data(), kc1.data(), kc1.nbytes()), 0);
      EXPECT_EQ(std::memcmp(vc2.data(), vc1.data(), vc1.nbytes()), 0);
    }
  }
}

TEST(AttentionPrologueErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  PagedFixture f(4, 2, 8, 4, DataType::kFloat32, {6});  // cache [5, 4, 2, 8]
  Tensor q = Zeros({2, 32}), k = Zeros({2, 16}), v = Zeros({2, 16});
  Tensor pos = MakeI32({2}, {0, 1}), slots = MakeI32({2}, {3, 1});
  Tensor norm = MakeF32({8}, std::vector<float>(8, 1.0f)), short_norm = Zeros({4});
  AttentionPrologueArgs a;
  a.q = &q;
  a.k = &k;
  a.v = &v;
  a.q_norm = &norm;
  a.k_norm = &norm;
  a.head_dim = 8;
  a.positions = &pos;
  a.slot_mapping = &slots;
  a.k_cache = &f.k_cache();
  a.v_cache = &f.v_cache();
  absl::Status s = backend->AttentionPrologue(a);
  EXPECT_TRUE(s.ok()) << s;

  a.k_norm = &short_norm;
  s = backend->AttentionPrologue(a);
  EXPECT_THAT(s.message(), HasSubstr("AttentionPrologue: k_norm: expected shape [8], found [4]"));
  a.k_norm = &norm;
  a.head_dim = 16;  // k is then one head of 16, the cache two of 8
  s = backend->AttentionPrologue(a);
  EXPECT_THAT(s.message(), HasSubstr("AttentionPrologue: k_cache: expected shape [*, *, 1, 16], "
                                     "found [5, 4, 2, 8]"));
  a.head_dim = 7;
  s = backend->AttentionPrologue(a);
  EXPECT_THAT(s.message(),
              HasSubstr("AttentionPrologue: head_dim: expected a positive even number, found 7"));
  a.head_dim = 8;
  a.slot_mapping = nullptr;
  s = backend->AttentionPrologue(a);
  EXPECT_THAT(s.message(),
              HasSubstr("AttentionPrologue: slot_mapping: expected a tensor, found nullptr"));
  // Content errors name the op and the step that found them.
  Tensor bad_slots = MakeI32({2}, {3, 1000});
  a.slot_mapping = &bad_slots;
  s = backend->AttentionPrologue(a);
  EXPECT_THAT(s.message(), HasSubstr("AttentionPrologue: WriteKvCache: slot_mapping[1] = 1000 is "
                                     "outside the cache"));
}

}  // namespace
}  // namespace epserve::kernels
