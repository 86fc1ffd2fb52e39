// Bad flags, bad addresses, ports in use, a router that is not there: a
// one-line error naming the flag or address, a non-zero exit, no hang.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/model_config/model_config.h"
#include "common/model_config/tensor_spec.h"
#include "common/safetensors/writer.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"

namespace epserve::testing {
namespace {

using ::testing::HasSubstr;
using std::chrono::seconds;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";

size_t Lines(const std::string& text) {
  size_t n = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) n += !line.empty();
  return n;
}

struct BadCase {
  const char* binary;
  std::vector<std::string> args;
  const char* expected;  // substring of the one-line error
};

// Integer weights in an unquantized checkpoint: refused by the router before
// any worker starts, naming a tensor and the dtypes.
TEST(BadInput, IntegerWeightsAreRefusedBeforeWorkersLoad) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(ScratchDir()) / "int32_weights";
  fs::create_directories(dir);
  fs::copy_file(fs::path(kModel) / "config.json", dir / "config.json",
                fs::copy_options::overwrite_existing);
  auto desc = LoadModelConfig(dir.string());
  ASSERT_TRUE(desc.ok()) << desc.status();
  std::vector<safetensors::TensorToWrite> tensors;
  for (const TensorSpec& spec : ExpectedTensors(*desc)) {
    int64_t n = 1;
    for (int64_t d : spec.shape) n *= d;
    tensors.push_back(
        {spec.name, DataType::kInt32, spec.shape, std::string(static_cast<size_t>(n) * 4, '\0')});
  }
  ASSERT_TRUE(safetensors::WriteSafetensors((dir / "model.safetensors").string(), tensors).ok());
  RunResult r = RunToExit(Binary("epserve-router"),
                          {"--model=" + dir.string(), "--local-workers=1"}, seconds(20));
  EXPECT_GT(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("int32 cannot be converted to float32"));
  EXPECT_THAT(r.output, HasSubstr("unquantized weights must be float32, bfloat16 or float16"));
  EXPECT_EQ(Lines(r.output), 1u) << r.output;
}

// Every integer size of every bundled architecture's config.json, set to an
// absurd value, under a 2 GiB address-space limit: `epserve-run inspect`
// either accepts it (some values are legal) or exits with a one-line error
// naming the key, within a second (the median, process start included),
// never by a signal (no allocation is tried before the range checks).
TEST(BadInput, AbsurdConfigSizesFailFastNamingTheKeyUnderAMemoryLimit) {
  const std::vector<std::string> archs = {"qwen3-8b", "qwen3-30b-a3b", "mixtral-8x7b-v0.1",
                                          "olmoe-1b-7b-0924", "qwen2-57b-a14b"};
  const std::vector<int64_t> values = {2147483647, -1, 0, int64_t{1} << 40};
  const std::string dir = ScratchDir() + "/absurd";
  std::filesystem::create_directories(dir);
  int refused = 0, runs = 0;
  std::vector<double> times;
  for (const std::string& arch : archs) {
    const nlohmann::json base = nlohmann::json::parse(
        ReadFile(absl::StrCat(EPSERVE_SOURCE_DIR "/tools/configs/", arch, "/config.json")));
    for (const auto& [key, value] : base.items()) {
      if (!value.is_number_integer()) continue;
      for (int64_t bad : values) {
        nlohmann::json j = base;
        j[key] = bad;
        std::ofstream(dir + "/config.json", std::ios::trunc) << j.dump();
        const std::string cmd = absl::StrCat("ulimit -v 2097152; exec ", Binary("epserve-run"),
                                             " inspect --load-format dummy --model ", dir);
        SCOPED_TRACE(absl::StrCat(arch, ": ", key, " = ", bad));
        const auto t0 = std::chrono::steady_clock::now();
        RunResult r = RunToExit("/bin/sh", {"-c", cmd}, seconds(20));
        const double took =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++runs;
        times.push_back(took);
        EXPECT_LT(took, 5.0);  // the bound under a loaded CI machine; the median below
        ASSERT_TRUE(r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 2) << r.output;
        if (r.exit_code != 0) {
          ++refused;
          EXPECT_THAT(r.output, HasSubstr(key)) << r.output;
          EXPECT_EQ(Lines(r.output), 1u) << r.output;
        }
      }
    }
  }
  EXPECT_GT(runs, 100);
  std::sort(times.begin(), times.end());
  EXPECT_LT(times[times.size() / 2], 1.0);  // process start included
  EXPECT_GT(refused, runs / 2);  // most absurd values are refused, not all
}

TEST(BadInput, FlagsAndAddresses) {
  const char* kReadme = EPSERVE_SOURCE_DIR "/README.md";  // a file, but no PEM
  std::string model = std::string("--model=") + kModel;
  std::string dummy = "--load-format=dummy";  // the tiny model ships no weights
  const BadCase cases[] = {
      {"epserve-router", {model, dummy, "--workers=1", "--no-such-flag=1"}, "no_such_flag"},
      {"epserve-router",
       {model, dummy, "--workers=1", "--listen=nonsense"},
       "--listen: bad address 'nonsense'"},
      {"epserve-router", {model, dummy, "--workers=1", "--listen=127.0.0.1:99999"}, "out of range"},
      {"epserve-router", {model, dummy, "--workers=1", "--metrics-listen=x"}, "--metrics-listen"},
      {"epserve-router", {model, dummy}, "exactly one of --local-workers N or --workers N"},
      {"epserve-router", {model, dummy, "--workers=1", "--local-workers=1"}, "exactly one of"},
      {"epserve-router", {"--workers=1"}, "--model is required"},
      {"epserve-router", {"--model=/nonexistent/model", "--workers=1"}, "does not exist"},
      {"epserve-router",
       {model, dummy, "--workers=1", "--expert-placement=random"},
       "--expert-placement"},
      {"epserve-router", {model, dummy, "--workers=9"}, "8 experts cannot be spread over 9 ranks"},
      {"epserve-router", {model, dummy, "--workers=1", "--device=tpu"}, "--device"},
      {"epserve-router", {model, dummy, "--workers=1", "--log-level=loud"}, "--log-level"},
      {"epserve-router",
       {model, dummy, "--workers=1", "--dtype=int8"},
       "--dtype: unknown dtype 'int8'"},
      {"epserve-router",
       {model, "--workers=1", "--load-format=pt"},
       "--load-format: unknown format 'pt'"},
      {"epserve-router",
       {model, dummy, "--workers=2", "--expert-parallel=2", "--collective-backend=mpi"},
       "--collective-backend: expected auto, gloo or nccl, got 'mpi'"},
      {"epserve-router",
       {model, dummy, "--local-workers=2", "--local-gpus=-1"},
       "--local-gpus must be >= 0"},
      {"epserve-router",
       {model, dummy, "--workers=1", "--gpu-memory-utilization=1.5"},
       "--gpu-memory-utilization must be in (0, 1]"},
      {"epserve-router",
       {model, dummy, "--workers=1", "--control-listen=127.0.0.1:0"},
       "--workers: workers started elsewhere must present the cluster secret; give the router "
       "and every worker --cluster-secret-file FILE"},
      {"epserve-router",
       {model, dummy, "--workers=1", "--control-listen=nowhere"},
       "--control-listen: bad address 'nowhere'"},
      {"epserve-router",
       {model, dummy, "--local-workers=1", "--cluster-secret-file=/nonexistent/secret"},
       "--cluster-secret-file: cannot read '/nonexistent/secret'"},
      {"epserve-router",
       {model, dummy, "--local-workers=1", "--api-key-file=/nonexistent/keys"},
       "--api-key-file: cannot read '/nonexistent/keys'"},
      {"epserve-worker",
       {"--router=127.0.0.1:5", "--cluster-secret-file=/dev/null"},
       "--cluster-secret-file: '/dev/null' is not a regular file"},
      {"epserve-router",
       {model, dummy, "--local-workers=1", "--tls-cert=/nonexistent/c.pem",
        "--tls-key=/nonexistent/k.pem"},
       "--tls-cert: cannot read '/nonexistent/c.pem'"},
      {"epserve-router",
       {model, dummy, "--local-workers=1", "--tls-cert=/nonexistent/c.pem"},
       "--tls-cert and --tls-key go together"},
      {"epserve-router",
       {model, dummy, "--local-workers=1", "--control-tls-client-ca=/nonexistent/ca.pem"},
       "control-plane TLS is for --workers"},
      {"epserve-router",
       {model, dummy, "--local-workers=1", std::string("--tls-cert=") + kReadme,
        std::string("--tls-key=") + kReadme},
       "README.md' holds no PEM CERTIFICATE block"},
      {"epserve-worker",
       {"--router=127.0.0.1:5", "--tls-cert=/nonexistent/c.pem"},
       "--tls-cert and --tls-key go together"},
      {"epserve-worker",
       {"--router=127.0.0.1:5", "--gpu-memory-utilization=1.5"},
       "--gpu-memory-utilization must be in [0, 1], got 1.5"},
      {"epserve-worker",
       {"--router=127.0.0.1:5", "--cuda-graph-max-batch=-1"},
       "--cuda-graph-max-batch"},
      {"epserve-worker", {}, "--router HOST:PORT is required"},
      {"epserve-worker", {"--router=localhost"}, "--router: bad address 'localhost'"},
      {"epserve-worker",
       {"--router=127.0.0.1:5", "--device=gpu:0"},
       "--device: bad device 'gpu:0'"},
      {"epserve-worker", {"--router=127.0.0.1:5", "--rank=-3"}, "--rank"},
      {"epserve", {}, "expected one command"},
      {"epserve", {"frobnicate"}, "unknown command 'frobnicate'"},
      {"epserve", {"info", "--router=nowhere"}, "--router: bad address"},
  };
  for (const BadCase& c : cases) {
    std::string cmd = absl::StrCat(c.binary, " ", absl::StrJoin(c.args, " "));
    SCOPED_TRACE(cmd);
    RunResult r = RunToExit(Binary(c.binary), c.args, seconds(20));
    EXPECT_GT(r.exit_code, 0) << r.output;
    EXPECT_THAT(r.output, HasSubstr(c.expected));
    EXPECT_EQ(Lines(r.output), 1u) << r.output;
  }
}

TEST(BadInput, PortInUse) {
  auto first = RouterHandle::Start({std::string("--model=") + kModel, "--workers=1"});
  ASSERT_NE(first, nullptr);
  const std::string secret = "--cluster-secret-file=" + first->secret_file();
  RunResult grpc_taken = RunToExit(
      Binary("epserve-router"),
      {std::string("--model=") + kModel, "--workers=1", "--listen=" + first->grpc_address(),
       "--control-listen=127.0.0.1:0", secret, "--metrics-listen="},
      seconds(20));
  EXPECT_EQ(grpc_taken.exit_code, 1) << grpc_taken.output;
  EXPECT_THAT(grpc_taken.output, HasSubstr("--listen " + first->grpc_address()));
  EXPECT_THAT(grpc_taken.output, HasSubstr("cannot listen"));

  RunResult metrics_taken = RunToExit(
      Binary("epserve-router"),
      {std::string("--model=") + kModel, "--workers=1", "--listen=127.0.0.1:0",
       "--control-listen=127.0.0.1:0", secret, "--metrics-listen=" + first->metrics_address()},
      seconds(20));
  EXPECT_EQ(metrics_taken.exit_code, 1) << metrics_taken.output;
  EXPECT_THAT(metrics_taken.output, HasSubstr("--metrics-listen"));
  EXPECT_THAT(metrics_taken.output, HasSubstr(first->metrics_address()));

  RunResult control_taken =
      RunToExit(Binary("epserve-router"),
                {std::string("--model=") + kModel, "--workers=1", "--listen=127.0.0.1:0",
                 "--control-listen=" + first->control_address(), secret, "--metrics-listen="},
                seconds(20));
  EXPECT_EQ(control_taken.exit_code, 1) << control_taken.output;
  EXPECT_THAT(control_taken.output,
              HasSubstr("--control-listen " + first->control_address() + ": cannot listen"));
  EXPECT_TRUE(first->Info().state() == v1::CLUSTER_STATE_FORMING);  // the first is unharmed
}

TEST(BadInput, NoRouterThereGivesUpWithinTheBound) {
  auto start = std::chrono::steady_clock::now();
  RunResult r = RunToExit(Binary("epserve-worker"),
                          {"--router=127.0.0.1:1", "--connect-timeout-s=2", "--metrics-listen="},
                          seconds(20));
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(10));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("could not register with router 127.0.0.1:1"));

  RunResult health = RunToExit(Binary("epserve"), {"health", "--router=127.0.0.1:1", "--timeout-s=2"},
                               seconds(20));
  EXPECT_NE(health.exit_code, 0);
  EXPECT_THAT(health.output, HasSubstr("health check at 127.0.0.1:1 failed"));
}

}  // namespace
}  // namespace epserve::testing
