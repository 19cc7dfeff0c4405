// GPT-2 against PyTorch: logits, loss and every parameter gradient of a tiny GPT-2 with random
// weights, and its greedy continuation of a prompt (tests/models/reference/gpt2_reference.py,
// run by the ctest fixture gpt2_reference; HFRUN_GPT2_REFERENCE names its JSON output).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "models/generate.h"
#include "models/gpt2/gpt2.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

// ||a - b|| / ||b||: the relative error of a whole tensor (element-wise relative error is
// meaningless for entries near zero).
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

Tensor ints(const nlohmann::json& rows) {
  std::vector<int64_t> v;
  for (const auto& r : rows) {
    for (const auto& x : r) v.push_back(x.get<int64_t>());
  }
  return ops::from_ints(v,
                        {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
}

nlohmann::json load_reference() {
  const char* path = std::getenv("HFRUN_GPT2_REFERENCE");
  if (path == nullptr) {
    ADD_FAILURE() << "run through ctest (fixture gpt2_reference) or set HFRUN_GPT2_REFERENCE";
    return {};
  }
  std::ifstream in(path);
  if (!in.good()) {
    ADD_FAILURE() << "cannot open " << path;
    return {};
  }
  return nlohmann::json::parse(in);
}

// The reference's tiny GPT-2 with its weights.
std::unique_ptr<Gpt2> reference_model(const nlohmann::json& ref) {
  const Gpt2Config cfg = Gpt2Config::from_json(ref["config"].dump(), "reference config");
  auto model = std::make_unique<Gpt2>(cfg, /*seed=*/0);
  model->flatten_parameters();
  EXPECT_EQ(model->named_parameters().size(), ref["params"].size());
  for (const auto& [name, p] : ref["params"].items()) {
    Shape shape = p["shape"].get<Shape>();
    // The reference names parameters as GPT2Model does (no "transformer." prefix).
    model->load_parameter("transformer." + name,
                          ops::from_vector(p["data"].get<std::vector<float>>(), shape));
  }
  return model;
}

TEST(Gpt2Parity, LogitsLossAndGradientsMatchPyTorch) {
  const nlohmann::json ref = load_reference();
  ASSERT_FALSE(ref.is_null());
  std::unique_ptr<Gpt2> owned = reference_model(ref);
  Gpt2& model = *owned;
  const Tensor ids = ints(ref["ids"]), targets = ints(ref["targets"]);

  Tensor logits = model.forward(ids);
  EXPECT_LT(rel_err(logits.to_vector(), ref["logits"].get<std::vector<float>>()), 1e-5);
  model.zero_grad();
  Tensor loss = model.loss(ids, targets);
  EXPECT_NEAR(loss.item(), ref["loss"].get<double>(), 1e-5 * std::fabs(ref["loss"].get<double>()));
  autograd::backward(loss);
  for (const auto& [name, t] : model.named_parameters()) {
    const auto want =
        ref["grads"][name.substr(std::string("transformer.").size())].get<std::vector<float>>();
    const double err = rel_err(t.grad().to_vector(), want);
    EXPECT_LT(err, 1e-4) << name;
  }
}

// generate(greedy) with the KV cache against PyTorch's argmax loop over the full forward.
TEST(Gpt2Parity, GreedyGenerationMatchesPyTorchTokenForToken) {
  const nlohmann::json ref = load_reference();
  ASSERT_FALSE(ref.is_null());
  std::unique_ptr<Gpt2> model = reference_model(ref);
  const nlohmann::json& gen = ref["generate"];
  GenerateOptions opts;
  opts.greedy = true;
  opts.max_new_tokens = gen["max_new_tokens"].get<int64_t>();
  const GenerateResult r = generate(*model, gen["prompt"].get<std::vector<int32_t>>(), opts);
  EXPECT_EQ(r.ids, gen["ids"].get<std::vector<int32_t>>())
      << "reference min top-1/top-2 margin " << gen["min_margin"].get<double>();
  EXPECT_EQ(r.num_generated, opts.max_new_tokens);
}

}  // namespace
}  // namespace hfrun::nn
