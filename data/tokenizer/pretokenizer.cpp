#include "data/tokenizer/pretokenizer.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "common/error.h"
#include "data/tokenizer/byte_level.h"
#include "data/tokenizer/utf8.h"

#include <unicode/uchar.h>

namespace hfrun::data {

const char* const kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

// Applies a delimiter behaviour to a piece cut into (begin, end, is_match) spans covering it,
// exactly as HF NormalizedString::split does; empty results are dropped. Returns where the
// first emitted piece begins in `piece` (npos when none is).
size_t emit_with_behavior(const std::string& piece,
                          const std::vector<std::tuple<size_t, size_t, bool>>& spans,
                          SplitBehavior behavior, std::vector<std::string>& out) {
  std::vector<std::pair<size_t, size_t>> kept;  // spans to emit, in order
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto [b, e, m] : spans) kept.emplace_back(b, e);
      break;
    case SplitBehavior::kRemoved:
      for (auto [b, e, m] : spans) {
        if (!m) kept.emplace_back(b, e);
      }
      break;
    case SplitBehavior::kContiguous:  // runs of equal kind fuse
      for (auto [b, e, m] : spans) {
        if (m == previous_match && !kept.empty()) {
          kept.back().second = e;
        } else {
          kept.emplace_back(b, e);
        }
        previous_match = m;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:  // a match joins the span before it
      for (auto [b, e, m] : spans) {
        if (m && !previous_match && !kept.empty()) {
          kept.back().second = e;
        } else {
          kept.emplace_back(b, e);
        }
        previous_match = m;
      }
      break;
    case SplitBehavior::kMergedWithNext:  // a match joins the span after it (scan backwards)
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        auto [b, e, m] = *it;
        if (m && !previous_match && !kept.empty()) {
          kept.back().first = b;
        } else {
          kept.emplace_back(b, e);
        }
        previous_match = m;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  size_t first = std::string::npos;
  for (auto [b, e] : kept) {
    if (e <= b) continue;
    if (first == std::string::npos) first = b;
    out.push_back(piece.substr(b, e - b));
  }
  return first;
}

// Splits every piece on the characters `is_delimiter` accepts (each such character one
// match, as HF's Pattern for a char predicate) with `behavior`.
template <typename Pred>
void split_on_chars(std::vector<std::string>& pieces, bool& first_at_origin, Pred&& is_delimiter,
                    SplitBehavior behavior) {
  std::vector<std::string> out;
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  for (size_t k = 0; k < pieces.size(); ++k) {
    const std::string& p = pieces[k];
    spans.clear();
    size_t prev = 0;
    for (size_t i = 0; i < p.size();) {
      const size_t len = utf8_length(static_cast<unsigned char>(p[i]));
      if (is_delimiter(utf8_decode(p, i))) {
        if (prev != i) spans.emplace_back(prev, i, false);
        spans.emplace_back(i, i + len, true);
        prev = i + len;
      }
      i += len;
    }
    if (prev != p.size()) spans.emplace_back(prev, p.size(), false);
    const size_t first = emit_with_behavior(p, spans, behavior, out);
    if (k == 0 && first != 0) first_at_origin = false;
  }
  pieces = std::move(out);
}

// Rust's char::is_whitespace (Unicode White_Space).
bool is_whitespace(char32_t c) {
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

// HF's is_bert_punc / is_punc: ASCII punctuation or a Unicode punctuation category (P*).
bool is_punctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) ||
           (c >= 0x7b && c <= 0x7e);
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & U_GC_P_MASK) != 0;
}

bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  const int8_t t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

}  // namespace

SplitPreTokenizer::SplitPreTokenizer(const std::string& pattern, bool is_regex,
                                     SplitBehavior behavior, bool invert)
    : behavior_(behavior), invert_(invert) {
  if (is_regex) {
    regex_ = std::make_unique<Regex>(pattern);
  } else {
    HF_CHECK_INPUT(!pattern.empty(), "Split pre-tokenizer: empty string pattern");
    literal_ = pattern;
  }
}

size_t SplitPreTokenizer::split(const std::string& piece, std::vector<std::string>& out) const {
  // Matches -> spans covering the piece (HF Pattern::find_matches).
  thread_local std::vector<std::tuple<size_t, size_t, bool>> spans;
  spans.clear();
  size_t prev = 0;
  auto on_match = [&](size_t b, size_t e) {
    if (prev != b) spans.emplace_back(prev, b, false);
    spans.emplace_back(b, e, true);
    prev = e;
  };
  if (regex_) {
    regex_->find_all(piece, on_match);
  } else {
    for (size_t at = piece.find(literal_); at != std::string::npos;
         at = piece.find(literal_, at + literal_.size())) {
      on_match(at, at + literal_.size());
    }
  }
  if (prev != piece.size()) spans.emplace_back(prev, piece.size(), false);
  if (invert_) {
    for (auto& s : spans) std::get<2>(s) = !std::get<2>(s);
  }
  return emit_with_behavior(piece, spans, behavior_, out);
}

void SplitPreTokenizer::apply(std::vector<std::string>& pieces, bool& first_at_origin) const {
  std::vector<std::string> out;
  out.reserve(pieces.size() * 4);
  for (size_t k = 0; k < pieces.size(); ++k) {
    if (split(pieces[k], out) != 0 && k == 0) first_at_origin = false;
  }
  pieces = std::move(out);
}

ByteLevelPreTokenizer::ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
    : add_prefix_space_(add_prefix_space) {
  if (use_regex) {
    gpt2_split_ = std::make_unique<SplitPreTokenizer>(kGpt2SplitPattern, true,
                                                      SplitBehavior::kIsolated, false);
  }
}

void ByteLevelPreTokenizer::apply(std::vector<std::string>& pieces, bool&) const {
  std::vector<std::string> split;
  split.reserve(pieces.size() * 4);
  for (auto& p : pieces) {
    if (add_prefix_space_ && (p.empty() || p[0] != ' ')) p.insert(0, 1, ' ');
    if (gpt2_split_) {
      gpt2_split_->split(p, split);
    } else if (!p.empty()) {
      split.push_back(std::move(p));
    }
  }
  pieces.clear();
  for (const auto& s : split) {
    std::string mapped;
    mapped.reserve(s.size() * 2);
    byte_level_encode(s, mapped);
    pieces.push_back(std::move(mapped));
  }
}

void DigitsPreTokenizer::apply(std::vector<std::string>& pieces, bool& first_at_origin) const {
  // HF Digits: numeric characters (Rust's char::is_numeric: general categories Nd, Nl, No, so
  // also Arabic-Indic digits, Roman numerals, fractions) are the delimiters, Isolated one by
  // one or Contiguous as runs.
  split_on_chars(pieces, first_at_origin, is_numeric,
                 individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
}

void WhitespaceSplitPreTokenizer::apply(std::vector<std::string>& pieces,
                                        bool& first_at_origin) const {
  split_on_chars(pieces, first_at_origin, is_whitespace, SplitBehavior::kRemoved);
}

void WhitespacePreTokenizer::apply(std::vector<std::string>& pieces, bool& first_at_origin) const {
  // HF's Whitespace is the Rust regex \w+|[^\w\s]+ with its matches kept: maximal runs of word
  // characters (Rust's Unicode \w: Alphabetic, marks, Nd, Pc, Join_Control) and maximal runs of
  // characters that are neither word nor White_Space; whitespace is dropped.
  auto kind = [](char32_t c) {
    const auto u = static_cast<UChar32>(c);
    if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL) ||
        (U_GET_GC_MASK(u) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0) {
      return 1;  // word
    }
    return is_whitespace(c) ? 0 : 2;
  };
  std::vector<std::string> out;
  for (size_t k = 0; k < pieces.size(); ++k) {
    const std::string& p = pieces[k];
    size_t run_begin = 0;
    int run_kind = 0;
    bool first = true;
    auto close = [&](size_t end) {
      if (run_kind == 0 || end <= run_begin) return;
      if (k == 0 && first && run_begin != 0) first_at_origin = false;
      first = false;
      out.push_back(p.substr(run_begin, end - run_begin));
    };
    for (size_t i = 0; i < p.size(); i += utf8_length(static_cast<unsigned char>(p[i]))) {
      const int c = kind(utf8_decode(p, i));
      if (c != run_kind) {
        close(i);
        run_begin = i;
        run_kind = c;
      }
    }
    close(p.size());
    if (k == 0 && first) first_at_origin = false;  // nothing kept of the first piece
  }
  pieces = std::move(out);
}

void BertPreTokenizer::apply(std::vector<std::string>& pieces, bool& first_at_origin) const {
  split_on_chars(pieces, first_at_origin, is_whitespace, SplitBehavior::kRemoved);
  split_on_chars(pieces, first_at_origin, is_punctuation, SplitBehavior::kIsolated);
}

void PunctuationPreTokenizer::apply(std::vector<std::string>& pieces, bool& first_at_origin) const {
  split_on_chars(pieces, first_at_origin, is_punctuation, behavior_);
}

MetaspacePreTokenizer::MetaspacePreTokenizer(char32_t replacement, MetaspacePrepend prepend,
                                             bool split)
    : prepend_(prepend), split_(split), replacement_cp_(replacement) {
  utf8_append(replacement_, replacement);
}

void MetaspacePreTokenizer::apply(std::vector<std::string>& pieces, bool& first_at_origin) const {
  for (size_t k = 0; k < pieces.size(); ++k) {
    std::string& p = pieces[k];
    std::string replaced;
    replaced.reserve(p.size() + replacement_.size());
    for (char c : p) {
      if (c == ' ') {
        replaced += replacement_;
      } else {
        replaced += c;
      }
    }
    const bool starts = replaced.compare(0, replacement_.size(), replacement_) == 0;
    if (!starts && (prepend_ == MetaspacePrepend::kAlways ||
                    (prepend_ == MetaspacePrepend::kFirst && k == 0 && first_at_origin))) {
      replaced.insert(0, replacement_);
    }
    p = std::move(replaced);
  }
  if (split_) {
    split_on_chars(
        pieces, first_at_origin, [this](char32_t c) { return c == replacement_cp_; },
        SplitBehavior::kMergedWithNext);
  }
}

}  // namespace hfrun::data
