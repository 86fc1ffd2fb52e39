#include "common/safetensors/json_schema.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace epserve::safetensors {
namespace {

using Json = nlohmann::json;

constexpr size_t kMaxQuotedBytes = 200;
constexpr size_t kMaxParserMessageBytes = 300;

// SAX handler enforcing the header schema (see json_schema.h). Each callback
// returns false to stop the parse after recording `status_`.
class HeaderSax {
 public:
  HeaderSax(absl::string_view file_name, std::vector<RawTensorEntry>* tensors,
            std::map<std::string, std::string>* metadata)
      : file_name_(file_name), tensors_(tensors), metadata_(metadata) {}

  const absl::Status& status() const { return status_; }
  bool done() const { return state_ == State::kDone; }

  // --- nlohmann::json SAX interface ---
  bool null() { return Scalar("null"); }
  bool boolean(bool) { return Scalar("a boolean"); }
  bool number_integer(Json::number_integer_t v) {
    // The lexer reports unsigned for every literal without a '-' sign, so this
    // is a negative number or -0.
    if (state_ == State::kIntArray) {
      if (v >= 0) return PushInt(static_cast<uint64_t>(v));
      return Fail(InTensor(absl::StrCat(ArrayElement(), " = ", v,
                                        " is negative (expected a non-negative integer)")));
    }
    return Scalar("a number");
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    if (state_ == State::kIntArray) return PushInt(v);
    return Scalar("a number");
  }
  bool number_float(Json::number_float_t, const Json::string_t& text) {
    if (state_ == State::kIntArray) {
      return Fail(InTensor(absl::StrCat(ArrayElement(), " = ", Truncate(text, 64),
                                        " is not an integer in [0, 2^64-1]")));
    }
    return Scalar("a number");
  }
  bool string(Json::string_t& s) {
    if (state_ == State::kMetadataValue) {
      (*metadata_)[metadata_key_] = std::move(s);
      state_ = State::kMetadata;
      return true;
    }
    if (state_ == State::kTensorField && field_ == Field::kDType) {
      tensor_.dtype = std::move(s);
      tensor_.has_dtype = true;
      state_ = State::kTensor;
      return true;
    }
    return Scalar("a string");
  }
  bool binary(Json::binary_t&) { return Scalar("binary data"); }  // not produced by JSON

  bool start_object(std::size_t) {
    switch (state_) {
      case State::kExpectRoot:
        state_ = State::kRoot;
        return true;
      case State::kRootValue:
        if (root_key_is_metadata_) {
          state_ = State::kMetadata;
          return true;
        }
        tensor_ = RawTensorEntry{};
        tensor_.name = root_key_;
        tensor_keys_.clear();
        state_ = State::kTensor;
        return true;
      case State::kSkip:
        ++skip_depth_;
        return true;
      default:
        return Unexpected("an object");
    }
  }
  bool key(Json::string_t& k) {
    switch (state_) {
      case State::kRoot:
        if (!root_keys_.insert(k).second) {
          return Fail(Err(k == kMetadataKey
                              ? std::string("duplicate \"__metadata__\" key")
                              : absl::StrCat("duplicate tensor name ", QuoteForError(k),
                                             " (expected unique names)")));
        }
        root_key_is_metadata_ = k == kMetadataKey;
        root_key_ = std::move(k);
        state_ = State::kRootValue;
        return true;
      case State::kMetadata:
        if (metadata_->count(k) != 0) {
          return Fail(Err(absl::StrCat("duplicate key ", QuoteForError(k), " in __metadata__")));
        }
        metadata_key_ = std::move(k);
        state_ = State::kMetadataValue;
        return true;
      case State::kTensor:
        if (!tensor_keys_.insert(k).second) {
          return Fail(InTensor(absl::StrCat("duplicate key ", QuoteForError(k))));
        }
        if (k == "dtype") {
          field_ = Field::kDType;
        } else if (k == "shape") {
          field_ = Field::kShape;
        } else if (k == "data_offsets") {
          field_ = Field::kOffsets;
        } else {
          state_ = State::kSkip;  // unknown keys are ignored, as the reference does
          skip_depth_ = 0;
          return true;
        }
        state_ = State::kTensorField;
        return true;
      case State::kSkip:
        return true;
      default:
        return Fail(Err("malformed header"));  // unreachable: keys only occur in objects
    }
  }
  bool end_object() {
    switch (state_) {
      case State::kRoot:
        state_ = State::kDone;
        return true;
      case State::kMetadata:
        state_ = State::kRoot;
        return true;
      case State::kTensor:
        tensors_->push_back(std::move(tensor_));
        state_ = State::kRoot;
        return true;
      case State::kSkip:
        return EndSkippedContainer();
      default:
        return Fail(Err("malformed header"));  // unreachable
    }
  }
  bool start_array(std::size_t) {
    if (state_ == State::kTensorField && field_ != Field::kDType) {
      ints_ = field_ == Field::kShape ? &tensor_.shape : &tensor_.offsets;
      (field_ == Field::kShape ? tensor_.has_shape : tensor_.has_offsets) = true;
      state_ = State::kIntArray;
      return true;
    }
    if (state_ == State::kSkip) {
      ++skip_depth_;
      return true;
    }
    return Unexpected("an array");
  }
  bool end_array() {
    if (state_ == State::kIntArray) {
      state_ = State::kTensor;
      return true;
    }
    if (state_ == State::kSkip) return EndSkippedContainer();
    return Fail(Err("malformed header"));  // unreachable
  }
  bool parse_error(std::size_t position, const std::string&, const Json::exception& ex) {
    // "[json.exception.parse_error.101] parse error at line 1, column 9: ..."
    absl::string_view what = ex.what();
    if (const size_t cut = what.find("] "); cut != absl::string_view::npos) {
      what.remove_prefix(cut + 2);
    }
    return Fail(Err(absl::StrCat("header is not valid JSON (at header byte ", position, "): ",
                                 Truncate(what, kMaxParserMessageBytes))));
  }

 private:
  static constexpr absl::string_view kMetadataKey = "__metadata__";

  enum class State {
    kExpectRoot,
    kRoot,           // in the root object, before a key or '}'
    kRootValue,      // after a root key
    kMetadata,       // in "__metadata__"
    kMetadataValue,  // after a metadata key
    kTensor,         // in a tensor entry
    kTensorField,    // after "dtype" / "shape" / "data_offsets"
    kIntArray,       // in "shape" or "data_offsets"
    kSkip,           // in the value of an unknown tensor-entry key
    kDone,
  };
  enum class Field { kDType, kShape, kOffsets };

  bool Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
    return false;
  }
  absl::Status Err(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", file_name_, ": ", what));
  }
  absl::Status InTensor(absl::string_view what) const {
    return Err(absl::StrCat("tensor ", QuoteForError(tensor_.name), ": ", what));
  }
  const char* FieldName() const {
    return field_ == Field::kDType ? "\"dtype\""
           : field_ == Field::kShape ? "\"shape\""
                                     : "\"data_offsets\"";
  }
  std::string ArrayElement() const { return absl::StrCat(FieldName(), "[", ints_->size(), "]"); }

  bool PushInt(uint64_t v) {
    ints_->push_back(v);
    return true;
  }
  bool EndSkippedContainer() {
    if (--skip_depth_ == 0) state_ = State::kTensor;
    return true;
  }
  // A null, boolean, number or string value in the current state.
  bool Scalar(const char* found) {
    if (state_ == State::kSkip) {
      if (skip_depth_ == 0) state_ = State::kTensor;
      return true;
    }
    if (state_ == State::kRootValue && root_key_is_metadata_ && std::string(found) == "null") {
      state_ = State::kRoot;  // "__metadata__": null is the same as absent
      return true;
    }
    return Unexpected(found);
  }
  // `found` where the schema does not allow it.
  bool Unexpected(const char* found) {
    switch (state_) {
      case State::kExpectRoot:
        return Fail(Err(absl::StrCat("header is not a JSON object (found ", found, ")")));
      case State::kRootValue:
        if (root_key_is_metadata_) {
          return Fail(Err(absl::StrCat(
              "\"__metadata__\" must be an object of string values, found ", found)));
        }
        return Fail(Err(absl::StrCat("tensor ", QuoteForError(root_key_),
                                     ": expected an object with \"dtype\", \"shape\" and "
                                     "\"data_offsets\", found ",
                                     found)));
      case State::kMetadataValue:
        return Fail(Err(absl::StrCat("__metadata__ value of ", QuoteForError(metadata_key_),
                                     " must be a string, found ", found)));
      case State::kTensorField:
        return Fail(InTensor(absl::StrCat(
            FieldName(), " must be ",
            field_ == Field::kDType ? "a string" : "an array of non-negative integers", ", found ",
            found)));
      case State::kIntArray:
        return Fail(InTensor(
            absl::StrCat(ArrayElement(), " must be a non-negative integer, found ", found)));
      default:
        return Fail(Err(absl::StrCat("unexpected ", found, " in the header")));
    }
  }
  static std::string Truncate(absl::string_view s, size_t max) {
    if (s.size() <= max) return std::string(s);
    return absl::StrCat(s.substr(0, max), "...");
  }

  absl::string_view file_name_;
  std::vector<RawTensorEntry>* tensors_;
  std::map<std::string, std::string>* metadata_;
  absl::Status status_;

  State state_ = State::kExpectRoot;
  Field field_ = Field::kDType;
  std::set<std::string> root_keys_;
  std::string root_key_;
  bool root_key_is_metadata_ = false;
  std::string metadata_key_;
  RawTensorEntry tensor_;
  std::set<std::string> tensor_keys_;
  std::vector<uint64_t>* ints_ = nullptr;
  int64_t skip_depth_ = 0;
};

}  // namespace

std::string QuoteForError(absl::string_view s) {
  bool cut = false;
  if (s.size() > kMaxQuotedBytes) {
    size_t end = kMaxQuotedBytes;
    while (end > 0 && (static_cast<uint8_t>(s[end]) & 0xC0) == 0x80) --end;
    s = s.substr(0, end);
    cut = true;
  }
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<uint8_t>(c);
    if (u < 0x20 || u == 0x7F) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  out += cut ? "...\"" : "\"";
  return out;
}

absl::Status ParseHeaderJson(absl::Span<const uint8_t> json, absl::string_view file_name,
                             std::vector<RawTensorEntry>* tensors,
                             std::map<std::string, std::string>* metadata) {
  HeaderSax sax(file_name, tensors, metadata);
  const char* begin = reinterpret_cast<const char*>(json.data());
  bool ok = false;
  try {
    ok = Json::sax_parse(begin, begin + json.size(), &sax, Json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file ", file_name,
                                                   ": header is not valid JSON: ", e.what()));
  }
  if (!sax.status().ok()) return sax.status();
  if (!ok || !sax.done()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", file_name, ": header is not valid JSON"));
  }
  return absl::OkStatus();
}

}  // namespace epserve::safetensors
