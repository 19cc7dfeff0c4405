#include "models/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

void GenerateOptions::validate() const {
  HF_CHECK_INPUT(max_new_tokens >= 0, "generate: max_new_tokens must be >= 0, got ",
                 max_new_tokens);
  if (greedy) return;
  HF_CHECK_INPUT(std::isfinite(temperature) && temperature > 0,
                 "generate: temperature must be > 0, got ", temperature);
  HF_CHECK_INPUT(top_k >= 0, "generate: top_k must be >= 0 (0 = off), got ", top_k);
  HF_CHECK_INPUT(top_p > 0 && top_p <= 1, "generate: top_p must be in (0, 1], got ", top_p);
}

int32_t argmax_token(std::span<const float> logits) {
  HF_CHECK(!logits.empty(), "generate: empty logits");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

// As transformers' TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper in that
// order: top-k keeps every logit >= the k-th largest; top-p keeps the highest-probability tokens
// until their cumulative probability reaches top_p (at least one token).
TokenDistribution filtered_distribution(std::span<const float> logits,
                                        const GenerateOptions& opts) {
  HF_CHECK(!logits.empty(), "generate: empty logits");
  opts.validate();
  const int64_t V = static_cast<int64_t>(logits.size());
  const float temp = static_cast<float>(opts.temperature);
  std::vector<float> scaled(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) scaled[i] = logits[i] / temp;
  std::vector<int32_t> kept(logits.size());
  std::iota(kept.begin(), kept.end(), 0);
  if (opts.top_k > 0 && opts.top_k < V) {
    std::vector<float> sorted = scaled;
    std::nth_element(sorted.begin(), sorted.begin() + (opts.top_k - 1), sorted.end(),
                     std::greater<float>());
    const float kth = sorted[static_cast<size_t>(opts.top_k - 1)];
    std::erase_if(kept, [&](int32_t i) { return scaled[static_cast<size_t>(i)] < kth; });
  }
  float max_logit = -INFINITY;
  for (int32_t i : kept) max_logit = std::max(max_logit, scaled[static_cast<size_t>(i)]);
  std::vector<double> p(kept.size());
  double total = 0;
  for (size_t j = 0; j < kept.size(); ++j) {
    p[j] = std::exp(static_cast<double>(scaled[static_cast<size_t>(kept[j])]) - max_logit);
    total += p[j];
  }
  for (double& x : p) x /= total;
  if (opts.top_p < 1.0) {
    std::vector<size_t> order(kept.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
    std::vector<bool> keep(kept.size(), false);
    double cum = 0;
    for (size_t j : order) {
      keep[j] = true;
      cum += p[j];
      if (cum >= opts.top_p) break;
    }
    TokenDistribution d;
    double kept_total = 0;
    for (size_t j = 0; j < kept.size(); ++j) {
      if (!keep[j]) continue;
      d.ids.push_back(kept[j]);
      d.probs.push_back(p[j]);
      kept_total += p[j];
    }
    for (double& x : d.probs) x /= kept_total;
    return d;
  }
  return {std::move(kept), std::move(p)};
}

int32_t select_token(std::span<const float> logits, const GenerateOptions& opts, Generator& gen) {
  if (opts.greedy) return argmax_token(logits);
  const TokenDistribution d = filtered_distribution(logits, opts);
  const double u = gen.next_uniform();
  double cum = 0;
  for (size_t j = 0; j < d.ids.size(); ++j) {
    cum += d.probs[j];
    if (u < cum) return d.ids[j];
  }
  return d.ids.back();  // u within rounding of 1
}

GenerateResult generate(CausalLM& model, const std::vector<int32_t>& prompt,
                        const GenerateOptions& opts) {
  opts.validate();
  const int64_t vocab = model.vocab_size();
  HF_CHECK_INPUT(!prompt.empty(), "generate: the prompt needs at least one token");
  for (int32_t id : prompt) {
    HF_CHECK_INPUT(id >= 0 && id < vocab, "generate: prompt token ", id,
                   " is outside the model's vocabulary [0, ", vocab, ")");
  }
  GenerateResult r;
  r.ids = prompt;
  if (opts.max_new_tokens == 0) return r;
  const int64_t ctx = model.max_positions();
  if (static_cast<int64_t>(prompt.size()) >= ctx) {
    r.stopped_at_context = true;
    return r;
  }
  Generator gen(opts.seed);
  // The cache holds what this generation can reach, not the whole context (a Llama 3 context
  // of 131072 positions would be gigabytes).
  KvCache cache = model.make_kv_cache(
      1, std::min(ctx, static_cast<int64_t>(prompt.size()) + opts.max_new_tokens));
  std::vector<int64_t> feed(prompt.begin(), prompt.end());
  const size_t V = static_cast<size_t>(vocab);
  while (true) {
    const int64_t T = static_cast<int64_t>(feed.size());
    const std::vector<float> logits =
        model.forward_cached(ops::from_ints(feed, {1, T}), cache).to_vector();
    const std::span<const float> last(logits.data() + (T - 1) * V, V);
    const int32_t next = select_token(last, opts, gen);
    r.ids.push_back(next);
    ++r.num_generated;
    if (opts.eos_id && next == *opts.eos_id) {
      r.stopped_at_eos = true;
      break;
    }
    if (r.num_generated >= opts.max_new_tokens) break;
    if (static_cast<int64_t>(r.ids.size()) >= ctx) {
      r.stopped_at_context = true;
      break;
    }
    feed.assign(1, next);
  }
  return r;
}

}  // namespace hfrun::nn
