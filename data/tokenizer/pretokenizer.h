// Pre-tokenizers of Hugging Face tokenizers: each refines a list of pieces of text into
// smaller pieces (the model then encodes each piece on its own).
//   ByteLevel        optional prefix space, optional GPT-2 regex split, then bytes ->
//                    byte-level chars
//   Split            regex or literal pattern with a delimiter behaviour, optionally inverted
//   Digits           digits isolated, one by one or as runs
//   Whitespace       runs of \w and of other non-space characters (\w+|[^\w\s]+)
//   WhitespaceSplit  split on whitespace, which is removed
//   BertPreTokenizer WhitespaceSplit, then every punctuation character isolated
//   Punctuation      punctuation characters as delimiters with a behaviour
//   Metaspace        spaces -> the replacement (U+2581), prepended per scheme, split before it
//   Sequence         several of the above in turn
// `first_at_origin` says whether pieces[0] starts where the original text starts (before any
// added token); a pre-tokenizer that drops the start of pieces[0] clears it. Metaspace's
// "first" prepend scheme reads it.
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
  virtual void apply(std::vector<std::string>& pieces, bool& first_at_origin) const = 0;
};

// How a Split pre-tokenizer treats the matched delimiters (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class SplitPreTokenizer final : public PreTokenizer {
 public:
  // A regex pattern, or (is_regex false) a literal string.
  SplitPreTokenizer(const std::string& pattern, bool is_regex, SplitBehavior behavior, bool invert);
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;
  // Splits one piece, appending the results to out; returns where the first result begins in
  // the piece (npos: no result).
  size_t split(const std::string& piece, std::vector<std::string>& out) const;

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex);
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> gpt2_split_;  // when use_regex
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual_digits) : individual_(individual_digits) {}
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;

 private:
  bool individual_;
};

class WhitespacePreTokenizer final : public PreTokenizer {
 public:
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;
};

class WhitespaceSplitPreTokenizer final : public PreTokenizer {
 public:
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;
};

class BertPreTokenizer final : public PreTokenizer {
 public:
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;
};

class PunctuationPreTokenizer final : public PreTokenizer {
 public:
  explicit PunctuationPreTokenizer(SplitBehavior behavior) : behavior_(behavior) {}
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;

 private:
  SplitBehavior behavior_;
};

// When Metaspace prepends the replacement to a piece that does not start with it: always, only
// to the piece at the start of the original text, or never.
enum class MetaspacePrepend { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(char32_t replacement, MetaspacePrepend prepend, bool split);
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override;

 private:
  MetaspacePrepend prepend_;
  bool split_;
  char32_t replacement_cp_;
  std::string replacement_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void apply(std::vector<std::string>& pieces, bool& first_at_origin) const override {
    for (const auto& s : steps_) s->apply(pieces, first_at_origin);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// The pattern GPT-2's ByteLevel pre-tokenizer splits with.
extern const char* const kGpt2SplitPattern;

}  // namespace hfrun::data
