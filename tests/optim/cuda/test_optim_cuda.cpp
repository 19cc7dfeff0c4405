// Optimizers and gradient clipping on CUDA parameters against the CPU (the reference, itself
// tested against torch.optim): the same parameters, gradients and steps on both devices give
// the same parameters and optimizer state. The CUDA kernels follow the CPU loops operation by
// operation (fmaf where the CPU fuses a multiply-add), so on a CPU build with FMA the results
// are expected to be bitwise equal; the tests accept a relative L2 error of 1e-6 and print the
// largest difference either way.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "optim/clip.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "tensor/cuda/cuda_test_util.h"
#include "tensor/ops.h"

namespace hfrun::optim {
namespace {

using hfrun::testing::make_input;
using hfrun::testing::rel_l2;

constexpr double kTol = 1e-6;

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = ops::to_device(a, Device::cpu()).to_vector();
  const std::vector<float> y = ops::to_device(b, Device::cpu()).to_vector();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(x[i]) - y[i]));
  return m;
}

// A model's parameters the way training holds them: views into one flat parameter buffer
// (misaligned offsets included) with gradient views into a flat gradient buffer, plus one
// parameter outside it that is a transposed (non-contiguous) view, whose gradient is strided
// too. Decay follows the default rule (ndim >= 2) except where a test overrides it.
struct ParamSet {
  Tensor flat, flat_grad, base, base_grad;
  std::vector<ParamRef> refs;
};

const std::vector<Shape> kShapes = {{37, 19}, {19}, {1}, {8, 3, 5}, {70000}, {300, 257}};

ParamSet make_params(Device device) {
  ParamSet s;
  int64_t total = 0;
  for (const Shape& sh : kShapes) total += shape_numel(sh) + 3;  // +3: misaligned offsets
  s.flat = make_input({total}, 11, device, DType::kF32, 0.5);
  s.flat_grad = ops::zeros({total}, DType::kF32, device);
  int64_t offset = 0;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    Tensor p = ops::view(ops::narrow(s.flat, 0, offset, shape_numel(kShapes[i])), kShapes[i]);
    Tensor g = ops::view(ops::narrow(s.flat_grad, 0, offset, shape_numel(kShapes[i])), kShapes[i]);
    p.set_requires_grad(true);
    p.set_grad(g);
    s.refs.push_back(ParamRef{"p" + std::to_string(i), p});
    offset += shape_numel(kShapes[i]) + 3;
  }
  // A transposed parameter: the CUDA kernel reads contiguous memory, so this exercises the
  // copy-in / write-back path.
  s.base = make_input({24, 40}, 12, device, DType::kF32, 0.5);
  s.base_grad = ops::zeros({24, 40}, DType::kF32, device);
  Tensor pt = ops::transpose(s.base, 0, 1);
  pt.set_requires_grad(true);
  pt.set_grad(ops::transpose(s.base_grad, 0, 1));  // [40, 24], strided like the parameter
  s.refs.push_back(ParamRef{"transposed", pt});
  s.refs[1].decay = true;   // a 1-D parameter with decay
  s.refs[0].decay = false;  // a matrix without
  return s;
}

// Gradients of step `step`, identical on every device; parameter 2 gets none on step 2 (it
// keeps its state and per-parameter step, as in torch).
void set_grads(ParamSet& s, int step) {
  for (size_t i = 0; i < s.refs.size(); ++i) {
    Tensor p = s.refs[i].param;
    if (i == 2 && step == 2) {
      p.set_grad(Tensor());
      continue;
    }
    Tensor g = p.grad();
    if (!g.defined()) {  // restored after the skipped step: a fresh view of the flat buffer
      g = ops::view(
          ops::narrow(s.flat_grad, 0, (shape_numel(kShapes[0]) + 3) + (shape_numel(kShapes[1]) + 3),
                      shape_numel(kShapes[2])),
          kShapes[2]);
      p.set_grad(g);
    }
    Tensor v = make_input(p.sizes(), 1000 + 17 * step + i, Device::cpu(), DType::kF32, 0.1);
    ops::copy_(g, v);
  }
}

void expect_same(const Optimizer& cpu, const Optimizer& gpu, const std::string& what) {
  ASSERT_EQ(cpu.params().size(), gpu.params().size());
  for (size_t i = 0; i < cpu.params().size(); ++i) {
    const Tensor& a = cpu.params()[i].param;
    const Tensor& b = gpu.params()[i].param;
    EXPECT_TRUE(b.device().is_cuda()) << b.str();
    const double err = rel_l2(ops::to_device(b, Device::cpu()), a);
    EXPECT_LE(err, kTol) << what << ": parameter " << cpu.params()[i].name << " rel_l2 " << err
                         << " max_abs " << max_abs_diff(a, b);
  }
  const NamedTensors sa = cpu.state_tensors(), sb = gpu.state_tensors();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    ASSERT_EQ(sa[i].first, sb[i].first);
    if (sa[i].second.dtype() == DType::kI64) {
      EXPECT_EQ(sa[i].second.to_int_vector(), sb[i].second.to_int_vector()) << sa[i].first;
      continue;
    }
    EXPECT_TRUE(sb[i].second.device().is_cuda())
        << what << ": state " << sb[i].first << " is " << sb[i].second.str();
    const double err = rel_l2(ops::to_device(sb[i].second, Device::cpu()), sa[i].second);
    EXPECT_LE(err, kTol) << what << ": state " << sa[i].first << " rel_l2 " << err << " max_abs "
                         << max_abs_diff(sa[i].second, sb[i].second);
  }
}

void report_bitwise(const Optimizer& cpu, const Optimizer& gpu, const char* what) {
  double worst = 0;
  for (size_t i = 0; i < cpu.params().size(); ++i) {
    worst = std::max(worst, max_abs_diff(cpu.params()[i].param, gpu.params()[i].param));
  }
  std::printf("%s: largest |cpu - cuda| over the parameters: %.3g%s\n", what, worst,
              worst == 0 ? " (bitwise equal)" : "");
}

using Factory = std::function<std::unique_ptr<Optimizer>(std::vector<ParamRef>)>;

void run_parity(const Factory& make, const char* what, int steps = 5) {
  autograd::NoGradGuard no_grad;
  ParamSet cpu = make_params(Device::cpu()), gpu = make_params(testing::cuda0());
  auto oc = make(cpu.refs), og = make(gpu.refs);
  EXPECT_TRUE(og->device().is_cuda()) << what << ": optimizer state on " << og->device().str();
  for (int step = 1; step <= steps; ++step) {
    set_grads(cpu, step);
    set_grads(gpu, step);
    oc->set_lr(1e-2 / step);
    og->set_lr(1e-2 / step);
    oc->step();
    og->step();
    SCOPED_TRACE(std::string(what) + " step " + std::to_string(step));
    expect_same(*oc, *og, what);
  }
  report_bitwise(*oc, *og, what);
}

TEST(CudaOptim, AdamWMatchesCpu) {
  HF_REQUIRE_CUDA();
  run_parity(
      [](std::vector<ParamRef> p) {
        return std::make_unique<AdamW>(
            std::move(p),
            AdamWOptions{.lr = 1e-2, .betas = {0.9, 0.95}, .eps = 1e-8, .weight_decay = 0.1});
      },
      "adamw");
}

// The parameters' bf16 copies written with the update (step(grad_scale, copies)) are the cast
// of the updated CUDA parameters, bitwise, and leave the update itself as without them.
TEST(CudaOptim, StepWritesTheParametersBf16CopiesAsTheirCast) {
  HF_REQUIRE_CUDA();
  autograd::NoGradGuard no_grad;
  ParamSet with = make_params(testing::cuda0()), without = make_params(testing::cuda0());
  auto make = [](std::vector<ParamRef> p) {
    return std::make_unique<AdamW>(std::move(p), AdamWOptions{.lr = 1e-2, .weight_decay = 0.1});
  };
  auto ow = make(with.refs), oo = make(without.refs);
  std::vector<Tensor> copies;
  for (const ParamRef& r : with.refs) {
    copies.push_back(ops::empty(r.param.sizes(), DType::kBF16, r.param.device()));
  }
  for (int step = 1; step <= 3; ++step) {
    set_grads(with, step);
    set_grads(without, step);
    const std::vector<bool> written = ow->step(1.0, copies);
    oo->step();
    for (size_t i = 0; i < copies.size(); ++i) {
      SCOPED_TRACE(with.refs[i].name + " step " + std::to_string(step));
      EXPECT_TRUE(written[i]);
      EXPECT_EQ(max_abs_diff(with.refs[i].param, without.refs[i].param), 0.0);
      const Tensor cast = ops::to_dtype(with.refs[i].param, DType::kBF16);
      EXPECT_EQ(
          max_abs_diff(ops::to_dtype(copies[i], DType::kF32), ops::to_dtype(cast, DType::kF32)),
          0.0);
    }
  }
}

TEST(CudaOptim, AdamWDefaultsMatchCpu) {
  HF_REQUIRE_CUDA();
  run_parity([](std::vector<ParamRef> p) { return std::make_unique<AdamW>(std::move(p)); },
             "adamw defaults");
}

TEST(CudaOptim, SgdMatchesCpu) {
  HF_REQUIRE_CUDA();
  run_parity(
      [](std::vector<ParamRef> p) {
        return std::make_unique<SGD>(std::move(p), SGDOptions{.lr = 1e-2});
      },
      "sgd");
  run_parity(
      [](std::vector<ParamRef> p) {
        return std::make_unique<SGD>(
            std::move(p),
            SGDOptions{.lr = 1e-2, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
      },
      "sgd momentum");
  run_parity(
      [](std::vector<ParamRef> p) {
        return std::make_unique<SGD>(
            std::move(p),
            SGDOptions{.lr = 1e-2, .momentum = 0.9, .weight_decay = 0.05, .nesterov = true});
      },
      "sgd nesterov");
}

// A CUDA optimizer's state saved (to host tensors, as a checkpoint does) loads into a CPU
// optimizer and the next steps agree.
TEST(CudaOptim, StateMovesBetweenDevices) {
  HF_REQUIRE_CUDA();
  autograd::NoGradGuard no_grad;
  ParamSet cpu = make_params(Device::cpu()), gpu = make_params(testing::cuda0());
  AdamW oc(cpu.refs, {.lr = 3e-3, .weight_decay = 0.1}),
      og(gpu.refs, {.lr = 3e-3, .weight_decay = 0.1});
  for (int step = 1; step <= 3; ++step) {
    set_grads(gpu, step);
    og.step();
  }
  NamedTensors saved;
  for (const auto& [name, t] : og.state_tensors()) {
    saved.emplace_back(name, ops::to_device(t, Device::cpu()));
  }
  for (size_t i = 0; i < cpu.refs.size(); ++i) {
    Tensor dst = cpu.refs[i].param;
    ops::copy_(dst, gpu.refs[i].param);  // device -> host
  }
  oc.load_state_tensors(saved);
  EXPECT_EQ(oc.step_count(), 3);
  for (int step = 4; step <= 5; ++step) {
    set_grads(cpu, step);
    set_grads(gpu, step);
    oc.step();
    og.step();
  }
  expect_same(oc, og, "adamw after a state move");
}

TEST(CudaOptim, ParametersOnTwoDevicesAreRefused) {
  HF_REQUIRE_CUDA();
  Tensor a = ops::zeros({4}), b = ops::zeros({4}, DType::kF32, testing::cuda0());
  try {
    AdamW opt({ParamRef{"a", a}, ParamRef{"b", b}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one device"), std::string::npos) << e.what();
  }
}

TEST(CudaClip, NormAndClippedGradientsMatchCpu) {
  HF_REQUIRE_CUDA();
  autograd::NoGradGuard no_grad;
  ParamSet cpu = make_params(Device::cpu()), gpu = make_params(testing::cuda0());
  set_grads(cpu, 1);
  set_grads(gpu, 1);
  std::vector<Tensor> pc, pg;
  for (const auto& r : cpu.refs) pc.push_back(r.param);
  for (const auto& r : gpu.refs) pg.push_back(r.param);
  const double sq_cpu = grad_norm_squared(pc), sq_gpu = grad_norm_squared(pg);
  std::printf("grad_norm_squared: cpu %.17g cuda %.17g\n", sq_cpu, sq_gpu);
  EXPECT_NEAR(sq_gpu, sq_cpu, 1e-12 * sq_cpu);
  const double n_cpu = clip_grad_norm(pc, 0.5), n_gpu = clip_grad_norm(pg, 0.5);
  EXPECT_NEAR(n_gpu, n_cpu, 1e-12 * n_cpu);
  ASSERT_LT(clip_coefficient(n_cpu, 0.5), 1.0) << "the case must actually clip";
  for (size_t i = 0; i < pc.size(); ++i) {
    const double err = rel_l2(ops::to_device(pg[i].grad(), Device::cpu()), pc[i].grad());
    EXPECT_LE(err, kTol) << "clipped gradient of " << cpu.refs[i].name << " rel_l2 " << err;
  }
  // No clipping: max_norm above the norm leaves the gradients as they are.
  const double n2 = clip_grad_norm(pg, 1e6);
  EXPECT_NEAR(n2, 0.5, 1e-5);
  // A gradient-free parameter set sums to zero.
  std::vector<Tensor> none = {ops::zeros({3}, DType::kF32, testing::cuda0())};
  EXPECT_EQ(grad_norm_squared(none), 0.0);
}

TEST(CudaGradScaler, UnscaleMatchesCpuAndFindsOneInf) {
  HF_REQUIRE_CUDA();
  autograd::NoGradGuard no_grad;
  GradScaler scaler({.enabled = true, .init_scale = 3.0});  // inv_scale not a power of two
  std::vector<Tensor> cpu, gpu;
  for (int i = 0; i < 3; ++i) {
    Tensor g = make_input({300007 + i}, 70 + i, Device::cpu());
    Tensor pc = ops::zeros({300007 + i}),
           pg = ops::zeros({300007 + i}, DType::kF32, testing::cuda0());
    pc.set_requires_grad(true);
    pg.set_requires_grad(true);
    pc.set_grad(ops::contiguous(g));
    pg.set_grad(ops::to_device(g, testing::cuda0()));
    cpu.push_back(pc);
    gpu.push_back(pg);
  }
  EXPECT_FALSE(scaler.unscale(cpu));
  EXPECT_FALSE(scaler.unscale(gpu));
  for (size_t i = 0; i < cpu.size(); ++i) {  // one f32 multiply per element on both sides
    EXPECT_EQ(ops::to_device(gpu[i].grad(), Device::cpu()).to_vector(), cpu[i].grad().to_vector());
  }
  // One inf in the middle of the last tensor is found.
  Tensor g = gpu[2].grad();
  Tensor one = ops::narrow(g, 0, 150000, 1);
  ops::fill_(one, std::numeric_limits<double>::infinity());
  EXPECT_TRUE(scaler.unscale(gpu));
  // Unscaling in the norm's pass, on copies of the CPU gradients: the same gradients and,
  // within the partials' order, the same sum as the CPU's.
  std::vector<Tensor> fused;
  for (const Tensor& c : cpu) {
    Tensor pg = ops::zeros(c.sizes(), DType::kF32, testing::cuda0());
    pg.set_requires_grad(true);
    pg.set_grad(ops::to_device(c.grad(), testing::cuda0()));
    fused.push_back(pg);
  }
  const double sum_gpu = grad_norm_squared(fused, scaler.inv_scale());
  const double sum_cpu = grad_norm_squared(cpu, scaler.inv_scale());
  EXPECT_NEAR(sum_gpu, sum_cpu, 1e-12 * sum_cpu);
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_EQ(ops::to_device(fused[i].grad(), Device::cpu()).to_vector(),
              cpu[i].grad().to_vector());
  }
  Tensor last = fused[2].grad();
  Tensor bad = ops::narrow(last, 0, 150000, 1);
  ops::fill_(bad, std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isinf(grad_norm_squared(fused, scaler.inv_scale())));
}

TEST(CudaClip, LargeGradientSumIsDeterministic) {
  HF_REQUIRE_CUDA();
  // 3 M elements over several tensors: many chunks and partials; the same bits every call.
  std::vector<Tensor> ps;
  for (int i = 0; i < 3; ++i) {
    Tensor p = ops::zeros({1000003}, DType::kF32, testing::cuda0());
    p.set_requires_grad(true);
    p.set_grad(make_input({1000003}, 50 + i, testing::cuda0()));
    ps.push_back(p);
  }
  const double a = grad_norm_squared(ps), b = grad_norm_squared(ps);
  EXPECT_EQ(a, b);
  std::vector<Tensor> host;
  for (const Tensor& p : ps) {
    Tensor h = ops::to_device(p, Device::cpu());
    h.set_requires_grad(true);
    h.set_grad(ops::to_device(p.grad(), Device::cpu()));
    host.push_back(h);
  }
  const double c = grad_norm_squared(host);
  std::printf("3M-element sum of squares: cpu %.17g cuda %.17g\n", c, a);
  EXPECT_NEAR(a, c, 1e-12 * c);
}

}  // namespace
}  // namespace hfrun::optim
