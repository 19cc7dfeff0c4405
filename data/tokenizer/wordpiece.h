// The WordPiece model of Hugging Face tokenizers (models/wordpiece, BERT's): a word longer than
// max_input_chars_per_word characters is the unknown token; otherwise it is cut greedily into
// the longest vocabulary entries from the left, pieces after the first carrying the continuing
// subword prefix ("##"); when some position has no match the whole word is the unknown token.
#pragma once

#include <cstdint>
#include <string>

#include "data/tokenizer/model.h"

namespace hfrun::data {

struct WordPieceOptions {
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
  int64_t max_input_chars_per_word = 100;
};

class WordPiece final : public Model {
 public:
  // Throws hfrun::Error (invalid input) when unk_token is not in the vocab, naming it.
  WordPiece(StringMap<int32_t> vocab, WordPieceOptions options);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const StringMap<int32_t>& vocab() const override { return vocab_; }

 private:
  StringMap<int32_t> vocab_;
  WordPieceOptions options_;
  int32_t unk_id_ = 0;
  size_t longest_ = 0;  // bytes of the longest vocab entry: no longer match exists
};

}  // namespace hfrun::data
