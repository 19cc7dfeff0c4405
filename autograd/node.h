// The autograd graph. Each differentiable op that runs with grad enabled creates one Node for
// its single output; the node holds edges to the nodes of its inputs (or to the accumulate
// node of a leaf) and exactly the tensors its backward reads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::autograd {

class Node {
 public:
  explicit Node(const char* name);
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Gradients w.r.t. the inputs, one per next() edge; an undefined Tensor where none flows.
  // grad_output is handed over: the engine keeps no reference, so a backward that takes it by
  // value can free it as soon as it has read it (before its own outputs are allocated).
  virtual std::vector<Tensor> apply(Tensor grad_output) = 0;
  // Drops saved tensors once backward has used them (the graph is not reusable after that).
  virtual void release() {}

  const char* name() const { return name_; }
  uint64_t sequence_nr() const { return sequence_nr_; }
  // Edges to the producers of the inputs; null where an input needs no gradient.
  std::vector<std::shared_ptr<Node>>& next() { return next_; }

 private:
  const char* name_;
  uint64_t sequence_nr_;
  std::vector<std::shared_ptr<Node>> next_;
};

// A lambda may take the gradient as `const Tensor&` or, to free it early, as `Tensor`.
using BackwardFn = std::function<std::vector<Tensor>(Tensor grad_output)>;

// A node whose backward is a lambda; the lambda's captures are the saved tensors.
class FunctionNode final : public Node {
 public:
  FunctionNode(const char* name, BackwardFn fn) : Node(name), fn_(std::move(fn)) {}
  std::vector<Tensor> apply(Tensor grad_output) override;
  void release() override { fn_ = nullptr; }

 private:
  BackwardFn fn_;
};

// Sink of a leaf tensor: adds the incoming gradient into leaf.grad() and then runs the leaf's
// grad-ready hooks (the engine runs this node only after every path into it has finished, so
// the gradient is final for this backward when the hooks fire).
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(Tensor leaf) : Node("AccumulateGrad"), leaf_(std::move(leaf)) {}
  std::vector<Tensor> apply(Tensor grad_output) override;
  // The graph reached this leaf but no gradient flowed into it (every path's backward returned
  // none): its gradient is still final for this backward, so the hooks run (a DDP bucket
  // waiting on it must not wait forever).
  void finish_without_gradient();
  const Tensor& leaf() const { return leaf_; }

 private:
  Tensor leaf_;
};

// The edge to use for tensor t as an input: its grad_fn, its (shared) AccumulateGrad if it is a
// leaf that requires grad, or null.
std::shared_ptr<Node> gradient_edge(const Tensor& t);

// Whether ops record a graph on this thread (see NoGradGuard).
bool grad_enabled();
void set_grad_enabled(bool on);

class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when grad mode is on and any input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);

// Attaches a FunctionNode named `name` with edges to `inputs` to `output` when any input needs
// grad, and returns the tensor to hand to the caller: a fresh handle on output's storage that
// carries the node, so a backward lambda that captured `output` itself does not form a cycle.
// The lambda returns one gradient per input (undefined = none).
Tensor record(const char* name, const std::vector<Tensor>& inputs, const Tensor& output,
              BackwardFn backward);

// Runs reverse-mode differentiation from `root` (seed gradient: ones when undefined, which
// requires a single-element root). Leaves accumulate into .grad(); saved tensors are released.
void backward(const Tensor& root, const Tensor& grad_root = Tensor());

// Inside a backward function: a tensor into which its gradient for input `i` (of `sizes` and
// `dtype`, contiguous, on `device`) may be written in place instead of being returned, or an
// undefined Tensor. The engine offers the gradient already pending for that input (another
// path's, not yet passed on) when nothing else holds it, or, for a leaf this backward is the
// last to reach with no gradient pending, the leaf's .grad() buffer; adding into it is the sum
// the engine or AccumulateGrad would form (its grad-ready hooks still run after). A leaf that
// other producers still reach offers its buffer too when it was zeroed lazily and nothing is
// pending: the buffer then is the pending gradient, and the later producers' gradients are
// added into it in arrival order, the engine's own order (a tied embedding's head and lookup).
// A backward that writes its gradient into the sink returns an undefined gradient for that
// input.
// `overwrite`: where the sink is a buffer zeroed lazily (Tensor::zero_grad_lazily), the engine
// sets *overwrite and the backward must write the whole sink instead of adding (its values
// are stale); else it adds. A backward that cannot overwrite passes null, and such a buffer is
// filled with zeros first.
Tensor gradient_sink(size_t i, const Shape& sizes, DType dtype, Device device, bool* overwrite);

// Registers a hook run when `leaf`'s gradient of a backward is final.
void register_grad_ready_hook(Tensor& leaf, std::function<void(Tensor&)> hook);

// Where an embedding lookup of `leaf` (hfrun::embedding) delivers its gradient: the lookup's
// backward calls fn(dy [n, C], ids [n]) (dy in the lookup's output dtype) instead of returning
// a dense [rows, C] gradient, and the lookup's graph node has no edge to the leaf. The leaf's
// other producers (a tied output projection) then finish, and its grad-ready hooks run,
// without waiting for the lookup, which usually runs last in backward; a leaf only looked up
// is not reached by the engine at all. fn owns the rows: it must add them to the leaf's
// gradient (embedding_backward_add_), at once or later, and must outlive the graphs recorded
// while it is set. Lookups recorded before the call keep their edge; an empty fn removes it.
using RowGradientFn = std::function<void(const Tensor& dy, const Tensor& ids)>;
void set_row_gradient_handler(Tensor& leaf, RowGradientFn fn);

}  // namespace hfrun::autograd
