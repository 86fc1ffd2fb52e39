// KvBlockAllocator: the router's accounting of one worker's paged KV cache.
//
// The worker reports `num_blocks` blocks of `block_size` tokens each; the
// router owns which block holds which sequence and sends the block ids in the
// StepPlan's block tables. Blocks are handed out lowest id first, so the
// allocation order is deterministic given the call sequence.
//
// Every block carries a reference count. Today each block has exactly one
// owner (Allocate gives count 1, Free drops it to 0 and returns the block).
// Prefix-caching seam: a later prefix cache shares a full block between
// sequences by calling AddRef(block) for every extra owner; Free then only
// returns the block to the free list when the last owner lets go. A cache that
// keeps freed-but-reusable blocks would hook in where a block's count reaches
// zero (ReleaseBlock in the .cc) instead of pushing it to the free list.
//
// Not thread-safe; the scheduler drives it from one thread.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace epserve::scheduler {

class KvBlockAllocator {
 public:
  // num_blocks >= 0, block_size >= 1 (checked by the scheduler's Create).
  KvBlockAllocator(int num_blocks, int block_size);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return num_blocks_ - num_free(); }

  // Blocks needed to hold `num_tokens` tokens: ceil(num_tokens / block_size).
  int BlocksForTokens(int64_t num_tokens) const;

  // All-or-nothing: `n` fresh blocks (ref count 1) in ascending id order, or
  // RESOURCE_EXHAUSTED (nothing taken) when fewer than n are free.
  absl::StatusOr<std::vector<uint32_t>> Allocate(int n);

  // Drops one reference of each block; a block whose count reaches zero is
  // free again. Checks every id first and changes nothing on error:
  // INVALID_ARGUMENT "foreign block" for an id outside [0, num_blocks),
  // FAILED_PRECONDITION "double free" for a block that is already free (also
  // when the same id appears more times than it has references).
  absl::Status Free(const std::vector<uint32_t>& blocks);

  // Prefix-caching seam: one more owner of an allocated block.
  absl::Status AddRef(uint32_t block);

  int RefCount(uint32_t block) const;

 private:
  absl::Status CheckOwned(uint32_t block, const char* op) const;

  int num_blocks_;
  int block_size_;
  std::vector<int> ref_count_;   // [num_blocks]
  std::vector<uint32_t> free_;   // stack; back() is the lowest free id
};

}  // namespace epserve::scheduler
