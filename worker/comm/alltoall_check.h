// The warm-up check a worker runs when it joins a collective group: an
// all-to-all-v with distinct sizes and contents per (sender, receiver) pair,
// verified element by element, so a group that passes really moves data
// between every pair of ranks.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace epserve::comm {

struct AllToAllCheckResult {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
};

// Collective. Fails with the first mismatching (sender, index) on bad data.
absl::StatusOr<AllToAllCheckResult> RunAllToAllCheck(Communicator& comm);

// Elements rank `src` sends to rank `dst` in the check (exposed for tests).
int64_t AllToAllCheckCount(int src, int dst);

}  // namespace epserve::comm
