#include "engine_harness.h"

#include <gmock/gmock.h>

#include <thread>
#include <utility>

namespace epserve::router::testing {

GroupView Group(int num_ranks, int kv_blocks, int block_size, uint64_t epoch) {
  GroupView g;
  g.epoch = epoch;
  g.block_size = block_size;
  g.kv_blocks.assign(static_cast<size_t>(num_ranks), kv_blocks);
  return g;
}

NewRequest MakeRequest(const std::string& id, std::vector<uint32_t> prompt, uint32_t max_tokens) {
  NewRequest r;
  r.id = id;
  r.prompt_ids = std::move(prompt);
  r.max_tokens = max_tokens;
  r.arrival = EngineClock::now();
  r.stream = std::make_shared<FakeStream>(id);
  return r;
}

std::shared_ptr<FakeStream> StreamOf(const NewRequest& request) {
  return std::static_pointer_cast<FakeStream>(request.stream);
}

std::vector<size_t> StepsScheduling(const std::vector<RecordedStep>& steps, const std::string& id) {
  std::vector<size_t> out;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (RankScheduling(steps[i], id) >= 0) out.push_back(i);
  }
  return out;
}

int RankScheduling(const RecordedStep& step, const std::string& id) {
  for (size_t r = 0; r < step.plans.size(); ++r) {
    for (const control::v1::SequencePlan& s : step.plans[r].sequences()) {
      if (s.request_id() == id) return static_cast<int>(r);
    }
  }
  return -1;
}

EngineOptions EngineTest::DefaultOptions() {
  EngineOptions o;
  o.step_timeout = std::chrono::milliseconds(5000);
  return o;
}

void EngineTest::Start(EngineOptions options, GroupView group, Model model,
                       std::shared_ptr<const tokenizer::Tokenizer> tokenizer) {
  registry_ = std::make_unique<prometheus::Registry>();
  metrics_ = std::make_unique<ServingMetrics>(*registry_, "fake-model");
  transport_ = std::make_unique<FakeTransport>(std::move(group), std::move(model));
  engine_ = std::make_unique<Engine>(std::move(options), transport_.get(), std::move(tokenizer),
                                     metrics_.get());
  transport_->Attach(engine_.get());
}

double EngineTest::Metric(const std::string& name,
                          const std::map<std::string, std::string>& labels) const {
  for (const prometheus::MetricFamily& family : registry_->Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& m : family.metric) {
      size_t matched = 0;
      for (const prometheus::ClientMetric::Label& l : m.label) {
        auto it = labels.find(l.name);
        if (it != labels.end() && it->second == l.value) ++matched;
      }
      if (matched != labels.size()) continue;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          return m.counter.value;
        case prometheus::MetricType::Gauge:
          return m.gauge.value;
        case prometheus::MetricType::Histogram:
          return static_cast<double>(m.histogram.sample_count);
        default:
          return -1;
      }
    }
  }
  return -1;
}

void EngineTest::TearDown() {
  if (engine_ == nullptr) return;
  engine_->Stop();
  transport_->Detach();
  EXPECT_THAT(transport_->violations(), ::testing::IsEmpty());
  for (const auto& s : streams_) {
    EXPECT_THAT(s->violations(), ::testing::IsEmpty());
  }
  engine_.reset();
  transport_.reset();
}

std::shared_ptr<FakeStream> EngineTest::Submit(NewRequest request) {
  std::shared_ptr<FakeStream> stream = StreamOf(request);
  const std::string id = request.id;
  const absl::Status s = TrySubmit(std::move(request));
  EXPECT_TRUE(s.ok()) << "Submit('" << id << "'): " << s;
  return stream;
}

std::shared_ptr<FakeStream> EngineTest::Submit(const std::string& id, std::vector<uint32_t> prompt,
                                               uint32_t max_tokens) {
  return Submit(MakeRequest(id, std::move(prompt), max_tokens));
}

absl::Status EngineTest::TrySubmit(NewRequest request) {
  streams_.push_back(StreamOf(request));
  return engine_->Submit(std::move(request));
}

bool EngineTest::WaitForStats(const std::function<bool(const EngineStats&)>& pred,
                              std::chrono::milliseconds timeout) {
  const auto end = EngineClock::now() + timeout;
  while (true) {
    if (pred(engine_->Stats())) return true;
    if (EngineClock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

EngineStats EngineTest::IdleStats() {
  EXPECT_TRUE(WaitForStats([](const EngineStats& s) {
    if (s.running != 0 || s.waiting != 0) return false;
    for (const WorkerLoad& w : s.workers) {
      if (w.kv_blocks_used != 0 || w.requests_running != 0) return false;
    }
    return true;
  })) << "the engine did not become idle";
  return engine_->Stats();
}

void ExpectFinishedWith(const FakeStream& stream, absl::StatusCode code,
                        const std::string& substr) {
  ASSERT_TRUE(stream.WaitFinished(kWait)) << "the stream did not finish";
  const absl::Status s = stream.status();
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(substr));
}

}  // namespace epserve::router::testing
