// A Hugging Face tokenizer.json, natively: the same ids as HF's tokenizers library.
//
//   text -> added/special tokens split out (leftmost-longest, lstrip/rstrip/single_word)
//        -> normalizer -> pre-tokenizer -> BPE model per piece -> optional post-processor
//
// Supported components (anything else is rejected at load, naming the component):
//   normalizer:     NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip, BertNormalizer,
//                   Sequence
//   pre_tokenizer:  ByteLevel, Split, Digits, Whitespace, WhitespaceSplit, BertPreTokenizer,
//                   Punctuation, Metaspace, Sequence
//   model:          BPE (vocab + merges, unk/byte_fallback/fuse_unk, subword prefix/suffix,
//                   ignore_merges; no dropout), WordPiece
//   post_processor: ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing, Sequence
//                   (single sequences and pairs, with type ids)
//   decoder:        ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece,
//                   Sequence; none (tokens joined with spaces)
// A tokenizer.json's truncation and padding sections are ignored (training sets its own
// lengths); loading says so in one line on stderr.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hfrun::data {

struct AddedToken {
  std::string content;
  // What is matched in (normalized) text and what decoding prints: the content itself, or for
  // a normalized token under a normalizer, the normalized content (as HF stores it).
  std::string match;
  int32_t id = 0;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// An encoded sequence or pair (HF's Encoding without offsets).
struct Encoding {
  std::vector<int32_t> ids;
  // Per id: the segment it belongs to (0 for the first sequence, 1 for the pair, or as the
  // post-processor's template says).
  std::vector<int32_t> type_ids;
  // Per id: 1 where the post-processor added a special token ([CLS], <s>, ...).
  std::vector<uint8_t> special_tokens_mask;
};

// What a tokenizer_config.json beside the tokenizer.json says (transformers' view of the
// tokenizer): the ids of its named special tokens (unset when it names none or one the
// tokenizer does not have) and its add_bos_token / add_eos_token flags.
struct SpecialTokens {
  std::optional<int32_t> bos, eos, pad, unk, mask;
  std::optional<bool> add_bos, add_eos;
};

class Tokenizer {
 public:
  // Loads tokenizer.json, and tokenizer_config.json when one sits beside it: its eos_token
  // becomes eot_id(), and for the Llama and Gemma tokenizer classes add_bos_token /
  // add_eos_token (defaults true / false) set the post-processor, as transformers'
  // LlamaTokenizerFast does. Malformed or hostile files are an hfrun::Error (invalid input)
  // naming the file, the JSON path and what was expected.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(std::string_view json, const std::string& source_name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Ids of `text` (valid UTF-8, else an error naming the byte offset). Special tokens that
  // appear in the text are recognised; add_special_tokens runs the post-processor (e.g. BOS).
  // Thread-safe: several threads may encode with one tokenizer.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  void encode_into(std::string_view text, std::vector<int32_t>& out,
                   bool add_special_tokens = false) const;
  // `text`, and `pair` when given, each encoded on its own; with add_special_tokens the
  // post-processor's single or pair template applies (BERT: [CLS] A [SEP] B [SEP]), otherwise
  // the sequences are concatenated with type ids 0 and 1.
  // max_length > 0 truncates as HF's longest_first strategy (right side): the sequences are cut,
  // before post-processing, to max_length minus the special tokens the template adds.
  Encoding encode_pair(std::string_view text, std::optional<std::string_view> pair,
                       bool add_special_tokens = false, size_t max_length = 0) const;
  // How many special tokens the post-processor adds to a single text / a pair.
  size_t num_special_tokens_to_add(bool pair) const;
  // Whether `id` is a special added token ([CLS], <s>, [MASK], [UNK] when declared special...).
  bool is_special_id(int32_t id) const;

  // Text of `ids` (ids out of range are an error). Invalid UTF-8 produced by a partial byte
  // sequence becomes U+FFFD, as HF does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // One more than the largest id (model vocab and added tokens).
  int32_t vocab_size() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // The end-of-text token used between documents: tokenizer_config.json's eos_token, else the
  // first of <|endoftext|>, <|end_of_text|>, </s>, <eos>, <|end|> the tokenizer has.
  std::optional<int32_t> eot_id() const;
  const SpecialTokens& special_tokens() const;
  const std::vector<AddedToken>& added_tokens() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hfrun::data
