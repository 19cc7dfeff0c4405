#include "data/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include "common/error.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {

UnicodeNormalizer::UnicodeNormalizer(UnicodeForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case UnicodeForm::kNFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case UnicodeForm::kNFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case UnicodeForm::kNFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case UnicodeForm::kNFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  HF_CHECK(U_SUCCESS(status) && n, "ICU normalizer unavailable: ", u_errorName(status));
  icu_ = n;
}

void UnicodeNormalizer::apply(std::string& text) const {
  const auto* n = static_cast<const icu::Normalizer2*>(icu_);
  UErrorCode status = U_ZERO_ERROR;
  if (n->isNormalizedUTF8(text, status) && U_SUCCESS(status)) return;  // the common case
  status = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  n->normalizeUTF8(0, text, sink, nullptr, status);
  HF_CHECK(U_SUCCESS(status), "Unicode normalization failed: ", u_errorName(status));
  text = std::move(out);
}

void LowercaseNormalizer::apply(std::string& text) const {
  bool ascii_upper = false, non_ascii = false;
  for (unsigned char c : text) {
    ascii_upper |= c >= 'A' && c <= 'Z';
    non_ascii |= c >= 0x80;
  }
  if (!non_ascii) {
    if (ascii_upper) {
      for (char& c : text) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      }
    }
    return;
  }
  // Full Unicode lowercasing of each character on its own, as HF does (Rust's
  // char::to_lowercase: 'İ' becomes two characters, and there is no final-sigma context, so
  // a word-final 'Σ' becomes 'σ', not 'ς').
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t len = utf8_length(static_cast<unsigned char>(text[i]));
    if (len == 1) {
      const char c = text[i];
      out += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    } else {
      UChar32 cp = static_cast<UChar32>(utf8_decode(text, i));
      UChar src[2], dst[8];
      int32_t n = 0;
      U16_APPEND_UNSAFE(src, n, cp);
      UErrorCode status = U_ZERO_ERROR;
      const int32_t m = u_strToLower(dst, 8, src, n, "", &status);
      HF_CHECK(U_SUCCESS(status), "lowercasing failed: ", u_errorName(status));
      for (int32_t k = 0; k < m;) {
        UChar32 lc;
        U16_NEXT_UNSAFE(dst, k, lc);
        utf8_append(out, static_cast<char32_t>(lc));
      }
    }
    i += len;
  }
  text = std::move(out);
}

ReplaceNormalizer::ReplaceNormalizer(const std::string& pattern, bool is_regex, std::string content)
    : content_(std::move(content)) {
  if (is_regex) {
    regex_ = std::make_unique<Regex>(pattern);
  } else {
    HF_CHECK_INPUT(!pattern.empty(), "Replace normalizer: empty string pattern");
    literal_ = pattern;
  }
}

void ReplaceNormalizer::apply(std::string& text) const {
  std::string out;
  size_t prev = 0;
  auto on_match = [&](size_t b, size_t e) {
    out.append(text, prev, b - prev);
    out += content_;
    prev = e;
  };
  if (regex_) {
    regex_->find_all(text, on_match);
  } else {
    for (size_t at = text.find(literal_); at != std::string::npos;
         at = text.find(literal_, at + literal_.size())) {
      on_match(at, at + literal_.size());
    }
  }
  if (prev == 0 && out.empty()) return;  // no match
  out.append(text, prev, std::string::npos);
  text = std::move(out);
}

void StripNormalizer::apply(std::string& text) const {
  // Unicode White_Space, like Rust's char::is_whitespace.
  auto is_space = [&](size_t i) {
    return u_isUWhiteSpace(static_cast<UChar32>(utf8_decode(text, i)));
  };
  size_t b = 0, e = text.size();
  if (left_) {
    while (b < e && is_space(b)) b += utf8_length(static_cast<unsigned char>(text[b]));
  }
  if (right_) {
    while (e > b) {
      size_t k = e - 1;
      while (k > b && (static_cast<unsigned char>(text[k]) & 0xc0) == 0x80) --k;
      if (!is_space(k)) break;
      e = k;
    }
  }
  text = text.substr(b, e - b);
}

}  // namespace hfrun::data

namespace hfrun::data {
namespace {

// BERT's CJK ideograph blocks (HF normalizers/bert.rs is_chinese_char).
bool is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

}  // namespace

BertNormalizer::BertNormalizer(bool clean_text, bool handle_chinese_chars, bool strip_accents,
                               bool lowercase)
    : clean_text_(clean_text),
      handle_chinese_chars_(handle_chinese_chars),
      strip_accents_(strip_accents),
      lowercase_(lowercase),
      nfd_(UnicodeForm::kNFD) {}

void BertNormalizer::apply(std::string& text) const {
  if (clean_text_ || handle_chinese_chars_) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); i += utf8_length(static_cast<unsigned char>(text[i]))) {
      const char32_t c = utf8_decode(text, i);
      if (clean_text_) {
        // NUL, U+FFFD and control characters (general categories Cc, Cf, Co; not \t \n \r)
        // go, before whitespace becomes a plain space (so U+0085, \v and \f are removed).
        if (c == 0 || c == 0xFFFD) continue;
        const bool tab_or_newline = c == U'\t' || c == U'\n' || c == U'\r';
        constexpr uint32_t kControl = U_GC_CC_MASK | U_GC_CF_MASK | U_GC_CO_MASK;
        if (!tab_or_newline && (U_GET_GC_MASK(static_cast<UChar32>(c)) & kControl) != 0) continue;
        if (tab_or_newline || u_isUWhiteSpace(static_cast<UChar32>(c))) {
          out += ' ';
          continue;
        }
      }
      if (handle_chinese_chars_ && is_chinese_char(c)) {
        out += ' ';
        utf8_append(out, c);
        out += ' ';
        continue;
      }
      utf8_append(out, c);
    }
    text = std::move(out);
  }
  if (strip_accents_) {
    nfd_.apply(text);
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); i += utf8_length(static_cast<unsigned char>(text[i]))) {
      const char32_t c = utf8_decode(text, i);
      if (u_charType(static_cast<UChar32>(c)) == U_NON_SPACING_MARK) continue;
      utf8_append(out, c);
    }
    text = std::move(out);
  }
  if (lowercase_) lowercase_normalizer_.apply(text);
}

}  // namespace hfrun::data
