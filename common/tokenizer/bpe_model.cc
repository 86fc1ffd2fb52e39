#include "common/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std::priority_queue pops the largest: lowest rank first, then leftmost.
  bool operator<(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& j) {
  const std::string where = "model";
  std::unique_ptr<BpeModel> m(new BpeModel());
  ASSIGN_OR_RETURN(std::string type, Field<std::string>(j, "type", where, "BPE"));
  if (type != "BPE") return Unsupported("model", type, where, "BPE");
  if (j.contains("dropout") && !j["dropout"].is_null() &&
      !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0)) {
    return absl::UnimplementedError("tokenizer.json: model.dropout is not supported (not deterministic)");
  }
  ASSIGN_OR_RETURN(m->continuing_subword_prefix_,
                   Field<std::string>(j, "continuing_subword_prefix", where, ""));
  ASSIGN_OR_RETURN(m->end_of_word_suffix_, Field<std::string>(j, "end_of_word_suffix", where, ""));
  ASSIGN_OR_RETURN(m->byte_fallback_, Field<bool>(j, "byte_fallback", where, false));
  ASSIGN_OR_RETURN(m->fuse_unk_, Field<bool>(j, "fuse_unk", where, false));
  ASSIGN_OR_RETURN(m->ignore_merges_, Field<bool>(j, "ignore_merges", where, false));

  auto vocab_it = j.find("vocab");
  if (vocab_it == j.end() || !vocab_it->is_object()) {
    return JsonError(where, "missing object 'vocab'");
  }
  m->vocab_.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > (int64_t{1} << 30)) {
      return JsonError("model.vocab", absl::StrCat("token '", it.key(),
                                                   "' has an invalid id ", it.value().dump()));
    }
    const int32_t id = it.value().get<int32_t>();
    if (static_cast<size_t>(id) >= m->id_to_token_.size()) {
      m->id_to_token_.resize(id + 1);
      m->has_id_.resize(id + 1, false);
    }
    m->id_to_token_[id] = it.key();
    m->has_id_[id] = true;
    m->vocab_[it.key()] = id;
  }

  ASSIGN_OR_RETURN(std::string unk, Field<std::string>(j, "unk_token", where, ""));
  if (!unk.empty()) {
    auto id = m->TokenToId(unk);
    if (!id) return JsonError(where, absl::StrCat("unk_token '", unk, "' is not in the vocab"));
    m->unk_id_ = *id;
  }
  if (m->byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      auto id = m->TokenToId(absl::StrFormat("<0x%02X>", b));
      if (!id) {
        m->byte_token_ids_.clear();  // incomplete table: per-word check like the reference
        break;
      }
      m->byte_token_ids_.push_back(*id);
    }
  }

  m->char_ids_.assign(kCharTableSize, -1);
  for (const auto& [token, id] : m->vocab_) {
    size_t pos = 0;
    const char32_t cp = DecodeUtf8(token, pos);
    if (pos == token.size() && cp < kCharTableSize) m->char_ids_[cp] = id;
  }

  auto merges_it = j.find("merges");
  if (merges_it == j.end() || !merges_it->is_array()) {
    return JsonError(where, "missing array 'merges'");
  }
  m->merges_.reserve(merges_it->size());
  const size_t prefix_len = m->continuing_subword_prefix_.size();
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const Json& e = (*merges_it)[i];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return JsonError(absl::StrCat("model.merges[", i, "]"),
                         absl::StrCat("expected \"left right\", found '", s, "'"));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      return JsonError(absl::StrCat("model.merges[", i, "]"),
                       "expected a string or a pair of strings");
    }
    const std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : b);
    for (const std::string* t : std::initializer_list<const std::string*>{&a, &b, &merged}) {
      if (!m->vocab_.contains(*t)) {
        return JsonError(absl::StrCat("model.merges[", i, "]"),
                         absl::StrCat("token '", *t, "' is not in the vocab"));
      }
    }
    m->merges_[PairKey(m->vocab_[a], m->vocab_[b])] = {static_cast<int32_t>(i), m->vocab_[merged]};
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_end() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = TokenToId(word)) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  MergeWord(word, out);
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheCapacity) {
      cache_.try_emplace(word, out.begin() + static_cast<std::ptrdiff_t>(start), out.end());
    }
  }
}

void BpeModel::MergeWord(absl::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  // Pending unknown token (fused runs of unknown characters when fuse_unk).
  bool unk_pending = false;
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t begin = pos;
    pos += Utf8CharLen(static_cast<unsigned char>(word[pos]));
    if (pos > word.size()) pos = word.size();
    absl::string_view ch = word.substr(begin, pos - begin);
    const bool is_first = begin == 0, is_last = pos == word.size();
    absl::string_view key = ch;
    const bool decorated = (!is_first && !continuing_subword_prefix_.empty()) ||
                           (is_last && !end_of_word_suffix_.empty());
    if (!decorated) {
      size_t p = 0;
      const char32_t cp = DecodeUtf8(ch, p);
      if (cp < kCharTableSize && char_ids_[cp] >= 0) {
        if (unk_pending) add(*unk_id_);
        unk_pending = false;
        add(char_ids_[cp]);
        continue;
      }
    }
    if (decorated) {
      piece.clear();
      if (!is_first) piece += continuing_subword_prefix_;
      piece.append(ch.data(), ch.size());
      if (is_last) piece += end_of_word_suffix_;
      key = piece;
    }
    if (auto id = TokenToId(key)) {
      if (unk_pending) add(*unk_id_);
      unk_pending = false;
      add(*id);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> bytes;
      bool all = true;
      for (char c : key) {
        const uint8_t b = static_cast<uint8_t>(c);
        std::optional<int32_t> id;
        if (!byte_token_ids_.empty()) {
          id = byte_token_ids_[b];
        } else {
          id = TokenToId(absl::StrFormat("<0x%02X>", b));
        }
        if (!id) {
          all = false;
          break;
        }
        bytes.push_back(*id);
      }
      if (all) {
        // The reference leaves a pending unk in place across byte tokens.
        for (int32_t id : bytes) add(id);
        continue;
      }
    }
    if (unk_id_) {
      if (unk_pending && !fuse_unk_) add(*unk_id_);
      unk_pending = true;
    }
    // Without an unk token the character is dropped, as in the reference.
  }
  if (unk_pending) add(*unk_id_);

  std::priority_queue<Candidate> queue;
  const auto push_pair = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(PairKey(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale
    left.id = top.new_id;
    right.live = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.live) out.push_back(s.id);
  }
}

}  // namespace epserve::tokenizer
