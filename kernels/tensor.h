// Tensors: a dtype, a shape and a view into storage. Storage is either an
// owned allocation on a device or a read-only view of memory owned by
// someone else (e.g. a memory-mapped checkpoint), kept alive by the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/shape.h"
#include "kernels/device.h"

namespace epserve::kernels {

class Storage {
 public:
  virtual ~Storage() = default;
  virtual const void* data() const = 0;
  // nullptr for read-only storage.
  virtual void* mutable_data() = 0;
  virtual size_t size_bytes() const = 0;
  virtual DeviceSpec device() const = 0;
  bool read_only() const { return const_cast<Storage*>(this)->mutable_data() == nullptr; }
};

// 64-byte aligned host memory, uninitialised.
absl::StatusOr<std::shared_ptr<Storage>> AllocateHostStorage(size_t bytes);

// Read-only host view of [data, data+bytes); `owner` keeps it valid.
std::shared_ptr<Storage> ExternalHostStorage(const void* data, size_t bytes,
                                             std::shared_ptr<const void> owner);

struct Tensor {
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> shape;
  std::shared_ptr<Storage> storage;
  size_t byte_offset = 0;

  bool defined() const { return storage != nullptr; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DataTypeSize(dtype); }
  const void* data() const;
  void* mutable_data();  // nullptr for read-only storage
  template <typename T>
  const T* data_as() const {
    return static_cast<const T*>(data());
  }
  template <typename T>
  T* mutable_data_as() {
    return static_cast<T*>(mutable_data());
  }
  // "[2, 3] bfloat16"
  std::string DebugString() const;
};

// "[2, 3]"
using ::epserve::ShapeString;

// A new host tensor of the given type and shape (uninitialised).
absl::StatusOr<Tensor> EmptyHostTensor(DataType dtype, std::vector<int64_t> shape);

}  // namespace epserve::kernels
