#include "kernels/tensor.h"

#include <cstdlib>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/shape.h"

namespace epserve::kernels {
namespace {

class HostStorage final : public Storage {
 public:
  HostStorage(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  ~HostStorage() override { std::free(data_); }
  const void* data() const override { return data_; }
  void* mutable_data() override { return data_; }
  size_t size_bytes() const override { return bytes_; }
  DeviceSpec device() const override { return DeviceSpec{}; }

 private:
  void* data_;
  size_t bytes_;
};

class ExternalStorage final : public Storage {
 public:
  ExternalStorage(const void* data, size_t bytes, std::shared_ptr<const void> owner)
      : data_(data), bytes_(bytes), owner_(std::move(owner)) {}
  const void* data() const override { return data_; }
  void* mutable_data() override { return nullptr; }
  size_t size_bytes() const override { return bytes_; }
  DeviceSpec device() const override { return DeviceSpec{}; }

 private:
  const void* data_;
  size_t bytes_;
  std::shared_ptr<const void> owner_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Storage>> AllocateHostStorage(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes of host memory"));
  }
  return std::shared_ptr<Storage>(new HostStorage(p, bytes));
}

std::shared_ptr<Storage> ExternalHostStorage(const void* data, size_t bytes,
                                             std::shared_ptr<const void> owner) {
  return std::make_shared<ExternalStorage>(data, bytes, std::move(owner));
}

int64_t Tensor::numel() const { return NumElements(shape); }

const void* Tensor::data() const {
  return storage ? static_cast<const char*>(storage->data()) + byte_offset : nullptr;
}

void* Tensor::mutable_data() {
  void* base = storage ? storage->mutable_data() : nullptr;
  return base ? static_cast<char*>(base) + byte_offset : nullptr;
}

std::string Tensor::DebugString() const {
  return absl::StrCat(ShapeString(shape), " ", DataTypeName(dtype));
}

absl::StatusOr<Tensor> EmptyHostTensor(DataType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (int64_t d : t.shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat("negative dimension in ", ShapeString(t.shape)));
  }
  auto storage = AllocateHostStorage(t.nbytes());
  if (!storage.ok()) return storage.status();
  t.storage = std::move(*storage);
  return t;
}

}  // namespace epserve::kernels
