// The key-value store through which the ranks of a group find each other.
// In a cluster it is the router's control service (StoreSet / StoreGet);
// tests use InMemoryRendezvous.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace epserve::comm {

class Rendezvous {
 public:
  virtual ~Rendezvous() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // nullopt when the key is not (yet) present. Never blocks for long.
  virtual absl::StatusOr<std::optional<std::string>> TryGet(const std::string& key) = 0;
};

class InMemoryRendezvous final : public Rendezvous {
 public:
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::optional<std::string>> TryGet(const std::string& key) override;

 private:
  std::mutex mu_;
  std::map<std::string, std::string> values_;
};

}  // namespace epserve::comm
