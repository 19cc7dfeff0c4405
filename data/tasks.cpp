#include "data/tasks.h"

#include <algorithm>

#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::data {

namespace {

// SplitMix64: a counter-based stream (the same numbers whatever order they are asked in).
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) for draw `k` at `position` of `sample` under `seed`.
double uniform(uint64_t seed, int64_t sample, size_t position, uint64_t k) {
  const uint64_t h = mix(mix(mix(seed) ^ static_cast<uint64_t>(sample)) ^
                         (static_cast<uint64_t>(position) << 2 | k));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

}  // namespace

TokenExample sft_example(const Tokenizer& tok, std::string_view prompt, std::string_view completion,
                         int32_t eos, int64_t seq_len) {
  HF_CHECK_INPUT(seq_len >= 1, "sft: seq_len ", seq_len, " must be at least 1");
  std::vector<int32_t> ids = tok.encode(prompt, /*add_special_tokens=*/true);
  const size_t prompt_len = ids.size();
  tok.encode_into(completion, ids, /*add_special_tokens=*/false);
  ids.push_back(eos);
  if (ids.size() > static_cast<size_t>(seq_len) + 1) ids.resize(static_cast<size_t>(seq_len) + 1);
  TokenExample e;
  if (ids.size() < 2) return e;  // nothing to predict
  e.inputs.assign(ids.begin(), ids.end() - 1);
  e.targets.assign(ids.begin() + 1, ids.end());
  for (size_t i = 0; i < e.targets.size(); ++i) {
    if (i + 1 < prompt_len) e.targets[i] = kIgnoreTarget;  // the target is a prompt token
  }
  return e;
}

std::optional<int32_t> mask_token_id(const Tokenizer& tok) {
  if (tok.special_tokens().mask) return tok.special_tokens().mask;
  if (auto id = tok.token_to_id("[MASK]")) return id;
  return tok.token_to_id("<mask>");
}

TokenExample mask_tokens(const std::vector<int32_t>& ids, const Tokenizer& tok, int32_t mask_id,
                         double mlm_probability, uint64_t seed, int64_t sample) {
  HF_CHECK_INPUT(mlm_probability > 0 && mlm_probability < 1, "data.mlm_probability ",
                 mlm_probability, " must be in (0, 1)");
  const int32_t vocab = tok.vocab_size();
  TokenExample e;
  e.inputs = ids;
  e.targets.assign(ids.size(), kIgnoreTarget);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (tok.is_special_id(ids[i])) continue;
    if (uniform(seed, sample, i, 0) >= mlm_probability) continue;
    e.targets[i] = ids[i];
    const double how = uniform(seed, sample, i, 1);
    if (how < 0.8) {
      e.inputs[i] = mask_id;
    } else if (how < 0.9) {
      e.inputs[i] = static_cast<int32_t>(uniform(seed, sample, i, 2) * vocab);
    }
  }
  return e;
}

PaddedBatch pad_examples(const std::vector<TokenExample>& examples, int32_t pad_id) {
  HF_CHECK(!examples.empty(), "pad_examples: no examples");
  size_t longest = 0;
  bool with_targets = false, with_types = false;
  for (const TokenExample& e : examples) {
    HF_CHECK(!e.inputs.empty(), "pad_examples: an example without inputs");
    HF_CHECK(e.targets.empty() || e.targets.size() == e.inputs.size(),
             "pad_examples: targets and inputs differ in length");
    HF_CHECK(e.type_ids.empty() || e.type_ids.size() == e.inputs.size(),
             "pad_examples: type ids and inputs differ in length");
    longest = std::max(longest, e.inputs.size());
    with_targets |= !e.targets.empty();
    with_types |= !e.type_ids.empty();
  }
  const size_t rows = examples.size();
  std::vector<int64_t> inputs(rows * longest, pad_id), mask(rows * longest, 0),
      targets(with_targets ? rows * longest : 0, kIgnoreTarget),
      types(with_types ? rows * longest : 0, 0);
  PaddedBatch b;
  for (size_t r = 0; r < rows; ++r) {
    const TokenExample& e = examples[r];
    for (size_t t = 0; t < e.inputs.size(); ++t) {
      const size_t at = r * longest + t;
      inputs[at] = e.inputs[t];
      mask[at] = 1;
      if (!e.targets.empty()) {
        targets[at] = e.targets[t];
        b.counted += e.targets[t] != kIgnoreTarget;
      }
      if (!e.type_ids.empty()) types[at] = e.type_ids[t];
    }
  }
  const Shape shape{static_cast<int64_t>(rows), static_cast<int64_t>(longest)};
  b.inputs = ops::from_ints(inputs, shape);
  b.attention_mask = ops::from_ints(mask, shape);
  if (with_targets) b.targets = ops::from_ints(targets, shape);
  if (with_types) b.type_ids = ops::from_ints(types, shape);
  return b;
}

}  // namespace hfrun::data
