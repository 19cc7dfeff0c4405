// The training token stream (CONTRACT.md "Semantics that must hold") and its sample windows.
//
// Stream: the sources in the order given (directories expanded as data/documents.h says), each
// document tokenized, concatenated in order, with the end-of-text token between consecutive
// documents when the tokenizer has one. File boundaries are document boundaries, so two .txt
// files give  enc(a) eot enc(b).
//
// Token shards (.bin) are already a stream: their tokens are appended exactly as stored, and no
// end-of-text token is added before or after a shard. A shard carries its own document
// separators (llm.c's scripts put an eot before every document), and adding more would make
// training on a shard differ from training on the text it was made from. So
// [a.txt, s.bin, b.txt] gives  enc(a) shard enc(b), while [a.txt, b.txt] gives enc(a) eot enc(b).
//
// Samples: with n tokens, num_samples(seq_len) = floor((n - 1) / seq_len) and sample i is the
// window tokens[i*seq_len, i*seq_len + seq_len + 1): inputs = window[0, seq_len), targets =
// window[1, seq_len + 1). Consecutive windows overlap by exactly one token, so every token but
// the first, up to the incomplete tail that is dropped, is a target exactly once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/shard.h"

namespace hfrun::data {

// Text -> token ids. Called from several threads at once, so it must be thread-safe (a const
// tokenizer's encode is).
using TextEncoder = std::function<std::vector<int32_t>(std::string_view)>;

struct TokenStreamOptions {
  std::string text_field = "text";  // the .jsonl field holding the text
  int num_threads = 0;              // tokenizer threads; 0 = std::thread::hardware_concurrency()
};

class TokenStream {
 public:
  // Reads and tokenizes `sources` (files or directories). Documents are tokenized in parallel;
  // the result does not depend on the thread count. Shards are mapped, not copied.
  TokenStream(const std::vector<std::string>& sources, const TextEncoder& encode,
              std::optional<int32_t> eot_id, const TokenStreamOptions& options = {});
  // A stream over tokens already in memory (tests, generated data).
  explicit TokenStream(std::vector<int32_t> tokens, std::string name = "in-memory tokens");

  int64_t size() const { return size_; }
  const std::string& name() const { return name_; }  // the sources, for messages
  int32_t token(int64_t i) const;
  // Copies tokens [start, start + count) to out (bounds-checked).
  void copy_to(int64_t start, int64_t count, int32_t* out) const;
  std::vector<int32_t> read(int64_t start, int64_t count) const;

  // floor((size - 1) / seq_len), 0 for an empty stream.
  int64_t num_samples(int64_t seq_len) const;
  // num_samples(seq_len), or a kInvalidInput error saying how many tokens the stream has and
  // how many one sample needs, when it is 0.
  int64_t require_samples(int64_t seq_len) const;
  // Copies sample i's seq_len + 1 tokens to window.
  void sample(int64_t i, int64_t seq_len, int32_t* window) const;

 private:
  // A contiguous piece of the stream: tokenized text held here, or a mapped shard.
  struct Segment {
    int64_t begin = 0;
    int64_t size = 0;
    std::vector<int32_t> tokens;
    std::shared_ptr<const ShardReader> shard;
  };
  void append(Segment segment);

  std::vector<Segment> segments_;
  std::vector<int64_t> begins_;  // segments_[k].begin, for the binary search in copy_to
  int64_t size_ = 0;
  std::string name_;
};

}  // namespace hfrun::data
