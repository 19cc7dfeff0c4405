#include "autograd/node.h"

#include <atomic>

#include "tensor/ops.h"

namespace hfrun::autograd {
namespace {
std::atomic<uint64_t> g_next_sequence_nr{0};
thread_local bool t_grad_enabled = true;
}  // namespace

Node::Node(const char* name) : name_(name), sequence_nr_(g_next_sequence_nr++) {}

std::vector<Tensor> FunctionNode::apply(Tensor grad_output) {
  HF_CHECK(fn_ != nullptr, "backward through ", name(),
           " a second time: the graph was freed "
           "by the first backward");
  return fn_(std::move(grad_output));
}

std::vector<Tensor> AccumulateGrad::apply(Tensor grad_output) {
  Tensor leaf = leaf_;
  HF_CHECK(grad_output.sizes() == leaf.sizes(), "AccumulateGrad: gradient ", grad_output.str(),
           " does not match the leaf ", leaf.str());
  AutogradMeta& meta = leaf.ensure_autograd_meta();
  if (!meta.grad) {
    if (grad_output.is_uniquely_owned() && grad_output.dtype() == leaf.dtype()) {
      meta.grad = std::make_shared<Tensor>(grad_output);  // nobody else sees it: take it
    } else {
      // A fresh copy: the incoming tensor may be shared with other leaves' gradients.
      Tensor g = ops::empty(leaf.sizes(), leaf.dtype(), leaf.device());
      ops::copy_(g, grad_output);
      meta.grad = std::make_shared<Tensor>(g);
    }
  } else if (meta.grad_zero_pending) {    // zeroed lazily: the buffer's values are stale
    ops::copy_(*meta.grad, grad_output);  // (casts to the gradient's dtype)
    meta.grad_zero_pending = false;
  } else {
    Tensor& g = *meta.grad;
    if (g.dtype() == grad_output.dtype()) {
      ops::add_(g, grad_output);
    } else {
      ops::add_(g, ops::to_dtype(grad_output, g.dtype()));
    }
  }
  for (auto& hook : meta.grad_ready_hooks) hook(leaf);
  return {};
}

void AccumulateGrad::finish_without_gradient() {
  Tensor leaf = leaf_;
  AutogradMeta& meta = leaf.ensure_autograd_meta();
  for (auto& hook : meta.grad_ready_hooks) hook(leaf);
}

std::shared_ptr<Node> gradient_edge(const Tensor& t) {
  if (!t.defined()) return nullptr;
  AutogradMeta* m = t.autograd_meta();
  if (!m) return nullptr;
  if (m->grad_fn) return m->grad_fn;
  if (!m->requires_grad) return nullptr;
  auto acc = m->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    m->grad_accumulator = acc;
  }
  return acc;
}

bool grad_enabled() {
  return t_grad_enabled;
}
void set_grad_enabled(bool on) {
  t_grad_enabled = on;
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

Tensor record(const char* name, const std::vector<Tensor>& inputs, const Tensor& output,
              BackwardFn backward) {
  if (!t_grad_enabled) return output;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return output;
  auto node = std::make_shared<FunctionNode>(name, std::move(backward));
  node->next().reserve(inputs.size());
  for (const Tensor& t : inputs) node->next().push_back(gradient_edge(t));
  Tensor out = output.detach();
  out.ensure_autograd_meta().grad_fn = std::move(node);
  return out;
}

void register_grad_ready_hook(Tensor& leaf, std::function<void(Tensor&)> hook) {
  HF_CHECK(leaf.is_leaf() && leaf.requires_grad(), "register_grad_ready_hook: ", leaf.str(),
           " is not a leaf that requires grad");
  leaf.ensure_autograd_meta().grad_ready_hooks.push_back(std::move(hook));
}

void set_row_gradient_handler(Tensor& leaf, RowGradientFn fn) {
  HF_CHECK(leaf.is_leaf() && leaf.requires_grad() && leaf.dim() == 2,
           "set_row_gradient_handler: ", leaf.str(), " is not a [rows, C] leaf that requires grad");
  leaf.ensure_autograd_meta().row_gradient_handler = std::move(fn);
}

}  // namespace hfrun::autograd
