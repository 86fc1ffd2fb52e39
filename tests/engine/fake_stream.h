// FakeStream: a GenerateStream that records what the engine writes and how it
// ends. Thread-safe; the test waits for Finish with a bound.
//
// Checked as it is used (violations()): no Write after Finish, Finish exactly
// once, every response names the stream's request id, nothing after the
// complete message, and a complete message only on an OK stream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "epserve/v1/epserve.pb.h"
#include "router/engine/engine.h"

namespace epserve::router::testing {

class FakeStream : public GenerateStream {
 public:
  explicit FakeStream(std::string request_id) : request_id_(std::move(request_id)) {}

  void Write(v1::GenerateResponse response) override;
  void Finish(const absl::Status& status) override;

  // Runs inside Finish, on the engine's thread, after the status is recorded:
  // the earliest moment a client can learn that its request ended.
  void SetOnFinish(std::function<void(const absl::Status&)> on_finish);

  // False when Finish did not come within `timeout`.
  bool WaitFinished(std::chrono::milliseconds timeout) const;
  bool finished() const;
  // The Finish status (UNKNOWN before Finish).
  absl::Status status() const;
  std::vector<v1::GenerateResponse> responses() const;
  // Chunk messages, in order.
  std::vector<v1::GenerateChunk> chunks() const;
  // Token ids of every chunk, concatenated.
  std::vector<uint32_t> chunk_token_ids() const;
  // Text of every chunk, concatenated.
  std::string text() const;
  std::optional<v1::GenerateComplete> complete() const;
  std::vector<std::string> violations() const;

 private:
  const std::string request_id_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<v1::GenerateResponse> responses_;
  bool finishing_ = false;
  std::optional<absl::Status> status_;
  std::vector<std::string> violations_;
  std::function<void(const absl::Status&)> on_finish_;
};

}  // namespace epserve::router::testing
