// GPT-2 inference: the KV-cached forward against the full forward, greedy and sampled
// generation (determinism, seeds, top-k / top-p / temperature filtering, eos, the n_positions
// limit) and loading a model directory.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <set>

#include "autograd/node.h"
#include "common/error.h"
#include "io/checkpoint.h"
#include "io/io_test_util.h"
#include "models/generate.h"
#include "models/gpt2/gpt2.h"
#include "models/registry.h"
#include "tensor/ops.h"
#include "test_util.h"

namespace hfrun::nn {
namespace {

Gpt2Config tiny() {
  Gpt2Config c;
  c.vocab_size = 50;
  c.n_positions = 16;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 4;
  c.initializer_range = 0.3;  // peaked logits: argmax is far from ties
  return c;
}

std::vector<int64_t> random_ids(int64_t n, uint64_t seed, int64_t vocab) {
  Generator g(seed);
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<int64_t>(g.next_u32() % vocab));
  return v;
}

GenerateOptions sampling(uint64_t seed) {
  GenerateOptions o;
  o.greedy = false;
  o.max_new_tokens = 10;
  o.seed = seed;
  return o;
}

TEST(Generate, CachedForwardEqualsFullForward) {
  Gpt2 m(tiny(), 3);
  m.eval();
  const int64_t B = 2, T = 11;
  const Tensor ids = ops::from_ints(random_ids(B * T, 1, 50), {B, T});
  Tensor full;
  {
    autograd::NoGradGuard ng;
    full = m.forward(ids);
  }
  KvCache cache = m.make_kv_cache(B);
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t len : {4, 1, 1, 5}) {
    parts.push_back(m.forward_cached(ops::narrow(ids, 1, start, len), cache));
    start += len;
    EXPECT_EQ(cache.length, start);
  }
  EXPECT_TRUE(testing::tensors_near(ops::cat(parts, 1), full, 1e-5, 1e-4));
  EXPECT_FALSE(parts[0].requires_grad());
  // Past n_positions is an error, not a crash; reset starts over.
  EXPECT_THROW(m.forward_cached(ops::from_ints(random_ids(2 * 6, 2, 50), {2, 6}), cache), Error);
  cache.reset();
  EXPECT_TRUE(testing::tensors_near(m.forward_cached(ops::narrow(ids, 1, 0, 4), cache),
                                    ops::narrow(full, 1, 0, 4), 1e-5, 1e-4));
}

TEST(Generate, GreedyIsDeterministicAndMatchesAFullForwardLoop) {
  Gpt2 m(tiny(), 5);
  const std::vector<int32_t> prompt = {3, 17, 8};
  GenerateOptions o;
  o.max_new_tokens = 9;
  const GenerateResult a = generate(m, prompt, o), b = generate(m, prompt, o);
  EXPECT_EQ(a.ids, b.ids);
  ASSERT_EQ(a.ids.size(), prompt.size() + 9);
  EXPECT_EQ(a.num_generated, 9);
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), a.ids.begin()));
  // The same argmax loop without the cache.
  m.eval();
  autograd::NoGradGuard ng;
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (int i = 0; i < 9; ++i) {
    const int64_t T = static_cast<int64_t>(seq.size());
    const auto logits = m.forward(ops::from_ints(seq, {1, T})).to_vector();
    seq.push_back(argmax_token(std::span<const float>(logits).subspan((T - 1) * 50, 50)));
  }
  EXPECT_EQ(std::vector<int64_t>(a.ids.begin(), a.ids.end()), seq);
}

TEST(Generate, ArgmaxTiesGoToTheLowestId) {
  EXPECT_EQ(argmax_token(std::vector<float>{1, 3, 3, -2}), 1);
  EXPECT_EQ(argmax_token(std::vector<float>{5}), 0);
}

TEST(Generate, SamplingIsReproducibleForASeedAndDiffersAcrossSeeds) {
  Gpt2Config c = tiny();
  c.initializer_range = 0.02;  // flat logits: draws vary
  Gpt2 m(c, 1);
  const std::vector<int32_t> prompt = {1, 2};
  const GenerateResult a = generate(m, prompt, sampling(7));
  EXPECT_EQ(a.ids, generate(m, prompt, sampling(7)).ids);
  EXPECT_NE(a.ids, generate(m, prompt, sampling(8)).ids);
  EXPECT_EQ(a.ids.size(), 12u);
}

TEST(Generate, TopKOneAndTinyTopPEqualGreedy) {
  Gpt2 m(tiny(), 9);
  const std::vector<int32_t> prompt = {4, 4, 20};
  GenerateOptions g;
  g.max_new_tokens = 10;
  const auto greedy = generate(m, prompt, g).ids;
  for (uint64_t seed : {0, 1, 2}) {
    GenerateOptions k1 = sampling(seed);
    k1.top_k = 1;
    k1.temperature = 3.0;
    EXPECT_EQ(generate(m, prompt, k1).ids, greedy) << "seed " << seed;
    GenerateOptions p0 = sampling(seed);
    p0.top_p = 1e-6;
    EXPECT_EQ(generate(m, prompt, p0).ids, greedy) << "seed " << seed;
  }
}

TEST(Generate, DrawsStayWithinTheTopKSetAtAnyTemperature) {
  Generator lg(11);
  std::vector<float> logits(40);
  for (float& x : logits) x = static_cast<float>(lg.next_uniform() * 4.0);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  for (double temp : {0.5, 1.0, 10.0}) {
    GenerateOptions o = sampling(0);
    o.top_k = 5;
    o.temperature = temp;
    Generator gen(3);
    std::set<int32_t> seen;
    for (int i = 0; i < 400; ++i) {
      const int32_t t = select_token(logits, o, gen);
      EXPECT_GE(logits[static_cast<size_t>(t)], sorted[4]) << "temperature " << temp;
      seen.insert(t);
    }
    EXPECT_EQ(seen.size(), 5u) << "temperature " << temp;  // every top-k token gets drawn
    const TokenDistribution d = filtered_distribution(logits, o);
    ASSERT_EQ(d.ids.size(), 5u);
    double total = 0;
    for (double p : d.probs) total += p;
    EXPECT_NEAR(total, 1.0, 1e-12);
  }
}

TEST(Generate, TopPKeepsTheSmallestSetReachingP) {
  const std::vector<float> logits = {std::log(0.05f), std::log(0.5f), std::log(0.15f),
                                     std::log(0.3f)};
  GenerateOptions o = sampling(0);
  auto kept = [&](double p) {
    o.top_p = p;
    return filtered_distribution(logits, o).ids;
  };
  EXPECT_EQ(kept(0.4), (std::vector<int32_t>{1}));
  EXPECT_EQ(kept(0.75), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(kept(0.9), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(kept(1.0), (std::vector<int32_t>{0, 1, 2, 3}));
  // Top-k first, then top-p over the renormalised survivors: {1, 3} -> 0.625, 0.375.
  o.top_k = 2;
  o.top_p = 0.6;
  const TokenDistribution d = filtered_distribution(logits, o);
  EXPECT_EQ(d.ids, (std::vector<int32_t>{1}));
}

TEST(Generate, StopsAtEos) {
  Gpt2 m(tiny(), 5);
  const std::vector<int32_t> prompt = {3, 17, 8};
  GenerateOptions o;
  o.max_new_tokens = 6;
  const GenerateResult free_run = generate(m, prompt, o);
  o.eos_id = free_run.ids[4];  // the second generated token
  const GenerateResult r = generate(m, prompt, o);
  EXPECT_TRUE(r.stopped_at_eos);
  EXPECT_FALSE(r.stopped_at_context);
  EXPECT_LE(r.num_generated, 2);
  EXPECT_EQ(r.ids.back(), *o.eos_id);
  EXPECT_TRUE(std::equal(r.ids.begin(), r.ids.end(), free_run.ids.begin()));
}

TEST(Generate, StopsAtNPositionsWithoutCrashing) {
  Gpt2 m(tiny(), 5);
  GenerateOptions o;
  o.max_new_tokens = 10;
  std::vector<int32_t> prompt(13, 7);
  GenerateResult r = generate(m, prompt, o);
  EXPECT_TRUE(r.stopped_at_context);
  EXPECT_EQ(r.ids.size(), 16u);
  EXPECT_EQ(r.num_generated, 3);
  prompt.assign(20, 7);  // longer than n_positions: nothing generated
  r = generate(m, prompt, o);
  EXPECT_TRUE(r.stopped_at_context);
  EXPECT_EQ(r.ids, prompt);
  EXPECT_EQ(r.num_generated, 0);
  o.max_new_tokens = 3;  // exactly reaching the limit is not "stopped early"
  r = generate(m, std::vector<int32_t>(13, 7), o);
  EXPECT_FALSE(r.stopped_at_context);
  EXPECT_EQ(r.ids.size(), 16u);
}

TEST(Generate, RejectsBadOptionsAndPrompts) {
  Gpt2 m(tiny(), 5);
  GenerateOptions o = sampling(0);
  o.temperature = 0;
  EXPECT_THROW(generate(m, {1}, o), Error);
  o = sampling(0);
  o.top_p = 0;
  EXPECT_THROW(generate(m, {1}, o), Error);
  o.top_p = 1.5;
  EXPECT_THROW(generate(m, {1}, o), Error);
  o = sampling(0);
  o.top_k = -1;
  EXPECT_THROW(generate(m, {1}, o), Error);
  EXPECT_THROW(generate(m, {}, GenerateOptions{}), Error);
  EXPECT_THROW(generate(m, {50}, GenerateOptions{}), Error);  // outside the vocabulary
}

TEST(Generate, LoadsAModelDirectoryAndNamesMissingFiles) {
  testing::IoTempDir dir;
  Gpt2 m(tiny(), 21);
  EXPECT_THROW(load_pretrained(dir.str() + "/nope"), Error);
  try {
    load_pretrained(dir.str());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
  std::ofstream(dir.str() + "/config.json") << m.config().to_json();
  try {
    load_pretrained(dir.str());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  io::save_sharded_safetensors(dir.str(), m.named_parameters(), 1 << 30);
  std::unique_ptr<CausalLM> loaded = load_pretrained(dir.str());
  EXPECT_FALSE(loaded->is_training());
  GenerateOptions o;
  o.max_new_tokens = 5;
  EXPECT_EQ(generate(*loaded, {1, 2, 3}, o).ids, generate(m, {1, 2, 3}, o).ids);
}

}  // namespace
}  // namespace hfrun::nn
