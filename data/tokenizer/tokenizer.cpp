// The encode/decode pipeline; loading is in tokenizer_json.cpp.
#include <unicode/uchar.h>

#include <algorithm>

#include "common/error.h"
#include "data/tokenizer/byte_level.h"
#include "data/tokenizer/tokenizer_impl.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {
namespace {

bool is_word_char(char32_t c) {
  // Rust's char::is_alphanumeric (Alphabetic or Numeric) or '_', as HF's single_word check.
  if (c == U'_') return true;
  if (u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC)) return true;
  const int8_t t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_space(char32_t c) {
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

// Start of the code point that ends just before byte `end`.
size_t prev_char_start(std::string_view s, size_t end) {
  size_t k = end - 1;
  while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xc0) == 0x80) --k;
  return k;
}

struct Segment {
  size_t begin, end;
  const AddedToken* token;  // null: plain text
};

// Splits text[begin, end) on the matcher's tokens, with HF's single_word / lstrip / rstrip
// rules (AddedVocabulary::find_matches).
void split_added(std::string_view text, const AddedTokenMatcher& matcher,
                 std::vector<Segment>& out) {
  size_t start_offset = 0;
  for (size_t pos = 0; pos < text.size();) {
    const AddedToken* tok = matcher.match_at(text, pos);
    if (!tok) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + tok->match.size();
    pos = stop;  // matches do not overlap
    if (tok->single_word) {
      bool start_ok = start == 0 || !is_word_char(utf8_decode(text, prev_char_start(text, start)));
      bool stop_ok = stop == text.size() || !is_word_char(utf8_decode(text, stop));
      if (!start_ok || !stop_ok) continue;
    }
    if (tok->lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t k = prev_char_start(text, s);
        if (!is_space(utf8_decode(text, k))) break;
        s = k;
      }
      start = std::max(s, start_offset);
    }
    if (tok->rstrip) {
      while (stop < text.size() && is_space(utf8_decode(text, stop))) {
        stop += utf8_length(static_cast<unsigned char>(text[stop]));
      }
      pos = stop;
    }
    if (start_offset < start) out.push_back({start_offset, start, nullptr});
    out.push_back({start, stop, tok});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), nullptr});
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<const AddedToken*>& tokens) {
  for (auto& b : by_first_byte_) b.clear();
  count_ = 0;
  for (const AddedToken* t : tokens) {
    if (t->match.empty()) continue;
    by_first_byte_[static_cast<unsigned char>(t->match[0])].push_back(t);
    ++count_;
  }
  for (auto& b : by_first_byte_) {
    std::stable_sort(b.begin(), b.end(), [](const AddedToken* x, const AddedToken* y) {
      return x->match.size() > y->match.size();
    });
  }
}

const AddedToken* AddedTokenMatcher::match_at(std::string_view text, size_t pos) const {
  const auto& cands = by_first_byte_[static_cast<unsigned char>(text[pos])];
  for (const AddedToken* t : cands) {
    if (text.size() - pos >= t->match.size() && text.compare(pos, t->match.size(), t->match) == 0) {
      return t;
    }
  }
  return nullptr;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  encode_into(text, ids, add_special_tokens);
  return ids;
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out,
                            bool add_special_tokens) const {
  const Impl& m = *impl_;
  const size_t bad = find_invalid_utf8(text);
  HF_CHECK_INPUT(bad == std::string_view::npos, "tokenize: input is not valid UTF-8 (byte ", bad,
                 " of ", text.size(), ")");
  if (add_special_tokens) out.insert(out.end(), m.prefix_ids.begin(), m.prefix_ids.end());

  std::vector<Segment> raw;
  if (m.raw_matcher.empty()) {
    if (!text.empty()) raw.push_back({0, text.size(), nullptr});
  } else {
    split_added(text, m.raw_matcher, raw);
  }
  std::vector<std::string> pieces;
  std::vector<Segment> norm_segments;
  std::string normalized;
  for (const Segment& seg : raw) {
    if (seg.token) {
      out.push_back(seg.token->id);
      continue;
    }
    normalized.assign(text.substr(seg.begin, seg.end - seg.begin));
    if (m.normalizer) m.normalizer->apply(normalized);
    norm_segments.clear();
    if (m.normalized_matcher.empty()) {
      if (!normalized.empty()) norm_segments.push_back({0, normalized.size(), nullptr});
    } else {
      split_added(normalized, m.normalized_matcher, norm_segments);
    }
    for (const Segment& ns : norm_segments) {
      if (ns.token) {
        out.push_back(ns.token->id);
        continue;
      }
      pieces.clear();
      pieces.emplace_back(normalized, ns.begin, ns.end - ns.begin);
      if (m.pre_tokenizer) m.pre_tokenizer->apply(pieces);
      for (const std::string& p : pieces) m.model->tokenize(p, out);
    }
  }
  if (add_special_tokens) out.insert(out.end(), m.suffix_ids.begin(), m.suffix_ids.end());
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string_view> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    HF_CHECK_INPUT(
        id >= 0 && id < static_cast<int32_t>(m.id_to_token.size()) && !m.id_to_token[id].empty(),
        "decode: id ", id, " is not in the vocabulary of ", m.source, " (size ",
        m.id_to_token.size(), ")");
    if (skip_special_tokens && m.is_special[id]) continue;
    tokens.push_back(m.id_to_token[id]);
  }
  std::string out;
  if (m.byte_level_decoder) {
    // HF ByteLevel decoder: each token's characters back to bytes; a token with a character
    // outside the byte alphabet (an added token, say) contributes its own UTF-8 bytes.
    std::string bytes;
    for (std::string_view t : tokens) {
      if (!byte_level_decode_token(t, bytes)) bytes.append(t);
    }
    return utf8_lossy(bytes);
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i && !m.has_decoder) out += ' ';
    out.append(tokens[i]);
  }
  return out;
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->id_to_token.size());
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& a : impl_->added) {
    if (a.content == token) return a.id;
  }
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || impl_->id_to_token[id].empty()) return std::nullopt;
  return impl_->id_to_token[id];
}

std::optional<int32_t> Tokenizer::eot_id() const {
  return impl_->eot;
}
const std::vector<AddedToken>& Tokenizer::added_tokens() const {
  return impl_->added;
}

}  // namespace hfrun::data
