// Normalizers of Hugging Face tokenizers, applied to text before pre-tokenization:
// NFC, NFD, NFKC, NFKD (Unicode normalization through ICU), Lowercase, Prepend, Replace
// (literal or regex), Strip, BertNormalizer, and Sequence.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer/regex.h"

namespace hfrun::data {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void apply(std::string& text) const = 0;  // text is valid UTF-8
};

enum class UnicodeForm { kNFC, kNFD, kNFKC, kNFKD };

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(UnicodeForm form);
  void apply(std::string& text) const override;

 private:
  const void* icu_;  // const icu::Normalizer2* (ICU stays out of this header)
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void apply(std::string& text) const override;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);  // HF leaves empty text alone
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(const std::string& pattern, bool is_regex, std::string content);
  void apply(std::string& text) const override;

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  std::string content_;
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text) const override;

 private:
  bool left_, right_;
};

// BERT's normalizer: clean_text (NUL, U+FFFD and control characters removed, whitespace to a
// space), CJK ideographs surrounded by spaces, accents stripped (NFD, then non-spacing marks
// removed), lowercasing; in that order.
class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool handle_chinese_chars, bool strip_accents, bool lowercase);
  void apply(std::string& text) const override;

 private:
  bool clean_text_, handle_chinese_chars_, strip_accents_, lowercase_;
  UnicodeNormalizer nfd_;
  LowercaseNormalizer lowercase_normalizer_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void apply(std::string& text) const override {
    for (const auto& s : steps_) s->apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace hfrun::data
