#include "common/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/status.h"
#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view name) {
  Json j;
  try {
    j = Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": malformed JSON at byte ", e.byte, ": ", e.what()));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a JSON object"));
  }
  return j;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A config entry that is a string, {"content": ...}, or null.
std::string TokenContent(const Json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view tokenizer_json,
                                                               absl::string_view config_json,
                                                               TokenizerOptions options) {
  ASSIGN_OR_RETURN(Json j, ParseJson(tokenizer_json, "tokenizer.json"));
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->options_ = options;
  for (const char* key : {"truncation", "padding"}) {
    if (j.contains(key) && !j[key].is_null()) {
      return absl::UnimplementedError(absl::StrCat("tokenizer.json: '", key,
                                                   "' is not supported (must be null)"));
    }
  }
  if (!j.contains("model")) return JsonError("model", "missing");
  ASSIGN_OR_RETURN(t->normalizer_, NormalizerFromJson(j.value("normalizer", Json()), "normalizer"));
  ASSIGN_OR_RETURN(t->pre_tokenizer_,
                   PreTokenizerFromJson(j.value("pre_tokenizer", Json()), "pre_tokenizer"));
  ASSIGN_OR_RETURN(t->model_, BpeModel::FromJson(j["model"]));
  ASSIGN_OR_RETURN(t->added_,
                   AddedVocab::FromJson(j.value("added_tokens", Json()), t->normalizer_.get()));
  ASSIGN_OR_RETURN(t->post_processor_,
                   PostProcessorFromJson(j.value("post_processor", Json()), "post_processor"));
  ASSIGN_OR_RETURN(t->decoder_, DecoderFromJson(j.value("decoder", Json()), "decoder"));
  if (t->decoder_) t->trailing_strip_ = t->decoder_->TrailingStripContent();
  t->vocab_size_ = std::max(t->model_->vocab_end(), t->added_->max_id() + 1);
  if (!config_json.empty()) RETURN_IF_ERROR(t->LoadConfig(config_json));
  return t;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromPath(const std::string& path,
                                                               TokenizerOptions options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path json_path = path, config_path;
  if (fs::is_directory(path, ec)) {
    json_path = fs::path(path) / "tokenizer.json";
    config_path = fs::path(path) / "tokenizer_config.json";
  } else {
    config_path = fs::path(path).parent_path() / "tokenizer_config.json";
  }
  ASSIGN_OR_RETURN(std::string json, ReadFile(json_path.string()));
  std::string config;
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config, ReadFile(config_path.string()));
  }
  auto t = FromJson(json, config, options);
  if (!t.ok()) return Annotate(t.status(), json_path.string());
  return t;
}

absl::Status Tokenizer::LoadConfig(absl::string_view config_json) {
  ASSIGN_OR_RETURN(Json c, ParseJson(config_json, "tokenizer_config.json"));
  special_.bos = TokenContent(c, "bos_token");
  special_.eos = TokenContent(c, "eos_token");
  special_.pad = TokenContent(c, "pad_token");
  special_.unk = TokenContent(c, "unk_token");
  struct Entry {
    const std::string* text;
    std::optional<int32_t>* id;
    const char* key;
  };
  for (const Entry& e : {Entry{&special_.bos, &special_.bos_id, "bos_token"},
                         Entry{&special_.eos, &special_.eos_id, "eos_token"},
                         Entry{&special_.pad, &special_.pad_id, "pad_token"},
                         Entry{&special_.unk, &special_.unk_id, "unk_token"}}) {
    if (e.text->empty()) continue;
    *e.id = TokenToId(*e.text);
    if (!*e.id) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: ", e.key, " '",
                                                     *e.text, "' is not in the vocabulary"));
    }
  }
  ASSIGN_OR_RETURN(special_.add_bos_token,
                   Field<bool>(c, "add_bos_token", "tokenizer_config.json", false));
  ASSIGN_OR_RETURN(special_.add_eos_token,
                   Field<bool>(c, "add_eos_token", "tokenizer_config.json", false));
  return absl::OkStatus();
}

absl::Status Tokenizer::EncodeSegment(std::string text, bool at_input_start, bool parse_special,
                                      std::vector<int32_t>& ids) const {
  if (normalizer_) RETURN_IF_ERROR(normalizer_->Normalize(text));
  std::vector<Segment> pieces;
  added_->Split(text, /*raw=*/false, /*skip_special=*/!parse_special, at_input_start, pieces);
  std::vector<PreSplit> splits;
  for (Segment& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
      continue;
    }
    if (piece.text.empty()) continue;
    splits.clear();
    splits.push_back({std::move(piece.text), piece.at_input_start});
    if (pre_tokenizer_) RETURN_IF_ERROR(pre_tokenizer_->PreTokenize(splits));
    for (const PreSplit& s : splits) model_->Tokenize(s.text, ids);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       const EncodeOptions& options) const {
  RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<Segment> segments;
  added_->Split(text, /*raw=*/true, /*skip_special=*/!options.parse_special_tokens,
                /*at_input_start=*/true, segments);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (Segment& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
    } else {
      RETURN_IF_ERROR(EncodeSegment(std::move(seg.text), seg.at_input_start,
                                    options.parse_special_tokens, ids));
    }
  }
  if (options.add_special_tokens) {
    if (post_processor_) post_processor_->Process(ids);
    if (options_.add_bos_from_config && special_.add_bos_token && special_.bos_id &&
        (ids.empty() || ids[0] != *special_.bos_id)) {
      ids.insert(ids.begin(), *special_.bos_id);
    }
  }
  return ids;
}

const std::string* Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* t = added_->FindById(id)) return &t->content;
  return model_->IdToToken(id);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (const AddedToken* t = added_->FindByContent(token)) return t->id;
  return model_->TokenToId(token);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const AddedToken* t = added_->FindById(id);
  return t != nullptr && t->special;
}

bool Tokenizer::IsByteToken(int32_t id) const {
  if (!model_->byte_fallback() || added_->FindById(id) != nullptr) return false;
  const std::string* t = model_->IdToToken(id);
  return t != nullptr && t->size() == 6 && t->compare(0, 3, "<0x") == 0 && (*t)[5] == '>';
}

absl::StatusOr<std::string> Tokenizer::DecodeWindow(absl::Span<const int32_t> ids,
                                                    const DecodeContext& ctx,
                                                    bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    const AddedToken* added = added_->FindById(id);
    if (added != nullptr) {
      if (!(skip_special_tokens && added->special)) tokens.push_back(added->content);
      continue;
    }
    const std::string* token = model_->IdToToken(id);
    if (token == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " at position ", i,
                       (id < 0 || id >= vocab_size_) ? " is out of range [0, " : " is unused in [0, ",
                       vocab_size_, ")"));
    }
    tokens.push_back(*token);
  }
  if (!decoder_) {
    std::string out = (!ctx.at_start && !tokens.empty()) ? " " : "";
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  bool fused = false;
  RETURN_IF_ERROR(decoder_->DecodeChain(tokens, ctx, fused));
  std::string out;
  for (const std::string& t : tokens) out += t;
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              const DecodeOptions& options) const {
  return DecodeWindow(ids, DecodeContext{}, options.skip_special_tokens);
}

}  // namespace epserve::tokenizer
