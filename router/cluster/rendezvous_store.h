// The router's rendezvous key-value store (served as Control.StoreSet /
// StoreGet). Keys of a collective group live under "epoch/<E>/"; when a new
// group forms, keys of older epochs are dropped.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace epserve::router {

class RendezvousStore {
 public:
  // Bounds that keep a misbehaving worker from exhausting router memory.
  static constexpr size_t kMaxKeyBytes = 512;
  static constexpr size_t kMaxValueBytes = 1 << 20;
  static constexpr size_t kMaxEntries = 1 << 16;

  absl::Status Set(const std::string& key, std::string value);
  std::optional<std::string> Get(const std::string& key) const;
  // Drops every key that does not start with `prefix`.
  void RetainOnly(const std::string& prefix);
  size_t size() const;

  static std::string EpochPrefix(uint64_t epoch);

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> values_;
};

}  // namespace epserve::router
