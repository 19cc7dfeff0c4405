// The model of a tokenizer.json: what turns one pre-tokenized word into ids. BPE (bpe.h),
// WordPiece (wordpiece.h) and Unigram share this interface.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "data/tokenizer/string_map.h"

namespace hfrun::data {

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word (valid UTF-8).
  virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
  // The model's vocabulary: token -> id.
  virtual const StringMap<int32_t>& vocab() const = 0;
  std::optional<int32_t> token_to_id(std::string_view token) const {
    const auto& v = vocab();
    auto it = v.find(token);
    if (it == v.end()) return std::nullopt;
    return it->second;
  }
};

}  // namespace hfrun::data
