// The Unigram model of Hugging Face tokenizers (SentencePiece's unigram LM: T5, ALBERT, XLNet,
// mBART...): a word is segmented into the pieces whose scores (log probabilities) sum highest
// (Viterbi over a byte trie of the vocabulary, SentencePiece's optimized search: ties keep the
// earlier segmentation). A character no piece covers is unknown, scored min(score) - 10;
// neighbouring unknowns fuse into one. With byte_fallback, a string that is not a piece becomes
// its <0xNN> byte tokens when all of them exist.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/tokenizer/model.h"

namespace hfrun::data {

struct UnigramOptions {
  std::optional<int32_t> unk_id;
  bool byte_fallback = false;
};

class Unigram final : public Model {
 public:
  // vocab[id] = (piece, score). Throws hfrun::Error (invalid input) naming the problem: an
  // empty vocab, an empty piece, a score that is not finite, an unk_id outside the vocab.
  Unigram(std::vector<std::pair<std::string, double>> vocab, UnigramOptions options);
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const StringMap<int32_t>& vocab() const override { return token_to_id_; }

 private:
  // The pieces of the best segmentation of `s` (unknown runs fused), as byte ranges.
  void segment(std::string_view s, std::vector<std::pair<size_t, size_t>>& pieces) const;

  std::vector<double> scores_;
  StringMap<int32_t> token_to_id_;  // a repeated piece maps to its last id, as in HF
  UnigramOptions options_;
  double unk_score_ = 0;
  // The byte trie: edges keyed (node << 8 | byte) -> child; piece_at_[node] = the id of the
  // piece ending there, or -1.
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> piece_at_;
  std::vector<int32_t> byte_ids_;  // <0xNN> -> id, -1 when absent (byte_fallback)
};

}  // namespace hfrun::data
