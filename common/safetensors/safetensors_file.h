// One .safetensors file: the header is read with pread and validated at Open;
// the file is mapped read-only on first Data() call, and Data() returns
// zero-copy views into that mapping. Only the pages a caller actually reads
// become resident (MADV_RANDOM: no readahead), so a worker that reads only its
// own experts' tensors only pays for their bytes (see ResidentBytes()).
//
// Thread-safe: every method may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/safetensors/header.h"

namespace epserve::safetensors {

class SafetensorsFile {
 public:
  // Opens and validates `path` (ParseSafetensorsHeader). NotFound /
  // PermissionDenied / ... if the file cannot be opened, the header's error
  // otherwise; every message names `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  // File offset of the data section (8 + header length); TensorInfo ranges
  // are relative to it.
  uint64_t data_section_offset() const { return header_.data_section_offset; }
  // Sorted by byte range (file order).
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

  // nullptr when this file has no tensor `name`.
  const TensorInfo* Find(absl::string_view name) const;

  // The tensor's bytes, [num_bytes], pointing into the read-only mapping (valid
  // while this object lives). Maps the file on first use. `tensor` must come
  // from this file's tensors() / Find(); InvalidArgument otherwise.
  absl::StatusOr<absl::Span<const uint8_t>> Data(const TensorInfo& tensor) const;

  // Bytes of the mapping currently resident in memory, by mincore(2); 0 before
  // the first Data() call. Linux reports page-cache residency for files the
  // caller owns or may write, and otherwise only the pages this process has
  // mapped. Counted in whole pages, so it is within a page per touched range
  // of the bytes read.
  uint64_t ResidentBytes() const;

  // Drops the mapping's pages from this process (madvise MADV_DONTNEED) and
  // asks the kernel to drop the file's clean pages from the page cache
  // (fdatasync, then posix_fadvise DONTNEED; files on tmpfs keep their pages).
  // Views returned by Data() stay valid: reading
  // them faults the pages back in. For loaders after they copied weights to a
  // device, and for tests that measure which bytes a reader touches.
  absl::Status ReleaseResidentPages() const;

 private:
  SafetensorsFile(std::string path, int fd, uint64_t file_size, SafetensorsHeader header);
  absl::Status EnsureMapped() const;

  const std::string path_;
  const int fd_;
  const uint64_t file_size_;
  const SafetensorsHeader header_;
  absl::flat_hash_map<std::string, size_t> index_;  // name -> position in header_.tensors

  mutable std::mutex map_mutex_;  // serialises the first mmap
  mutable std::atomic<const uint8_t*> mapping_{nullptr};  // file_size_ bytes once mapped
};

}  // namespace epserve::safetensors
