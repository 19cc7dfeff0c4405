#include "nn/module.h"

#include <algorithm>

#include "nn/layers.h"

#include "autograd/node.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

void Module::collect(const std::string& prefix,
                     std::vector<std::pair<std::string, ParameterSlot*>>& out) const {
  for (auto [is_param, i] : order_) {
    if (is_param) {
      out.emplace_back(prefix + params_[i].first, params_[i].second.get());
    } else {
      children_[i].second->collect(prefix + children_[i].first + ".", out);
    }
  }
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> module) {
  HF_CHECK(module != nullptr, "register_module: null module '", name, "'");
  // A dotted name ("blocks.0") is accepted for modules written before ModuleList; lookups by
  // name then go through the full scan in parameter_handle().
  HF_CHECK(!name.empty(), "register_module: empty name");
  children_.emplace_back(name, std::move(module));
  order_.push_back({false, children_.size() - 1});
  if (compute_dtype_) children_.back().second->set_compute_dtype(compute_dtype_);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  collect("", refs);
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(refs.size());
  for (auto& [n, s] : refs) out.emplace_back(n, s->value);
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

std::vector<std::pair<std::string, Tensor>> Module::named_trainable_parameters() const {
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  collect("", refs);
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [n, s] : refs) {
    if (s->trainable) out.emplace_back(n, s->value);
  }
  return out;
}

int64_t Module::num_trainable_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_trainable_parameters()) n += t.numel();
  return n;
}

bool Module::is_trainable(const std::string& name) const {
  return parameter_handle(name).slot_->trainable;
}

void Module::set_trainable(const std::function<bool(const std::string&)>& trainable) {
  HF_CHECK(flat_ == nullptr, "set_trainable: the parameters are already flattened");
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  collect("", refs);
  for (auto& [n, s] : refs) {
    s->trainable = trainable(n);
    s->value.set_requires_grad(s->trainable);
    if (!s->trainable) s->value.set_grad(Tensor());
  }
}

Tensor Module::parameter(const std::string& name) const {
  return parameter_handle(name).get();
}

Parameter Module::parameter_handle(const std::string& name) const {
  // Walk the tree by path components: exact, and no scan over every parameter.
  const Module* m = this;
  size_t begin = 0;
  while (true) {
    const size_t dot = name.find('.', begin);
    const std::string part = name.substr(begin, dot == std::string::npos ? dot : dot - begin);
    if (dot == std::string::npos) {
      for (const auto& [n, slot] : m->params_) {
        if (n == part) return Parameter(slot);
      }
      break;
    }
    const Module* next = m->child(part);
    if (next == nullptr) break;
    m = next;
    begin = dot + 1;
  }
  // A module may register a dotted name of its own ("fc1.weight" without a child "fc1").
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  collect("", refs);
  for (const auto& [n, slot] : refs) {
    if (n == name) return Parameter(slot->shared_from_this());
  }
  HF_THROW("module has no parameter named '", name, "'");
}

void Module::load_parameter(const std::string& name, const Tensor& value) {
  Parameter p;
  try {
    p = parameter_handle(name);
  } catch (const Error&) {
    HF_CHECK_INPUT(false, "model has no parameter named '", name, "'");
  }
  const Tensor& t = p.get();
  HF_CHECK_INPUT(value.sizes() == t.sizes(), "parameter '", name, "': expected shape ",
                 shape_str(t.sizes()), ", got ", value.str());
  autograd::NoGradGuard no_grad;
  Tensor dst = t;
  ops::copy_(dst, value.dtype() == dst.dtype() ? value : ops::to_dtype(value, dst.dtype()));
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out{{"", this}};
  for (auto& [name, c] : children_) {
    for (auto& [sub, m] : c->named_modules()) {
      out.emplace_back(sub.empty() ? name : name + "." + sub, m);
    }
  }
  return out;
}

Module* Module::child(const std::string& name) const {
  for (const auto& [n, c] : children_) {
    if (n == name) return c.get();
  }
  return nullptr;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::set_compute_dtype(std::optional<DType> dtype) {
  compute_dtype_ = dtype;
  for (auto& [n, c] : children_) c->set_compute_dtype(dtype);
}

Parameter Module::register_parameter(const std::string& name, Tensor value) {
  HF_CHECK(!name.empty(), "register_parameter: empty name");
  value.set_requires_grad(true);
  auto slot = std::make_shared<ParameterSlot>();
  slot->value = std::move(value);
  params_.emplace_back(name, slot);
  order_.push_back({true, params_.size() - 1});
  return Parameter(std::move(slot));
}

void Module::reset_parameter(const Parameter& p, Tensor value, const TensorParallelSplit& split) {
  HF_CHECK(p.defined(), "reset_parameter: undefined parameter");
  value.set_requires_grad(p.slot_->trainable);
  p.slot_->value = std::move(value);
  p.slot_->split = split;
  flat_.reset();
}

TensorParallelSplit Module::tensor_parallel_split(const std::string& name) const {
  const Parameter p = parameter_handle(name);
  if (p.split().split()) return p.split();
  const TensorParallelPlan plan = tensor_parallel_plan();
  if (plan.empty()) return {};
  const size_t dot = name.rfind('.');
  const std::string owner = dot == std::string::npos ? "" : name.substr(0, dot);
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  // A LoRA factor follows its layer's rule (Linear::parallelize): column-parallel splits B,
  // row-parallel A; the other factor is whole.
  std::string rule_path = owner;
  bool lora_split = true;
  for (const char* factor : {".lora_A", ".lora_B"}) {
    const std::string f = factor;
    if (owner.size() > f.size() && owner.compare(owner.size() - f.size(), f.size(), f) == 0) {
      rule_path = owner.substr(0, owner.size() - f.size());
      lora_split = f == ".lora_B";  // column-parallel; flipped below for row-parallel
    }
  }
  const Module* layer_module = nullptr;
  // named_modules() hands out mutable pointers; nothing is modified here.
  for (const auto& [path, module] : const_cast<Module*>(this)->named_modules()) {
    if (path == owner) layer_module = module;
  }
  const auto* layer = dynamic_cast<const ParallelLayer*>(layer_module);
  if (layer == nullptr) return {};
  for (const TensorParallelRule& rule : plan) {
    if (!matches_plan_pattern(rule.pattern, rule_path)) continue;
    if (rule_path != owner) {  // a LoRA factor
      const bool row = rule.style == ParallelStyle::kRowwise;
      if (row == lora_split) return {};  // the whole factor
    }
    return layer->split_for(rule.style, rule.groups, leaf);
  }
  return {};
}

Device Module::device() const {
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  collect("", refs);
  return refs.empty() ? Device::cpu() : refs.front().second->value.device();
}

const FlatParameters& Module::flatten_parameters(Device device, bool gradient_buffer) {
  std::vector<std::pair<std::string, ParameterSlot*>> all;
  collect("", all);
  // Trainable first (their gradients are one buffer), then frozen.
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  for (bool trainable : {true, false}) {
    for (auto& r : all) {
      if (r.second->trainable == trainable) refs.push_back(r);
    }
  }
  auto flat = std::make_unique<FlatParameters>();
  constexpr int64_t kAlign = 16;  // elements: 64 bytes of f32, a cache line
  int64_t total = 0;
  for (auto& [name, s] : refs) {
    HF_CHECK(s->value.dtype() == DType::kF32, "flatten_parameters: parameter '", name, "' is ",
             s->value.str(), "; parameters are f32 (mixed precision casts on the fly)");
    flat->slots.push_back({name, total, s->value.numel()});
    total += (s->value.numel() + kAlign - 1) / kAlign * kAlign;
    if (s->trainable) flat->trainable = total;
  }
  flat->params = ops::zeros({total}, DType::kF32, device);
  if (gradient_buffer) flat->grads = ops::zeros({flat->trainable}, DType::kF32, device);
  for (size_t i = 0; i < refs.size(); ++i) {
    Tensor& t = refs[i].second->value;
    const FlatSlot& s = flat->slots[i];
    Tensor view = ops::view(ops::narrow(flat->params, 0, s.offset, s.numel), t.sizes());
    ops::copy_(view, t);
    if (refs[i].second->trainable) {
      view.set_requires_grad(true);
      if (gradient_buffer) {
        view.set_grad(ops::view(ops::narrow(flat->grads, 0, s.offset, s.numel), t.sizes()));
      }
    }
    t = view;
  }
  flat_ = std::move(flat);
  return *flat_;
}

void Module::replace_parameters(const std::vector<Tensor>& values, bool same_shapes) {
  std::vector<std::pair<std::string, ParameterSlot*>> refs;
  collect("", refs);
  HF_CHECK(values.size() == refs.size(), "replace_parameters: ", values.size(), " tensors for ",
           refs.size(), " parameters");
  for (size_t i = 0; i < refs.size(); ++i) {
    HF_CHECK(!same_shapes || values[i].sizes() == refs[i].second->value.sizes(),
             "replace_parameters: ", refs[i].first, " is ", refs[i].second->value.str(), ", got ",
             values[i].str());
  }
  for (size_t i = 0; i < refs.size(); ++i) {
    refs[i].second->value = values[i];
    refs[i].second->value.set_requires_grad(refs[i].second->trainable);
  }
  flat_.reset();
}

std::vector<std::pair<const FlatSlot*, ParameterSlot*>> Module::flat_slots_for(
    const Tensor& buffer, const Tensor& old, const char* what) const {
  HF_CHECK(buffer.dim() == 1 && buffer.is_contiguous() && buffer.dtype() == DType::kF32 &&
               buffer.numel() == old.numel() && buffer.device() == old.device(),
           what, ": ", buffer.str(), " does not match the flat buffer ", old.str());
  std::vector<std::pair<std::string, ParameterSlot*>> all;
  collect("", all);
  std::vector<std::pair<const FlatSlot*, ParameterSlot*>> out;
  for (const FlatSlot& s : flat_->slots) {
    const auto it =
        std::find_if(all.begin(), all.end(), [&](const auto& r) { return r.first == s.name; });
    HF_CHECK(it != all.end(), what, ": no parameter ", s.name);
    out.emplace_back(&s, it->second);
  }
  return out;
}

void Module::move_flat_parameters(const Tensor& buffer) {
  HF_CHECK(flat_ != nullptr, "move_flat_parameters: the parameters are not flattened");
  for (const auto& [s, slot] : flat_slots_for(buffer, flat_->params, "move_flat_parameters")) {
    Tensor& t = slot->value;
    Tensor view = ops::view(ops::narrow(buffer, 0, s->offset, s->numel), t.sizes());
    if (slot->trainable) {
      view.set_requires_grad(true);
      AutogradMeta* m = t.autograd_meta();
      if (m != nullptr && m->grad) {
        view.set_grad(*m->grad);
        view.autograd_meta()->grad_zero_pending = m->grad_zero_pending;
      }
    }
    t = view;
  }
  flat_->params = buffer;
}

void Module::move_flat_gradients(const Tensor& buffer) {
  HF_CHECK(flat_ != nullptr && flat_->grads.defined(),
           "move_flat_gradients: the parameters are not flattened with a gradient buffer");
  const auto slots = flat_slots_for(buffer, flat_->grads, "move_flat_gradients");
  Tensor dst = buffer;
  ops::copy_(dst, flat_->grads);
  for (const auto& [s, slot] : slots) {
    if (!slot->trainable) continue;
    Tensor& t = slot->value;
    AutogradMeta* m = t.autograd_meta();
    const bool pending = m != nullptr && m->grad_zero_pending;
    t.set_grad(ops::view(ops::narrow(buffer, 0, s->offset, s->numel), t.sizes()));
    t.autograd_meta()->grad_zero_pending = pending;
  }
  flat_->grads = buffer;
}

void Module::release_gradient_buffer() {
  for (auto& [n, t] : named_parameters()) t.set_grad(Tensor());
  if (flat_) flat_->grads = Tensor();
}

void Module::zero_grad() {
  if (flat_ && flat_->grads.defined()) {
    ops::fill_(flat_->grads, 0.0);
    for (auto& [n, t] : named_parameters()) {  // none zeroed lazily is pending any more
      AutogradMeta* m = t.autograd_meta();
      if (!m || !m->grad_zero_pending) continue;
      if (m->grad->shares_storage_with(flat_->grads)) {
        m->grad_zero_pending = false;
      } else {
        t.grad();  // (a gradient set apart from the buffer: filled by itself)
      }
    }
    return;
  }
  for (auto& [n, t] : named_parameters()) {
    Tensor g = t.grad();
    if (g.defined()) ops::fill_(g, 0.0);
  }
}

void Module::zero_grad_lazily() {
  for (auto& [n, t] : named_parameters()) t.zero_grad_lazily();
}

}  // namespace hfrun::nn
