// Parity with PyTorch: AdamW and SGD (momentum, nesterov, dampening, plain) driven by each HF
// schedule, with global-norm clipping and a decay / no-decay split, for 5 steps, against
// torch.optim trajectories written by tests/optim/reference/optim_reference.py (the ctest
// fixture `torch_reference`; HFRUN_TORCH_REFERENCE names the JSON file). Parameters are views
// into one flat buffer (one of them strided) and gradients views into another, as in training.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "optim/clip.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/ops.h"

namespace hfrun::optim {
namespace {

using nlohmann::json;

constexpr double kRelTol = 1e-5;

const json& reference() {
  static const json ref = [] {
    const char* path = std::getenv("HFRUN_TORCH_REFERENCE");
    if (!path) return json();
    std::ifstream in(path);
    return in ? json::parse(in) : json();
  }();
  return ref;
}

// Relative error of got against want per element (the denominator floored at 1e-6 of the
// tensor's largest magnitude, only so that an exact 0 does not divide by zero).
struct ErrorStats {
  double max_rel = 0;
  std::string where;
  int64_t elements = 0, identical = 0;
};

double compare(const std::vector<float>& got, const std::vector<double>& want,
               const std::string& what, ErrorStats& stats) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double denom = std::max(std::fabs(want[i]), 1e-6 * scale);
    const double rel = denom == 0 ? std::fabs(got[i]) : std::fabs(got[i] - want[i]) / denom;
    EXPECT_LE(rel, kRelTol) << what << " element " << i << ": got " << got[i] << ", torch "
                            << want[i];
    worst = std::max(worst, rel);
    stats.elements += 1;
    stats.identical += static_cast<float>(want[i]) == got[i];
  }
  if (worst > stats.max_rel) {
    stats.max_rel = worst;
    stats.where = what;
  }
  return worst;
}

// The case's parameters: views into one flat buffer (w1 transposed, so strided) with gradient
// views into a flat gradient buffer.
struct Model {
  Tensor flat, flat_grad;
  std::vector<std::string> order;
  std::map<std::string, Tensor> params, grads;
};

Model make_model(const json& ref) {
  Model m;
  m.order = ref["order"].get<std::vector<std::string>>();
  int64_t total = 0;
  for (const auto& n : m.order) total += shape_numel(ref["shapes"][n].get<Shape>());
  m.flat = ops::zeros({total});
  m.flat_grad = ops::zeros({total});
  int64_t off = 0;
  for (const auto& n : m.order) {
    const Shape shape = ref["shapes"][n].get<Shape>();
    Tensor p = make_view(m.flat, shape, contiguous_strides(shape), off);
    if (n == "w1") {  // stored transposed: [a, b] with strides (1, a)
      const Shape t = {shape[1], shape[0]};
      p = ops::transpose(make_view(m.flat, t, contiguous_strides(t), off), 0, 1);
    }
    std::vector<float> init;
    for (double v : ref["init"][n]) init.push_back(static_cast<float>(v));
    ops::copy_(p, ops::from_vector(init, shape));
    p.set_requires_grad(true);
    m.grads[n] = make_view(m.flat_grad, shape, contiguous_strides(shape), off);
    m.params[n] = p;
    off += shape_numel(shape);
  }
  return m;
}

std::unique_ptr<Optimizer> make_optimizer(const json& c, const Model& m) {
  std::vector<ParamRef> refs;
  for (const auto& n : m.order) refs.push_back({n, m.params.at(n)});  // decay: ndim >= 2
  if (c["optimizer"] == "adamw") {
    return std::make_unique<AdamW>(refs, AdamWOptions{.lr = c["lr"],
                                                      .betas = {c["betas"][0], c["betas"][1]},
                                                      .eps = c["eps"],
                                                      .weight_decay = c["weight_decay"]});
  }
  return std::make_unique<SGD>(refs, SGDOptions{.lr = c["lr"],
                                                .momentum = c["momentum"],
                                                .dampening = c["dampening"],
                                                .weight_decay = c["weight_decay"],
                                                .nesterov = c["nesterov"]});
}

TEST(OptimParity, MatchesTorchOptimWithHfSchedulesAndClipping) {
  const json& ref = reference();
  ASSERT_FALSE(ref.is_null())
      << "set HFRUN_TORCH_REFERENCE to the JSON written by optim_reference.py (ctest runs the "
         "torch_reference fixture first)";
  const int64_t steps = ref["steps"], warmup = ref["warmup_steps"];
  const std::string skip_param = ref["skip"]["param"];
  const int64_t skip_step = ref["skip"]["step"];
  ErrorStats stats;
  for (const json& c : ref["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    Model m = make_model(ref);
    auto opt = make_optimizer(c, m);
    std::vector<Tensor> params;
    for (const auto& n : m.order) params.push_back(m.params[n]);
    const ScheduleType schedule = parse_schedule_type(c["schedule"]);
    for (int64_t s = 0; s < steps; ++s) {
      const json& want = c["steps"][s];
      const std::string at = name + " step " + std::to_string(s) + " ";
      const double lr = c["lr"].get<double>() * lr_multiplier(schedule, s, warmup, steps);
      EXPECT_DOUBLE_EQ(lr, want["lr"].get<double>()) << at;
      opt->set_lr(lr);
      for (const auto& n : m.order) {
        std::vector<float> g;
        for (double v : ref["grads"][s][n]) g.push_back(static_cast<float>(v));
        ops::copy_(m.grads[n], ops::from_vector(g, m.grads[n].sizes()));
        const bool skipped = n == skip_param && s == skip_step;
        m.params[n].set_grad(skipped ? Tensor() : m.grads[n]);
      }
      const double norm = clip_grad_norm(params, c["max_norm"]);
      compare({static_cast<float>(norm)}, {want["grad_norm"].get<double>()}, at + "grad_norm",
              stats);
      opt->step();
      for (const auto& n : m.order) {
        compare(m.params[n].to_vector(), want["params"][n].get<std::vector<double>>(),
                at + "param " + n, stats);
      }
      int64_t compared = 0;
      for (const auto& [key, t] : opt->state_tensors()) {
        if (key == "step") {
          EXPECT_EQ(t.to_int_vector()[0], s + 1) << at;
          continue;
        }
        // torch's SGD keeps no per-parameter step; ours does (for the first-step buffer).
        if (c["optimizer"] == "sgd" && key.starts_with("step.")) continue;
        ASSERT_TRUE(want["state"].contains(key)) << at << "torch has no state " << key;
        const json& w = want["state"][key];
        if (w.is_number()) {
          EXPECT_EQ(t.to_int_vector()[0], w.get<int64_t>()) << at << key;
        } else {
          compare(t.to_vector(), w.get<std::vector<double>>(), at + key, stats);
        }
        ++compared;
      }
      EXPECT_EQ(compared, static_cast<int64_t>(want["state"].size())) << at;
    }
  }
  std::cout << "[optim parity] " << ref["cases"].size() << " cases x " << steps
            << " steps vs torch " << ref["torch_version"].get<std::string>() << ": max rel err "
            << stats.max_rel << " (" << stats.where << "), " << stats.identical << " of "
            << stats.elements << " values bit-identical\n";
}

}  // namespace
}  // namespace hfrun::optim
