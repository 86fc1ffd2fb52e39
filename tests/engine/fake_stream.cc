#include "fake_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace epserve::router::testing {

void FakeStream::Write(v1::GenerateResponse response) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finishing_) violations_.push_back("Write after Finish");
  if (response.request_id() != request_id_) {
    violations_.push_back(absl::StrCat("response for '", response.request_id(),
                                       "' on the stream of '", request_id_, "'"));
  }
  if (!responses_.empty() && responses_.back().has_complete()) {
    violations_.push_back("a response after the complete message");
  }
  if (!response.has_chunk() && !response.has_complete()) {
    violations_.push_back("a response with neither chunk nor complete");
  }
  responses_.push_back(std::move(response));
}

void FakeStream::Finish(const absl::Status& status) {
  std::function<void(const absl::Status&)> on_finish;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) {
      violations_.push_back(absl::StrCat("Finish twice, the second with ", status.ToString()));
      return;
    }
    const bool completed = !responses_.empty() && responses_.back().has_complete();
    if (completed != status.ok()) {
      violations_.push_back(absl::StrCat("Finish(", status.ToString(), ") ",
                                         completed ? "after" : "without", " a complete message"));
    }
    finishing_ = true;
    on_finish = on_finish_;
  }
  // Waiters see the status only once the hook has run.
  if (on_finish) on_finish(status);
  std::lock_guard<std::mutex> lock(mu_);
  status_ = status;
  cv_.notify_all();
}

void FakeStream::SetOnFinish(std::function<void(const absl::Status&)> on_finish) {
  std::lock_guard<std::mutex> lock(mu_);
  on_finish_ = std::move(on_finish);
}

bool FakeStream::WaitFinished(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [this] { return status_.has_value(); });
}

bool FakeStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_.has_value();
}

absl::Status FakeStream::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_.value_or(absl::UnknownError("the stream has not finished"));
}

std::vector<v1::GenerateResponse> FakeStream::responses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return responses_;
}

std::vector<v1::GenerateChunk> FakeStream::chunks() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<v1::GenerateChunk> out;
  for (const v1::GenerateResponse& r : responses_) {
    if (r.has_chunk()) out.push_back(r.chunk());
  }
  return out;
}

std::vector<uint32_t> FakeStream::chunk_token_ids() const {
  std::vector<uint32_t> ids;
  for (const v1::GenerateChunk& c : chunks())
    ids.insert(ids.end(), c.token_ids().begin(), c.token_ids().end());
  return ids;
}

std::string FakeStream::text() const {
  std::string text;
  for (const v1::GenerateChunk& c : chunks()) text += c.text();
  return text;
}

std::optional<v1::GenerateComplete> FakeStream::complete() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const v1::GenerateResponse& r : responses_) {
    if (r.has_complete()) return r.complete();
  }
  return std::nullopt;
}

std::vector<std::string> FakeStream::violations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return violations_;
}

}  // namespace epserve::router::testing
