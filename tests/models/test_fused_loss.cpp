// Every family's token loss (the counted positions' hidden states through the output layer, its
// fused loss making no logits) against the loss of its logits: GPT-2 (tied head), Llama with and
// without a tied head, BERT's masked LM (tied decoder plus its own bias), in f32 and under bf16
// mixed precision; and the cases that keep the logits (an adapter on the head,
// HFRUN_FUSED_LOSS=0).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "models/bert/bert.h"
#include "models/registry.h"
#include "tensor/allocator.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

// HFRUN_FUSED_LOSS set for a scope (read at every loss), its value before restored after.
class FusedLossEnv {
 public:
  explicit FusedLossEnv(const char* value) {
    if (const char* old = std::getenv("HFRUN_FUSED_LOSS")) old_ = old;
    setenv("HFRUN_FUSED_LOSS", value, 1);
  }
  ~FusedLossEnv() {
    if (old_) {
      setenv("HFRUN_FUSED_LOSS", old_->c_str(), 1);
    } else {
      unsetenv("HFRUN_FUSED_LOSS");
    }
  }

 private:
  std::optional<std::string> old_;
};

struct LossAndGrads {
  float loss;
  std::map<std::string, std::vector<float>> grads;
};

LossAndGrads loss_and_grads(Model& m, const std::function<Tensor()>& loss_of) {
  for (auto& [name, p] : m.named_parameters()) p.set_grad(Tensor());
  Tensor loss = loss_of();
  autograd::backward(loss);
  LossAndGrads r{loss.item(), {}};
  for (auto& [name, p] : m.named_parameters()) r.grads[name] = p.grad().to_vector();
  return r;
}

void expect_near(const LossAndGrads& got, const LossAndGrads& want, bool bf16) {
  EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss));
  // bf16: the GEMMs' f32 sums run in another order before their roundings, which the layers
  // below the head carry on.
  const double atol = bf16 ? 3e-3 : 2e-6, rtol = bf16 ? 3e-2 : 1e-4;
  for (const auto& [name, w] : want.grads) {
    const std::vector<float>& g = got.grads.at(name);
    ASSERT_EQ(g.size(), w.size()) << name;
    int bad = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (std::abs(g[i] - w[i]) > atol + rtol * std::abs(w[i]) && ++bad <= 3) {
        ADD_FAILURE() << name << "[" << i << "]: fused " << g[i] << ", logits " << w[i];
      }
    }
  }
}

// loss() with HFRUN_FUSED_LOSS=0 and =1 against the cross-entropy of forward()'s logits of
// every position: the counted positions' head, composed, then fused.
void expect_fused_equals_logits(Model& m, const ModelInputs& in, const Tensor& targets, bool bf16) {
  m.set_compute_dtype(bf16 ? std::optional<DType>(DType::kBF16) : std::nullopt);
  const LossAndGrads want =
      loss_and_grads(m, [&] { return cross_entropy(m.forward(in), targets); });
  for (const char* env : {"0", "1"}) {
    SCOPED_TRACE(std::string("HFRUN_FUSED_LOSS=") + env);
    FusedLossEnv set(env);
    ASSERT_TRUE(m.has_token_loss());
    ASSERT_EQ(m.fuses_token_loss(12), env[0] == '1');
    expect_near(loss_and_grads(m, [&] { return m.loss(in, targets); }), want, bf16);
  }
}

// A tiny Llama's config.json: `vocab` tokens, hidden 16, `layers` layers, a tied head or not.
std::string llama_config(int64_t vocab, int layers, bool tied) {
  return R"({"model_type": "llama", "vocab_size": )" + std::to_string(vocab) +
         R"(, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": )" +
         std::to_string(layers) +
         R"(, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 16,
         "tie_word_embeddings": )" +
         (tied ? "true}" : "false}");
}

Tensor targets_for(int64_t B, int64_t T, int64_t V) {
  std::vector<int64_t> t(static_cast<size_t>(B * T));
  for (int64_t i = 0; i < B * T; ++i) t[static_cast<size_t>(i)] = i % 4 == 1 ? -100 : (i * 13) % V;
  return ops::from_ints(t, {B, T});
}

TEST(FusedLoss, DecodersEqualTheirLogitsLoss) {
  const std::map<std::string, std::string> configs = {
      {"gpt2", R"({"model_type": "gpt2", "vocab_size": 300, "n_positions": 16, "n_embd": 16,
                   "n_layer": 2, "n_head": 2})"},
      {"llama", llama_config(300, 2, false)},
      {"llama tied", llama_config(300, 2, true)}};
  const Tensor ids = ops::from_ints({1, 5, 7, 2, 39, 250, 11, 3, 9, 4, 8, 299}, {2, 6});
  const Tensor targets = targets_for(2, 6, 300);
  for (const auto& [what, cfg] : configs) {
    for (bool bf16 : {false, true}) {
      SCOPED_TRACE(what + (bf16 ? " bf16" : " f32"));
      auto m = create_causal_lm(cfg, what == "gpt2" ? "gpt2" : "llama", 11);
      m->eval();  // no dropout: both losses see the same network
      expect_fused_equals_logits(*m, ModelInputs(ids), targets, bf16);
    }
  }
}

TEST(FusedLoss, BertMaskedLmEqualsItsLogitsLoss) {
  BertConfig c;
  c.vocab_size = 300;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 24;
  c.max_position_embeddings = 20;
  Bert m(c, Task::kMaskedLM, 12);
  m.eval();  // no dropout: both losses see the same network
  // cls.predictions.bias is zero at initialisation: give it values, so its part counts.
  for (auto& [name, p] : m.named_parameters()) {
    if (name == "cls.predictions.bias") {
      Tensor v = p.detach();
      Generator gen(3);
      ops::copy_(v, ops::mul_scalar(ops::randn({300}, gen), 0.5));
    }
  }
  const ModelInputs in(ops::from_ints({2, 7, 9, 4, 0, 0, 3, 5, 6, 8, 11, 12}, {2, 6}),
                       ops::from_ints({0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1}, {2, 6}),
                       ops::from_ints({4, 6}, {2}));
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "f32");
    expect_fused_equals_logits(m, in, targets_for(2, 6, 300), bf16);
  }
}

// SFT's batches: prompts and padding (targets -100) never reach the head. The composed loss
// (HFRUN_FUSED_LOSS=0) of 4 counted positions out of 64 makes their logits only: the allocator's
// peak grows by less than half of every position's logits. Loss and gradients are those of the
// logits of every position; so are a batch in which every target counts (no gather) and one in
// which none does (cross_entropy's NaN).
TEST(FusedLoss, TheHeadSeesOnlyTheCountedPositions) {
  constexpr int64_t B = 4, T = 16, V = 4000;
  std::vector<int64_t> ids(B * T), sft(B * T, -100), every(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    ids[static_cast<size_t>(i)] = (i * 37) % V;
    every[static_cast<size_t>(i)] = (i * 11 + 5) % V;
  }
  for (int64_t b = 0; b < B; ++b) sft[static_cast<size_t>(b * T + 9)] = 17 * b + 3;  // 1 per row
  const ModelInputs in(ops::from_ints(ids, {B, T}));
  const std::map<std::string, std::string> configs = {
      {"gpt2", R"({"model_type": "gpt2", "vocab_size": 4000, "n_positions": 16, "n_embd": 16,
                   "n_layer": 1, "n_head": 2})"},
      {"llama", llama_config(V, 1, false)}};
  FusedLossEnv off("0");
  for (const auto& [what, cfg] : configs) {
    SCOPED_TRACE(what);
    auto m = create_causal_lm(cfg, what, 15);
    m->eval();
    for (const std::vector<int64_t>* t : {&sft, &every}) {
      const Tensor targets = ops::from_ints(*t, {B, T});
      const LossAndGrads want =
          loss_and_grads(*m, [&] { return cross_entropy(m->forward(in), targets); });
      cpu_allocator().reset_peak();
      const size_t start = cpu_allocator().stats().allocated_bytes;
      const LossAndGrads got = loss_and_grads(*m, [&] { return m->loss(in, targets); });
      if (t == &sft) {
        EXPECT_LT(cpu_allocator().stats().peak_allocated_bytes - start,
                  static_cast<size_t>(B * T * V * 4 / 2));
      }
      expect_near(got, want, /*bf16=*/false);
    }
    autograd::NoGradGuard no_grad;
    const Tensor none = ops::full({B, T}, -100.0, DType::kI64);
    EXPECT_TRUE(std::isnan(cross_entropy(m->forward(in), none).item()));
    EXPECT_TRUE(std::isnan(m->loss(in, none).item()));
    FusedLossEnv on("1");
    EXPECT_TRUE(std::isnan(m->loss(in, none).item())) << "fused";
    // Targets as i32 and as a transposed view read as the same [B, T] positions.
    const Tensor sft_t = ops::from_ints(sft, {B, T});
    const float want = m->loss(in, sft_t).item();
    EXPECT_EQ(m->loss(in, ops::to_dtype(sft_t, DType::kI32)).item(), want);
    const Tensor sft_view = ops::transpose(ops::contiguous(ops::transpose(sft_t, 0, 1)), 0, 1);
    EXPECT_EQ(m->loss(in, sft_view).item(), want);
  }
}

// The trainer's loss for a batch in which nothing counts (train/task_data.cpp zero_token_loss):
// one counted target times 0, through the head of that one row, composed or fused, is a finite
// zero whose gradients are zeros everywhere, as the logits' sum times 0 is.
TEST(FusedLoss, OneCountedTargetTimesZeroIsAZeroLoss) {
  auto m = create_causal_lm(llama_config(300, 1, true), "llama", 14);
  const ModelInputs in(ops::from_ints({1, 5, 7, 2, 39, 250}, {1, 6}));
  for (const char* env : {"0", "1"}) {
    SCOPED_TRACE(std::string("HFRUN_FUSED_LOSS=") + env);
    FusedLossEnv set(env);
    ASSERT_EQ(m->fuses_token_loss(1), env[0] == '1');
    for (auto& [name, p] : m->named_parameters()) p.set_grad(Tensor());
    Tensor loss =
        mul_scalar(m->loss(in, ops::from_ints({0, -100, -100, -100, -100, -100}, {1, 6})), 0.0);
    EXPECT_EQ(loss.item(), 0.0f);
    autograd::backward(loss);
    for (auto& [name, p] : m->named_parameters()) {
      for (float g : p.grad().to_vector()) ASSERT_EQ(g, 0.0f) << name;
    }
  }
}

// An adapter on the head keeps the logits (the adapter's term is added to them).
TEST(FusedLoss, AnAdapterOnTheHeadKeepsTheLogits) {
  auto m = create_causal_lm(llama_config(50, 1, false), "llama", 13);
  FusedLossEnv on("1");
  EXPECT_TRUE(m->fuses_token_loss(12));
  for (auto& [name, module] : m->named_modules()) {
    if (name != "lm_head") continue;
    auto* head = dynamic_cast<Linear*>(module);
    ASSERT_NE(head, nullptr);
    Generator gen(4);
    const Tensor x = ops::randn({1, 3, 16}, gen);
    const Tensor t = ops::from_ints({4, -100, 49}, {1, 3});
    {
      // Whether a model takes it is a preference; the layer's own fused loss runs regardless.
      FusedLossEnv off("0");
      EXPECT_FALSE(m->fuses_token_loss(12));
      autograd::NoGradGuard no_grad;
      EXPECT_NEAR(head->fused_loss(x, t).item(), cross_entropy(head->forward(x), t).item(), 1e-5);
    }
    head->add_lora(ops::zeros({2, 16}), ops::zeros({50, 2}), 1.0, 0.0, nullptr);
    EXPECT_THROW(head->fused_loss(x, t), Error);
  }
  EXPECT_FALSE(m->fuses_token_loss(12));
}

}  // namespace
}  // namespace hfrun::nn
