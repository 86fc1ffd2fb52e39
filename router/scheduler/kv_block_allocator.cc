#include "router/scheduler/kv_block_allocator.h"

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace epserve::scheduler {

KvBlockAllocator::KvBlockAllocator(int num_blocks, int block_size)
    : num_blocks_(std::max(num_blocks, 0)),
      block_size_(std::max(block_size, 1)),
      ref_count_(num_blocks_, 0) {
  free_.reserve(num_blocks_);
  for (int b = num_blocks_ - 1; b >= 0; --b) free_.push_back(static_cast<uint32_t>(b));
}

int KvBlockAllocator::BlocksForTokens(int64_t num_tokens) const {
  if (num_tokens <= 0) return 0;
  return static_cast<int>((num_tokens + block_size_ - 1) / block_size_);
}

absl::StatusOr<std::vector<uint32_t>> KvBlockAllocator::Allocate(int n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("Allocate: n = ", n, " < 0"));
  if (n > num_free()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV blocks: ", n, " requested, ", num_free(), " of ", num_blocks_, " free"));
  }
  std::vector<uint32_t> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    uint32_t b = free_.back();
    free_.pop_back();
    ref_count_[b] = 1;
    out.push_back(b);
  }
  return out;
}

absl::Status KvBlockAllocator::CheckOwned(uint32_t block, const char* op) const {
  if (block >= static_cast<uint32_t>(num_blocks_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": foreign block ", block, " (this worker has blocks [0, ", num_blocks_, "))"));
  }
  if (ref_count_[block] == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": double free of KV block ", block, " (it is not allocated)"));
  }
  return absl::OkStatus();
}

absl::Status KvBlockAllocator::Free(const std::vector<uint32_t>& blocks) {
  // Validate everything first so an error leaves the allocator unchanged.
  std::map<uint32_t, int> drops;
  for (uint32_t b : blocks) {
    if (absl::Status s = CheckOwned(b, "Free"); !s.ok()) return s;
    if (++drops[b] > ref_count_[b]) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Free: double free of KV block ", b, " (freed ", drops[b], " times, ",
          ref_count_[b], " reference(s))"));
    }
  }
  for (uint32_t b : blocks) {
    if (--ref_count_[b] == 0) {
      // ReleaseBlock: where a prefix cache would keep the block reusable.
      // Keep the free stack sorted so the lowest id is handed out first.
      auto it = std::lower_bound(free_.begin(), free_.end(), b, std::greater<uint32_t>());
      free_.insert(it, b);
    }
  }
  return absl::OkStatus();
}

absl::Status KvBlockAllocator::AddRef(uint32_t block) {
  if (absl::Status s = CheckOwned(block, "AddRef"); !s.ok()) return s;
  ++ref_count_[block];
  return absl::OkStatus();
}

int KvBlockAllocator::RefCount(uint32_t block) const {
  return block < static_cast<uint32_t>(num_blocks_) ? ref_count_[block] : 0;
}

}  // namespace epserve::scheduler
