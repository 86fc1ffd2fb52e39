#include "common/safetensors/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/safetensors/json_schema.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace epserve::safetensors {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr uint64_t kMaxIndexBytes = 100'000'000;
constexpr size_t kMaxListed = 20;  // names listed in one error message

bool IsRegularFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// "a", "b", "c" (and N more)
std::string ListNames(const std::vector<std::string>& names) {
  std::vector<std::string> quoted;
  for (size_t i = 0; i < names.size() && i < kMaxListed; ++i) {
    quoted.push_back(QuoteForError(names[i]));
  }
  std::string out = absl::StrJoin(quoted, ", ");
  if (names.size() > kMaxListed) absl::StrAppend(&out, " (and ", names.size() - kMaxListed, " more)");
  return out;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", ec.message()));
  if (size > kMaxIndexBytes) {
    return absl::InvalidArgumentError(absl::StrCat("index file ", path, " is ", size,
                                                   " bytes, above the cap of ", kMaxIndexBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The index's weight_map as shard -> tensor names (sorted).
absl::StatusOr<std::map<std::string, std::vector<std::string>>> ParseIndex(
    const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path));
  const auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("index file ", path, ": ", what));
  };
  Json index = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded()) return error("not valid JSON");
  if (!index.is_object()) return error(absl::StrCat("expected a JSON object, found ", index.type_name()));
  auto it = index.find("weight_map");
  if (it == index.end()) return error("missing \"weight_map\"");
  if (!it->is_object()) {
    return error(absl::StrCat("\"weight_map\" must be an object (tensor name -> shard file), found ",
                              it->type_name()));
  }
  if (it->empty()) return error("\"weight_map\" is empty");
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string()) {
      return error(absl::StrCat("weight_map[", QuoteForError(tensor),
                                "] must be a shard file name, found ", shard.type_name()));
    }
    const std::string& name = shard.get_ref<const std::string&>();
    // Shards are plain file names next to the index: no paths out of the dir.
    if (name.empty() || name == "." || name == ".." || absl::StrContains(name, '/') ||
        absl::StrContains(name, '\0')) {
      return error(absl::StrCat("weight_map[", QuoteForError(tensor), "] = ", QuoteForError(name),
                                " is not a plain file name in the model directory"));
    }
    shards[name].push_back(tensor);
  }
  for (auto& [shard, names] : shards) std::sort(names.begin(), names.end());
  return shards;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const std::string& model_dir) {
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist or ",
                                            "is not a directory"));
  }
  std::unique_ptr<SafetensorsCheckpoint> checkpoint(new SafetensorsCheckpoint(model_dir));
  const fs::path dir(model_dir);
  if (IsRegularFile(dir / kIndexFileName)) {
    RETURN_IF_ERROR(checkpoint->LoadIndex((dir / kIndexFileName).string()));
    return checkpoint;
  }
  if (IsRegularFile(dir / kSingleFileName)) {
    RETURN_IF_ERROR(checkpoint->LoadFiles({(dir / kSingleFileName).string()}));
    return checkpoint;
  }
  std::vector<std::string> paths;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".safetensors" && IsRegularFile(it->path())) {
      paths.push_back(it->path().string());
    }
  }
  if (ec) {
    return absl::NotFoundError(absl::StrCat("cannot list model directory ", model_dir, ": ",
                                            ec.message()));
  }
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrCat("no safetensors weights in ", model_dir,
                                            " (looked for ", kIndexFileName, ", ", kSingleFileName,
                                            " and *.safetensors)"));
  }
  std::sort(paths.begin(), paths.end());
  RETURN_IF_ERROR(checkpoint->LoadFiles(paths));
  return checkpoint;
}

absl::Status SafetensorsCheckpoint::LoadIndex(const std::string& index_path) {
  ASSIGN_OR_RETURN(const auto shards, ParseIndex(index_path));
  for (const auto& [shard, names] : shards) {
    const std::string shard_path = (fs::path(dir_) / shard).string();
    if (!IsRegularFile(shard_path)) {
      return absl::NotFoundError(absl::StrCat("index file ", index_path, " names shard ", shard,
                                              " for ", names.size(), " tensors (", ListNames(names),
                                              "), but ", shard_path, " does not exist"));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(shard_path));
    std::vector<std::string> missing;
    for (const std::string& name : names) {
      const TensorInfo* info = file->Find(name);
      if (info == nullptr) {
        missing.push_back(name);
        continue;
      }
      tensors_.emplace(name, Entry{file.get(), info});
    }
    if (!missing.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "index file ", index_path, " places ", missing.size(), " tensor(s) in shard ", shard,
          " that ", shard_path, " does not contain: ", ListNames(missing)));
    }
    std::vector<std::string> unlisted;
    for (const TensorInfo& t : file->tensors()) {
      if (!std::binary_search(names.begin(), names.end(), t.name)) unlisted.push_back(t.name);
    }
    if (!unlisted.empty()) {
      std::sort(unlisted.begin(), unlisted.end());
      warnings_.push_back(absl::StrCat(shard_path, " holds ", unlisted.size(),
                                       " tensor(s) that ", index_path,
                                       " does not assign to it (ignored): ", ListNames(unlisted)));
      LOG_WARN("{}", warnings_.back());
    }
    files_.push_back(std::move(file));
  }
  return absl::OkStatus();
}

absl::Status SafetensorsCheckpoint::LoadFiles(const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
    for (const TensorInfo& t : file->tensors()) {
      auto [it, inserted] = tensors_.emplace(t.name, Entry{file.get(), &t});
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", QuoteForError(t.name),
                                                       " is in both ", it->second.file->path(),
                                                       " and ", path));
      }
    }
    files_.push_back(std::move(file));
  }
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsCheckpoint::Files() const {
  std::vector<std::string> paths;
  for (const auto& f : files_) paths.push_back(f->path());
  std::sort(paths.begin(), paths.end());
  return paths;
}

const TensorInfo* SafetensorsCheckpoint::Find(absl::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.info;
}

absl::StatusOr<SafetensorsCheckpoint::Entry> SafetensorsCheckpoint::Lookup(
    absl::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor ", QuoteForError(name),
                                            " not found in the checkpoint in ", dir_));
  }
  return it->second;
}

absl::StatusOr<const TensorInfo*> SafetensorsCheckpoint::Get(absl::string_view name) const {
  ASSIGN_OR_RETURN(const Entry entry, Lookup(name));
  return entry.info;
}

std::vector<std::string> SafetensorsCheckpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, entry] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<absl::Span<const uint8_t>> SafetensorsCheckpoint::Data(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(const Entry entry, Lookup(name));
  return entry.file->Data(*entry.info);
}

absl::StatusOr<std::string> SafetensorsCheckpoint::FileOf(absl::string_view name) const {
  ASSIGN_OR_RETURN(const Entry entry, Lookup(name));
  return entry.file->path();
}

uint64_t SafetensorsCheckpoint::ResidentBytes() const {
  uint64_t total = 0;
  for (const auto& f : files_) total += f->ResidentBytes();
  return total;
}

absl::Status SafetensorsCheckpoint::ReleaseResidentPages() const {
  for (const auto& f : files_) RETURN_IF_ERROR(f->ReleaseResidentPages());
  return absl::OkStatus();
}

}  // namespace epserve::safetensors
