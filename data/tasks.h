// How the fine-tuning tasks turn records into token examples (CONTRACT.md "Model families,
// tasks and adapters"). Sequence classification encodes with Tokenizer::encode_pair (special
// tokens, longest_first truncation to seq_len); the helpers here are the other two tasks.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "tensor/tensor.h"

namespace hfrun::data {

// A target that is not counted in the loss (PyTorch's ignore_index).
inline constexpr int32_t kIgnoreTarget = -100;

struct TokenExample {
  std::vector<int32_t> inputs;
  std::vector<int32_t> targets;   // per input position; kIgnoreTarget where not counted
  std::vector<int32_t> type_ids;  // per input position (sentence pairs); may be empty
};

// A micro batch of examples of different lengths, padded on the right to the longest
// (positions count from 0 at each example's first token).
struct PaddedBatch {
  Tensor inputs;          // i64 [B, T], pad_id at padding
  Tensor attention_mask;  // i64 [B, T]: 1 for tokens, 0 for padding
  Tensor targets;         // i64 [B, T], kIgnoreTarget at padding; undefined if no example has any
  Tensor type_ids;        // i64 [B, T], 0 at padding; undefined if no example has any
  int64_t counted = 0;    // targets that count (not kIgnoreTarget)
};

// Pads `examples` (at least one, each with at least one input; targets and type ids, when an
// example has them, as long as its inputs).
PaddedBatch pad_examples(const std::vector<TokenExample>& examples, int32_t pad_id);

// sft: ids = encode(prompt, with the tokenizer's special tokens) ++ encode(completion, without)
// ++ [eos], cut to seq_len + 1; inputs ids[:-1], targets ids[1:], where a target that is a
// prompt token is not counted.
TokenExample sft_example(const Tokenizer& tok, std::string_view prompt, std::string_view completion,
                         int32_t eos, int64_t seq_len);

// The [MASK] token: tokenizer_config.json's mask_token, else "[MASK]" or "<mask>".
std::optional<int32_t> mask_token_id(const Tokenizer& tok);

// masked_lm, as HF's DataCollatorForLanguageModeling: each token that is not special is chosen
// with probability mlm_probability; a chosen token becomes [MASK] (80%), a token drawn uniformly
// from the vocabulary (10%) or stays (10%), and its target is the original id; other targets
// are not counted. The draws are a function of (seed, sample, position) only, so any world size
// and batch layout masks the same tokens of the same sample.
TokenExample mask_tokens(const std::vector<int32_t>& ids, const Tokenizer& tok, int32_t mask_id,
                         double mlm_probability, uint64_t seed, int64_t sample);

}  // namespace hfrun::data
