#include "common/safetensors/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::safetensors {
namespace {

absl::Status Errno(int error_number, absl::string_view what, absl::string_view path) {
  return absl::Status(absl::ErrnoToStatusCode(error_number),
                      absl::StrCat(what, " ", path, ": ", std::strerror(error_number)));
}

// Reads exactly `size` bytes at `offset`; a short read is DataLoss (the file
// shrank since fstat).
absl::Status PreadFull(int fd, uint8_t* out, uint64_t size, uint64_t offset,
                       absl::string_view path) {
  uint64_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Errno(errno, "cannot read", path);
    }
    if (got == 0) {
      return absl::DataLossError(absl::StrCat("safetensors file ", path, ": unexpected end of file ",
                                              "at byte ", offset + done, " (file changed?)"));
    }
    done += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

uint64_t PageSize() { return static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)); }

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(errno, "cannot open safetensors file", path);
  // Closes `fd` on every error path below; released once the object owns it.
  std::unique_ptr<int, void (*)(int*)> closer(new int(fd), [](int* f) {
    ::close(*f);
    delete f;
  });

  struct stat st;
  if (::fstat(fd, &st) != 0) return Errno(errno, "cannot stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", path, ": not a regular file"));
  }
  const auto file_size = static_cast<uint64_t>(st.st_size);

  std::vector<uint8_t> bytes(std::min<uint64_t>(file_size, kPrefixBytes));
  RETURN_IF_ERROR(PreadFull(fd, bytes.data(), bytes.size(), 0, path));
  ASSIGN_OR_RETURN(const uint64_t header_bytes,
                   ParseSafetensorsHeaderLength(bytes, file_size, path));
  bytes.resize(kPrefixBytes + header_bytes);  // <= 8 + kMaxHeaderBytes
  RETURN_IF_ERROR(PreadFull(fd, bytes.data() + kPrefixBytes, header_bytes, kPrefixBytes, path));
  ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensorsHeader(bytes, file_size, path));

  delete closer.release();
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, fd, file_size, std::move(header)));
}

SafetensorsFile::SafetensorsFile(std::string path, int fd, uint64_t file_size,
                                 SafetensorsHeader header)
    : path_(std::move(path)), fd_(fd), file_size_(file_size), header_(std::move(header)) {
  index_.reserve(header_.tensors.size());
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

SafetensorsFile::~SafetensorsFile() {
  if (const uint8_t* m = mapping_.load()) {
    ::munmap(const_cast<uint8_t*>(m), file_size_);
  }
  ::close(fd_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::Status SafetensorsFile::EnsureMapped() const {
  if (mapping_.load(std::memory_order_acquire) != nullptr) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(map_mutex_);
  if (mapping_.load(std::memory_order_relaxed) != nullptr) return absl::OkStatus();
  void* m = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (m == MAP_FAILED) return Errno(errno, "cannot mmap", path_);
  // Fault in only what is read: no readahead around touched pages.
  if (::madvise(m, file_size_, MADV_RANDOM) != 0) {
    const int error_number = errno;
    ::munmap(m, file_size_);
    return Errno(error_number, "madvise(MADV_RANDOM) failed on", path_);
  }
  mapping_.store(static_cast<const uint8_t*>(m), std::memory_order_release);
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsFile::Data(const TensorInfo& tensor) const {
  // Accept only entries of this file, so the range is known to be validated.
  const TensorInfo* own = Find(tensor.name);
  if (own != &tensor) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", tensor.name, " is not an entry of safetensors file ", path_,
                     " (pass the TensorInfo returned by its tensors() or Find())"));
  }
  RETURN_IF_ERROR(EnsureMapped());
  const uint8_t* base = mapping_.load(std::memory_order_acquire) + data_section_offset();
  return absl::Span<const uint8_t>(base + tensor.begin, tensor.num_bytes());
}

uint64_t SafetensorsFile::ResidentBytes() const {
  const uint8_t* m = mapping_.load(std::memory_order_acquire);
  if (m == nullptr) return 0;
  const uint64_t page = PageSize();
  const uint64_t num_pages = (file_size_ + page - 1) / page;
  std::vector<unsigned char> residency(num_pages);
  if (::mincore(const_cast<uint8_t*>(m), file_size_, residency.data()) != 0) return 0;
  uint64_t resident = 0;
  for (uint64_t i = 0; i < num_pages; ++i) {
    if (residency[i] & 1) resident += std::min(page, file_size_ - i * page);
  }
  return resident;
}

absl::Status SafetensorsFile::ReleaseResidentPages() const {
  if (const uint8_t* m = mapping_.load(std::memory_order_acquire)) {
    if (::madvise(const_cast<uint8_t*>(m), file_size_, MADV_DONTNEED) != 0) {
      return Errno(errno, "madvise(MADV_DONTNEED) failed on", path_);
    }
  }
  // Only clean pages can be dropped: write back a freshly written file first
  // (a no-op for files without dirty pages; allowed on a read-only fd).
  if (::fdatasync(fd_) != 0 && errno != EINVAL && errno != EROFS) {
    return Errno(errno, "fdatasync failed on", path_);
  }
  if (const int rc = ::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED); rc != 0) {
    return Errno(rc, "posix_fadvise(DONTNEED) failed on", path_);
  }
  return absl::OkStatus();
}

}  // namespace epserve::safetensors
