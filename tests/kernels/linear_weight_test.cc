// LinearWeight and the linear ops' format seam: the accessors, the names,
// the op-boundary check of a LinearWeight's fields, and Backend::Supports
// refusing an (op, format) pair before the op does any work.
#include "kernels/linear_weight.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

constexpr LinearOp kLinearOps[] = {LinearOp::kMatMul, LinearOp::kMatMulShared,
                                   LinearOp::kGroupedExpertMatMul, LinearOp::kGroupedExpertGateUp};

// The CPU backend, refusing one linear op for every format.
class RefusingCpuBackend : public cpu::CpuBackend {
 public:
  explicit RefusingCpuBackend(LinearOp refused)
      : CpuBackend(cpu::CpuBackendOptions{}), refused_(refused) {}
  bool Supports(LinearOp op, WeightFormat format) const override {
    return op != refused_ && CpuBackend::Supports(op, format);
  }

 private:
  LinearOp refused_;
};

TEST(LinearWeight, UnquantizedHoldsOnlyTheWeight) {
  LinearWeight w = LinearWeight::Unquantized(Zeros({3, 5}));
  EXPECT_EQ(w.format, WeightFormat::kUnquantized);
  EXPECT_TRUE(w.defined());
  EXPECT_EQ(w.out_features(), 3);
  EXPECT_EQ(w.in_features(), 5);
  EXPECT_FALSE(w.scales.defined());
  EXPECT_FALSE(w.zero_points.defined());
  EXPECT_EQ(w.group_size, 0);
  EXPECT_EQ(w.block_shape[0], 0);
  EXPECT_EQ(w.block_shape[1], 0);
  EXPECT_FALSE(LinearWeight{}.defined());
  EXPECT_FALSE(LinearWeight::Unquantized(Tensor{}).defined());
}

TEST(LinearWeight, FormatAndOpNames) {
  EXPECT_STREQ(WeightFormatName(WeightFormat::kUnquantized), "unquantized");
  const std::vector<std::string> names = {"MatMul", "MatMulShared", "GroupedExpertMatMul",
                                          "GroupedExpertGateUp"};
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(LinearOpName(kLinearOps[i]), names[i]);
  }
}

TEST(LinearWeight, ToDeviceOnTheCpuSharesTheStorage) {
  auto backend = cpu::CreateCpuBackend();
  LinearWeight host = LinearWeight::Unquantized(MakeF32({2, 2}, {1, 2, 3, 4}));
  auto dev = LinearWeightToDevice(*backend, host);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(dev->format, WeightFormat::kUnquantized);
  EXPECT_EQ(dev->weight.data(), host.weight.data());
  EXPECT_FALSE(dev->scales.defined());
  EXPECT_FALSE(dev->zero_points.defined());
}

TEST(CpuBackend, SupportsUnquantizedForEveryLinearOp) {
  auto backend = cpu::CreateCpuBackend();
  for (LinearOp op : kLinearOps) {
    EXPECT_TRUE(backend->Supports(op, WeightFormat::kUnquantized)) << LinearOpName(op);
  }
}

constexpr float kSentinel = 7.0f;

struct LinearOpRun {
  absl::Status status;
  std::vector<float> out;  // the output after the call (pre-filled with kSentinel)
};

// Runs `op` on `b` with valid unquantized arguments: x / rows [2, 4], weights
// [3, 4], two experts with one row each.
LinearOpRun RunLinearOp(Backend& b, LinearOp op) {
  const Tensor x = MakeF32({2, 4}, Random(8, 1));
  const LinearWeight w0 = Linear(MakeF32({3, 4}, Random(12, 2)));
  const LinearWeight w1 = Linear(MakeF32({3, 4}, Random(12, 3)));
  const Tensor offsets = MakeI32({3}, {0, 1, 2});
  Tensor y = MakeF32({2, 3}, std::vector<float>(6, kSentinel));
  Tensor y1 = MakeF32({2, 3}, std::vector<float>(6, kSentinel));
  LinearOpRun run;
  switch (op) {
    case LinearOp::kMatMul:
      run.status = b.MatMul(x, w0, Tensor{}, &y);
      break;
    case LinearOp::kMatMulShared: {
      const LinearWeight* ws[] = {&w0, &w1};
      const Tensor* biases[] = {nullptr, nullptr};
      Tensor* ys[] = {&y, &y1};
      run.status = b.MatMulShared(x, ws, biases, ys);
      break;
    }
    case LinearOp::kGroupedExpertMatMul: {
      const std::vector<LinearWeight> experts = {w0, w1};
      run.status = b.GroupedExpertMatMul(x, offsets, experts, &y);
      break;
    }
    case LinearOp::kGroupedExpertGateUp: {
      const std::vector<LinearWeight> gate = {w0, w1}, up = {w1, w0};
      run.status = b.GroupedExpertGateUp(x, offsets, gate, up, &y);
      break;
    }
  }
  run.out = ToVector(y);
  const std::vector<float> second = ToVector(y1);
  run.out.insert(run.out.end(), second.begin(), second.end());
  return run;
}

// The error of the first weight argument of `op` when its format is refused.
std::string RefusalMessage(LinearOp op) {
  const char* arg = op == LinearOp::kMatMul                ? "w"
                    : op == LinearOp::kMatMulShared        ? "ws[0]"
                    : op == LinearOp::kGroupedExpertMatMul ? "weights[0]"
                                                           : "gate[0]";
  return std::string(LinearOpName(op)) + ": " + arg +
         ": weight format unquantized is not supported by the cpu backend";
}

TEST(LinearOpSupports, ARefusedPairFailsBeforeAnyWorkNamingOpFormatAndBackend) {
  for (LinearOp refused : kLinearOps) {
    SCOPED_TRACE(LinearOpName(refused));
    RefusingCpuBackend backend(refused);
    for (LinearOp op : kLinearOps) {
      SCOPED_TRACE(LinearOpName(op));
      const LinearOpRun run = RunLinearOp(backend, op);
      if (op == refused) {
        EXPECT_EQ(run.status.code(), absl::StatusCode::kUnimplemented) << run.status;
        EXPECT_EQ(run.status.message(), RefusalMessage(op));
        EXPECT_EQ(run.out, std::vector<float>(12, kSentinel)) << "the op wrote its output";
      } else if (op == LinearOp::kGroupedExpertGateUp &&
                 refused == LinearOp::kGroupedExpertMatMul) {
        // The default GroupedExpertGateUp runs GroupedExpertMatMul (ops.h).
        EXPECT_EQ(run.status.message(), RefusalMessage(LinearOp::kGroupedExpertMatMul));
      } else {
        EXPECT_TRUE(run.status.ok()) << run.status;
        EXPECT_NE(run.out[0], kSentinel);
      }
    }
  }
}

TEST(LinearOpSupports, TheRefusalComesBeforeTheShapeChecks) {
  RefusingCpuBackend backend(LinearOp::kMatMul);
  Tensor y = Zeros({2, 3});
  // The weight's shape is wrong too; the format is reported.
  absl::Status s = backend.MatMul(Zeros({2, 5}), Linear(Zeros({3, 4})), Tensor{}, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_EQ(s.message(), RefusalMessage(LinearOp::kMatMul));
}

TEST(LinearOpChecks, AnUnquantizedWeightCarriesNoQuantizationFields) {
  auto backend = cpu::CreateCpuBackend();
  Tensor x = Zeros({2, 4}), y = Zeros({2, 3});
  LinearWeight with_scales = Linear(Zeros({3, 4}));
  with_scales.scales = Zeros({3, 1});
  LinearWeight with_group = Linear(Zeros({3, 4}));
  with_group.group_size = 2;
  LinearWeight with_block = Linear(Zeros({3, 4}));
  with_block.block_shape = {1, 2};
  for (const LinearWeight& w : {with_scales, with_group, with_block}) {
    absl::Status s = backend->MatMul(x, w, Tensor{}, &y);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr("MatMul: w: expected an unquantized weight"));
  }
  const std::vector<LinearWeight> experts = {with_scales};
  Tensor out = Zeros({1, 3});
  absl::Status s = backend->GroupedExpertMatMul(Zeros({1, 4}), MakeI32({2}, {0, 1}), experts, &out);
  EXPECT_THAT(s.message(), HasSubstr("GroupedExpertMatMul: weights[0]: expected an unquantized"));
}

}  // namespace
}  // namespace epserve::kernels
