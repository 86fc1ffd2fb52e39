// The weights of a Hugging Face model directory, over one or more
// .safetensors files. Which files, in order of preference:
//   1. model.safetensors.index.json: its "weight_map" (tensor -> shard file)
//      is authoritative. Every shard it names must exist and hold every tensor
//      the index assigns to it; tensors a shard holds but the index does not
//      list are ignored with a warning (see warnings()).
//   2. model.safetensors.
//   3. every *.safetensors in the directory (sorted); a tensor name found in
//      two files is an error.
// Every file's header is read and validated at Open; each file is mapped on
// its first Data() call. Thread-safe after Open.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/safetensors/header.h"
#include "common/safetensors/safetensors_file.h"

namespace epserve::safetensors {

inline constexpr char kIndexFileName[] = "model.safetensors.index.json";
inline constexpr char kSingleFileName[] = "model.safetensors";

class SafetensorsCheckpoint {
 public:
  // NotFound naming `model_dir` and the names looked for when it holds no
  // weights; otherwise the first file or index error (each names its file).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& model_dir);

  const std::string& dir() const { return dir_; }
  // The .safetensors files in use (full paths), sorted.
  std::vector<std::string> Files() const;
  // Non-fatal findings of Open (already logged), e.g. tensors in a shard that
  // the index does not list.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // nullptr when there is no tensor `name`.
  const TensorInfo* Find(absl::string_view name) const;
  // NotFound naming the tensor and the directory.
  absl::StatusOr<const TensorInfo*> Get(absl::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> TensorNames() const;
  // Zero-copy view of the tensor's bytes (see SafetensorsFile::Data).
  absl::StatusOr<absl::Span<const uint8_t>> Data(absl::string_view name) const;
  // Full path of the file holding `name`; NotFound like Get().
  absl::StatusOr<std::string> FileOf(absl::string_view name) const;

  // Summed over all files (see SafetensorsFile::ResidentBytes).
  uint64_t ResidentBytes() const;
  absl::Status ReleaseResidentPages() const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };

  explicit SafetensorsCheckpoint(std::string dir) : dir_(std::move(dir)) {}
  absl::Status LoadIndex(const std::string& index_path);
  absl::Status LoadFiles(const std::vector<std::string>& paths);
  absl::StatusOr<Entry> Lookup(absl::string_view name) const;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, Entry> tensors_;
  std::vector<std::string> warnings_;
};

}  // namespace epserve::safetensors
