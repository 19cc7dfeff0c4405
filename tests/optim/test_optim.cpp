// Optimizers against closed forms: single AdamW / SGD steps computed by hand, weight decay on
// ndim >= 2 only, skipped parameters, flat-buffer and strided views, zero_grad, state round
// trips and the errors a user can hit.
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "optim/clip.h"
#include "optim/optimizer.h"
#include "test_util.h"

namespace hfrun::optim {
namespace {

using testing::expect_error_naming;
using testing::tensor_near;

Tensor param(const std::vector<float>& v, const Shape& shape) {
  Tensor t = ops::from_vector(v, shape);
  t.set_requires_grad(true);
  return t;
}

void set_grad(Tensor& p, const std::vector<float>& g) {
  p.set_grad(ops::from_vector(g, p.sizes()));
}

TEST(AdamW, FirstStepIsSignedLrWithDecoupledDecay) {
  Tensor w = param({1.0f, -2.0f, 0.5f, 4.0f}, {2, 2});
  Tensor b = param({1.0f, -1.0f}, {2});
  set_grad(w, {0.1f, -0.2f, 0.0f, 3.0f});
  set_grad(b, {-0.5f, 2.0f});
  const double lr = 0.1, wd = 0.5, eps = 1e-8;
  AdamW opt({{"w", w}, {"b", b}}, {.lr = lr, .betas = {0.9, 0.99}, .eps = eps, .weight_decay = wd});
  opt.step();
  // t = 1: m / (1 - b1) = g and sqrt(v / (1 - b2)) = |g|, so p = p (1 - lr wd) - lr g / (|g| +
  // eps).
  auto want = [&](float p, float g, double decay) {
    return static_cast<float>(p * (1 - lr * decay) - lr * g / (std::fabs(g) + eps));
  };
  EXPECT_TRUE(tensor_near(
      w, {want(1, 0.1f, wd), want(-2, -0.2f, wd), want(0.5f, 0, wd), want(4, 3, wd)}, 1e-6, 1e-5));
  EXPECT_TRUE(tensor_near(b, {want(1, -0.5f, 0), want(-1, 2, 0)}, 1e-6, 1e-5));
  EXPECT_EQ(opt.step_count(), 1);
}

TEST(AdamW, SecondStepUsesBiasCorrectionOfStepTwo) {
  Tensor p = param({1.0f}, {1});
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  AdamW opt({{"p", p}}, {.lr = lr, .betas = {b1, b2}, .eps = eps, .weight_decay = 0.0});
  set_grad(p, {2.0f});
  opt.step();
  set_grad(p, {-1.0f});
  opt.step();
  double m = (1 - b1) * 2, v = (1 - b2) * 4;
  double x = 1 - lr * (m / (1 - b1)) / (std::sqrt(v) / std::sqrt(1 - b2) + eps);
  m = b1 * m + (1 - b1) * -1;
  v = b2 * v + (1 - b2) * 1;
  x -= lr / (1 - b1 * b1) * m / (std::sqrt(v) / std::sqrt(1 - b2 * b2) + eps);
  EXPECT_TRUE(tensor_near(p, {static_cast<float>(x)}, 1e-7, 1e-6));
  auto state = opt.state_tensors();
  EXPECT_EQ(state[0].first, "step");
  EXPECT_EQ(state[1].first, "step.p");
  EXPECT_EQ(state[2].first, "exp_avg.p");
  EXPECT_EQ(state[3].first, "exp_avg_sq.p");
  EXPECT_TRUE(tensor_near(state[2].second, {static_cast<float>(m)}, 1e-7, 1e-6));
  EXPECT_TRUE(tensor_near(state[3].second, {static_cast<float>(v)}, 1e-9, 1e-6));
}

TEST(SGD, PlainStepAddsL2DecayToWeightsOnly) {
  Tensor w = param({1.0f, 2.0f}, {1, 2});
  Tensor b = param({3.0f}, {1});
  set_grad(w, {0.5f, -0.5f});
  set_grad(b, {1.0f});
  SGD opt({{"w", w}, {"b", b}}, {.lr = 0.1, .weight_decay = 0.2});
  opt.step();
  EXPECT_TRUE(tensor_near(w, {1 - 0.1f * (0.5f + 0.2f), 2 - 0.1f * (-0.5f + 0.4f)}, 1e-6));
  EXPECT_TRUE(tensor_near(b, {3 - 0.1f}, 1e-6));
  EXPECT_EQ(opt.state_tensors().size(), 3u);  // step, step.w, step.b: no momentum buffers
}

TEST(SGD, MomentumBufferStartsAsGradThenDampens) {
  for (bool nesterov : {false, true}) {
    const double mom = 0.9, damp = nesterov ? 0.0 : 0.25, lr = 0.5;
    Tensor p = param({0.0f}, {1});
    SGD opt({{"p", p}}, {.lr = lr, .momentum = mom, .dampening = damp, .nesterov = nesterov});
    set_grad(p, {1.0f});
    opt.step();
    double buf = 1.0, x = -lr * (nesterov ? 1 + mom * buf : buf);  // first buf = grad, undamped
    EXPECT_TRUE(tensor_near(p, {static_cast<float>(x)}, 1e-6)) << nesterov;
    set_grad(p, {2.0f});
    opt.step();
    buf = mom * buf + (1 - damp) * 2;
    x -= lr * (nesterov ? 2 + mom * buf : buf);
    EXPECT_TRUE(tensor_near(p, {static_cast<float>(x)}, 1e-6)) << nesterov;
    EXPECT_TRUE(tensor_near(opt.state_tensors()[2].second, {static_cast<float>(buf)}, 1e-6));
  }
}

TEST(Optimizer, DecayDefaultsToParametersWithTwoOrMoreDims) {
  Tensor w3 = ops::zeros({2, 2, 2}), w2 = ops::zeros({2, 3}), b = ops::zeros({3}),
         s = ops::scalar(1.0);
  auto refs = param_refs({{"w3", w3}, {"w2", w2}, {"b", b}, {"s", s}});
  EXPECT_TRUE(refs[0].decay);
  EXPECT_TRUE(refs[1].decay);
  EXPECT_FALSE(refs[2].decay);
  EXPECT_FALSE(refs[3].decay);
  ParamRef explicit_off{"w", w2, false};
  EXPECT_FALSE(explicit_off.decay);
  // An explicit decay = false on a matrix is honoured: zero grad, only decay could move it.
  Tensor m = param({1.0f, 1.0f}, {1, 2});
  set_grad(m, {0.0f, 0.0f});
  AdamW opt({{"m", m, false}}, {.lr = 0.1, .weight_decay = 1.0});
  opt.step();
  EXPECT_TRUE(tensor_near(m, {1.0f, 1.0f}, 0));
}

TEST(Optimizer, SkipsParametersWithoutGradAsTorchDoes) {
  Tensor a = param({1.0f}, {1}), b = param({1.0f}, {1});
  AdamW opt({{"a", a}, {"b", b}}, {.lr = 0.1, .weight_decay = 0.0});
  set_grad(a, {1.0f});
  opt.step();
  EXPECT_TRUE(tensor_near(b, {1.0f}, 0));
  auto state = opt.state_tensors();
  EXPECT_EQ(state[1].second.to_int_vector()[0], 1);  // step.a
  EXPECT_EQ(state[4].second.to_int_vector()[0], 0);  // step.b: b has not been updated
  set_grad(b, {1.0f});
  opt.step();  // b's first update uses bias correction t = 1: a full lr step
  EXPECT_TRUE(tensor_near(b, {0.9f}, 1e-6));
}

// Parameters as views into one flat buffer, one of them strided (a transposed view), with
// gradients in a flat buffer: the update writes through the views and matches separately
// allocated contiguous copies. Sizes above the parallel grain cover the threaded path.
TEST(Optimizer, UpdatesFlatBufferViewsAndStridedParameters) {
  const int64_t rows = 300, cols = 200, n = rows * cols;
  Tensor flat = testing::randn({2 * n + 7}, 1), flat_grad = testing::randn({2 * n + 7}, 2);
  Tensor a = make_view(flat, {rows, cols}, {cols, 1}, 0);
  Tensor bt = ops::transpose(make_view(flat, {cols, rows}, {rows, 1}, n), 0, 1);  // [rows, cols]
  Tensor c = make_view(flat, {7}, {1}, 2 * n);
  Tensor ga = make_view(flat_grad, {rows, cols}, {cols, 1}, 0);
  Tensor gb = make_view(flat_grad, {rows, cols}, {cols, 1}, n);
  Tensor gc = make_view(flat_grad, {7}, {1}, 2 * n);
  std::vector<Tensor> copies = {ops::clone(a), ops::clone(bt), ops::clone(c)};
  a.set_grad(ga);
  bt.set_grad(gb);
  c.set_grad(gc);
  for (size_t k = 0; k < copies.size(); ++k) {
    copies[k].set_grad(ops::clone(std::vector<Tensor>{ga, gb, gc}[k]));
  }
  AdamW views({{"a", a}, {"b", bt}, {"c", c}}, {.lr = 0.01, .weight_decay = 0.1});
  AdamW plain({{"a", copies[0]}, {"b", copies[1]}, {"c", copies[2]}},
              {.lr = 0.01, .weight_decay = 0.1});
  for (int s = 0; s < 3; ++s) {
    views.step();
    plain.step();
  }
  EXPECT_TRUE(testing::tensors_near(a, copies[0], 0, 0));
  EXPECT_TRUE(testing::tensors_near(bt, copies[1], 0, 0));
  EXPECT_TRUE(testing::tensors_near(c, copies[2], 0, 0));
  EXPECT_TRUE(a.shares_storage_with(flat) && bt.shares_storage_with(flat));
}

// step(grad_scale) is torch's clip_grad_norm_ then step(): the same parameters and state, bit
// for bit, as scaling the gradients in place first; the gradients stay as they were. AdamW
// and SGD (plain, momentum with L2, nesterov), over a contiguous and a transposed parameter.
TEST(Optimizer, StepGradScaleEqualsScalingTheGradientsFirst) {
  const double coef = 0.37123;
  auto run = [&](auto make, bool in_step) {
    Tensor a = testing::randn({300, 257}, 1), b = ops::transpose(testing::randn({64, 33}, 2), 0, 1);
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    std::unique_ptr<Optimizer> opt = make(std::vector<ParamRef>{{"a", a}, {"b", b}});
    std::vector<float> grads_after;
    for (int s = 0; s < 3; ++s) {
      a.set_grad(testing::randn(a.sizes(), 10 + s));
      b.set_grad(ops::transpose(testing::randn({64, 33}, 20 + s), 0, 1));
      if (in_step) {
        const std::vector<float> before = a.grad().to_vector();
        opt->step(coef);
        EXPECT_EQ(a.grad().to_vector(), before) << "step " << s;
      } else {
        scale_grads({a, b}, coef);
        opt->step();
      }
    }
    std::vector<float> out = a.to_vector(), bv = b.to_vector();
    out.insert(out.end(), bv.begin(), bv.end());
    for (const auto& [name, t] : opt->state_tensors()) {
      if (t.dtype() != DType::kF32) continue;
      const std::vector<float> v = t.to_vector();
      out.insert(out.end(), v.begin(), v.end());
    }
    return out;
  };
  const std::vector<std::function<std::unique_ptr<Optimizer>(std::vector<ParamRef>)>> makers = {
      [](std::vector<ParamRef> p) {
        return std::make_unique<AdamW>(std::move(p), AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
      },
      [](std::vector<ParamRef> p) {
        return std::make_unique<SGD>(std::move(p), SGDOptions{.lr = 0.1});
      },
      [](std::vector<ParamRef> p) {
        return std::make_unique<SGD>(std::move(p),
                                     SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
      },
      [](std::vector<ParamRef> p) {
        return std::make_unique<SGD>(std::move(p),
                                     SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
      }};
  for (size_t k = 0; k < makers.size(); ++k) {
    const std::vector<float> in_place = run(makers[k], false), in_step = run(makers[k], true);
    ASSERT_EQ(in_place.size(), in_step.size());
    size_t differ = 0;
    for (size_t i = 0; i < in_place.size(); ++i) differ += in_place[i] != in_step[i];
    EXPECT_EQ(differ, 0u) << "optimizer " << k;
  }
  Tensor p = param({1, 2}, {2});
  set_grad(p, {1, 1});
  AdamW opt({{"p", p}});
  expect_error_naming([&] { opt.step(-1.0); }, {"grad_scale"});
  // A norm past f32's range clips to a coefficient of 0, as torch's f32 norm does.
  opt.step(0.0);
  EXPECT_TRUE(std::isfinite(p.to_vector()[0]));
  expect_error_naming([&] { opt.step(std::nan("")); }, {"grad_scale"});
}

// step(grad_scale, copies) writes each updated parameter's bf16/f16 copy in the update's pass:
// bitwise the cast of the new parameter (to_dtype's rounding), for a flat-buffer view long
// enough to split across threads, a strided parameter and a small one, with AdamW and SGD; the
// parameters and state are those of step() without copies. A parameter without a gradient is
// not updated and its copy is left alone; a copy of the wrong shape or dtype is refused, naming
// the parameter.
TEST(Optimizer, StepWritesTheParametersCopiesAsTheirCast) {
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    for (int kind = 0; kind < 2; ++kind) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + (kind == 0 ? " adamw" : " sgd"));
      auto make = [&](std::vector<ParamRef> p) -> std::unique_ptr<Optimizer> {
        if (kind == 0) {
          return std::make_unique<AdamW>(std::move(p),
                                         AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
        }
        return std::make_unique<SGD>(std::move(p), SGDOptions{.lr = 0.1, .momentum = 0.9});
      };
      const int64_t n = 70001;  // several chunks of the CPU's pass, and a tail
      auto params = [&] {
        Tensor flat = testing::randn({n + 64 * 33 + 5}, 1);
        flat.set_requires_grad(true);
        return std::vector<Tensor>{
            make_view(flat, {n}, {1}, 0),
            ops::transpose(make_view(flat, {64, 33}, {33, 1}, n), 0, 1),  // [33, 64], strided
            make_view(flat, {5}, {1}, n + 64 * 33),                       // no gradient
        };
      };
      std::vector<Tensor> with = params(), without = params();
      std::vector<Tensor> copies;
      for (const Tensor& p : with) copies.push_back(ops::zeros(p.sizes(), dtype));
      const std::vector<float> untouched = copies[2].to_vector();
      auto opt = make({{"a", with[0]}, {"b", with[1]}, {"c", with[2]}});
      auto ref = make({{"a", without[0]}, {"b", without[1]}, {"c", without[2]}});
      for (int s = 0; s < 3; ++s) {
        for (int k = 0; k < 2; ++k) {
          with[k].set_grad(testing::randn(with[k].sizes(), 10 + s + 3 * k));
          without[k].set_grad(testing::randn(with[k].sizes(), 10 + s + 3 * k));
        }
        const double scale = s == 1 ? 0.5 : 1.0;
        const std::vector<bool> written = opt->step(scale, copies);
        ref->step(scale);
        EXPECT_EQ(written, (std::vector<bool>{true, true, false})) << "step " << s;
        for (int k = 0; k < 2; ++k) {
          EXPECT_EQ(with[k].to_vector(), without[k].to_vector()) << "step " << s << " param " << k;
          const Tensor cast = ops::to_dtype(with[k], dtype);
          const Tensor bits = ops::to_dtype(copies[k], DType::kF32);
          EXPECT_EQ(bits.to_vector(), ops::to_dtype(cast, DType::kF32).to_vector())
              << "step " << s << " param " << k;
        }
        EXPECT_EQ(copies[2].to_vector(), untouched);
      }
      std::vector<Tensor> bad = copies;
      bad[0] = ops::zeros({n - 1}, dtype);
      expect_error_naming([&] { opt->step(1.0, bad); }, {"'a'", "copy"});
      bad[0] = ops::zeros({n}, DType::kF32);
      expect_error_naming([&] { opt->step(1.0, bad); }, {"'a'", "bf16 or f16"});
      expect_error_naming([&] { opt->step(1.0, {copies[0]}); }, {"1 parameter copies", "3"});
    }
  }
}

TEST(Optimizer, ZeroGradKeepsGradientViewsOrDropsThem) {
  Tensor flat_grad = ops::ones({6});
  Tensor w = param({1, 2, 3, 4}, {2, 2}), b = param({1, 2}, {2});
  w.set_grad(make_view(flat_grad, {2, 2}, {2, 1}, 0));
  b.set_grad(make_view(flat_grad, {2}, {1}, 4));
  SGD opt({{"w", w}, {"b", b}}, {.lr = 0.1});
  opt.zero_grad();
  EXPECT_TRUE(w.grad().shares_storage_with(flat_grad));
  EXPECT_TRUE(b.grad().shares_storage_with(flat_grad));
  EXPECT_TRUE(tensor_near(flat_grad, std::vector<float>(6, 0.0f), 0));
  opt.zero_grad(/*set_to_none=*/true);
  EXPECT_FALSE(w.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  opt.step();  // no grads: nothing moves, but the optimizer step still counts
  EXPECT_TRUE(tensor_near(w, {1, 2, 3, 4}, 0));
  EXPECT_EQ(opt.step_count(), 1);
}

// Save after two steps, load into a fresh optimizer over copied parameters: both continue
// identically.
template <typename Opt, typename Options>
void expect_round_trip(const Options& options) {
  Tensor w = param({1, -1, 2, 0.5f, 3, -3}, {2, 3}), b = param({0.1f, 0.2f, 0.3f}, {3});
  Opt a({{"w", w}, {"b", b}}, options);
  auto grads = [](int s) { return std::vector<float>{0.5f * s, -1, 2, 0.25f, -s * 1.0f, 1}; };
  for (int s = 1; s <= 2; ++s) {
    set_grad(w, grads(s));
    set_grad(b, {1.0f * s, -0.5f, 0.25f});
    a.step();
  }
  NamedTensors saved;
  for (auto& [name, t] : a.state_tensors()) saved.emplace_back(name, ops::clone(t));
  Tensor w2 = param(w.to_vector(), w.sizes()), b2 = param(b.to_vector(), b.sizes());
  Opt c({{"w", w2}, {"b", b2}}, options);
  c.load_state_tensors(saved);
  EXPECT_EQ(c.step_count(), 2);
  for (int s = 3; s <= 4; ++s) {
    set_grad(w, grads(s));
    set_grad(w2, grads(s));
    set_grad(b, {1.0f * s, -0.5f, 0.25f});
    set_grad(b2, {1.0f * s, -0.5f, 0.25f});
    a.step();
    c.step();
  }
  EXPECT_TRUE(testing::tensors_near(w, w2, 0, 0));
  EXPECT_TRUE(testing::tensors_near(b, b2, 0, 0));
  auto sa = a.state_tensors(), sc = c.state_tensors();
  ASSERT_EQ(sa.size(), sc.size());
  for (size_t k = 0; k < sa.size(); ++k) {
    EXPECT_EQ(sa[k].first, sc[k].first);
    EXPECT_TRUE(testing::tensors_near(sa[k].second, sc[k].second, 0, 0)) << sa[k].first;
  }
}

TEST(Optimizer, StateRoundTripContinuesIdentically) {
  expect_round_trip<AdamW>(AdamWOptions{.lr = 0.05, .weight_decay = 0.1});
  expect_round_trip<SGD>(SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.1});
}

TEST(Optimizer, LoadRejectsMissingUnknownAndMisshapedState) {
  Tensor w = param({1, 2, 3, 4}, {2, 2});
  AdamW opt({{"w", w}});
  auto good = opt.state_tensors();
  auto without = [&](const std::string& name) {
    NamedTensors out;
    for (auto& e : good)
      if (e.first != name) out.push_back(e);
    return out;
  };
  expect_error_naming([&] { opt.load_state_tensors(without("exp_avg_sq.w")); },
                      {"exp_avg_sq.w", "missing"});
  auto extra = good;
  extra.emplace_back("exp_avg.v", ops::zeros({2, 2}));
  expect_error_naming([&] { opt.load_state_tensors(extra); }, {"unknown", "exp_avg.v"});
  auto misshaped = without("exp_avg.w");
  misshaped.emplace_back("exp_avg.w", ops::zeros({4}));
  expect_error_naming([&] { opt.load_state_tensors(misshaped); }, {"exp_avg.w", "[2, 2]"});
  auto dup = good;
  dup.push_back(good[0]);
  expect_error_naming([&] { opt.load_state_tensors(dup); }, {"duplicate", "step"});
  auto bad_step = without("step");
  bad_step.emplace_back("step", ops::zeros({2}));
  expect_error_naming([&] { opt.load_state_tensors(bad_step); }, {"step", "scalar"});
}

// share_step: two optimizers over the same parameters, each updating its ranges, with their
// state in one buffer both map (DDP ranks of one node), give the parameters, weight copies and
// whole state of one optimizer stepping alone, bit for bit; a parameter without a gradient
// still counts its step. Loading state writes each sharer's ranges only.
TEST(Optimizer, SharedStepEqualsOneWholeStep) {
  for (int kind = 0; kind < 2; ++kind) {
    SCOPED_TRACE(kind == 0 ? "adamw" : "sgd");
    auto make = [&](std::vector<ParamRef> p) -> std::unique_ptr<Optimizer> {
      if (kind == 0) {
        return std::make_unique<AdamW>(std::move(p), AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
      }
      return std::make_unique<SGD>(std::move(p), SGDOptions{.lr = 0.1, .momentum = 0.9});
    };
    const std::vector<Shape> shapes = {{100, 37}, {50}, {7}};
    const int64_t total = 100 * 37 + 50 + 7;
    auto params = [&] {
      Tensor flat = testing::randn({total}, 1);
      flat.set_requires_grad(true);
      std::vector<Tensor> out;
      int64_t offset = 0;
      for (const Shape& s : shapes) {
        out.push_back(make_view(flat, s, contiguous_strides(s), offset));
        offset += out.back().numel();
      }
      return out;
    };
    std::vector<Tensor> shared = params(), alone = params();
    auto refs = [](const std::vector<Tensor>& p) {
      return std::vector<ParamRef>{{"a", p[0]}, {"b", p[1]}, {"c", p[2]}};
    };
    auto first = make(refs(shared)), second = make(refs(shared)), whole = make(refs(alone));
    // The first takes a's elements below 1600; the second the rest of a, all of b and c.
    const std::vector<std::pair<int64_t, int64_t>> mine = {{0, 1600}, {0, 0}, {0, 0}};
    const std::vector<std::pair<int64_t, int64_t>> theirs = {{1600, 3700}, {0, 50}, {0, 7}};
    const int64_t state_elements = first->state_bytes() / 4;
    Tensor memory = ops::zeros({std::max<int64_t>(state_elements, 1)});
    auto hand_out = [&] {
      return [&memory, next = int64_t{0}](int64_t n) mutable {
        Tensor t = make_view(memory, {n}, {1}, next);
        next += n;
        return t;
      };
    };
    first->share_step(mine, hand_out());
    second->share_step(theirs, hand_out());
    EXPECT_TRUE(first->step_shared());
    std::vector<Tensor> copies;
    for (const Shape& s : shapes) copies.push_back(ops::zeros(s, DType::kBF16));
    for (int s = 0; s < 3; ++s) {
      for (size_t k = 0; k < shapes.size(); ++k) {
        const bool none = k == 2 && s == 1;  // c has no gradient in step 1
        shared[k].set_grad(none ? Tensor() : testing::randn(shapes[k], 10 + s + 3 * k));
        alone[k].set_grad(none ? Tensor() : testing::randn(shapes[k], 10 + s + 3 * k));
      }
      const double scale = s == 2 ? 0.5 : 1.0;
      first->step(scale, copies);
      second->step(scale, copies);
      whole->step(scale);
      for (size_t k = 0; k < shapes.size(); ++k) {
        EXPECT_EQ(shared[k].to_vector(), alone[k].to_vector()) << "step " << s << " param " << k;
        EXPECT_EQ(ops::to_dtype(copies[k], DType::kF32).to_vector(),
                  ops::to_dtype(ops::to_dtype(alone[k], DType::kBF16), DType::kF32).to_vector())
            << "step " << s << " param " << k;
      }
    }
    const NamedTensors want = whole->state_tensors();
    for (const auto* opt : {first.get(), second.get()}) {
      const NamedTensors got = opt->state_tensors();
      ASSERT_EQ(got.size(), want.size());
      for (size_t k = 0; k < got.size(); ++k) {
        EXPECT_EQ(got[k].first, want[k].first);
        EXPECT_EQ(got[k].second.to_vector(), want[k].second.to_vector()) << got[k].first;
      }
    }
    // A new pair loads the saved state: after the first loads, only its ranges hold it.
    NamedTensors saved;
    for (auto& [name, t] : want) saved.emplace_back(name, ops::clone(t));
    std::vector<Tensor> again = params();
    auto third = make(refs(again)), fourth = make(refs(again));
    memory = ops::zeros({std::max<int64_t>(state_elements, 1)});
    third->share_step(mine, hand_out());
    fourth->share_step(theirs, hand_out());
    third->load_state_tensors(saved);
    EXPECT_EQ(third->step_count(), 3);
    for (const auto& [name, t] : third->state_tensors()) {
      if (name.starts_with("step")) continue;
      const std::vector<float> v = t.to_vector();
      const auto it = std::find_if(saved.begin(), saved.end(),
                                   [&key = name](auto& e) { return e.first == key; });
      const std::vector<float> w = it->second.to_vector();
      const int64_t upto = name.ends_with(".a") ? 1600 : 0;
      for (size_t i = 0; i < v.size(); ++i) {
        ASSERT_EQ(v[i], static_cast<int64_t>(i) < upto ? w[i] : 0.0f) << name << " " << i;
      }
    }
    fourth->load_state_tensors(saved);
    for (const auto& [name, t] : third->state_tensors()) {
      const auto it = std::find_if(saved.begin(), saved.end(),
                                   [&key = name](auto& e) { return e.first == key; });
      EXPECT_EQ(t.to_vector(), it->second.to_vector()) << name;
    }
    expect_error_naming([&] { first->share_step(mine, hand_out()); }, {"share_step", "first step"});
  }
}

TEST(Optimizer, ShareStepRefusesRangesOutsideContiguousParameters) {
  Tensor flat = ops::zeros({12});
  flat.set_requires_grad(true);
  Tensor w = ops::transpose(make_view(flat, {3, 4}, {4, 1}, 0), 0, 1);  // [4, 3], strided
  auto memory = [](int64_t n) { return ops::zeros({n}); };
  AdamW strided({{"w", w}});
  expect_error_naming([&] { strided.share_step({{0, 6}}, memory); }, {"'w'", "contiguous"});
  Tensor v = make_view(flat, {12}, {1}, 0);
  AdamW plain({{"v", v}});
  expect_error_naming([&] { plain.share_step({{4, 13}}, memory); }, {"'v'", "[4, 13)"});
  expect_error_naming([&] { plain.share_step({}, memory); }, {"0 ranges", "1 parameters"});
  expect_error_naming(
      [&] {
        plain.share_step({{0, 12}}, [](int64_t) { return ops::zeros({3}); });
      },
      {"state memory", "12"});
}

TEST(Optimizer, ErrorsNameTheParameterOrOption) {
  Tensor h = ops::to_dtype(ops::zeros({2, 2}), DType::kBF16);
  expect_error_naming([&] { AdamW({{"lm_head.weight", h}}); }, {"lm_head.weight", "f32"});
  Tensor w = param({1, 2}, {2});
  expect_error_naming([&] { SGD({{"w", w}, {"w", w}}); }, {"duplicate", "'w'"});
  expect_error_naming([&] { AdamW({{"w", w}}, {.betas = {0.9, 1.0}}); }, {"betas[1]"});
  expect_error_naming([&] { SGD({{"w", w}}, {.lr = 0.1, .nesterov = true}); }, {"nesterov"});
  expect_error_naming([&] { AdamW({{"w", w}}, {.lr = -1}); }, {"learning rate"});
  AdamW opt({{"w", w}});
  w.set_grad(ops::zeros({3}));
  expect_error_naming([&] { opt.step(); }, {"gradient of 'w'", "f32[3]"});
  w.set_grad(ops::to_dtype(ops::zeros({2}), DType::kBF16));
  expect_error_naming([&] { opt.step(); }, {"gradient of 'w'", "bf16"});
}

}  // namespace
}  // namespace hfrun::optim
