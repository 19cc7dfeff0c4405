// linear_cross_entropy (the output layer's loss without its logits) against the composition it
// replaces, cross_entropy(linear(...)): losses and every gradient, over blocks that do not
// divide the rows or the vocabulary, ignored and all-ignored targets, a bias, bf16 GEMMs, a
// weight whose buffer takes the gradient (lazily zeroed, accumulated, tied to a lookup), and
// no [N, V] tensor in either direction.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "tensor/allocator.h"
#include "test_util.h"

namespace hfrun {
namespace {

using testing::randn;
using testing::tensors_near;

struct Result {
  float loss;
  Tensor gx, gw, gb;
};

// loss and gradients of x [B, T, C], w [V, C], bias [V] (optional): fused with the given blocks,
// or composed (block_rows < 0).
Result run(const Tensor& x0, const Tensor& w0, const Tensor& b0, const Tensor& targets,
           std::optional<DType> compute, int64_t block_rows, int64_t block_cols) {
  Tensor x = ops::clone(x0).set_requires_grad(true);
  Tensor w = ops::clone(w0).set_requires_grad(true);
  Tensor b = b0.defined() ? ops::clone(b0).set_requires_grad(true) : Tensor();
  Tensor loss =
      block_rows < 0
          ? cross_entropy(linear(x, w, b, compute, DType::kF32, WeightLayout::kOutIn), targets)
          : linear_cross_entropy(x, w, b, targets, -100, compute, block_rows, block_cols);
  autograd::backward(loss);
  return {loss.item(), x.grad(), w.grad(), b.defined() ? b.grad() : Tensor()};
}

std::vector<int64_t> some_targets(int64_t n, int64_t V) {
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = i % 5 == 3 ? -100 : (i * 7919) % V;
  return t;
}

TEST(GradLoss, LinearCrossEntropyEqualsTheComposition) {
  constexpr int64_t B = 2, T = 5, C = 12, V = 37;
  const Tensor x = randn({B, T, C}, 31), w = ops::mul_scalar(randn({V, C}, 32), 0.5);
  const Tensor bias = randn({V}, 33);
  const Tensor targets = ops::from_ints(some_targets(B * T, V), {B, T});
  for (std::optional<DType> compute :
       {std::optional<DType>(), std::optional<DType>(DType::kBF16)}) {
    for (bool with_bias : {false, true}) {
      const Tensor b = with_bias ? bias : Tensor();
      const Result want = run(x, w, b, targets, compute, -1, 0);
      // One block; rows and columns in blocks that divide neither (3 of 10 rows, 8 of 37).
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{0, 0}, {3, 8}, {10, 1}}) {
        SCOPED_TRACE(std::string(compute ? "bf16" : "f32") + (with_bias ? " bias" : "") +
                     " blocks " + std::to_string(rows) + " x " + std::to_string(cols));
        const Result got = run(x, w, b, targets, compute, rows, cols);
        EXPECT_NEAR(got.loss, want.loss, 1e-5 * std::abs(want.loss));
        // bf16: the gradients' GEMMs sum in another order before their one rounding.
        const double atol = compute ? 2e-3 : 1e-6, rtol = compute ? 1e-2 : 1e-5;
        EXPECT_TRUE(tensors_near(got.gx, want.gx, atol, rtol));
        EXPECT_TRUE(tensors_near(got.gw, want.gw, atol, rtol));
        EXPECT_EQ(got.gx.dtype(), DType::kF32);
        EXPECT_EQ(got.gw.dtype(), DType::kF32);
        if (with_bias) {
          EXPECT_TRUE(tensors_near(got.gb, want.gb, 1e-6, 1e-5));
        }
      }
    }
  }
}

TEST(GradLoss, LinearCrossEntropyGradcheck) {
  constexpr int64_t N = 6, C = 4, V = 9;
  const Tensor targets = ops::from_ints({2, 8, -100, 0, 5, 8}, {N});
  autograd::GradcheckResult r = autograd::gradcheck(
      [targets](const std::vector<Tensor>& in) {
        return linear_cross_entropy(in[0], in[1], in[2], targets, -100, std::nullopt, 4, 4);
      },
      {randn({N, C}, 34, true), randn({V, C}, 35, true), randn({V}, 36, true)});
  EXPECT_TRUE(r.ok) << r.message;
}

// No counted target: cross_entropy's NaN loss and zero gradients.
TEST(GradLoss, LinearCrossEntropyWithNothingCounted) {
  const Tensor x = randn({4, 3}, 37), w = randn({11, 3}, 38);
  const Tensor targets = ops::from_ints({-100, -100, -100, -100}, {4});
  const Result got = run(x, w, Tensor(), targets, std::nullopt, 2, 4);
  EXPECT_TRUE(std::isnan(got.loss));
  EXPECT_TRUE(tensors_near(got.gx, ops::zeros({4, 3}), 0, 0));
  EXPECT_TRUE(tensors_near(got.gw, ops::zeros({11, 3}), 0, 0));
  // No rows at all: the same, and the weight's gradient is written (zeros), not left unset.
  const Result empty =
      run(ops::zeros({0, 3}), w, Tensor(), ops::from_ints({}, {0}), std::nullopt, 0, 0);
  EXPECT_TRUE(std::isnan(empty.loss));
  EXPECT_TRUE(tensors_near(empty.gw, ops::zeros({11, 3}), 0, 0));
}

// The weight's gradient goes into its buffer: written over a lazily zeroed one, added to one
// that holds a gradient, over several row blocks; for a head of its own and for a table that is
// also the lookup (GPT-2's wte, whose head's gradient comes first); f32 GEMMs and bf16 ones
// into the f32 master's buffer (mixed precision).
TEST(GradLoss, LinearCrossEntropyWeightGradientIntoItsBuffer) {
  constexpr int64_t N = 8, C = 6, V = 29;
  const Tensor x0 = randn({N, C}, 39), ids = ops::from_ints({3, 1, 4, 1, 5, 9, 2, 6}, {N});
  const Tensor targets = ops::from_ints(some_targets(N, V), {N});
  for (bool tied : {false, true}) {
    for (std::optional<DType> compute :
         {std::optional<DType>(), std::optional<DType>(DType::kBF16)}) {
      auto step = [&](Tensor& w, bool fused) {
        // Tied: x = x0 + the table's rows, the table both the lookup and the head.
        Tensor x = tied ? add(x0, embedding(w, ids)) : x0;
        Tensor loss =
            fused
                ? linear_cross_entropy(x, w, Tensor(), targets, -100, compute, 3, 7)
                : cross_entropy(linear(x, w, Tensor(), compute, DType::kF32, WeightLayout::kOutIn),
                                targets);
        autograd::backward(loss);
      };
      const double atol = compute ? 2e-3 : 1e-6, rtol = compute ? 1e-2 : 1e-5;
      for (bool lazily : {false, true}) {
        SCOPED_TRACE(std::string(tied ? "tied" : "untied") + (compute ? " bf16" : " f32") +
                     (lazily ? " lazily zeroed" : " zeroed"));
        Tensor want = ops::clone(randn({V, C}, 40)).set_requires_grad(true);
        Tensor got = ops::clone(want.detach()).set_requires_grad(true);
        for (int s = 0; s < 2; ++s) {  // the second backward adds to the first's gradient
          step(want, false);
          step(got, true);
        }
        EXPECT_TRUE(tensors_near(got.grad(), want.grad(), atol, rtol));
        if (lazily) {
          got.zero_grad_lazily();
          want.zero_grad_lazily();
        } else {
          got.set_grad(ops::zeros({V, C}));
          want.set_grad(ops::zeros({V, C}));
        }
        step(want, false);
        step(got, true);
        EXPECT_TRUE(tensors_near(got.grad(), want.grad(), atol, rtol));
      }
    }
  }
}

// The blocks' log-sum-exp and gradient against cross_entropy's on rows with infinite and NaN
// logits, the NaN in a block whose max is infinite, before a finite block: NaN where
// cross_entropy gives NaN, the same lse (to rounding) elsewhere.
TEST(GradLoss, BlockedCrossEntropyFollowsCrossEntropyOnNonFiniteLogits) {
  constexpr int64_t N = 6, V = 10, kBlock = 4;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> l = testing::randn({N, V}, 47).to_vector();
  for (int64_t v = 0; v < V; v += 3) l[1 * V + v] = -inf;    // some -inf
  for (int64_t v = 0; v < V; ++v) l[2 * V + v] = -inf;       // all -inf
  l[3 * V + 6] = inf;                                        // +inf in the second block
  for (int64_t v = 0; v < kBlock; ++v) l[4 * V + v] = -inf;  // first block -inf ...
  l[4 * V + 2] = nan;                                        // ... and a NaN
  l[5 * V + 7] = nan;                                        // NaN among finite logits
  const Tensor logits = ops::from_vector(l, {N, V});
  const Tensor targets = ops::from_ints({2, 4, -100, 5, 8, 1}, {N});
  const ops::CrossEntropyResult want = ops::cross_entropy(logits, targets);
  ops::CrossEntropyBlocks s = ops::cross_entropy_begin(targets, V);
  for (int64_t c0 = 0; c0 < V; c0 += kBlock) {
    const int64_t n = std::min(kBlock, V - c0);
    ops::cross_entropy_fold_(s, ops::contiguous(ops::narrow(logits, 1, c0, n)), 0, c0);
  }
  const ops::CrossEntropyResult got = ops::cross_entropy_finish(s);
  const std::vector<float> wl = want.lse.to_vector(), gl = got.lse.to_vector();
  for (int64_t r = 0; r < N; ++r) {
    if (std::isnan(wl[r]) || std::isinf(wl[r])) {
      EXPECT_EQ(std::isnan(gl[r]), std::isnan(wl[r])) << "row " << r << ": " << gl[r];
      if (!std::isnan(wl[r])) {
        EXPECT_EQ(gl[r], wl[r]) << "row " << r;
      }
    } else {
      EXPECT_NEAR(gl[r], wl[r], 1e-5 * std::abs(wl[r]) + 1e-6) << "row " << r;
    }
  }
  EXPECT_TRUE(std::isnan(wl[4]) && std::isnan(wl[5])) << "the reference changed";
  EXPECT_TRUE(std::isnan(got.loss.item()) && std::isnan(want.loss.item()));
  // The gradient of the finite rows (0 and 1) against cross_entropy_backward's.
  const Tensor g = ops::full({}, 1.0);
  const Tensor wg = ops::cross_entropy_backward(g, logits, targets, want.lse);
  for (int64_t c0 = 0; c0 < V; c0 += kBlock) {
    const int64_t n = std::min(kBlock, V - c0);
    const Tensor block = ops::contiguous(ops::narrow(ops::narrow(logits, 0, 0, 2), 1, c0, n));
    Tensor out = ops::empty({2, n});
    ops::cross_entropy_block_backward_(out, g, s, got.lse, block, 0, c0);
    EXPECT_TRUE(tensors_near(out, ops::contiguous(ops::narrow(ops::narrow(wg, 0, 0, 2), 1, c0, n)),
                             1e-6, 1e-5))
        << "columns " << c0;
  }
}

// Neither direction holds an [N, V] tensor: the growth of the allocator's peak stays below a
// quarter of the f32 logits.
TEST(GradLoss, LinearCrossEntropyHoldsNoLogits) {
  constexpr int64_t N = 64, C = 8, V = 4000;
  const Tensor targets = ops::from_ints(some_targets(N, V), {N});
  Tensor x = randn({N, C}, 41, true), w = randn({V, C}, 42, true);
  for (std::optional<DType> compute :
       {std::optional<DType>(), std::optional<DType>(DType::kBF16)}) {
    cpu_allocator().reset_peak();
    const size_t start = cpu_allocator().stats().allocated_bytes;
    Tensor loss = linear_cross_entropy(x, w, Tensor(), targets, -100, compute, 0, 256);
    autograd::backward(loss);
    const size_t growth = cpu_allocator().stats().peak_allocated_bytes - start;
    // The weight's gradient (V x C f32) is the one allocation of its size.
    EXPECT_LT(growth, static_cast<size_t>(V * C * 4 * 2 + N * V * 4 / 4))
        << (compute ? "bf16" : "f32");
  }
}

TEST(GradLoss, LinearCrossEntropyChecksItsInputs) {
  const Tensor x = randn({2, 3, 4}, 43), w = randn({7, 4}, 44);
  EXPECT_THROW(linear_cross_entropy(x, w, Tensor(), ops::from_ints({0, 1, 2}, {3})), Error);
  EXPECT_THROW(linear_cross_entropy(x, randn({7, 5}, 45), Tensor(),
                                    ops::from_ints({0, 1, 2, 3, 4, 5}, {2, 3})),
               Error);
  EXPECT_THROW(
      linear_cross_entropy(x, w, randn({6}, 46), ops::from_ints({0, 1, 2, 3, 4, 5}, {2, 3})),
      Error);
  try {
    linear_cross_entropy(x, w, Tensor(), ops::from_ints({0, 1, 7, 3, 4, 5}, {2, 3}));
    ADD_FAILURE() << "a target outside the vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target 7 at row 2"), std::string::npos) << e.what();
  }
  // Without a graph: the composition's loss, nothing recorded.
  const Tensor t = ops::from_ints({0, 1, 6, -100, 4, 5}, {2, 3});
  const Tensor loss = linear_cross_entropy(x, w, Tensor(), t);
  EXPECT_FALSE(loss.requires_grad());
  EXPECT_NEAR(
      loss.item(),
      cross_entropy(linear(x, w, Tensor(), std::nullopt, DType::kF32, WeightLayout::kOutIn), t)
          .item(),
      1e-6);
}

}  // namespace
}  // namespace hfrun
