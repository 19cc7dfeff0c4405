// The encode/decode pipeline; loading is in tokenizer_json.cpp.
#include <unicode/uchar.h>

#include <algorithm>

#include "common/error.h"
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

void Tokenizer::Impl::encode_sequence(std::string_view text, std::vector<int32_t>& out) const {
  const size_t bad = find_invalid_utf8(text);
  HF_CHECK_INPUT(bad == std::string_view::npos, "tokenize: input is not valid UTF-8 (byte ", bad,
                 " of ", text.size(), ")");
  std::vector<Segment> raw;
  if (raw_matcher.empty()) {
    if (!text.empty()) raw.push_back({0, text.size(), nullptr});
  } else {
    split_added(text, raw_matcher, raw);
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
    if (normalizer) normalizer->apply(normalized);
    norm_segments.clear();
    if (normalized_matcher.empty()) {
      if (!normalized.empty()) norm_segments.push_back({0, normalized.size(), nullptr});
    } else {
      split_added(normalized, normalized_matcher, norm_segments);
    }
    for (const Segment& ns : norm_segments) {
      if (ns.token) {
        out.push_back(ns.token->id);
        continue;
      }
      pieces.clear();
      pieces.emplace_back(normalized, ns.begin, ns.end - ns.begin);
      // Whether the piece starts the original text (Metaspace's "first" prepend scheme).
      bool first_at_origin = seg.begin == 0 && ns.begin == 0;
      if (pre_tokenizer) pre_tokenizer->apply(pieces, first_at_origin);
      for (const std::string& p : pieces) model->tokenize(p, out);
    }
  }
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& out,
                            bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (!add_special_tokens || !m.post) {
    m.encode_sequence(text, out);
    return;
  }
  for (const TemplateItem& item : m.post->single) {
    if (item.sequence < 0) {
      out.insert(out.end(), item.ids.begin(), item.ids.end());
    } else {
      m.encode_sequence(text, out);
    }
  }
}

size_t Tokenizer::num_special_tokens_to_add(bool pair) const {
  const Impl& m = *impl_;
  if (!m.post) return 0;
  size_t n = 0;
  for (const TemplateItem& item : pair ? m.post->pair : m.post->single) {
    if (item.sequence < 0) n += item.ids.size();
  }
  return n;
}

bool Tokenizer::is_special_id(int32_t id) const {
  const Impl& m = *impl_;
  return id >= 0 && id < static_cast<int32_t>(m.is_special.size()) && m.is_special[id] != 0;
}

namespace {

// HF's LongestFirst truncation to `max` tokens in all (right side): a single sequence keeps its
// first max; a pair shares max, the shorter keeping as much as it can.
void truncate_longest_first(std::vector<int32_t>& a, std::vector<int32_t>* b, size_t max) {
  if (!b) {
    if (a.size() > max) a.resize(max);
    return;
  }
  if (a.size() + b->size() <= max) return;
  const bool swapped = a.size() > b->size();
  size_t n1 = swapped ? b->size() : a.size(), n2 = swapped ? a.size() : b->size();
  if (n1 > max) {
    n2 = n1;
  } else {
    n2 = std::max(n1, max - n1);
  }
  if (n1 + n2 > max) {
    n1 = max / 2;
    n2 = n1 + max % 2;
  }
  if (swapped) std::swap(n1, n2);
  a.resize(std::min(a.size(), n1));
  b->resize(std::min(b->size(), n2));
}

}  // namespace

Encoding Tokenizer::encode_pair(std::string_view text, std::optional<std::string_view> pair,
                                bool add_special_tokens, size_t max_length) const {
  const Impl& m = *impl_;
  std::vector<int32_t> seq[2];
  m.encode_sequence(text, seq[0]);
  if (pair) m.encode_sequence(*pair, seq[1]);
  if (max_length > 0) {
    const size_t added = add_special_tokens ? num_special_tokens_to_add(pair.has_value()) : 0;
    HF_CHECK_INPUT(max_length > added, "tokenize: max_length ", max_length,
                   " leaves no room for text beside the ", added, " special tokens");
    truncate_longest_first(seq[0], pair ? &seq[1] : nullptr, max_length - added);
  }
  Encoding e;
  auto append = [&](const std::vector<int32_t>& ids, int32_t type_id, bool special) {
    e.ids.insert(e.ids.end(), ids.begin(), ids.end());
    e.type_ids.insert(e.type_ids.end(), ids.size(), type_id);
    e.special_tokens_mask.insert(e.special_tokens_mask.end(), ids.size(), special ? 1 : 0);
  };
  using Plain = PostProcessor::Plain;
  if (!m.post || (!add_special_tokens && m.post->plain != Plain::kTemplate)) {
    const bool zero = m.post && m.post->plain == Plain::kAllZero;
    append(seq[0], 0, false);
    if (pair) append(seq[1], zero ? 0 : 1, false);
    return e;
  }
  HF_CHECK_INPUT(!pair || !m.post->pair.empty(), m.source,
                 ": the post-processor has no pair template; cannot encode a text pair");
  // The template (without its special tokens unless they are added).
  for (const TemplateItem& item : pair ? m.post->pair : m.post->single) {
    if (item.sequence >= 0) {
      append(seq[item.sequence], item.type_id, false);
    } else if (add_special_tokens) {
      append(item.ids, item.type_id, true);
    }
  }
  return e;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
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
  if (m.decoder) {
    m.decoder->decode_chain(tokens);
    for (const std::string& t : tokens) out += t;
    return out;
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) out += ' ';
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
const SpecialTokens& Tokenizer::special_tokens() const {
  return impl_->specials;
}
const std::vector<AddedToken>& Tokenizer::added_tokens() const {
  return impl_->added;
}

}  // namespace hfrun::data
