#include "data/tokenizer/precompiled.h"

#include <unicode/brkiter.h>
#include <unicode/utext.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

#include "common/error.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {
namespace {

// Darts-clone double-array units.
bool has_leaf(uint32_t u) {
  return ((u >> 8) & 1) != 0;
}
uint32_t value(uint32_t u) {
  return u & 0x7FFFFFFFu;
}
uint32_t label(uint32_t u) {
  return u & (0x80000000u | 0xFFu);
}
uint32_t offset(uint32_t u) {
  return (u >> 10) << ((u & (1u << 9)) >> 6);
}

}  // namespace

std::string base64_decode(std::string_view text, const std::string& what) {
  auto sextet = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  HF_CHECK_INPUT(text.size() % 4 == 0, what, ": not base64 (length ", text.size(),
                 " is not a multiple of 4)");
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + static_cast<size_t>(k)];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      v[k] = sextet(c);
      HF_CHECK_INPUT(v[k] >= 0 && pad == 0, what, ": not base64 (byte ", i + k, ")");
    }
    const uint32_t n = (static_cast<uint32_t>(v[0]) << 18) | (static_cast<uint32_t>(v[1]) << 12) |
                       (static_cast<uint32_t>(v[2]) << 6) | static_cast<uint32_t>(v[3]);
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(n & 0xFF);
  }
  return out;
}

PrecompiledNormalizer::PrecompiledNormalizer(std::string_view map) {
  HF_CHECK_INPUT(map.size() >= 4, "Precompiled charsmap: ", map.size(),
                 " bytes, too short for its trie size");
  uint32_t trie_bytes = 0;
  for (int k = 3; k >= 0; --k) trie_bytes = (trie_bytes << 8) | static_cast<unsigned char>(map[k]);
  HF_CHECK_INPUT(trie_bytes % 4 == 0 && trie_bytes >= 4 && trie_bytes <= map.size() - 4,
                 "Precompiled charsmap: trie size ", trie_bytes, " does not fit the ", map.size(),
                 "-byte map (truncated?)");
  // Real charsmaps are ~250 KB; the bound keeps the validation below cheap.
  constexpr uint32_t kMaxTrieBytes = 64u << 20;
  HF_CHECK_INPUT(trie_bytes <= kMaxTrieBytes, "Precompiled charsmap: trie size ", trie_bytes,
                 " is larger than the ", kMaxTrieBytes, "-byte limit");
  units_.resize(trie_bytes / 4);
  for (size_t i = 0; i < units_.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(map.data() + 4 + 4 * i);
    units_[i] = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  }
  normalized_.assign(map.substr(4 + trie_bytes));
  HF_CHECK_INPUT(find_invalid_utf8(normalized_) == std::string::npos,
                 "Precompiled charsmap: the replacement strings are not valid UTF-8");
  // Every node reachable from the root must keep its leaf inside the trie and its replacement
  // inside the strings (a hostile map could point anywhere, or loop).
  const size_t n = units_.size();
  std::vector<uint8_t> seen(n, 0);
  std::vector<size_t> stack = {static_cast<size_t>(offset(units_[0]))};
  while (!stack.empty()) {
    const size_t base = stack.back();
    stack.pop_back();
    for (uint32_t c = 1; c < 256; ++c) {
      const size_t pos = base ^ c;
      if (pos >= n || label(units_[pos]) != c) continue;
      if (seen[pos]) continue;
      seen[pos] = 1;
      const size_t next = pos ^ offset(units_[pos]);
      if (has_leaf(units_[pos])) {
        HF_CHECK_INPUT(next < n, "Precompiled charsmap: a leaf points outside the trie");
        const uint32_t at = value(units_[next]);
        HF_CHECK_INPUT(at < normalized_.size(), "Precompiled charsmap: a replacement offset ", at,
                       " points outside the ", normalized_.size(), "-byte strings");
        HF_CHECK_INPUT((static_cast<unsigned char>(normalized_[at]) & 0xC0) != 0x80,
                       "Precompiled charsmap: a replacement offset ", at,
                       " points inside a UTF-8 character");
      }
      stack.push_back(next);
    }
  }
}

std::optional<std::string_view> PrecompiledNormalizer::transform(std::string_view chunk) const {
  const size_t n = units_.size();
  size_t pos = offset(units_[0]);
  for (unsigned char c : chunk) {
    if (c == 0) break;
    pos ^= c;
    if (pos >= n || label(units_[pos]) != c) return std::nullopt;
    const bool leaf = has_leaf(units_[pos]);
    pos ^= offset(units_[pos]);
    if (leaf && pos < n) {  // the shortest mapped prefix wins, as in HF
      const size_t begin = value(units_[pos]);
      if (begin >= normalized_.size() ||
          (static_cast<unsigned char>(normalized_[begin]) & 0xC0) == 0x80) {
        return std::nullopt;  // (the load-time check rules this out)
      }
      const size_t end = normalized_.find('\0', begin);
      return std::string_view(normalized_)
          .substr(begin, (end == std::string::npos ? normalized_.size() : end) - begin);
    }
  }
  return std::nullopt;
}

void PrecompiledNormalizer::apply(std::string& text) const {
  if (text.empty()) return;
  std::string out;
  out.reserve(text.size());
  bool modified = false;
  const std::string_view t(text);
  auto rewrite = [&](std::string_view g) {  // one grapheme cluster
    if (g.size() < 6) {
      if (auto r = transform(g)) {
        out.append(*r);
        modified = true;
        return;
      }
    }
    for (size_t i = 0; i < g.size();) {
      const size_t len = utf8_length(static_cast<unsigned char>(g[i]));
      const std::string_view ch = g.substr(i, len);
      if (auto r = transform(ch)) {
        out.append(*r);
        modified = true;
      } else {
        out.append(ch);
      }
      i += len;
    }
  };
  const bool ascii = std::all_of(t.begin(), t.end(), [](char c) { return (c & 0x80) == 0; });
  if (ascii) {
    // ASCII text: every character is its own cluster, except CR LF.
    for (size_t i = 0; i < t.size();) {
      const size_t len = t[i] == '\r' && i + 1 < t.size() && t[i + 1] == '\n' ? 2 : 1;
      rewrite(t.substr(i, len));
      i += len;
    }
  } else {
    HF_CHECK_INPUT(t.size() <= static_cast<size_t>(INT32_MAX), "Precompiled normalizer: a text of ",
                   t.size(), " bytes is too long (ICU positions are 32-bit)");
    // Extended grapheme clusters (UAX #29) from ICU; one iterator per thread (creating one
    // is costly and takes ICU's service lock).
    thread_local std::unique_ptr<icu::BreakIterator> graphemes;
    UErrorCode status = U_ZERO_ERROR;
    if (!graphemes) {
      graphemes.reset(icu::BreakIterator::createCharacterInstance(icu::Locale::getRoot(), status));
      HF_CHECK(U_SUCCESS(status) && graphemes,
               "ICU grapheme iterator unavailable: ", u_errorName(status));
    }
    std::unique_ptr<UText, UText* (*)(UText*)> ut(
        utext_openUTF8(nullptr, t.data(), static_cast<int64_t>(t.size()), &status), utext_close);
    graphemes->setText(ut.get(), status);
    HF_CHECK(U_SUCCESS(status), "ICU grapheme iteration failed: ", u_errorName(status));
    for (int32_t b = graphemes->first(), e = graphemes->next(); e != icu::BreakIterator::DONE;
         b = e, e = graphemes->next()) {
      rewrite(t.substr(static_cast<size_t>(b), static_cast<size_t>(e - b)));
    }
  }
  if (modified) text = std::move(out);
}

}  // namespace hfrun::data
