#include "worker/comm/rendezvous.h"

namespace epserve::comm {

absl::Status InMemoryRendezvous::Set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  values_[key] = value;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> InMemoryRendezvous::TryGet(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(key);
  if (it == values_.end()) return std::optional<std::string>();
  return std::optional<std::string>(it->second);
}

}  // namespace epserve::comm
