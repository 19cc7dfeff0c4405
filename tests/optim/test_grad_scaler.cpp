// Dynamic loss scaling as torch.cuda.amp.GradScaler: the scale's state machine (ATen's
// _amp_update_scale_) and the unscale pass (_amp_foreach_non_finite_check_and_unscale_). The
// whole loop against torch's GradScaler is tests/train/parity (DynamicLossScaling...).
#include <cmath>
#include <limits>
#include <vector>

#include "optim/clip.h"
#include "optim/grad_scaler.h"
#include "tensor/ops.h"
#include "test_util.h"

namespace hfrun::optim {
namespace {

using testing::expect_error_naming;

Tensor param_with_grad(const std::vector<float>& g) {
  Tensor p = ops::zeros({static_cast<int64_t>(g.size())});
  p.set_requires_grad(true);
  p.set_grad(ops::from_vector(g, {static_cast<int64_t>(g.size())}));
  return p;
}

TEST(GradScaler, GrowsEveryIntervalCleanStepsAndBacksOffOnOverflow) {
  GradScaler s({.enabled = true, .init_scale = 1024, .growth_interval = 3});
  EXPECT_EQ(s.scale(), 1024.0f);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_EQ(s.growth_tracker(), 2);
  s.update(false);  // the third clean step in a row
  EXPECT_EQ(s.scale(), 2048.0f);
  EXPECT_EQ(s.growth_tracker(), 0);
  s.update(false);
  s.update(true);  // an overflow restarts the count
  EXPECT_EQ(s.scale(), 1024.0f);
  EXPECT_EQ(s.growth_tracker(), 0);
  s.update(false);
  s.update(false);
  EXPECT_EQ(s.scale(), 1024.0f);
  s.update(false);
  EXPECT_EQ(s.scale(), 2048.0f);
}

TEST(GradScaler, ArithmeticIsTorchs) {
  // f32 scale times the f64 factor, narrowed: 3 * 0.3 is 0.9 in f64, then rounded to f32.
  GradScaler s({.enabled = true,
                .init_scale = 3,
                .growth_factor = 1.1,
                .backoff_factor = 0.3,
                .growth_interval = 1});
  s.update(true);
  EXPECT_EQ(s.scale(), static_cast<float>(3.0 * 0.3));
  s.update(false);
  EXPECT_EQ(s.scale(), static_cast<float>(static_cast<double>(static_cast<float>(0.9)) * 1.1));
  // inv_scale = f32(1 / f64(scale)).
  EXPECT_EQ(s.inv_scale(), static_cast<float>(1.0 / static_cast<double>(s.scale())));
  // A grown scale that is not finite is not taken, and the count restarts.
  GradScaler top({.enabled = true, .init_scale = 3e38, .growth_interval = 1});
  top.update(false);
  EXPECT_EQ(top.scale(), 3e38f);
  EXPECT_EQ(top.growth_tracker(), 0);
}

TEST(GradScaler, UnscaleDividesAndReportsInfOrNan) {
  GradScaler s({.enabled = true, .init_scale = 8});
  std::vector<Tensor> ps = {param_with_grad({8, -16, 0.5f}), param_with_grad({24})};
  Tensor frozen = ops::zeros({2});  // no gradient: left alone
  ps.push_back(frozen);
  EXPECT_FALSE(s.unscale(ps));
  EXPECT_EQ(ps[0].grad().to_vector(), (std::vector<float>{1, -2, 0.0625f}));
  EXPECT_EQ(ps[1].grad().to_vector(), (std::vector<float>{3}));
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<Tensor> bad = {param_with_grad({1, 2}), param_with_grad({3, inf, 5})};
  EXPECT_TRUE(s.unscale(bad));
  std::vector<Tensor> nan = {param_with_grad({std::nanf(""), 1})};
  EXPECT_TRUE(s.unscale(nan));
  // Many chunks (every thread's partial is looked at): one NaN at the end of a large gradient.
  std::vector<float> big(100003, 2.0f);
  big.back() = -inf;
  std::vector<Tensor> large = {param_with_grad(big)};
  EXPECT_TRUE(s.unscale(large));
  EXPECT_EQ(large[0].grad().to_vector()[5], 0.25f);
  // Disabled: nothing is touched and nothing is found.
  GradScaler off;
  std::vector<Tensor> untouched = {param_with_grad({inf, 4})};
  EXPECT_FALSE(off.unscale(untouched));
  EXPECT_EQ(untouched[0].grad().to_vector()[1], 4.0f);
  EXPECT_EQ(off.scale(), 1.0f);
}

// The clip's norm pass may unscale too (Accelerator::clip_grad_norm with a grad scaler): the
// same gradients and the same sum, bit for bit, as unscale() then the norm, for a scale that is
// not a power of two over many chunks; an inf or NaN makes the sum non-finite.
TEST(GradScaler, UnscaleInTheNormPassEqualsUnscaleThenNorm) {
  GradScaler s({.enabled = true, .init_scale = 3.0});
  std::vector<float> a(70001), b(33);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.37f * static_cast<float>(i)) * 1e3f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i) - 16.5f;
  std::vector<Tensor> two = {param_with_grad(a), param_with_grad(b)};
  std::vector<Tensor> one = {param_with_grad(a), param_with_grad(b)};
  EXPECT_FALSE(s.unscale(two));
  const double want = grad_norm_squared(two);
  const double got = grad_norm_squared(one, s.inv_scale());
  EXPECT_EQ(got, want);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i].grad().to_vector(), two[i].grad().to_vector()) << "gradient " << i;
  }
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> bad(50000, 1.0f);
  bad[40000] = -inf;
  std::vector<Tensor> overflowed = {param_with_grad(b), param_with_grad(bad)};
  EXPECT_TRUE(std::isinf(grad_norm_squared(overflowed, s.inv_scale())));
  std::vector<Tensor> nan = {param_with_grad({1, std::nanf(""), 2})};
  EXPECT_TRUE(std::isnan(grad_norm_squared(nan, s.inv_scale())));
  // clip_grad_norm with it: the norm of the unscaled gradients, which are then clipped.
  std::vector<Tensor> clipped = {param_with_grad({30, 40})};
  EXPECT_DOUBLE_EQ(clip_grad_norm(clipped, 1.0, 0.1f), std::sqrt(3.0f * 3.0f + 4.0f * 4.0f));
  const std::vector<float> g = clipped[0].grad().to_vector();
  EXPECT_NEAR(g[0], 0.6f, 1e-6);
  EXPECT_NEAR(g[1], 0.8f, 1e-6);
}

TEST(GradScaler, StateRoundTripsAndBadOptionsAreNamed) {
  GradScaler s({.enabled = true, .init_scale = 512, .growth_interval = 4});
  s.update(false);
  s.update(true);
  s.update(false);
  GradScaler t({.enabled = true});
  t.load(s.state());
  EXPECT_EQ(t.scale(), 256.0f);
  EXPECT_EQ(t.growth_tracker(), 1);
  expect_error_naming([] { GradScaler({.enabled = true, .init_scale = -1}); }, {"init_scale"});
  expect_error_naming([] { GradScaler({.enabled = true, .growth_factor = 1}); }, {"growth_factor"});
  expect_error_naming([] { GradScaler({.enabled = true, .backoff_factor = 1}); },
                      {"backoff_factor"});
  expect_error_naming([] { GradScaler({.enabled = true, .growth_interval = 0}); },
                      {"growth_interval"});
}

}  // namespace
}  // namespace hfrun::optim
