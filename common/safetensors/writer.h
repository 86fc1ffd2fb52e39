// Writes spec-conformant .safetensors files and sharded checkpoints; for tests
// and tools that need small checkpoints on disk.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace epserve::safetensors {

struct TensorToWrite {
  std::string name;
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> shape;
  std::string bytes;  // [product(shape) * DataTypeSize(dtype)], little-endian
};

// Writes one file as the reference writer does: tensors sorted by descending
// dtype size, then name (so every tensor is aligned to its element size), the
// JSON header padded with spaces to a multiple of 8 bytes. Validates the
// tensors first (unique names other than "__metadata__", valid UTF-8 names,
// non-negative dims, bytes.size() matching shape x dtype); the file is written
// to a temporary name and renamed, so `path` is never left half-written.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Writes `tensors` into `dir` (created if missing) as
// model-0000K-of-0000N.safetensors shards plus model.safetensors.index.json
// (with "metadata": {"total_size": ...} and "weight_map"), the way
// Hugging Face does. Tensors are packed in the given order; a shard is closed
// when the next tensor would take it over `max_shard_bytes` of data (a single
// larger tensor gets a shard of its own).
absl::Status WriteShardedSafetensors(const std::string& dir,
                                     const std::vector<TensorToWrite>& tensors,
                                     uint64_t max_shard_bytes);

}  // namespace epserve::safetensors
