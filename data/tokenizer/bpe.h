// The BPE model of Hugging Face tokenizers (models/bpe): a word is split into characters (with
// optional continuing-subword prefix / end-of-word suffix, unknown and byte-fallback handling),
// then the adjacent pair with the lowest merge rank is merged until no pair is in the merge
// table. Results per word are cached per thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/tokenizer/model.h"
#include "data/tokenizer/string_map.h"

namespace hfrun::data {

struct BpeOptions {
  std::optional<std::string> unk_token;
  std::optional<std::string> continuing_subword_prefix;
  std::optional<std::string> end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class Bpe final : public Model {
 public:
  // vocab: token -> id (ids unique, below max_id, gaps allowed); merges in rank order.
  // Throws hfrun::Error (invalid input) naming the offending token or merge.
  Bpe(StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
      BpeOptions options, int32_t max_id);

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override;
  const StringMap<int32_t>& vocab() const override { return vocab_; }
  size_t num_merges() const { return merges_.size(); }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  StringMap<int32_t> vocab_;
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  BpeOptions options_;
  std::optional<int32_t> unk_id_;
  uint64_t instance_id_;  // keys this model's entries in the per-thread word cache
};

}  // namespace hfrun::data
