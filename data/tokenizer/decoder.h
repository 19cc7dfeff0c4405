// Decoders of Hugging Face tokenizers: each rewrites the list of token strings (decode_chain);
// the decoded text is the final list joined with no separator (with no decoder at all, the
// tokens are joined with spaces).
//   ByteLevel    byte-level characters back to bytes (one string, invalid UTF-8 -> U+FFFD)
//   Replace      a literal or regex pattern replaced in each token
//   ByteFallback runs of <0xNN> tokens back to the text they encode (U+FFFD per byte if invalid)
//   Fuse         all tokens joined into one
//   Strip        up to `start` leading and `stop` trailing `content` characters removed
//   Metaspace    the replacement character back to spaces (in the first token: dropped)
//   WordPiece    continuing-subword prefixes removed, spaces before other tokens, cleanup
//   Sequence     several in turn
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer/normalizer.h"

namespace hfrun::data {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override;
};

// The Replace normalizer applied to each token.
class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(const std::string& pattern, bool is_regex, std::string content)
      : replace_(pattern, is_regex, std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) replace_.apply(t);
  }

 private:
  ReplaceNormalizer replace_;
};

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override;
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override;
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override;

 private:
  char32_t content_;
  size_t start_, stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  // prepend: the pre-tokenizer prepends the replacement (prepend_scheme first or always).
  MetaspaceDecoder(char32_t replacement, bool prepend)
      : replacement_(replacement), prepend_(prepend) {}
  void decode_chain(std::vector<std::string>& tokens) const override;

 private:
  char32_t replacement_;
  bool prepend_;
};

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup)
      : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void decode_chain(std::vector<std::string>& tokens) const override;

 private:
  std::string prefix_;
  bool cleanup_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace hfrun::data
