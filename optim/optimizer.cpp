#include "optim/optimizer.h"

#include <cmath>
#include <map>
#include <set>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace hfrun::optim {
namespace {

// Elements [lo, hi) of a contiguous tensor, as a 1-D view.
Tensor range_of(const Tensor& t, int64_t lo, int64_t hi) {
  return make_view(t, {hi - lo}, {1}, t.offset() + lo);
}

}  // namespace

std::vector<ParamRef> param_refs(const std::vector<std::pair<std::string, Tensor>>& named) {
  std::vector<ParamRef> refs;
  refs.reserve(named.size());
  for (const auto& [name, t] : named) refs.push_back(ParamRef{name, t});
  return refs;
}

Optimizer::Optimizer(std::vector<ParamRef> params, double lr, const char* kind)
    : kind_(kind), params_(std::move(params)), param_steps_(params_.size(), 0), lr_(lr) {
  std::set<std::string> names;
  for (const auto& p : params_) {
    HF_CHECK_INPUT(p.param.defined(), kind_, ": parameter '", p.name, "' is undefined");
    HF_CHECK_INPUT(names.insert(p.name).second, kind_, ": duplicate parameter name '", p.name, "'");
    // Mixed precision keeps f32 master weights here and casts copies for compute.
    HF_CHECK_INPUT(p.param.dtype() == DType::kF32, kind_, ": parameter '", p.name, "' is ",
                   p.param.str(), "; optimizers update f32 (master) parameters only");
    HF_CHECK_INPUT(p.param.device() == params_.front().param.device(), kind_, ": parameter '",
                   p.name, "' is on ", p.param.device().str(), " but '", params_.front().name,
                   "' on ", params_.front().param.device().str(),
                   "; an optimizer's parameters live on one device");
  }
  if (!params_.empty()) device_ = params_.front().param.device();
  set_lr(lr);
}

void Optimizer::set_lr(double lr) {
  HF_CHECK_INPUT(lr >= 0, kind_, ": learning rate must be >= 0, got ", lr);
  lr_ = lr;
}

void Optimizer::add_state_kind(const std::string& kind) {
  int64_t total = 0;
  for (const auto& p : params_) total += p.param.numel();
  Tensor flat = ops::zeros({total}, DType::kF32, device_);
  std::vector<Tensor> views;
  views.reserve(params_.size());
  int64_t offset = 0;
  for (const auto& p : params_) {
    const Shape& sizes = p.param.sizes();
    views.push_back(make_view(flat, sizes, contiguous_strides(sizes), offset));
    offset += p.param.numel();
  }
  state_kinds_.push_back(kind);
  state_views_.push_back(std::move(views));
}

void Optimizer::step(double grad_scale) {
  step(grad_scale, {});
}

std::vector<bool> Optimizer::step(double grad_scale, const std::vector<Tensor>& copies) {
  // 0 is a clip coefficient too: a norm past f32's range clips to zero, as torch's f32 one.
  HF_CHECK(std::isfinite(grad_scale) && grad_scale >= 0, kind_, ": step's grad_scale ", grad_scale,
           " must be finite and not negative");
  HF_CHECK(copies.empty() || copies.size() == params_.size(), kind_, ": step got ", copies.size(),
           " parameter copies for ", params_.size(), " parameters");
  autograd::NoGradGuard no_grad;
  std::vector<PendingUpdate> updates;
  std::vector<size_t> counted;  // every parameter with a gradient, updated here or not
  std::vector<bool> written(params_.size(), false);
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamRef& p = params_[i];
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    HF_CHECK(g.dtype() == DType::kF32, kind_, ": gradient of '", p.name, "' is ", g.str(),
             "; f32 gradients required");
    HF_CHECK(g.sizes() == p.param.sizes(), kind_, ": gradient of '", p.name, "' is ", g.str(),
             " but the parameter is ", p.param.str());
    HF_CHECK(g.device() == p.param.device(), kind_, ": gradient of '", p.name,
             "' is on another device than the parameter");
    Tensor copy = copies.empty() ? Tensor() : copies[i];
    if (copy.defined()) {
      HF_CHECK((copy.dtype() == DType::kBF16 || copy.dtype() == DType::kF16) &&
                   copy.is_contiguous() && copy.sizes() == p.param.sizes() &&
                   copy.device() == p.param.device(),
               kind_, ": the copy of '", p.name, "' is ", copy.str(),
               "; a contiguous bf16 or f16 tensor of the parameter's shape and device required");
      written[i] = true;
    }
    counted.push_back(i);
    PendingUpdate u{i, p.param, g, {}, param_steps_[i] + 1, copy};
    for (const auto& kind : state_views_) u.state.push_back(kind[i]);
    if (!ranges_.empty()) {  // this process's range of each
      const auto [lo, hi] = ranges_[i];
      if (hi <= lo) continue;
      u.param = range_of(u.param, lo, hi);
      u.grad = ops::narrow(ops::reshape(g, {g.numel()}), 0, lo, hi - lo);
      for (Tensor& t : u.state) t = range_of(t, lo, hi);
      if (copy.defined()) u.copy = range_of(copy, lo, hi);
    }
    updates.push_back(std::move(u));
  }
  // Counted once every input is checked: a refused step changes nothing.
  update(updates, static_cast<float>(grad_scale));
  for (size_t i : counted) ++param_steps_[i];
  ++step_count_;
  return written;
}

void Optimizer::share_step(const std::vector<std::pair<int64_t, int64_t>>& ranges,
                           const std::function<Tensor(int64_t)>& state_memory) {
  HF_CHECK(ranges_.empty() && step_count_ == 0, kind_,
           ": share_step after the first step, or twice");
  HF_CHECK(ranges.size() == params_.size(), kind_, ": share_step got ", ranges.size(),
           " ranges for ", params_.size(), " parameters");
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto [lo, hi] = ranges[i];
    HF_CHECK(
        params_[i].param.is_contiguous() && 0 <= lo && lo <= hi && hi <= params_[i].param.numel(),
        kind_, ": share_step's range [", lo, ", ", hi, ") of '", params_[i].name, "' (",
        params_[i].param.str(), ") is not inside a contiguous parameter");
  }
  for (auto& views : state_views_) {
    int64_t total = 0;
    for (const Tensor& v : views) total += v.numel();
    Tensor flat = state_memory(total);
    HF_CHECK(flat.defined() && flat.dim() == 1 && flat.numel() == total &&
                 flat.dtype() == DType::kF32 && flat.device() == device_ && flat.is_contiguous(),
             kind_, ": share_step's state memory is not ", total, " contiguous f32 elements on ",
             device_.str());
    int64_t offset = 0;
    for (size_t i = 0; i < views.size(); ++i) {
      const Shape sizes = views[i].sizes();
      Tensor moved = make_view(flat, sizes, contiguous_strides(sizes), flat.offset() + offset);
      const auto [lo, hi] = ranges[i];
      if (hi > lo) {
        Tensor dst = range_of(moved, lo, hi);
        ops::copy_(dst, range_of(views[i], lo, hi));
      }
      offset += views[i].numel();
      views[i] = moved;
    }
  }
  ranges_ = ranges;
}

void Optimizer::zero_grad(bool set_to_none) {
  for (auto& p : params_) {
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    if (set_to_none) {
      p.param.set_grad(Tensor());
    } else {
      ops::fill_(g, 0.0);
    }
  }
}

NamedTensors Optimizer::state_tensors() const {
  NamedTensors out;
  out.emplace_back("step", ops::scalar(static_cast<double>(step_count_), DType::kI64));
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    out.emplace_back("step." + name,
                     ops::scalar(static_cast<double>(param_steps_[i]), DType::kI64));
    for (size_t k = 0; k < state_kinds_.size(); ++k) {
      out.emplace_back(state_kinds_[k] + "." + name, state_views_[k][i]);
    }
  }
  return out;
}

int64_t Optimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& kind : state_views_) {
    for (const Tensor& t : kind) bytes += static_cast<int64_t>(t.nbytes());
  }
  return bytes;
}

namespace {

int64_t read_count(const Tensor& t, const char* kind, const std::string& name) {
  HF_CHECK_INPUT(t.numel() == 1, kind, ": state '", name, "' must be a scalar, got ", t.str());
  std::vector<int64_t> v = t.to_int_vector();
  HF_CHECK_INPUT(v[0] >= 0, kind, ": state '", name, "' is negative (", v[0], ")");
  return v[0];
}

}  // namespace

void Optimizer::load_state_tensors(const NamedTensors& state) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : state) {
    HF_CHECK_INPUT(t.defined(), kind_, ": state '", name, "' is undefined");
    HF_CHECK_INPUT(given.emplace(name, &t).second, kind_, ": duplicate state '", name, "'");
  }
  // Validate everything before changing anything, so a bad checkpoint leaves us untouched.
  NamedTensors expected = state_tensors();
  for (const auto& [name, t] : expected) {
    auto it = given.find(name);
    HF_CHECK_INPUT(it != given.end(), kind_, ": state '", name, "' is missing (", state.size(),
                   " entries given, ", expected.size(), " expected)");
    if (name == "step" || name.starts_with("step.")) {
      read_count(*it->second, kind_, name);
    } else {
      HF_CHECK_INPUT(it->second->sizes() == t.sizes(), kind_, ": state '", name, "' is ",
                     it->second->str(), " but the parameter's shape is ", shape_str(t.sizes()));
    }
  }
  std::set<std::string> expected_names;
  for (const auto& e : expected) expected_names.insert(e.first);
  for (const auto& [name, t] : given) {
    HF_CHECK_INPUT(expected_names.count(name), kind_, ": unknown state '", name,
                   "' (no such parameter or state kind)");
  }
  step_count_ = read_count(*given.at("step"), kind_, "step");
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    param_steps_[i] = read_count(*given.at("step." + name), kind_, "step." + name);
    for (size_t k = 0; k < state_kinds_.size(); ++k) {
      const Tensor src = ops::to_dtype(*given.at(state_kinds_[k] + "." + name), DType::kF32);
      if (ranges_.empty()) {
        Tensor& dst = state_views_[k][i];
        ops::copy_(dst, src);
        continue;
      }
      const auto [lo, hi] = ranges_[i];  // the sharers load the same state, each its range
      if (hi <= lo) continue;
      Tensor dst = range_of(state_views_[k][i], lo, hi);
      ops::copy_(dst, ops::narrow(ops::reshape(src, {src.numel()}), 0, lo, hi - lo));
    }
  }
}

}  // namespace hfrun::optim
