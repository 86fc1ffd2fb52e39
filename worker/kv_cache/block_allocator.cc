#include "worker/kv_cache/block_allocator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace epserve::kv_cache {

BlockAllocator::BlockAllocator(int64_t num_blocks)
    : num_blocks_(std::max<int64_t>(num_blocks, 0)),
      allocated_(static_cast<size_t>(num_blocks_), false) {
  free_.reserve(static_cast<size_t>(num_blocks_));
  for (int64_t b = num_blocks_ - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int64_t count) {
  if (count < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("BlockAllocator: count: expected >= 0, found ", count));
  }
  if (count > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache out of blocks: need ", count,
                                                     ", ", num_free(), " free of ",
                                                     num_blocks_));
  }
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    out.push_back(free_.back());
    free_.pop_back();
    allocated_[out.back()] = true;
  }
  return out;
}

absl::Status BlockAllocator::Free(absl::Span<const int32_t> blocks) {
  std::vector<bool> seen(allocated_.size(), false);
  for (int32_t b : blocks) {
    if (b < 0 || b >= num_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat("BlockAllocator: block ", b,
                                                     " out of range [0, ", num_blocks_, ")"));
    }
    if (!allocated_[b] || seen[b]) {
      return absl::InvalidArgumentError(
          absl::StrCat("BlockAllocator: block ", b, " is not allocated"));
    }
    seen[b] = true;
  }
  for (int32_t b : blocks) {
    allocated_[b] = false;
    free_.push_back(b);
  }
  return absl::OkStatus();
}

}  // namespace epserve::kv_cache
