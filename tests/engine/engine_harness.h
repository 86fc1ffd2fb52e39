// EngineTest: runs an Engine over a FakeTransport (with ServingMetrics on a
// private registry) and, after each test, stops it and expects no violation
// from the transport or from any stream the test submitted.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fake_stream.h"
#include "fake_transport.h"
#include "prometheus/registry.h"
#include "router/engine/engine.h"
#include "router/engine/serving_metrics.h"

namespace epserve::router::testing {

// Bound of every wait that is expected to succeed.
inline constexpr std::chrono::milliseconds kWait{5000};

// `num_ranks` ranks of `kv_blocks` blocks of `block_size` tokens each.
GroupView Group(int num_ranks, int kv_blocks, int block_size = 4, uint64_t epoch = 1);

// A request with a FakeStream (see StreamOf) and default sampling.
NewRequest MakeRequest(const std::string& id, std::vector<uint32_t> prompt, uint32_t max_tokens);
std::shared_ptr<FakeStream> StreamOf(const NewRequest& request);

// Indices of the recorded steps whose plans schedule `id` (any rank).
std::vector<size_t> StepsScheduling(const std::vector<RecordedStep>& steps, const std::string& id);
// The rank whose plan in `step` schedules `id`, or -1.
int RankScheduling(const RecordedStep& step, const std::string& id);

class EngineTest : public ::testing::Test {
 protected:
  // Options with a 5 s step timeout (a test expecting a timeout sets its own).
  static EngineOptions DefaultOptions();

  void Start(EngineOptions options, GroupView group, Model model,
             std::shared_ptr<const tokenizer::Tokenizer> tokenizer = nullptr);
  void TearDown() override;

  // Submit, expected OK; the request's stream is returned (and checked at
  // TearDown).
  std::shared_ptr<FakeStream> Submit(NewRequest request);
  std::shared_ptr<FakeStream> Submit(const std::string& id, std::vector<uint32_t> prompt,
                                     uint32_t max_tokens);
  // Submit, returning its status.
  absl::Status TrySubmit(NewRequest request);

  // Polls Stats() until `pred` holds (the engine publishes them after a step).
  bool WaitForStats(const std::function<bool(const EngineStats&)>& pred,
                    std::chrono::milliseconds timeout = kWait);
  // Stats() once no request is running or waiting.
  EngineStats IdleStats();

  FakeTransport& transport() { return *transport_; }
  Engine& engine() { return *engine_; }

  // The value of the engine's metric `name` whose labels include `labels`:
  // a counter's or gauge's value, a histogram's sample count; -1 when no
  // such series exists. Thread-safe (a stream's OnFinish may call it).
  double Metric(const std::string& name,
                const std::map<std::string, std::string>& labels = {}) const;

 private:
  std::unique_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ServingMetrics> metrics_;
  std::unique_ptr<FakeTransport> transport_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::shared_ptr<FakeStream>> streams_;
};

// EXPECTs `stream` finished within kWait with `code` and a message holding
// `substr`.
void ExpectFinishedWith(const FakeStream& stream, absl::StatusCode code,
                        const std::string& substr = "");

}  // namespace epserve::router::testing
