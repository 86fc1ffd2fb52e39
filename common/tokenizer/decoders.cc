#include "common/tokenizer/decoders.h"

#include "common/status.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/pattern.h"
#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

constexpr absl::string_view kSupported =
    "ByteLevel, ByteFallback, Metaspace, Fuse, Strip, Replace, Sequence";

// Maps each token's characters back to bytes (a token with a character
// outside the byte table contributes its UTF-8 text unchanged), concatenates,
// and replaces ill-formed UTF-8 with U+FFFD.
class ByteLevel final : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext&,
                           bool& fused) const override {
    std::string bytes;
    std::string token_bytes;
    for (const std::string& t : tokens) {
      token_bytes.clear();
      bool mapped = true;
      size_t pos = 0;
      while (pos < t.size()) {
        const int b = CharToByte(DecodeUtf8(t, pos));
        if (b < 0) {
          mapped = false;
          break;
        }
        token_bytes.push_back(static_cast<char>(b));
      }
      bytes += mapped ? token_bytes : t;
    }
    tokens.assign(1, Utf8Lossy(bytes));
    fused = true;
    return absl::OkStatus();
  }
};

// Byte tokens "<0xNN>" in a row are joined; a run that is valid UTF-8 becomes
// its text, otherwise every byte of it becomes U+FFFD.
class ByteFallback final : public Decoder {
 public:
  static int ByteOf(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; ++i) {
      const char c = t[i];
      int d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else return -1;
      v = v * 16 + d;
    }
    return v;
  }
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext&,
                           bool&) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    const auto flush = [&] {
      if (run.empty()) return;
      if (ValidateUtf8(run).ok()) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
    };
    for (std::string& t : tokens) {
      const int b = ByteOf(t);
      if (b >= 0) {
        run.push_back(static_cast<char>(b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
    return absl::OkStatus();
  }
};

class Fuse final : public Decoder {
 public:
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext&,
                           bool& fused) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
    fused = true;
    return absl::OkStatus();
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters.
class Strip final : public Decoder {
 public:
  Strip(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext& ctx,
                           bool& fused) const override {
    const size_t n = content_.size();
    for (std::string& t : tokens) {
      size_t begin = 0, end = t.size();
      const size_t start = (!fused || ctx.at_start) ? start_ : 0;
      const size_t stop = (!fused || ctx.at_end) ? stop_ : 0;
      for (size_t i = 0; i < start && end - begin >= n && t.compare(begin, n, content_) == 0; ++i) {
        begin += n;
      }
      for (size_t i = 0; i < stop && end - begin >= n && t.compare(end - n, n, content_) == 0; ++i) {
        end -= n;
      }
      t = t.substr(begin, end - begin);
    }
    return absl::OkStatus();
  }
  std::string TrailingStripContent() const override { return stop_ > 0 ? content_ : ""; }

 private:
  std::string content_;
  size_t start_, stop_;
};

class Replace final : public Decoder {
 public:
  Replace(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext&,
                           bool&) const override {
    for (std::string& t : tokens) RETURN_IF_ERROR(pattern_.ReplaceAll(t, content_));
    return absl::OkStatus();
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Replacement characters become spaces, except in the first token of the
// sequence, where the reference drops every one of them (unless
// prepend_scheme is "never").
class Metaspace final : public Decoder {
 public:
  Metaspace(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext& ctx,
                           bool&) const override {
    const Pattern rep = Pattern::Literal(replacement_);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const bool drop = i == 0 && ctx.at_start && strip_first_;
      RETURN_IF_ERROR(rep.ReplaceAll(tokens[i], drop ? "" : " "));
    }
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class Sequence final : public Decoder {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext& ctx,
                           bool& fused) const override {
    for (const auto& p : parts_) RETURN_IF_ERROR(p->DecodeChain(tokens, ctx, fused));
    return absl::OkStatus();
  }
  std::string TrailingStripContent() const override {
    for (const auto& p : parts_) {
      std::string c = p->TrailingStripContent();
      if (!c.empty()) return c;
    }
    return "";
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const Json& j, const std::string& where) {
  if (j.is_null()) return std::unique_ptr<Decoder>();
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, where));
  if (type == "ByteLevel") return std::make_unique<ByteLevel>();
  if (type == "ByteFallback") return std::make_unique<ByteFallback>();
  if (type == "Fuse") return std::make_unique<Fuse>();
  if (type == "Strip") {
    ASSIGN_OR_RETURN(std::string content, RequiredField<std::string>(j, "content", where));
    ASSIGN_OR_RETURN(int64_t start, Field<int64_t>(j, "start", where, 0));
    ASSIGN_OR_RETURN(int64_t stop, Field<int64_t>(j, "stop", where, 0));
    if (content.empty() || start < 0 || stop < 0) {
      return JsonError(where, "Strip needs a non-empty content and start, stop >= 0");
    }
    return std::make_unique<Strip>(std::move(content), static_cast<size_t>(start),
                                   static_cast<size_t>(stop));
  }
  if (type == "Replace") {
    if (!j.contains("pattern")) return JsonError(where, "missing field 'pattern'");
    ASSIGN_OR_RETURN(Pattern pattern, Pattern::FromJson(j["pattern"], where + ".pattern"));
    ASSIGN_OR_RETURN(std::string content, RequiredField<std::string>(j, "content", where));
    return std::make_unique<Replace>(std::move(pattern), std::move(content));
  }
  if (type == "Metaspace") {
    std::string replacement = "\xE2\x96\x81";
    if (j.contains("replacement")) {
      ASSIGN_OR_RETURN(replacement, RequiredField<std::string>(j, "replacement", where));
    }
    bool strip_first = true;
    if (j.contains("prepend_scheme")) {
      ASSIGN_OR_RETURN(std::string s, RequiredField<std::string>(j, "prepend_scheme", where));
      strip_first = s != "never";
    } else {
      ASSIGN_OR_RETURN(strip_first, Field<bool>(j, "add_prefix_space", where, true));
    }
    return std::make_unique<Metaspace>(std::move(replacement), strip_first);
  }
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array()) return JsonError(where, "missing array 'decoders'");
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      ASSIGN_OR_RETURN(auto part,
                       DecoderFromJson((*it)[i], absl::StrCat(where, ".decoders[", i, "]")));
      if (part) parts.push_back(std::move(part));
    }
    return std::make_unique<Sequence>(std::move(parts));
  }
  return Unsupported("decoder", type, where, kSupported);
}

}  // namespace epserve::tokenizer
