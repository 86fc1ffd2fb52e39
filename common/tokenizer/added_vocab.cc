#include "common/tokenizer/added_vocab.h"

#include <algorithm>

#include "common/status.h"
#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

// The character before `end` / at `begin`, for the single_word and strip rules.
char32_t LastChar(absl::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return DecodeUtf8(text, start);
}

bool IsWordChar(char32_t c) { return c == '_' || IsAlphanumeric(c); }

}  // namespace

absl::StatusOr<std::unique_ptr<AddedVocab>> AddedVocab::FromJson(const Json& j,
                                                                  const Normalizer* normalizer) {
  auto v = std::make_unique<AddedVocab>();
  if (j.is_null()) return v;
  if (!j.is_array()) return JsonError("added_tokens", "expected an array");
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    const Json& e = j[i];
    if (!e.is_object()) return JsonError(where, "expected an object");
    AddedToken t;
    ASSIGN_OR_RETURN(int64_t id, RequiredField<int64_t>(e, "id", where));
    if (id < 0 || id > (int64_t{1} << 30)) return JsonError(where, absl::StrCat("invalid id ", id));
    t.id = static_cast<int32_t>(id);
    ASSIGN_OR_RETURN(t.content, RequiredField<std::string>(e, "content", where));
    if (t.content.empty()) return JsonError(where, "empty content");
    RETURN_IF_ERROR(ValidateUtf8(t.content));
    ASSIGN_OR_RETURN(t.single_word, Field<bool>(e, "single_word", where, false));
    ASSIGN_OR_RETURN(t.lstrip, Field<bool>(e, "lstrip", where, false));
    ASSIGN_OR_RETURN(t.rstrip, Field<bool>(e, "rstrip", where, false));
    ASSIGN_OR_RETURN(t.special, Field<bool>(e, "special", where, false));
    ASSIGN_OR_RETURN(t.normalized, Field<bool>(e, "normalized", where, !t.special));
    const int32_t index = static_cast<int32_t>(v->tokens_.size());
    if (t.normalized) {
      std::string text = t.content;
      if (normalizer != nullptr) RETURN_IF_ERROR(normalizer->Normalize(text));
      if (!text.empty()) v->AddToSet(v->normalized_, text, index);
    } else {
      v->AddToSet(v->raw_, t.content, index);
    }
    v->by_id_[t.id] = index;
    v->by_content_[t.content] = index;
    v->max_id_ = std::max(v->max_id_, t.id);
    v->tokens_.push_back(std::move(t));
  }
  return v;
}

void AddedVocab::AddToSet(MatchSet& set, const std::string& text, int32_t index) {
  set.by_text[text] = index;
  set.first_byte[static_cast<unsigned char>(text[0])] = true;
  if (std::find(set.lengths.begin(), set.lengths.end(), text.size()) == set.lengths.end()) {
    set.lengths.push_back(text.size());
    std::sort(set.lengths.begin(), set.lengths.end(), std::greater<>());
  }
}

int32_t AddedVocab::LongestAt(const MatchSet& set, absl::string_view text, size_t pos,
                              bool skip_special, size_t* len) const {
  // Leftmost-longest: the longest token at `pos`. A special token that is
  // skipped still occupies its match (like the reference's automaton).
  for (size_t l : set.lengths) {
    if (pos + l > text.size()) continue;
    auto it = set.by_text.find(text.substr(pos, l));
    if (it == set.by_text.end()) continue;
    *len = l;
    return (skip_special && tokens_[it->second].special) ? -2 : it->second;
  }
  return -1;
}

void AddedVocab::Split(absl::string_view text, bool raw, bool skip_special, bool at_input_start,
                       std::vector<Segment>& out) const {
  const MatchSet& set = raw ? raw_ : normalized_;
  size_t start_offset = 0;  // start of the pending text segment
  const auto push_text = [&](size_t b, size_t e) {
    out.push_back({-1, std::string(text.substr(b, e - b)), at_input_start && b == 0});
  };
  if (!set.by_text.empty()) {
    size_t pos = 0;
    while (pos < text.size()) {
      if (!set.first_byte[static_cast<unsigned char>(text[pos])]) {
        ++pos;
        continue;
      }
      size_t len = 0;
      const int32_t index = LongestAt(set, text, pos, skip_special, &len);
      if (index == -1) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + len;
      pos = stop;
      if (index == -2) continue;  // skipped special token: stays in the text
      const AddedToken& t = tokens_[index];
      if (t.single_word) {
        const bool start_space = start == 0 || !IsWordChar(LastChar(text.substr(0, start)));
        size_t next = stop;
        const bool stop_space = stop == text.size() || !IsWordChar(DecodeUtf8(text, next));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t new_start = start;
        while (new_start > start_offset) {
          size_t prev = new_start - 1;
          while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
          size_t p = prev;
          if (!IsWhitespace(DecodeUtf8(text, p))) break;
          new_start = prev;
        }
        start = new_start;
      }
      if (t.rstrip) {
        while (stop < text.size()) {
          size_t p = stop;
          if (!IsWhitespace(DecodeUtf8(text, p))) break;
          stop = p;
        }
        pos = stop;
      }
      if (start > start_offset) push_text(start_offset, start);
      out.push_back({t.id, "", false});
      start_offset = stop;
    }
  }
  if (start_offset < text.size() || (start_offset == 0 && text.empty())) {
    push_text(start_offset, text.size());
  }
}

const AddedToken* AddedVocab::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocab::FindByContent(absl::string_view content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace epserve::tokenizer
