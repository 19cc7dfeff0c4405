// Finite-difference gradient checks for the layers in autograd/functions_nn.cpp, plus the
// closed-form cross-entropy gradient and dropout's regenerated mask.
#include <cmath>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "tensor/allocator.h"
#include "test_util.h"

namespace hfrun {
namespace {

using autograd::gradcheck;
using testing::randn;
using testing::tensor_near;

// gradcheck as a gtest assertion (a function, so lambdas with capture lists pass as one
// argument).
::testing::AssertionResult grads_match(const autograd::GradcheckFn& f,
                                       const std::vector<Tensor>& inputs) {
  autograd::GradcheckResult r = gradcheck(f, inputs);
  if (r.ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.message;
}

TEST(GradNn, LayerNormInputWeightAndBias) {
  Tensor x = randn({3, 5}, 1, true), w = randn({5}, 2, true), b = randn({5}, 3, true);
  EXPECT_TRUE(
      grads_match([](const auto& in) { return layer_norm(in[0], in[1], in[2], 1e-5); }, {x, w, b}));
  // Without a bias, and on a 3-D input.
  Tensor x3 = randn({2, 2, 4}, 4, true), w4 = randn({4}, 5, true);
  EXPECT_TRUE(grads_match([](const auto& in) { return layer_norm(in[0], in[1], Tensor(), 1e-5); },
                          {x3, w4}));
}

TEST(GradNn, LayerNormNonContiguousInputWithFrozenWeight) {
  Tensor base = randn({5, 3}, 6, true);
  Tensor w = randn({5}, 7), b = randn({5}, 8);  // no requires_grad: only x gets a gradient
  EXPECT_TRUE(grads_match(
      [w, b](const auto& in) { return layer_norm(transpose(in[0], 0, 1), w, b, 1e-5); }, {base}));
}

TEST(GradNn, RmsNormInputAndWeight) {
  Tensor x = randn({3, 5}, 9, true), w = randn({5}, 10, true);
  EXPECT_TRUE(grads_match([](const auto& in) { return rms_norm(in[0], in[1], 1e-6); }, {x, w}));
}

TEST(GradNn, RotaryEmbeddingInput) {
  // [B, H, T, D] with tables [T, D], and a non-contiguous (transposed) input as models pass it.
  Tensor x = randn({2, 3, 4, 6}, 40, true);
  Tensor cos = randn({4, 6}, 41), sin = randn({4, 6}, 42);
  EXPECT_TRUE(grads_match([&](const auto& in) { return rotary_embedding(in[0], cos, sin); }, {x}));
  Tensor y = randn({2, 4, 3, 6}, 43, true);
  EXPECT_TRUE(grads_match(
      [&](const auto& in) { return rotary_embedding(transpose(in[0], 1, 2), cos, sin); }, {y}));
  // x * cos + rotate_half(x) * sin, rotate_half([a, b]) = [-b, a], by hand for one row.
  Tensor one = ops::from_vector({1, 2, 3, 4}, {1, 4});
  Tensor c = ops::from_vector({0.5f, 0.25f, 0.5f, 0.25f}, {1, 4});
  Tensor s = ops::from_vector({2, 3, 2, 3}, {1, 4});
  EXPECT_TRUE(tensor_near(rotary_embedding(one, c, s), {1 * 0.5f - 3 * 2, 2 * 0.25f - 4 * 3,
                                                        3 * 0.5f + 1 * 2, 4 * 0.25f + 2 * 3}));
}

TEST(GradNn, EmbeddingWeightWithRepeatedIds) {
  Tensor w = randn({4, 3}, 11, true);
  Tensor ids = ops::from_ints({1, 3, 1, 0, 1, 2}, {2, 3});
  EXPECT_TRUE(grads_match([ids](const auto& in) { return embedding(in[0], ids); }, {w}));
  // One backward by hand: the gradient of sum(embedding) counts each id's uses.
  Tensor w2 = randn({4, 3}, 12, true);
  autograd::backward(sum(embedding(w2, ids)));
  EXPECT_TRUE(tensor_near(w2.grad(), {1, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1}));
}

TEST(GradNn, CrossEntropyLogitsWithIgnoredTargets) {
  Tensor logits = randn({4, 5}, 13, true);
  Tensor t = ops::from_ints({2, -100, 4, 0}, {4});
  EXPECT_TRUE(grads_match([t](const auto& in) { return cross_entropy(in[0], t); }, {logits}));
  // Batched [B, T, V] logits with [B, T] i32 targets.
  Tensor l3 = randn({2, 2, 3}, 14, true);
  Tensor t3 = ops::from_ints({0, 2, -100, 1}, {2, 2}, DType::kI32);
  EXPECT_TRUE(grads_match([t3](const auto& in) { return cross_entropy(in[0], t3); }, {l3}));
}

TEST(GradNn, CrossEntropyGradientIsSoftmaxMinusOneHotOverCount) {
  const int64_t N = 4, V = 6;
  Tensor logits = randn({N, V}, 15, true);
  std::vector<int64_t> t = {5, 1, -100, 3};
  Tensor loss = cross_entropy(logits, ops::from_ints(t, {N}));
  autograd::backward(loss);
  std::vector<float> lv = logits.to_vector();
  std::vector<float> want(N * V, 0.0f);
  const double count = 3;  // rows not ignored
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == -100) continue;
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(lv[r * V + v]));
    for (int64_t v = 0; v < V; ++v) {
      double p = std::exp(static_cast<double>(lv[r * V + v])) / s;
      want[r * V + v] = static_cast<float>((p - (v == t[r] ? 1.0 : 0.0)) / count);
    }
  }
  EXPECT_TRUE(tensor_near(logits.grad(), want, 1e-6, 1e-5));
}

// The backward writes the logits' gradient over the saved logits when nothing else holds them
// (no second [N, V] tensor), and leaves logits that the caller still holds alone: both give the
// same gradients, bit for bit.
TEST(GradNn, CrossEntropyGradientOverwritesLogitsNobodyElseHolds) {
  constexpr int64_t N = 64, K = 3, V = 2000;
  std::vector<int64_t> t(N);
  for (int64_t r = 0; r < N; ++r) t[r] = r == 5 ? -100 : (r * 7919) % V;
  const Tensor targets = ops::from_ints(t, {N});
  const Tensor x = randn({N, K}, 17);
  auto run = [&](DType dtype, bool hold, size_t* peak_growth) {
    Tensor w = randn({K, V}, 18, true);
    // bf16: logits straight from a bf16 GEMM, as under mixed precision (no cast node between).
    Tensor logits = linear(ops::to_dtype(x, dtype), w, Tensor(), dtype, dtype);
    const Tensor before_values = ops::clone(logits.detach());
    Tensor loss = cross_entropy(logits, targets);
    if (!hold) logits = Tensor();
    cpu_allocator().reset_peak();  // this backward's peak, not an earlier one
    const AllocatorStats before = cpu_allocator().stats();
    autograd::backward(loss);
    if (peak_growth != nullptr) {
      *peak_growth = cpu_allocator().stats().peak_allocated_bytes - before.allocated_bytes;
    }
    if (hold) {
      EXPECT_EQ(logits.to_vector(), before_values.to_vector()) << "held logits were overwritten";
    }
    return w.grad().to_vector();
  };
  std::vector<std::vector<float>> in_place;
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    size_t growth = 0;
    in_place.push_back(run(dtype, false, &growth));
    EXPECT_LT(growth, static_cast<size_t>(N * V * dtype_size(dtype) / 2))
        << dtype_name(dtype) << ": the backward allocated a second [N, V] tensor";
  }
  EXPECT_EQ(in_place[0], run(DType::kBF16, true, nullptr));
  EXPECT_EQ(in_place[1], run(DType::kF32, true, nullptr));
}

TEST(GradNn, CrossEntropyRejectsMismatchedTargets) {
  Tensor logits = randn({2, 3, 4}, 16, true);
  EXPECT_THROW(cross_entropy(logits, ops::from_ints({0, 1, 2}, {3})), Error);
  EXPECT_THROW(cross_entropy(logits, ops::from_ints({0, 1, 2, 3, 0, 1}, {3, 2})), Error);
}

TEST(GradNn, DropoutWithAFixedGenerator) {
  Tensor x = randn({3, 5}, 17, true);
  // gradcheck evaluates f many times: a generator made inside f gives every call one mask.
  EXPECT_TRUE(grads_match(
      [](const auto& in) {
        Generator gen(123);
        return dropout(in[0], 0.4, true, gen);
      },
      {x}));
}

TEST(GradNn, DropoutBackwardUsesTheForwardMask) {
  Tensor x = ops::ones({200});
  x.set_requires_grad(true);
  Generator gen(5);
  Tensor y = dropout(x, 0.25, true, gen);
  autograd::backward(sum(y));
  // d sum(y) / dx = mask / (1 - p) = y / x with x = 1.
  EXPECT_TRUE(tensor_near(x.grad(), y.to_vector()));
}

TEST(GradNn, DropoutSuccessiveCallsDifferAndGeneratorStateReplays) {
  Tensor x = ops::ones({64});
  Generator gen(9);
  const uint64_t seed = gen.seed(), offset = gen.offset();
  std::vector<float> first = dropout(x, 0.5, true, gen).to_vector();
  std::vector<float> second = dropout(x, 0.5, true, gen).to_vector();
  EXPECT_NE(first, second);
  EXPECT_GT(gen.offset(), offset);
  Generator replay(0);
  replay.set_state(seed, offset);
  EXPECT_EQ(dropout(x, 0.5, true, replay).to_vector(), first);
  EXPECT_EQ(dropout(x, 0.5, true, replay).to_vector(), second);
}

TEST(GradNn, DropoutIsIdentityInEvalOrWithZeroP) {
  Tensor x = randn({4}, 18, true);
  Generator gen(1);
  EXPECT_TRUE(dropout(x, 0.5, false, gen).is_same(x));
  EXPECT_TRUE(dropout(x, 0.0, true, gen).is_same(x));
  EXPECT_EQ(gen.offset(), 0u);  // no randomness consumed
  EXPECT_THROW(dropout(x, 1.0, true, gen), Error);
}

TEST(GradNn, CatOfNonContiguousViewAndContiguousTensor) {
  Tensor a = randn({3, 2}, 19, true);  // used as its [2, 3] transpose
  Tensor b = randn({1, 3}, 20, true);
  EXPECT_TRUE(grads_match(
      [](const auto& in) {
        return cat({transpose(in[0], 0, 1), in[1]}, 0);
      },
      {a, b}));
  Tensor c = randn({2, 4}, 21, true);
  EXPECT_TRUE(grads_match(
      [](const auto& in) {
        return cat({transpose(in[0], 0, 1), in[1]}, 1);
      },
      {a, c}));
}

TEST(GradNn, NoGraphWhenNothingRequiresGrad) {
  Tensor x = randn({2, 4}, 22);
  EXPECT_FALSE(layer_norm(x, ops::ones({4}), ops::zeros({4})).requires_grad());
  EXPECT_FALSE(cross_entropy(x, ops::from_ints({0, 3}, {2})).requires_grad());
  Tensor w = randn({4}, 23, true);
  autograd::NoGradGuard guard;
  EXPECT_FALSE(rms_norm(x, w).requires_grad());
}

}  // namespace
}  // namespace hfrun
