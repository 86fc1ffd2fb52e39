#include "common/tokenizer/normalizers.h"

#include <vector>

#include "common/status.h"
#include "common/tokenizer/pattern.h"
#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

constexpr absl::string_view kSupported =
    "NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, Sequence";

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  absl::Status Normalize(std::string& text) const override {
    return tokenizer::Normalize(form_, text);
  }

 private:
  NormalForm form_;
};

class Lowercase final : public Normalizer {
 public:
  absl::Status Normalize(std::string& text) const override { return ToLower(text); }
};

// Prepends `prepend` to non-empty text.
class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prepend) : prepend_(std::move(prepend)) {}
  absl::Status Normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
    return absl::OkStatus();
  }

 private:
  std::string prepend_;
};

class Replace final : public Normalizer {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string& text) const override {
    return pattern_.ReplaceAll(text, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Strips Unicode whitespace on the left and/or right.
class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string& text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t pos = begin;
        if (!IsWhitespace(DecodeUtf8(text, pos))) break;
        begin = pos;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t pos = start;
        if (!IsWhitespace(DecodeUtf8(text, pos))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_, right_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  absl::Status Normalize(std::string& text) const override {
    for (const auto& p : parts_) RETURN_IF_ERROR(p->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const Json& j,
                                                                const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Normalizer>();
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, where));
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string prepend, RequiredField<std::string>(j, "prepend", where));
    return std::make_unique<Prepend>(std::move(prepend));
  }
  if (type == "Replace") {
    if (!j.contains("pattern")) return JsonError(where, "missing field 'pattern'");
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j["pattern"], where + ".pattern"));
    ASSIGN_OR_RETURN(std::string content, RequiredField<std::string>(j, "content", where));
    return std::make_unique<Replace>(std::move(pattern), std::move(content));
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(bool left, Field<bool>(j, "strip_left", where, true));
    ASSIGN_OR_RETURN(bool right, Field<bool>(j, "strip_right", where, true));
    return std::make_unique<Strip>(left, right);
  }
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) return JsonError(where, "missing array 'normalizers'");
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, NormalizerFromJson((*it)[i], absl::StrCat(where, ".normalizers[",
                                                                            i, "]")));
      if (part) parts.push_back(std::move(part));
    }
    return std::make_unique<Sequence>(std::move(parts));
  }
  return Unsupported("normalizer", type, where, kSupported);
}

}  // namespace epserve::tokenizer
