// Pre-tokenizers of Hugging Face tokenizers: each refines a list of pieces of text into
// smaller pieces (the BPE model then encodes each piece on its own).
//   ByteLevel  optional prefix space, optional GPT-2 regex split, then bytes -> byte-level chars
//   Split      regex or literal pattern with a delimiter behaviour, optionally inverted
//   Digits     digits isolated, one by one or as runs
//   Sequence   several of the above in turn
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer/regex.h"

namespace hfrun::data {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their refinement. Pieces are valid UTF-8.
  virtual void apply(std::vector<std::string>& pieces) const = 0;
};

// How a Split pre-tokenizer treats the matched delimiters (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class SplitPreTokenizer final : public PreTokenizer {
 public:
  // A regex pattern, or (is_regex false) a literal string.
  SplitPreTokenizer(const std::string& pattern, bool is_regex, SplitBehavior behavior, bool invert);
  void apply(std::vector<std::string>& pieces) const override;
  // Splits one piece, appending the results to out.
  void split(const std::string& piece, std::vector<std::string>& out) const;

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex);
  void apply(std::vector<std::string>& pieces) const override;

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> gpt2_split_;  // when use_regex
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual_digits) : individual_(individual_digits) {}
  void apply(std::vector<std::string>& pieces) const override;

 private:
  bool individual_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void apply(std::vector<std::string>& pieces) const override {
    for (const auto& s : steps_) s->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// The pattern GPT-2's ByteLevel pre-tokenizer splits with.
extern const char* const kGpt2SplitPattern;

}  // namespace hfrun::data
