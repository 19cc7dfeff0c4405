// Tokenizer internals shared by the loader (tokenizer_json.cpp) and the pipeline
// (tokenizer.cpp). Not part of the public API.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer/decoder.h"
#include "data/tokenizer/model.h"
#include "data/tokenizer/normalizer.h"
#include "data/tokenizer/pretokenizer.h"
#include "data/tokenizer/tokenizer.h"

namespace hfrun::data {

namespace detail {
// Bounds on tokenizer files (the largest real tokenizer.json is ~30 MB) and on JSON nesting,
// which the parser handles by recursion.
inline constexpr size_t kMaxFileBytes = size_t{1} << 30;
inline constexpr size_t kMaxNesting = 64;
// Rejects JSON nested deeper than kMaxNesting before it is parsed, naming `file`.
void check_nesting(std::string_view text, const std::string& file);
}  // namespace detail

// Leftmost-longest matcher over a set of added tokens (HF uses Aho-Corasick with the same
// match kind). Candidates are bucketed by first byte and sorted longest first.
class AddedTokenMatcher {
 public:
  void build(const std::vector<const AddedToken*>& tokens);
  bool empty() const { return count_ == 0; }
  // Longest token starting at text[pos], or null.
  const AddedToken* match_at(std::string_view text, size_t pos) const;

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;
  size_t count_ = 0;
};

// One element of a post-processing template (HF TemplateProcessing; BertProcessing and
// RobertaProcessing are fixed templates): the sequence A or B, or special-token ids, with the
// type id its tokens get.
struct TemplateItem {
  int sequence = -1;  // 0: A, 1: B, -1: the special token ids below
  std::vector<int32_t> ids;
  int32_t type_id = 0;
};

struct PostProcessor {
  std::vector<TemplateItem> single, pair;
  // Type ids when no special tokens are added: the template's for each sequence
  // (TemplateProcessing), 0 and 1 (BertProcessing, as no processor), or all 0 (Roberta).
  enum class Plain { kTemplate, kZeroOne, kAllZero } plain = Plain::kTemplate;
};

struct Tokenizer::Impl {
  std::string source;  // file name, for messages
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  std::vector<AddedToken> added;
  AddedTokenMatcher raw_matcher;         // normalized == false: matched in the input text
  AddedTokenMatcher normalized_matcher;  // normalized == true: matched after normalization
  std::optional<PostProcessor> post;     // none: sequences are concatenated as they are
  std::unique_ptr<Decoder> decoder;      // none: decoded tokens are joined with spaces
  std::vector<std::string> id_to_token;  // per id in [0, vocab_size); "" for an unused id
  std::vector<uint8_t> is_special;       // per id
  std::optional<int32_t> eot;
  SpecialTokens specials;  // from tokenizer_config.json

  // The ids of one sequence (added tokens split out, normalized, pre-tokenized, modelled),
  // appended to out; no post-processing.
  void encode_sequence(std::string_view text, std::vector<int32_t>& out) const;
};

}  // namespace hfrun::data
