// A host-side free list of KV cache block ids, for tests and the offline
// runner (epserve-run). In the cluster the router owns block accounting; the
// worker's KvCache only stores what the block tables say.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace epserve::kv_cache {

class BlockAllocator {
 public:
  // Blocks 0 .. num_blocks-1 are free; they are handed out lowest id first.
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }

  // `count` distinct free blocks, or RESOURCE_EXHAUSTED ("need N, M free of
  // T") leaving the allocator unchanged.
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t count);
  // Returns blocks to the free list. An id out of range or not allocated is
  // INVALID_ARGUMENT naming it, and nothing is freed.
  absl::Status Free(absl::Span<const int32_t> blocks);

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;      // a stack: back() is handed out next
  std::vector<bool> allocated_;    // [num_blocks]
};

}  // namespace epserve::kv_cache
