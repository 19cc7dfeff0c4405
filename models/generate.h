// Text generation with any causal LM (models/causal_lm.h): greedy decoding (argmax) or sampling
// with temperature, top-k and top-p (nucleus) filtering in Hugging Face transformers' order, over a
// KV cache.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "models/causal_lm.h"
#include "tensor/random.h"

namespace hfrun::nn {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  bool greedy = true;             // argmax; the sampling fields below are then ignored
  double temperature = 1.0;       // > 0: logits are divided by it
  int64_t top_k = 0;              // >= 0: keep the k highest logits (0 = off)
  double top_p = 1.0;             // (0, 1]: keep the smallest set with probability >= top_p
  uint64_t seed = 0;              // seeds the Philox stream of the draws
  std::optional<int32_t> eos_id;  // stop once this token is produced (it is kept)

  // Throws an invalid-input error naming the offending option.
  void validate() const;
};

struct GenerateResult {
  std::vector<int32_t> ids;  // prompt followed by the generated tokens
  int64_t num_generated = 0;
  bool stopped_at_eos = false;
  // Generation stopped early because the sequence reached the model's context (for a prompt
  // longer than max_positions() nothing was generated).
  bool stopped_at_context = false;
};

// Argmax of logits; ties go to the lowest id (as torch.argmax).
int32_t argmax_token(std::span<const float> logits);

// The next token for one position's logits [V]: argmax when opts.greedy, else a draw from
// softmax(logits / T) restricted by top-k then top-p, using one uniform number from `gen`.
int32_t select_token(std::span<const float> logits, const GenerateOptions& opts, Generator& gen);

// The ids that survive temperature, top-k and top-p for these logits (ascending ids), with
// their renormalised probabilities: the distribution select_token samples from.
struct TokenDistribution {
  std::vector<int32_t> ids;
  std::vector<double> probs;
};
TokenDistribution filtered_distribution(std::span<const float> logits, const GenerateOptions& opts);

// Continues `prompt` (non-empty ids < vocab_size) by up to opts.max_new_tokens tokens with the
// model in inference mode (no graph, no dropout). Never runs past max_positions(): it stops there
// and sets stopped_at_context. Reproducible: the same model, prompt and options give the same
// ids.
GenerateResult generate(CausalLM& model, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opts);

}  // namespace hfrun::nn
