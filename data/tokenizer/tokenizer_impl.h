// Tokenizer internals shared by the loader (tokenizer_json.cpp) and the pipeline
// (tokenizer.cpp). Not part of the public API.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer/bpe.h"
#include "data/tokenizer/normalizer.h"
#include "data/tokenizer/pretokenizer.h"
#include "data/tokenizer/tokenizer.h"

namespace hfrun::data {

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

enum class PostProcessorKind { kNone, kTemplate };

struct Tokenizer::Impl {
  std::string source;  // file name, for messages
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Bpe> model;
  std::vector<AddedToken> added;
  AddedTokenMatcher raw_matcher;         // normalized == false: matched in the input text
  AddedTokenMatcher normalized_matcher;  // normalized == true: matched after normalization
  // Post-processing of a single sequence: ids before and after it.
  std::vector<int32_t> prefix_ids, suffix_ids;
  bool byte_level_decoder = false;
  bool has_decoder = false;
  std::vector<std::string> id_to_token;  // dense: every id in [0, vocab_size)
  std::vector<uint8_t> is_special;       // per id
  std::optional<int32_t> eot;
};

}  // namespace hfrun::data
