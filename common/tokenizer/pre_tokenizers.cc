#include "common/tokenizer/pre_tokenizers.h"

#include "common/status.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/pattern.h"
#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

constexpr absl::string_view kSupported = "Split, ByteLevel, Metaspace, Digits, Sequence";

// The GPT-2 regex that ByteLevel applies when use_regex is true.
constexpr absl::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Replaces every split by the pieces `cut` returns for it; the first piece
// keeps the split's at_input_start flag.
template <typename Cut>
absl::Status ForEachSplit(std::vector<PreSplit>& splits, Cut cut) {
  std::vector<PreSplit> out;
  out.reserve(splits.size());
  std::vector<Range> ranges;
  for (PreSplit& split : splits) {
    ranges.clear();
    RETURN_IF_ERROR(cut(split, ranges));
    for (size_t i = 0; i < ranges.size(); ++i) {
      const auto [b, e] = ranges[i];
      out.push_back({split.text.substr(b, e - b), split.at_input_start && b == 0});
    }
  }
  splits = std::move(out);
  return absl::OkStatus();
}

class Split final : public PreTokenizer {
 public:
  Split(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<PreSplit>& splits) const override {
    std::vector<Range> matches;
    return ForEachSplit(splits, [&](PreSplit& s, std::vector<Range>& out) -> absl::Status {
      matches.clear();
      RETURN_IF_ERROR(pattern_.FindAll(s.text, matches));
      out = ApplySplitBehavior(s.text.size(), matches, behavior_, invert_);
      return absl::OkStatus();
    });
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::unique_ptr<Split> regex_split)
      : add_prefix_space_(add_prefix_space), regex_split_(std::move(regex_split)) {}
  absl::Status PreTokenize(std::vector<PreSplit>& splits) const override {
    if (add_prefix_space_) {
      for (PreSplit& s : splits) {
        if (s.text.empty() || s.text[0] != ' ') s.text.insert(0, 1, ' ');
      }
    }
    if (regex_split_) RETURN_IF_ERROR(regex_split_->PreTokenize(splits));
    std::string mapped;
    for (PreSplit& s : splits) {
      mapped.clear();
      AppendByteLevel(s.text, mapped);
      s.text.swap(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Split> regex_split_;
};

enum class PrependScheme { kAlways, kNever, kFirst };

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  absl::Status PreTokenize(std::vector<PreSplit>& splits) const override {
    const Pattern space = Pattern::Literal(" ");
    const Pattern rep = Pattern::Literal(replacement_);
    return ForEachSplit(splits, [&](PreSplit& s, std::vector<Range>& out) -> absl::Status {
      RETURN_IF_ERROR(space.ReplaceAll(s.text, replacement_));
      const bool starts = s.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && s.at_input_start))) {
        s.text.insert(0, replacement_);
      }
      if (!split_) {
        if (!s.text.empty()) out.emplace_back(0, s.text.size());
        return absl::OkStatus();
      }
      std::vector<Range> matches;
      RETURN_IF_ERROR(rep.FindAll(s.text, matches));
      out = ApplySplitBehavior(s.text.size(), matches, SplitBehavior::kMergedWithNext, false);
      return absl::OkStatus();
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

// Splits numeric characters from the rest: each digit alone, or runs of them.
class Digits final : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  absl::Status PreTokenize(std::vector<PreSplit>& splits) const override {
    return ForEachSplit(splits, [&](PreSplit& s, std::vector<Range>& out) -> absl::Status {
      std::vector<Range> matches;
      size_t pos = 0;
      while (pos < s.text.size()) {
        const size_t start = pos;
        if (IsNumeric(DecodeUtf8(s.text, pos))) matches.emplace_back(start, pos);
      }
      out = ApplySplitBehavior(s.text.size(), matches,
                               individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
                               false);
      return absl::OkStatus();
    });
  }

 private:
  bool individual_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  absl::Status PreTokenize(std::vector<PreSplit>& splits) const override {
    for (const auto& p : parts_) RETURN_IF_ERROR(p->PreTokenize(splits));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const Json& j,
                                                                   const std::string& where) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, where));
  if (type == "Split") {
    if (!j.contains("pattern")) return JsonError(where, "missing field 'pattern'");
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j["pattern"], where + ".pattern"));
    ASSIGN_OR_RETURN(std::string behavior_name, RequiredField<std::string>(j, "behavior", where));
    ASSIGN_OR_RETURN(SplitBehavior behavior, ParseSplitBehavior(behavior_name, where));
    ASSIGN_OR_RETURN(bool invert, Field<bool>(j, "invert", where, false));
    return std::make_unique<Split>(std::move(pattern), behavior, invert);
  }
  if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(bool add_prefix_space, Field<bool>(j, "add_prefix_space", where, true));
    ASSIGN_OR_RETURN(bool use_regex, Field<bool>(j, "use_regex", where, true));
    std::unique_ptr<Split> split;
    if (use_regex) {
      ASSIGN_OR_RETURN(Pattern p, Pattern::FromJson(Json{{"Regex", std::string(kGpt2Pattern)}},
                                                    where));
      split = std::make_unique<Split>(std::move(p), SplitBehavior::kIsolated, false);
    }
    return std::make_unique<ByteLevel>(add_prefix_space, std::move(split));
  }
  if (type == "Metaspace") {
    std::string replacement = "\xE2\x96\x81";  // U+2581
    if (j.contains("replacement")) {
      ASSIGN_OR_RETURN(replacement, RequiredField<std::string>(j, "replacement", where));
    } else if (j.contains("str_rep")) {
      ASSIGN_OR_RETURN(replacement, RequiredField<std::string>(j, "str_rep", where));
    }
    PrependScheme scheme = PrependScheme::kAlways;
    if (j.contains("prepend_scheme")) {
      ASSIGN_OR_RETURN(std::string s, RequiredField<std::string>(j, "prepend_scheme", where));
      if (s == "always") {
        scheme = PrependScheme::kAlways;
      } else if (s == "never") {
        scheme = PrependScheme::kNever;
      } else if (s == "first") {
        scheme = PrependScheme::kFirst;
      } else {
        return JsonError(where, absl::StrCat("unknown prepend_scheme '", s, "'"));
      }
    } else {
      ASSIGN_OR_RETURN(bool add, Field<bool>(j, "add_prefix_space", where, true));
      scheme = add ? PrependScheme::kAlways : PrependScheme::kNever;
    }
    ASSIGN_OR_RETURN(bool split, Field<bool>(j, "split", where, true));
    return std::make_unique<Metaspace>(std::move(replacement), scheme, split);
  }
  if (type == "Digits") {
    ASSIGN_OR_RETURN(bool individual, Field<bool>(j, "individual_digits", where, false));
    return std::make_unique<Digits>(individual);
  }
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) return JsonError(where, "missing array 'pretokenizers'");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto part, PreTokenizerFromJson(
                                      (*it)[i], absl::StrCat(where, ".pretokenizers[", i, "]")));
      if (part) parts.push_back(std::move(part));
    }
    return std::make_unique<Sequence>(std::move(parts));
  }
  return Unsupported("pre-tokenizer", type, where, kSupported);
}

}  // namespace epserve::tokenizer
