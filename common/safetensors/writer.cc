#include "common/safetensors/writer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors/header.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace epserve::safetensors {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Byte size implied by shape and dtype, with overflow checks.
absl::StatusOr<uint64_t> ExpectedBytes(const TensorToWrite& t) {
  uint64_t n = DataTypeSize(t.dtype);
  bool zero = false;
  for (int64_t d : t.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, ": negative dimension ", d));
    }
    if (d == 0) zero = true;
  }
  if (zero) return 0;
  for (int64_t d : t.shape) {
    if (n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": size overflows"));
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

// Writes `parts` to `path` through `path`.tmp + rename.
absl::Status WriteFileAtomically(const std::string& path, const std::vector<const std::string*>& parts) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp));
    for (const std::string* part : parts) out.write(part->data(), static_cast<std::streamsize>(part->size()));
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Dump(const Json& j, const std::string& path) {
  try {
    return j.dump();
  } catch (const Json::exception& e) {  // invalid UTF-8 in a name or value
    return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": ", e.what()));
  }
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  std::set<std::string> names;
  for (const TensorToWrite& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": tensor name ", t.name,
                                                     " is reserved or used twice"));
    }
    ASSIGN_OR_RETURN(const uint64_t expected, ExpectedBytes(t));
    if (expected != t.bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": tensor ", t.name,
                                                     " needs ", expected, " bytes, got ",
                                                     t.bytes.size()));
    }
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    const size_t sa = DataTypeSize(a->dtype), sb = DataTypeSize(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });

  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<const std::string*> parts = {nullptr, nullptr};  // prefix, header
  for (const TensorToWrite* t : order) {
    header[t->name] = {{"dtype", SafetensorsDTypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->bytes.size()}}};
    offset += t->bytes.size();
    parts.push_back(&t->bytes);
  }
  ASSIGN_OR_RETURN(std::string json, Dump(header, path));
  json.append((8 - json.size() % 8) % 8, ' ');  // data section 8-byte aligned
  std::string prefix(kPrefixBytes, '\0');
  for (size_t i = 0; i < kPrefixBytes; ++i) prefix[i] = static_cast<char>((json.size() >> (8 * i)) & 0xFF);
  parts[0] = &prefix;
  parts[1] = &json;
  return WriteFileAtomically(path, parts);
}

absl::Status WriteShardedSafetensors(const std::string& dir,
                                     const std::vector<TensorToWrite>& tensors,
                                     uint64_t max_shard_bytes) {
  if (tensors.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("writing ", dir, ": no tensors"));
  }
  // Greedy packing in the given order.
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const TensorToWrite& t : tensors) {
    if (!shards.back().empty() && shard_bytes + t.bytes.size() > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += t.bytes.size();
    total_bytes += t.bytes.size();
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  Json weight_map = Json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / name).string(), shards[i]));
    for (const TensorToWrite& t : shards[i]) weight_map[t.name] = name;
  }
  const Json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  ASSIGN_OR_RETURN(const std::string text, Dump(index, index_path));
  return WriteFileAtomically(index_path, {&text});
}

}  // namespace epserve::safetensors
