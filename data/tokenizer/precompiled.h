// The Precompiled normalizer: SentencePiece's precompiled_charsmap (nmt_nfkc and friends), as
// Hugging Face tokenizers applies it. The charsmap is
//   u32 LE trie size in bytes | the trie, a Darts-clone double array of u32 LE units |
//   the replacement strings, each ended by a NUL
// and the text is rewritten per extended grapheme cluster: a cluster under 6 bytes whose
// shortest mapped prefix exists becomes that prefix's replacement (the whole cluster), otherwise
// each character is replaced by its own mapping when it has one.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer/normalizer.h"

namespace hfrun::data {

class PrecompiledNormalizer final : public Normalizer {
 public:
  // `charsmap`: the decoded bytes. A truncated map, a trie that points outside itself or
  // outside the replacement strings, or replacements that are not UTF-8 are an hfrun::Error
  // (invalid input) saying which.
  explicit PrecompiledNormalizer(std::string_view charsmap);
  void apply(std::string& text) const override;

  // The replacement of the shortest mapped prefix of `chunk`, if any.
  std::optional<std::string_view> transform(std::string_view chunk) const;

 private:
  std::vector<uint32_t> units_;
  std::string normalized_;
};

// Standard base64 (with padding) -> bytes; an error names `what` when the text is not base64.
std::string base64_decode(std::string_view text, const std::string& what);

}  // namespace hfrun::data
