#include "data/tokenizer/wordpiece.h"

#include <algorithm>

#include "common/error.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {

WordPiece::WordPiece(StringMap<int32_t> vocab, WordPieceOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  auto it = vocab_.find(options_.unk_token);
  HF_CHECK_INPUT(it != vocab_.end(), "WordPiece: unk_token '", options_.unk_token,
                 "' is not in the vocab");
  unk_id_ = it->second;
  HF_CHECK_INPUT(options_.max_input_chars_per_word > 0,
                 "WordPiece: max_input_chars_per_word must be positive, got ",
                 options_.max_input_chars_per_word);
  for (const auto& [token, id] : vocab_) longest_ = std::max(longest_, token.size());
}

void WordPiece::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  int64_t chars = 0;
  for (size_t i = 0; i < word.size(); i += utf8_length(static_cast<unsigned char>(word[i]))) {
    if (++chars > options_.max_input_chars_per_word) {
      out.push_back(unk_id_);
      return;
    }
  }
  const size_t mark = out.size();
  const std::string& prefix = options_.continuing_subword_prefix;
  std::string candidate;
  for (size_t start = 0; start < word.size();) {
    // The longest piece [start, end) in the vocab; end moves back one character at a time.
    const size_t room =
        start > 0 ? (longest_ > prefix.size() ? longest_ - prefix.size() : 0) : longest_;
    size_t end = word.size();
    if (end - start > room) {
      end = start + room;
      while (end > start && (static_cast<unsigned char>(word[end]) & 0xc0) == 0x80) --end;
    }
    int32_t found = -1;
    while (end > start) {
      candidate.clear();
      if (start > 0) candidate = prefix;
      candidate.append(word.substr(start, end - start));
      if (auto it = vocab_.find(candidate); it != vocab_.end()) {
        found = it->second;
        break;
      }
      do {
        --end;
      } while (end > start && (static_cast<unsigned char>(word[end]) & 0xc0) == 0x80);
    }
    if (found < 0) {  // some position has no piece: the whole word is unknown
      out.resize(mark);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(found);
    start = end;
  }
}

}  // namespace hfrun::data
