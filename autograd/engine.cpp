// The backward pass: count, for every node reachable from the root, how many edges point at
// it; then run nodes from a ready queue (newest first, so memory is freed in reverse order of
// the forward) once all their incoming gradients have been summed.
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace hfrun::autograd {
namespace {

struct NewestFirst {
  bool operator()(const Node* a, const Node* b) const {
    return a->sequence_nr() < b->sequence_nr();
  }
};

// What gradient_sink() looks at while a node's backward runs: the node and the engine's
// pending gradients and dependency counts. Sinks are found only when a backward asks.
struct SinkContext {
  Node* node = nullptr;
  std::unordered_map<Node*, Tensor>* grads = nullptr;
  const std::unordered_map<Node*, int>* dependencies = nullptr;
  // Leaves (their AccumulateGrad nodes) whose pending gradient is their own .grad() buffer: the
  // buffer was zeroed lazily and a first producer wrote its gradient there (see sink_for);
  // the rest of this backward's gradients for the leaf are summed into it in place.
  std::unordered_set<Node*>* in_buffer = nullptr;
};
thread_local const SinkContext* t_sinks = nullptr;

// Sets the context of the node being applied; restores the enclosing one (a backward may run
// a backward of its own: activation checkpointing).
class SinkScope {
 public:
  explicit SinkScope(const SinkContext* c) : prev_(t_sinks) { t_sinks = c; }
  ~SinkScope() { t_sinks = prev_; }
  SinkScope(const SinkScope&) = delete;
  SinkScope& operator=(const SinkScope&) = delete;

 private:
  const SinkContext* prev_;
};

void accumulate(Tensor& slot, const Tensor& g, bool in_buffer) {
  if (in_buffer) {  // the leaf's own buffer: sum in place, whatever else holds it
    ops::add_(slot, g.dtype() == slot.dtype() ? g : ops::to_dtype(g, slot.dtype()));
  } else if (!slot.defined()) {
    slot = g;  // may alias another node's gradient
  } else if (slot.is_uniquely_owned() && slot.dtype() == g.dtype() && slot.sizes() == g.sizes()) {
    ops::add_(slot, g);  // nothing else sees it: the same sum, without a new tensor
  } else {
    slot = ops::add(slot, g);
  }
}

// What input i of the node may write its gradient into (see gradient_sink), when no other edge
// of the node reaches the same producer: the pending gradient, held by nothing but the engine
// (or the leaf's buffer, when that is the pending gradient); or, for a leaf with a gradient
// buffer, that buffer (*leaf: its metadata), where nothing else will reach it in this backward
// (the node is its last producer and none before left a gradient), or, for a leaf several
// producers reach, where no gradient is pending and the buffer was zeroed lazily (*adopt: the
// buffer becomes the pending gradient, and the others add into it in arrival order, the order
// the engine's own sum takes).
Tensor sink_for(const SinkContext& c, size_t i, AutogradMeta** leaf, bool* adopt) {
  const auto& next = c.node->next();
  Node* target = next[i].get();
  if (!target) return Tensor();
  for (size_t j = 0; j < next.size(); ++j) {
    if (j != i && next[j].get() == target) return Tensor();
  }
  auto it = c.grads->find(target);
  if (it != c.grads->end() && it->second.defined()) {
    return it->second.is_uniquely_owned() || c.in_buffer->count(target) ? it->second : Tensor();
  }
  auto* acc = dynamic_cast<AccumulateGrad*>(target);
  auto dep = c.dependencies->find(target);
  if (acc == nullptr || dep == c.dependencies->end() || dep->second < 1) return Tensor();
  AutogradMeta* meta = acc->leaf().autograd_meta();
  if (!meta || !meta->grad || !meta->grad->defined()) return Tensor();
  if (dep->second > 1) {
    if (!meta->grad_zero_pending) return Tensor();
    *adopt = true;
  }
  *leaf = meta;
  return *meta->grad;
}

}  // namespace

Tensor gradient_sink(size_t i, const Shape& sizes, DType dtype, Device device, bool* overwrite) {
  if (overwrite) *overwrite = false;
  if (t_sinks == nullptr || i >= t_sinks->node->next().size()) return Tensor();
  AutogradMeta* leaf = nullptr;
  bool adopt = false;
  Tensor sink = sink_for(*t_sinks, i, &leaf, &adopt);
  if (!sink.defined() || sink.sizes() != sizes || sink.dtype() != dtype ||
      sink.device() != device || !sink.is_contiguous()) {
    return Tensor();
  }
  if (adopt) {
    Node* target = t_sinks->node->next()[i].get();
    (*t_sinks->grads)[target] = sink;
    t_sinks->in_buffer->insert(target);
  }
  if (leaf != nullptr && leaf->grad_zero_pending) {  // zeroed lazily: its values are stale
    leaf->grad_zero_pending = false;
    if (overwrite) {
      *overwrite = true;
    } else {
      ops::fill_(sink, 0.0);
    }
  }
  return sink;
}

void backward(const Tensor& root, const Tensor& grad_root) {
  HF_CHECK(root.defined(), "backward: root tensor is undefined");
  HF_CHECK(root.requires_grad(), "backward: ", root.str(),
           " does not require grad (no input of "
           "the ops that produced it requires grad, or it was computed under NoGradGuard)");
  Tensor seed = grad_root;
  if (!seed.defined()) {
    HF_CHECK(root.numel() == 1, "backward: root ", root.str(), " has ", root.numel(),
             " elements; pass grad_root for a non-scalar root");
    seed = ops::ones(root.sizes(), root.dtype(), root.device());
  }
  HF_CHECK(seed.sizes() == root.sizes(), "backward: grad_root ", seed.str(),
           " does not match root ", root.str());
  NoGradGuard no_grad;  // backward formulas are not themselves recorded

  std::shared_ptr<Node> root_node = gradient_edge(root);
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack{root_node.get()};
  dependencies[root_node.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (auto& next : n->next()) {
      if (!next) continue;
      auto [it, inserted] = dependencies.emplace(next.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(next.get());
    }
  }

  std::unordered_map<Node*, Tensor> grads;
  std::unordered_set<Node*> in_buffer;
  grads[root_node.get()] = seed;
  std::priority_queue<Node*, std::vector<Node*>, NewestFirst> ready;
  ready.push(root_node.get());
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    Tensor g = std::move(grads[n]);
    grads.erase(n);
    std::vector<Tensor> input_grads;
    if (!g.defined() || in_buffer.erase(n) > 0) {  // nothing, or the sum already in the buffer
      if (auto* acc = dynamic_cast<AccumulateGrad*>(n)) acc->finish_without_gradient();
    } else {
      const SinkContext context{n, &grads, &dependencies, &in_buffer};
      SinkScope scope(&context);
      input_grads = n->apply(std::move(g));
      HF_CHECK(input_grads.empty() || input_grads.size() == n->next().size(), "backward of ",
               n->name(), " returned ", input_grads.size(), " gradients for ", n->next().size(),
               " inputs");
    }
    n->release();
    for (size_t i = 0; i < n->next().size(); ++i) {
      Node* next = n->next()[i].get();
      if (!next) continue;
      if (i < input_grads.size() && input_grads[i].defined())
        accumulate(grads[next], input_grads[i], in_buffer.count(next) > 0);
      if (--dependencies[next] == 0) ready.push(next);
    }
  }
}

}  // namespace hfrun::autograd
