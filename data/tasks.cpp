#include "data/tasks.h"

#include "common/error.h"

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

}  // namespace hfrun::data
