// LR schedules at the points HF transformers' formulas pin down, and global-norm clipping as
// torch.nn.utils.clip_grad_norm_.
#include <omp.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "optim/clip.h"
#include "optim/schedule.h"
#include "test_util.h"

namespace hfrun::optim {
namespace {

using testing::expect_error_naming;
using testing::tensor_near;

TEST(Schedule, WarmupRampsFromZeroToOne) {
  for (auto type : {ScheduleType::kConstant, ScheduleType::kLinear, ScheduleType::kCosine}) {
    EXPECT_DOUBLE_EQ(lr_multiplier(type, 0, 10, 110), 0.0) << schedule_type_name(type);
    EXPECT_DOUBLE_EQ(lr_multiplier(type, 5, 10, 110), 0.5) << schedule_type_name(type);
    EXPECT_DOUBLE_EQ(lr_multiplier(type, 10, 10, 110), 1.0) << schedule_type_name(type);
    EXPECT_DOUBLE_EQ(lr_multiplier(type, 0, 0, 110), 1.0) << schedule_type_name(type);
  }
}

TEST(Schedule, DecayShapesAfterWarmup) {
  using enum ScheduleType;
  EXPECT_DOUBLE_EQ(lr_multiplier(kConstant, 1000, 10, 110), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(kLinear, 60, 10, 110), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(kLinear, 110, 10, 110), 0.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(kLinear, 200, 10, 110), 0.0);  // clamped past the end
  EXPECT_NEAR(lr_multiplier(kCosine, 60, 10, 110), 0.5, 1e-15);
  EXPECT_NEAR(lr_multiplier(kCosine, 35, 10, 110), 0.5 * (1 + std::cos(std::numbers::pi / 4)),
              1e-15);
  EXPECT_NEAR(lr_multiplier(kCosine, 110, 10, 110), 0.0, 1e-15);
  // num_cycles = 1: back up to 1 at the end (HF's hard-restart-free cosine with a full period).
  EXPECT_NEAR(lr_multiplier(kCosine, 110, 10, 110, 1.0), 1.0, 1e-15);
  // warmup >= total: max(1, total - warmup) in the denominator, no division by zero.
  EXPECT_DOUBLE_EQ(lr_multiplier(kLinear, 10, 10, 10), 0.0);
}

TEST(Schedule, ParseNamesAndRejectsOthers) {
  EXPECT_EQ(parse_schedule_type("constant"), ScheduleType::kConstant);
  EXPECT_EQ(parse_schedule_type("linear"), ScheduleType::kLinear);
  EXPECT_EQ(parse_schedule_type("cosine"), ScheduleType::kCosine);
  expect_error_naming([] { parse_schedule_type("cosine_with_restarts"); },
                      {"cosine_with_restarts", "constant, linear or cosine"});
  try {
    parse_schedule_type("Linear");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  }
}

std::vector<Tensor> params_with_grads(const std::vector<std::vector<float>>& grads) {
  std::vector<Tensor> params;
  for (const auto& g : grads) {
    Tensor p = ops::zeros({static_cast<int64_t>(g.size())});
    p.set_grad(ops::from_vector(g, {static_cast<int64_t>(g.size())}));
    params.push_back(p);
  }
  return params;
}

TEST(Clip, ScalesByMaxNormOverTotalNormPlusEps) {
  auto params = params_with_grads({{3.0f}, {0.0f, 4.0f}});
  params.push_back(ops::zeros({2}));  // no grad: ignored, as torch does
  EXPECT_DOUBLE_EQ(grad_norm_squared(params), 25.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm(params, 1.0), 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_TRUE(tensor_near(params[0].grad(), {static_cast<float>(3 * coef)}, 0, 1e-7));
  EXPECT_TRUE(tensor_near(params[1].grad(), {0.0f, static_cast<float>(4 * coef)}, 0, 1e-7));
  EXPECT_FALSE(params[2].grad().defined());
}

TEST(Clip, NormBelowMaxLeavesGradsUntouched) {
  auto params = params_with_grads({{0.3f, -0.4f}});
  EXPECT_NEAR(clip_grad_norm(params, 1.0), 0.5, 1e-7);
  EXPECT_TRUE(tensor_near(params[0].grad(), {0.3f, -0.4f}, 0, 0));
  // Exactly at max_norm: coef = max / (max + 1e-6) < 1, torch scales (by a hair).
  EXPECT_LT(clip_coefficient(1.0, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_coefficient(0.5, 1.0), 1.0);
}

TEST(Clip, NonFiniteNormIsReturnedAndGradsKept) {
  const float inf = std::numeric_limits<float>::infinity();
  auto params = params_with_grads({{1.0f, inf}, {2.0f}});
  EXPECT_TRUE(std::isinf(clip_grad_norm(params, 1.0)));
  EXPECT_TRUE(tensor_near(params[1].grad(), {2.0f}, 0, 0));
  auto nan_params = params_with_grads({{std::nanf(""), 1.0f}});
  EXPECT_TRUE(std::isnan(clip_grad_norm(nan_params, 1.0)));
  EXPECT_FLOAT_EQ(nan_params[0].grad().to_vector()[1], 1.0f);
  expect_error_naming([&] { clip_grad_norm(params, 0.0); }, {"max_norm"});
}

// Long and strided gradients: the threaded sum is fixed-order (the same with 1 or 2 threads)
// and matches a double loop; strided grads are read and scaled through their strides.
TEST(Clip, LongAndStridedGradientsMatchANaiveLoop) {
  Tensor long_p = ops::zeros({200000});
  long_p.set_grad(testing::randn({200000}, 5));
  Tensor base = testing::randn({300, 500}, 6);
  Tensor strided_p = ops::zeros({500, 300});
  strided_p.set_grad(ops::transpose(base, 0, 1));
  std::vector<Tensor> params = {long_p, strided_p};
  double want = 0;
  for (const Tensor& p : params)
    for (float x : p.grad().to_vector()) want += static_cast<double>(x) * x;
  const double two_threads = grad_norm_squared(params);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one_thread = grad_norm_squared(params);
  omp_set_num_threads(threads);
  EXPECT_EQ(one_thread, two_threads);
  EXPECT_NEAR(two_threads, want, 1e-9 * want);
  std::vector<float> before = strided_p.grad().to_vector();
  const double total = clip_grad_norm(params, 1.0);
  const float coef = static_cast<float>(clip_coefficient(total, 1.0));
  std::vector<float> after = strided_p.grad().to_vector();
  for (size_t i = 0; i < after.size(); i += 997) EXPECT_EQ(after[i], before[i] * coef);
  EXPECT_NEAR(std::sqrt(grad_norm_squared(params)), 1.0, 1e-5);
}

}  // namespace
}  // namespace hfrun::optim
