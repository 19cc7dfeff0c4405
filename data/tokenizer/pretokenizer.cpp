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
// exactly as HF NormalizedString::split does; empty results are dropped.
void emit_with_behavior(const std::string& piece,
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
  for (auto [b, e] : kept) {
    if (e > b) out.push_back(piece.substr(b, e - b));
  }
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

void SplitPreTokenizer::split(const std::string& piece, std::vector<std::string>& out) const {
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
  emit_with_behavior(piece, spans, behavior_, out);
}

void SplitPreTokenizer::apply(std::vector<std::string>& pieces) const {
  std::vector<std::string> out;
  out.reserve(pieces.size() * 4);
  for (const auto& p : pieces) split(p, out);
  pieces = std::move(out);
}

ByteLevelPreTokenizer::ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
    : add_prefix_space_(add_prefix_space) {
  if (use_regex) {
    gpt2_split_ = std::make_unique<SplitPreTokenizer>(kGpt2SplitPattern, true,
                                                      SplitBehavior::kIsolated, false);
  }
}

void ByteLevelPreTokenizer::apply(std::vector<std::string>& pieces) const {
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

void DigitsPreTokenizer::apply(std::vector<std::string>& pieces) const {
  // HF Digits: numeric characters (Rust's char::is_numeric: general categories Nd, Nl, No, so
  // also Arabic-Indic digits, Roman numerals, fractions) are the delimiters, Isolated one by
  // one or Contiguous as runs.
  std::vector<std::string> out;
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  for (const auto& p : pieces) {
    spans.clear();
    size_t prev = 0;
    for (size_t i = 0; i < p.size();) {
      const size_t len = utf8_length(static_cast<unsigned char>(p[i]));
      if (is_numeric(utf8_decode(p, i))) {
        if (prev != i) spans.emplace_back(prev, i, false);
        spans.emplace_back(i, i + len, true);
        prev = i + len;
      }
      i += len;
    }
    if (prev != p.size()) spans.emplace_back(prev, p.size(), false);
    emit_with_behavior(p, spans,
                       individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, out);
  }
  pieces = std::move(out);
}

}  // namespace hfrun::data
