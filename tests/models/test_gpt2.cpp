// Module and GPT-2 structure: HF parameter names and shapes, flat parameter storage, init
// statistics, config.json parsing and its errors, a training step that lowers the loss.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/node.h"
#include "common/error.h"
#include "models/gpt2/gpt2.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

Gpt2Config tiny() {
  Gpt2Config c;
  c.vocab_size = 50;
  c.n_positions = 16;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

TEST(Gpt2, ParameterNamesAndShapesFollowHuggingFace) {
  Gpt2 m(tiny());
  auto named = m.named_parameters();
  ASSERT_EQ(named.size(), 2u + 12u * 2 + 2u);
  EXPECT_EQ(named[0].first, "transformer.wte.weight");
  EXPECT_EQ(named[0].second.sizes(), (Shape{50, 32}));
  EXPECT_EQ(named[1].first, "transformer.wpe.weight");
  EXPECT_EQ(named[2].first, "transformer.h.0.ln_1.weight");
  EXPECT_EQ(m.parameter("transformer.h.1.attn.c_attn.weight").sizes(),
            (Shape{32, 96}));  // Conv1D [in, out]
  EXPECT_EQ(m.parameter("transformer.h.1.mlp.c_proj.weight").sizes(), (Shape{128, 32}));
  EXPECT_EQ(named.back().first, "transformer.ln_f.bias");
  // GPT-2 124M's well-known count, without building it: 12 layers, 768 wide, 50257 vocab.
  const int64_t C = 768, V = 50257, P = 1024, L = 12;
  EXPECT_EQ(
      V * C + P * C +
          L * (2 * C + C * 3 * C + 3 * C + C * C + C + 2 * C + C * 4 * C + 4 * C + 4 * C * C + C) +
          2 * C,
      124439808);
  EXPECT_THROW(m.parameter("lm_head.weight"), Error);  // tied to wte, not a separate parameter
}

TEST(Gpt2, InitialisationFollowsHuggingFace) {
  Gpt2Config c = tiny();
  c.n_embd = 64;
  c.vocab_size = 500;
  Gpt2 m(c, 7);
  auto stddev = [](const Tensor& t) {
    double s = 0, s2 = 0;
    auto v = t.to_vector();
    for (float x : v) s += x, s2 += static_cast<double>(x) * x;
    const double mean = s / v.size();
    return std::sqrt(s2 / v.size() - mean * mean);
  };
  EXPECT_NEAR(stddev(m.parameter("transformer.wte.weight")), 0.02, 0.001);
  EXPECT_NEAR(stddev(m.parameter("transformer.h.0.mlp.c_fc.weight")), 0.02, 0.001);
  // Residual projections: 0.02 / sqrt(2 * n_layer).
  EXPECT_NEAR(stddev(m.parameter("transformer.h.0.mlp.c_proj.weight")), 0.02 / std::sqrt(4.0),
              0.001);
  EXPECT_EQ(m.parameter("transformer.h.0.ln_1.weight").to_vector(), std::vector<float>(64, 1.0f));
  EXPECT_EQ(m.parameter("transformer.h.0.attn.c_attn.bias").to_vector(),
            std::vector<float>(192, 0.0f));
  // Same seed, same weights.
  Gpt2 again(c, 7);
  EXPECT_EQ(again.parameter("transformer.wte.weight").to_vector(),
            m.parameter("transformer.wte.weight").to_vector());
}

TEST(Gpt2, FlatParametersAreViewsAndGradientsLandInTheFlatBuffer) {
  Gpt2 m(tiny(), 3);
  auto before = m.parameter("transformer.h.0.attn.c_proj.weight").to_vector();
  const FlatParameters& flat = m.flatten_parameters();
  EXPECT_EQ(flat.slots.size(), m.named_parameters().size());
  EXPECT_GE(flat.params.numel(), m.num_parameters());
  for (const auto& [name, t] : m.named_parameters()) {
    EXPECT_TRUE(t.shares_storage_with(flat.params)) << name;
    EXPECT_TRUE(t.grad().shares_storage_with(flat.grads)) << name;
    EXPECT_EQ(t.offset() % 16, 0) << name;
  }
  EXPECT_EQ(m.parameter("transformer.h.0.attn.c_proj.weight").to_vector(), before);  // values kept
  Tensor ids = ops::from_ints({1, 2, 3, 4, 5, 6}, {2, 3});
  autograd::backward(m.loss(ids, ops::from_ints({2, 3, 4, 5, 6, 7}, {2, 3})));
  double norm = 0;
  for (float g : flat.grads.to_vector()) norm += g * g;
  EXPECT_GT(norm, 0);
  m.zero_grad();
  for (float g : flat.grads.to_vector()) ASSERT_EQ(g, 0.0f);
}

// Without a gradient buffer (ZeRO-2 and 3 keep a shard only) the parameters are flat views as
// before, with no gradient until backward makes one: the same gradients as with the buffer.
TEST(Gpt2, FlatteningWithoutAGradientBufferLeavesGradientsToBackward) {
  Gpt2 with(tiny(), 3), without(tiny(), 3);
  with.flatten_parameters();
  const FlatParameters& flat = without.flatten_parameters(Device::cpu(), false);
  EXPECT_FALSE(flat.grads.defined());
  for (const auto& [name, t] : without.named_parameters()) {
    EXPECT_TRUE(t.shares_storage_with(flat.params)) << name;
    EXPECT_TRUE(t.requires_grad()) << name;
    EXPECT_FALSE(t.grad().defined()) << name;
  }
  Tensor ids = ops::from_ints({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor targets = ops::from_ints({2, 3, 4, 5, 6, 7}, {2, 3});
  autograd::backward(with.loss(ids, targets));
  autograd::backward(without.loss(ids, targets));
  const auto a = with.named_parameters(), b = without.named_parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(b[i].second.grad().defined()) << b[i].first;
    EXPECT_EQ(a[i].second.grad().to_vector(), b[i].second.grad().to_vector()) << a[i].first;
  }
}

TEST(Gpt2, PlainSgdStepsLowerTheLoss) {
  Gpt2 m(tiny(), 11);
  const FlatParameters& flat = m.flatten_parameters();
  Tensor ids = ops::from_ints({1, 2, 3, 4, 5, 6, 7, 8}, {2, 4});
  Tensor targets = ops::from_ints({2, 3, 4, 5, 6, 7, 8, 9}, {2, 4});
  float first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    m.zero_grad();
    Tensor loss = m.loss(ids, targets);
    autograd::backward(loss);
    Tensor p = flat.params;
    ops::add_(p, flat.grads, -0.5);
    (step == 0 ? first : last) = loss.item();
  }
  EXPECT_LT(last, first - 1.0f);
}

TEST(Gpt2, DropoutOnlyInTrainingAndSeeded) {
  Gpt2Config c = tiny();
  c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = 0.2;
  Gpt2 m(c, 5);
  Tensor ids = ops::from_ints({1, 2, 3, 4}, {1, 4});
  m.eval();
  auto a = m.forward(ids).to_vector(), b = m.forward(ids).to_vector();
  EXPECT_EQ(a, b);
  m.train();
  auto d1 = m.forward(ids).to_vector(), d2 = m.forward(ids).to_vector();
  EXPECT_NE(d1, a);
  EXPECT_NE(d1, d2);  // a fresh mask each call
}

TEST(Gpt2, ConfigJsonRoundTripAndErrors) {
  Gpt2Config c = tiny();
  c.layer_norm_epsilon = 1e-6;
  Gpt2Config back = Gpt2Config::from_json(c.to_json(), "config.json");
  EXPECT_EQ(back.n_embd, 32);
  EXPECT_EQ(back.layer_norm_epsilon, 1e-6);
  auto expect_error = [](const std::string& json, const std::string& part) {
    try {
      Gpt2Config::from_json(json, "cfg.json");
      ADD_FAILURE() << json;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
      EXPECT_NE(e.message().find("cfg.json"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find(part), std::string::npos) << e.message();
    }
  };
  expect_error(R"({"n_embd": 30, "n_head": 4})", "divisible");
  expect_error(R"({"n_layer": "two"})", "n_layer");
  expect_error(R"({"model_type": "llama"})", "model_type");
  expect_error(R"({"activation_function": "swish2"})", "swish2");
  expect_error(R"({"reorder_and_upcast_attn": true})", "reorder_and_upcast_attn");
  expect_error(R"({"resid_pdrop": 1.5})", "resid_pdrop");
  expect_error("{", "JSON");
  Gpt2 m(tiny());
  EXPECT_THROW(m.forward(ops::zeros({1, 17}, DType::kI64)), Error);  // longer than n_positions
}

}  // namespace
}  // namespace hfrun::nn
