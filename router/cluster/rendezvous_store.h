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
  // Keys and values together (a group's keys are a few hundred bytes per
  // rank; NCCL's unique id is 128 bytes).
  static constexpr size_t kMaxTotalBytes = size_t{64} << 20;

  absl::Status Set(const std::string& key, std::string value);
  std::optional<std::string> Get(const std::string& key) const;
  // Drops every key that does not start with `prefix`.
  void RetainOnly(const std::string& prefix);
  size_t size() const;
  size_t total_bytes() const;

  static std::string EpochPrefix(uint64_t epoch);

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::string> values_;
  size_t total_bytes_ = 0;  // keys + values
};

}  // namespace epserve::router
