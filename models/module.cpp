#include "models/module.h"

#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out) {
  for (auto [is_param, i] : order_) {
    if (is_param) {
      out.emplace_back(prefix + params_[i].first, &params_[i].second);
    } else {
      children_[i].second->collect(prefix + children_[i].first + ".", out);
    }
  }
}

void Module::collect(const std::string& prefix,
                     std::vector<std::pair<std::string, const Tensor*>>& out) const {
  for (auto [is_param, i] : order_) {
    if (is_param) {
      out.emplace_back(prefix + params_[i].first, &params_[i].second);
    } else {
      static_cast<const Module&>(*children_[i].second)
          .collect(prefix + children_[i].first + ".", out);
    }
  }
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, const Tensor*>> refs;
  collect("", refs);
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(refs.size());
  for (auto& [n, t] : refs) out.emplace_back(n, *t);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

Tensor Module::parameter(const std::string& name) const {
  for (auto& [n, t] : named_parameters()) {
    if (n == name) return t;
  }
  HF_THROW("module has no parameter named '", name, "'");
}

void Module::load_parameter(const std::string& name, const Tensor& value) {
  std::vector<std::pair<std::string, Tensor*>> refs;
  collect("", refs);
  for (auto& [n, t] : refs) {
    if (n != name) continue;
    HF_CHECK_INPUT(value.sizes() == t->sizes(), "parameter '", name, "': expected shape ",
                   shape_str(t->sizes()), ", got ", value.str());
    autograd::NoGradGuard no_grad;
    Tensor dst = *t;
    ops::copy_(dst, value.dtype() == dst.dtype() ? value : ops::to_dtype(value, dst.dtype()));
    return;
  }
  HF_CHECK_INPUT(false, "model has no parameter named '", name, "'");
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

size_t Module::register_parameter(const std::string& name, Tensor value) {
  value.set_requires_grad(true);
  params_.emplace_back(name, std::move(value));
  order_.push_back({true, params_.size() - 1});
  return params_.size() - 1;
}

Device Module::device() const {
  std::vector<std::pair<std::string, const Tensor*>> refs;
  collect("", refs);
  return refs.empty() ? Device::cpu() : refs.front().second->device();
}

const FlatParameters& Module::flatten_parameters(Device device) {
  std::vector<std::pair<std::string, Tensor*>> refs;
  collect("", refs);
  auto flat = std::make_unique<FlatParameters>();
  constexpr int64_t kAlign = 16;  // elements: 64 bytes of f32, a cache line
  int64_t total = 0;
  for (auto& [name, t] : refs) {
    HF_CHECK(t->dtype() == DType::kF32, "flatten_parameters: parameter '", name, "' is ", t->str(),
             "; parameters are f32 (mixed precision casts on the fly)");
    flat->slots.push_back({name, total, t->numel()});
    total += (t->numel() + kAlign - 1) / kAlign * kAlign;
  }
  flat->params = ops::zeros({total}, DType::kF32, device);
  flat->grads = ops::zeros({total}, DType::kF32, device);
  for (size_t i = 0; i < refs.size(); ++i) {
    Tensor& t = *refs[i].second;
    const FlatSlot& s = flat->slots[i];
    Tensor view = ops::view(ops::narrow(flat->params, 0, s.offset, s.numel), t.sizes());
    ops::copy_(view, t);
    Tensor grad = ops::view(ops::narrow(flat->grads, 0, s.offset, s.numel), t.sizes());
    view.set_requires_grad(true);
    view.set_grad(grad);
    t = view;
  }
  flat_ = std::move(flat);
  return *flat_;
}

void Module::replace_parameters(const std::vector<Tensor>& values, bool same_shapes) {
  std::vector<std::pair<std::string, Tensor*>> refs;
  collect("", refs);
  HF_CHECK(values.size() == refs.size(), "replace_parameters: ", values.size(), " tensors for ",
           refs.size(), " parameters");
  for (size_t i = 0; i < refs.size(); ++i) {
    HF_CHECK(!same_shapes || values[i].sizes() == refs[i].second->sizes(),
             "replace_parameters: ", refs[i].first, " is ", refs[i].second->str(), ", got ",
             values[i].str());
  }
  for (size_t i = 0; i < refs.size(); ++i) {
    *refs[i].second = values[i];
    refs[i].second->set_requires_grad(true);
  }
  flat_.reset();
}

void Module::release_gradient_buffer() {
  for (auto& [n, t] : named_parameters()) t.set_grad(Tensor());
  if (flat_) flat_->grads = Tensor();
}

void Module::zero_grad() {
  if (flat_ && flat_->grads.defined()) {
    ops::fill_(flat_->grads, 0.0);
    return;
  }
  for (auto& [n, t] : named_parameters()) {
    Tensor g = t.grad();
    if (g.defined()) ops::fill_(g, 0.0);
  }
}

}  // namespace hfrun::nn
