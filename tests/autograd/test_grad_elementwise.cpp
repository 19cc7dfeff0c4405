// Finite-difference gradient checks for elementwise ops, views and reductions, on broadcast
// and non-contiguous inputs.
#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "test_util.h"

namespace hfrun {
namespace {

using autograd::gradcheck;
using testing::randn;

TEST(Gradcheck, BinaryOpsWithBroadcasting) {
  Tensor a = randn({3, 4}, 1, true), row = randn({4}, 2, true), col = randn({3, 1}, 3, true);
  EXPECT_GRADCHECK([](const auto& x) { return add(x[0], x[1]); }, a, row);
  EXPECT_GRADCHECK([](const auto& x) { return sub(x[0], x[1]); }, col, a);
  EXPECT_GRADCHECK([](const auto& x) { return mul(x[0], x[1]); }, a, col);
  EXPECT_GRADCHECK([](const auto& x) { return mul(x[0], x[1]); }, row, col);
  Tensor pos = ops::add_scalar(ops::unary(ops::UnaryOp::kAbs, randn({4}, 4)), 0.5);
  pos.set_requires_grad(true);
  EXPECT_GRADCHECK([](const auto& x) { return div(x[0], x[1]); }, a, pos);
}

TEST(Gradcheck, ScalarOps) {
  Tensor a = randn({2, 3}, 5, true);
  EXPECT_GRADCHECK([](const auto& x) { return add_scalar(mul_scalar(x[0], -1.5), 2.0); }, a);
  Tensor pos = ops::add_scalar(ops::unary(ops::UnaryOp::kAbs, randn({5}, 6)), 0.5);
  pos.set_requires_grad(true);
  EXPECT_GRADCHECK([](const auto& x) { return pow_scalar(x[0], 3.0); }, pos);
  EXPECT_GRADCHECK([](const auto& x) { return pow_scalar(x[0], -0.5); }, pos);
}

TEST(Gradcheck, UnaryActivations) {
  Tensor x = randn({4, 5}, 7, true);
  for (auto op :
       {ops::UnaryOp::kNeg, ops::UnaryOp::kExp, ops::UnaryOp::kTanh, ops::UnaryOp::kSigmoid,
        ops::UnaryOp::kSilu, ops::UnaryOp::kGelu, ops::UnaryOp::kGeluTanh, ops::UnaryOp::kSquare}) {
    auto r = gradcheck([op](const auto& in) { return unary(op, in[0]); }, {x});
    EXPECT_TRUE(r.ok) << ops::unary_op_name(op) << ": " << r.message;
  }
  // relu: keep inputs away from the kink at 0.
  Tensor away = ops::add(
      x, ops::mul_scalar(
             ops::sub(ops::to_dtype(ops::gt(x, ops::scalar(0.0)), DType::kF32), ops::scalar(0.5)),
             0.2));
  away.set_requires_grad(true);
  EXPECT_GRADCHECK([](const auto& in) { return relu(in[0]); }, away);
  Tensor pos = ops::add_scalar(ops::unary(ops::UnaryOp::kAbs, randn({6}, 8)), 0.5);
  pos.set_requires_grad(true);
  EXPECT_GRADCHECK([](const auto& in) { return log(in[0]); }, pos);
  EXPECT_GRADCHECK([](const auto& in) { return sqrt(in[0]); }, pos);
}

// SwiGLU's node: finite differences, and the composed nodes' gradients bit for bit in bf16 (one
// operand frozen too, as LoRA leaves a base projection).
TEST(Gradcheck, SwigluMatchesSiluTimesUp) {
  Tensor gate = randn({3, 7}, 11, true), up = randn({3, 7}, 12, true);
  EXPECT_GRADCHECK([](const auto& x) { return swiglu(x[0], x[1]); }, gate, up);
  const Tensor upstream = ops::to_dtype(randn({3, 7}, 13), DType::kBF16);
  for (bool freeze_up : {false, true}) {
    auto grads = [&](bool fused) {
      Tensor g = ops::to_dtype(gate.detach(), DType::kBF16),
             u = ops::to_dtype(up.detach(), DType::kBF16);
      g.set_requires_grad(true);
      u.set_requires_grad(!freeze_up);
      Tensor y = fused ? swiglu(g, u) : mul(silu(g), u);
      autograd::backward(sum(mul(y, upstream)));
      return std::make_pair(
          ops::to_dtype(g.grad(), DType::kF32).to_vector(),
          freeze_up ? std::vector<float>() : ops::to_dtype(u.grad(), DType::kF32).to_vector());
    };
    EXPECT_EQ(grads(true), grads(false)) << "freeze_up " << freeze_up;
  }
}

TEST(Gradcheck, UnaryOnNonContiguousView) {
  Tensor base = randn({4, 3}, 9, true);
  EXPECT_GRADCHECK([](const auto& in) { return gelu(transpose(in[0], 0, 1), true); }, base);
  EXPECT_GRADCHECK([](const auto& in) { return tanh(narrow(in[0], 1, 1, 2)); }, base);
}

TEST(Gradcheck, Views) {
  Tensor x = randn({2, 3, 4}, 10, true);
  EXPECT_GRADCHECK(
      [](const auto& in) {
        return mul(reshape(in[0], {6, 4}), reshape(in[0], {6, 4}));
      },
      x);
  EXPECT_GRADCHECK([](const auto& in) { return tanh(permute(in[0], {2, 0, 1})); }, x);
  EXPECT_GRADCHECK(
      [](const auto& in) {
        return exp(expand(unsqueeze(in[0], 0), {3, 2, 3, 4}));
      },
      x);
  EXPECT_GRADCHECK([](const auto& in) { return squeeze(narrow(in[0], 1, 2, 1), 1); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return contiguous(transpose(in[0], 0, 2)); }, x);
  EXPECT_GRADCHECK(
      [](const auto& in) {
        auto parts = split(in[0], 2, 2);
        return mul(parts[0], parts[1]);
      },
      x);
}

TEST(Gradcheck, Reductions) {
  Tensor x = randn({3, 4, 2}, 11, true);
  EXPECT_GRADCHECK([](const auto& in) { return sum(in[0]); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return sum(in[0], {0, 2}); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return mean(in[0], {1}, true); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return mean(tanh(in[0])); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return max(in[0], 1); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return max(in[0], -1, true); }, x);
  EXPECT_GRADCHECK([](const auto& in) { return sum(transpose(in[0], 0, 1), {0}); }, x);
}

// d/dx x^0 is 0 everywhere, also at x = 0 where p * x^(p-1) = 0 * inf would be NaN (PyTorch
// returns zeros too).
TEST(Gradcheck, PowZeroHasZeroGradientAtZero) {
  Tensor x = ops::from_vector({0.0f, 2.0f, -1.0f}, {3});
  x.set_requires_grad(true);
  autograd::backward(sum(pow_scalar(x, 0.0)));
  EXPECT_TRUE(testing::tensor_near(x.grad(), {0.0f, 0.0f, 0.0f}));
}

// Reducing a rank-0 tensor over its (wrapped) dim 0 is the identity, gradient included.
TEST(Gradcheck, ReductionOverDimZeroOfARankZeroTensor) {
  Tensor s = ops::scalar(2.0);
  s.set_requires_grad(true);
  Tensor y = mul_scalar(add(sum(s, {0}), mean(s, {-1}, true)), 3.0);
  EXPECT_EQ(y.dim(), 0);
  autograd::backward(y);
  EXPECT_FLOAT_EQ(s.grad().item(), 6.0f);
  EXPECT_THROW(split(s, 1, 0), Error);
}

TEST(Gradcheck, WhereAndMaskedFill) {
  Tensor a = randn({3, 4}, 12, true), b = randn({4}, 13, true);
  Tensor cond = ops::gt(randn({3, 4}, 14), ops::scalar(0.0));
  EXPECT_GRADCHECK([cond](const auto& in) { return where(cond, in[0], in[1]); }, a, b);
  Tensor mask = ops::gt(randn({1, 4}, 15), ops::scalar(0.0));
  EXPECT_GRADCHECK([mask](const auto& in) { return masked_fill(in[0], mask, -3.0); }, a);
}

TEST(Gradcheck, CastRoundTrip) {
  Tensor x = randn({5}, 16, true);
  // f32 -> f16 -> f32 is not exact, so check the chain analytically: gradient is ones * r.
  Tensor y = to_dtype(to_dtype(x, DType::kF16), DType::kF32);
  autograd::backward(sum(y));
  EXPECT_TRUE(testing::tensor_near(x.grad(), {1, 1, 1, 1, 1}));
  EXPECT_EQ(x.grad().dtype(), DType::kF32);
}

TEST(Gradcheck, DetectsAWrongGradient) {
  // A deliberately wrong backward must fail the check (the checker is not vacuous).
  Tensor x = randn({4}, 17, true);
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y = ops::mul(in[0], in[0]);
    return autograd::record("wrong_square", {in[0]}, y,
                            [](const Tensor& g) -> std::vector<Tensor> { return {g}; });
  };
  EXPECT_FALSE(gradcheck(wrong, {x}).ok);
}

}  // namespace
}  // namespace hfrun
