// The Llama family against a float64 PyTorch reference of Hugging Face's modeling code
// (tests/models/reference/llama_reference.py): Llama with GQA, an untied head and llama3 rope
// scaling; Qwen3 with q/k norms, head_dim != hidden / heads and tied embeddings; Qwen2 with
// q/k/v biases. Logits, loss, every parameter gradient, a few AdamW steps with clipping
// (per-step losses, final weights) and greedy generation token for token.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "models/generate.h"
#include "models/registry.h"
#include "optim/clip.h"
#include "optim/optimizer.h"
#include "parity_util.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

using testing::ints;
using testing::rel_err;

std::unique_ptr<CausalLM> model_of(const nlohmann::json& c, const nlohmann::json& params) {
  auto model = create_causal_lm(c["config"].dump(), c["name"].get<std::string>());
  model->flatten_parameters();
  EXPECT_EQ(model->named_parameters().size(), params.size()) << c["name"];
  for (const auto& [name, p] : params.items()) {
    const nlohmann::json& d = p.is_object() ? p["data"] : p;
    const Shape shape = model->parameter(name).sizes();
    model->load_parameter(name, ops::from_vector(d.get<std::vector<float>>(), shape));
  }
  return model;
}

class LlamaParity : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ref_ = testing::load_reference("HFRUN_LLAMA_REFERENCE");
    ASSERT_FALSE(ref_.is_null()) << "HFRUN_LLAMA_REFERENCE is not set";
    case_ = ref_["cases"][GetParam()];
  }
  nlohmann::json ref_, case_;
};

TEST_P(LlamaParity, LogitsLossAndGradientsMatchPyTorch) {
  auto model = model_of(case_, case_["params"]);
  // The parameter order is HF's (named_parameters of the transformers model).
  std::vector<std::string> want_names;
  for (const auto& [name, p] : case_["params"].items()) want_names.push_back(name);
  std::vector<std::string> names;
  for (const auto& [name, t] : model->named_parameters()) names.push_back(name);
  std::sort(want_names.begin(), want_names.end());
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, want_names);

  const Tensor ids = ints(case_["ids"]), targets = ints(case_["targets"]);
  Tensor logits = model->forward(ids);
  EXPECT_LT(rel_err(logits.to_vector(), case_["logits"].get<std::vector<double>>()), 1e-5);
  model->zero_grad();
  Tensor loss = model->loss(ids, targets);
  const double want_loss = case_["loss"].get<double>();
  EXPECT_NEAR(loss.item(), want_loss, 1e-5 * std::fabs(want_loss));
  autograd::backward(loss);
  for (const auto& [name, t] : model->named_parameters()) {
    const double err =
        rel_err(t.grad().to_vector(), case_["grads"][name].get<std::vector<double>>());
    EXPECT_LT(err, 1e-4) << name;
  }
}

// hfrun trains in f32 against a float64 reference: each step's rounding (~2e-6 in the first
// step's gradients) grows through AdamW's normalised updates. On the sliding-window cases the
// third step's gradient norm was 5.6e-5 off with the composed attention and 1.0e-4 with the
// CPU's fused kernel (first-step gradients equal in quality), so the bound after three steps
// is 3e-4.
constexpr double kAfterStepsTolerance = 3e-4;

TEST_P(LlamaParity, AdamWTrainingMatchesPyTorch) {
  auto model = model_of(case_, case_["params"]);
  const nlohmann::json& a = case_["adamw"];
  optim::AdamWOptions o;
  o.lr = a["lr"].get<double>();
  o.betas = {a["betas"][0].get<double>(), a["betas"][1].get<double>()};
  o.eps = a["eps"].get<double>();
  o.weight_decay = a["weight_decay"].get<double>();
  optim::AdamW opt(optim::param_refs(model->named_parameters()), o);
  for (const auto& s : case_["train_steps"]) {
    model->zero_grad();
    Tensor loss = model->loss(ints(s["ids"]), ints(s["targets"]));
    const double want = s["loss"].get<double>();
    EXPECT_NEAR(loss.item(), want, 1e-5 * std::fabs(want));
    autograd::backward(loss);
    const double norm = optim::clip_grad_norm(model->parameters(), a["max_norm"].get<double>());
    EXPECT_NEAR(norm, s["grad_norm"].get<double>(),
                kAfterStepsTolerance * s["grad_norm"].get<double>());
    opt.step();
  }
  for (const auto& [name, t] : model->named_parameters()) {
    EXPECT_LT(rel_err(t.to_vector(), case_["final_params"][name].get<std::vector<double>>()),
              kAfterStepsTolerance)
        << name;
  }
}

TEST_P(LlamaParity, GreedyGenerationMatchesPyTorchTokenForToken) {
  auto model = model_of(case_, case_["final_params"]);
  model->eval();
  const auto& g = case_["generate"];
  GenerateOptions o;
  o.max_new_tokens = static_cast<int64_t>(g["ids"].size() - g["prompt"].size());
  const GenerateResult r = generate(*model, g["prompt"].get<std::vector<int32_t>>(), o);
  EXPECT_EQ(r.ids, g["ids"].get<std::vector<int32_t>>());
  // The cached forward equals the full forward at every position.
  std::vector<int64_t> all(r.ids.begin(), r.ids.end());
  const int64_t n = static_cast<int64_t>(all.size());
  const Tensor ids = ops::from_ints(all, {1, n});
  KvCache cache = model->make_kv_cache(1, n);
  Tensor first = model->forward_cached(ops::narrow(ids, 1, 0, 5), cache);
  Tensor rest = model->forward_cached(ops::narrow(ids, 1, 5, n - 5), cache);
  autograd::NoGradGuard no_grad;
  const std::vector<float> full = model->forward(ids).to_vector();
  std::vector<float> cached = first.to_vector();
  for (float x : rest.to_vector()) cached.push_back(x);
  EXPECT_LT(rel_err(cached, std::vector<double>(full.begin(), full.end())), 1e-5);
}

std::string case_name(const ::testing::TestParamInfo<int>& info) {
  static const char* const kNames[] = {"LlamaGqaUntiedLlama3Rope",
                                       "Qwen3QkNormHeadDimTied",
                                       "Qwen2Bias",
                                       "MistralSlidingWindow",
                                       "Qwen3Yarn",
                                       "Qwen2SlidingLayers"};
  return kNames[info.param];
}

INSTANTIATE_TEST_SUITE_P(Cases, LlamaParity, ::testing::Values(0, 1, 2, 3, 4, 5), case_name);

// Qwen2ForSequenceClassification: the score head on each row's last token before its padding.
TEST(LlamaClassificationParity, ScoreOnTheLastTokenMatchesPyTorch) {
  const nlohmann::json ref = testing::load_reference("HFRUN_LLAMA_REFERENCE");
  ASSERT_FALSE(ref.is_null()) << "HFRUN_LLAMA_REFERENCE is not set";
  const nlohmann::json& c = ref["classification"];
  auto model = create_model(c["config"].dump(), c["name"].get<std::string>(), 0, "llama",
                            Task::kSequenceClassification);
  EXPECT_EQ(model->architecture(), "Qwen2ForSequenceClassification");
  model->flatten_parameters();
  EXPECT_EQ(model->named_parameters().size(), c["params"].size());
  for (const auto& [name, p] : c["params"].items()) {
    model->load_parameter(name, ops::from_vector(p["data"].get<std::vector<float>>(),
                                                 model->parameter(name).sizes()));
  }
  const std::vector<int64_t> lengths = c["lengths"].get<std::vector<int64_t>>();
  const ModelInputs in(ints(c["ids"]), Tensor(),
                       ops::from_ints(lengths, {static_cast<int64_t>(lengths.size())}));
  const Tensor labels = ops::from_ints(c["labels"].get<std::vector<int64_t>>(), {3});
  Tensor loss = model->loss(in, labels);
  EXPECT_NEAR(loss.item(), c["loss"].get<double>(), 1e-5 * c["loss"].get<double>());
  {
    autograd::NoGradGuard no_grad;
    EXPECT_LT(rel_err(model->forward(in).to_vector(), c["logits"].get<std::vector<double>>()),
              1e-5);
  }
  autograd::backward(loss);
  for (const auto& [name, t] : model->named_parameters()) {
    EXPECT_LT(rel_err(t.grad().to_vector(), c["grads"][name].get<std::vector<double>>()), 1e-4)
        << name;
  }
  // config.json carries the labels and the class.
  const nlohmann::json out = nlohmann::json::parse(model->config_json());
  EXPECT_EQ(out["architectures"][0], "Qwen2ForSequenceClassification");
  EXPECT_EQ(out["id2label"].size(), 3u);
}

}  // namespace
}  // namespace hfrun::nn
