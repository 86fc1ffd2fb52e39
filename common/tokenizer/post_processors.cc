#include "common/tokenizer/post_processors.h"

#include "common/status.h"

namespace epserve::tokenizer {
namespace {

constexpr absl::string_view kSupported =
    "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence";

// Ids only: ByteLevel's post-processing changes offsets, never ids.
class NoOp final : public PostProcessor {
 public:
  void Process(std::vector<int32_t>&) const override {}
};

// `prefix` + ids + `suffix` (TemplateProcessing's "single", Bert, Roberta).
class Surround final : public PostProcessor {
 public:
  Surround(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void Process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }

 private:
  std::vector<int32_t> prefix_, suffix_;
};

class Sequence final : public PostProcessor {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  void Process(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts_) p->Process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

absl::StatusOr<std::unique_ptr<PostProcessor>> Template(const Json& j, const std::string& where) {
  auto single = j.find("single");
  if (single == j.end() || !single->is_array()) return JsonError(where, "missing array 'single'");
  auto specials = j.find("special_tokens");
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const std::string piece_where = absl::StrCat(where, ".single[", i, "]");
    const Json& piece = (*single)[i];
    if (piece.contains("Sequence")) {
      ASSIGN_OR_RETURN(std::string id, RequiredField<std::string>(piece["Sequence"], "id",
                                                                  piece_where));
      if (id != "A" || seen_sequence) {
        return JsonError(piece_where, absl::StrCat("unexpected sequence '", id, "' in 'single'"));
      }
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      ASSIGN_OR_RETURN(std::string id, RequiredField<std::string>(piece["SpecialToken"], "id",
                                                                  piece_where));
      if (specials == j.end() || !specials->contains(id)) {
        return JsonError(piece_where, absl::StrCat("special token '", id,
                                                   "' is not in special_tokens"));
      }
      const Json& entry = (*specials)[id];
      if (!entry.contains("ids") || !entry["ids"].is_array()) {
        return JsonError(where, absl::StrCat("special_tokens['", id, "'] has no 'ids' array"));
      }
      for (const Json& v : entry["ids"]) {
        if (!v.is_number_integer()) {
          return JsonError(where, absl::StrCat("special_tokens['", id, "'].ids: not an integer"));
        }
        (seen_sequence ? suffix : prefix).push_back(v.get<int32_t>());
      }
    } else {
      return JsonError(piece_where, "expected 'Sequence' or 'SpecialToken'");
    }
  }
  return std::make_unique<Surround>(std::move(prefix), std::move(suffix));
}

absl::StatusOr<int32_t> PairId(const Json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
    return JsonError(where, absl::StrCat("field '", key, "' must be [token, id]"));
  }
  return (*it)[1].get<int32_t>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessorFromJson(const Json& j,
                                                                     const std::string& where) {
  if (j.is_null()) return std::unique_ptr<PostProcessor>();
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, where));
  if (type == "ByteLevel") return std::make_unique<NoOp>();
  if (type == "TemplateProcessing") return Template(j, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ASSIGN_OR_RETURN(int32_t cls, PairId(j, "cls", where));
    ASSIGN_OR_RETURN(int32_t sep, PairId(j, "sep", where));
    return std::make_unique<Surround>(std::vector<int32_t>{cls}, std::vector<int32_t>{sep});
  }
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array()) return JsonError(where, "missing array 'processors'");
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, PostProcessorFromJson((*it)[i],
                                                        absl::StrCat(where, ".processors[", i, "]")));
      if (part) parts.push_back(std::move(part));
    }
    return std::make_unique<Sequence>(std::move(parts));
  }
  return Unsupported("post-processor", type, where, kSupported);
}

}  // namespace epserve::tokenizer
