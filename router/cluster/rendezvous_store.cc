#include "router/cluster/rendezvous_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace epserve::router {

absl::Status RendezvousStore::Set(const std::string& key, std::string value) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous key must be 1..", kMaxKeyBytes, " bytes, got ", key.size()));
  }
  if (value.size() > kMaxValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous value for '", key, "' is ",
                                                   value.size(), " bytes, limit ",
                                                   kMaxValueBytes));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(key);
  if (values_.size() >= kMaxEntries && it == values_.end()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("rendezvous store full (", kMaxEntries, " keys)"));
  }
  const size_t replaced = it == values_.end() ? 0 : key.size() + it->second.size();
  const size_t after = total_bytes_ - replaced + key.size() + value.size();
  if (after > kMaxTotalBytes) {
    return absl::ResourceExhaustedError(absl::StrCat("rendezvous store full (", total_bytes_,
                                                     " of ", kMaxTotalBytes, " bytes used)"));
  }
  total_bytes_ = after;
  values_[key] = std::move(value);
  return absl::OkStatus();
}

std::optional<std::string> RendezvousStore::Get(const std::string& key) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(key);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

void RendezvousStore::RetainOnly(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = values_.begin(); it != values_.end();) {
    if (absl::StartsWith(it->first, prefix)) {
      ++it;
    } else {
      total_bytes_ -= it->first.size() + it->second.size();
      it = values_.erase(it);
    }
  }
}

size_t RendezvousStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return values_.size();
}

size_t RendezvousStore::total_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_bytes_;
}

std::string RendezvousStore::EpochPrefix(uint64_t epoch) {
  return absl::StrCat("epoch/", epoch, "/");
}

}  // namespace epserve::router
