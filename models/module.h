// nn::Module: a tree of modules with named parameters (HF naming: "h.0.attn.c_attn.weight"),
// train/eval mode, and flat storage: after construction, flatten_parameters() moves every
// parameter into one contiguous buffer (and every gradient into another) with each parameter a
// view, so an optimizer step, a DDP bucket or a ZeRO shard is a range of offsets (llm.c's
// malloc_and_point_parameters).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/tensor_parallel.h"
#include "tensor/tensor.h"

namespace hfrun::nn {

// Where a parameter lives in the flat buffers (in elements).
struct FlatSlot {
  std::string name;
  int64_t offset = 0;
  int64_t numel = 0;
};

struct FlatParameters {
  Tensor params;  // 1-D, every parameter is a view into it
  Tensor grads;   // 1-D, same layout; each parameter's .grad() is a view into it
  std::vector<FlatSlot> slots;
};

// Called by a model's forward around its repeated layers (GPT-2: the blocks), so that ZeRO-3
// can gather a layer's parameters just before it runs and free them after.
class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual void before_model() = 0;          // at the start of forward
  virtual void before_layer(size_t i) = 0;  // before layers()[i] runs
  // After layers()[i] produced `out`; returns the tensor forward continues with (the same
  // values; ZeRO-3 attaches a node that gathers the layer again before its backward).
  virtual Tensor after_layer(size_t i, const Tensor& out) = 0;
};

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Parameters of this module and its children, depth-first in registration order.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  int64_t num_parameters() const;
  // The parameter with this full name; throws naming it when absent.
  Tensor parameter(const std::string& name) const;
  // Copies `value` (cast to the parameter's dtype) into a parameter, checking the shape.
  void load_parameter(const std::string& name, const Tensor& value);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves every parameter into one f32 buffer on `device` (parameters aligned to 16 elements)
  // and gives each a zero gradient view in a matching buffer. Values are kept. Models are built
  // (and seeded) on the CPU; this is where a GPU run moves them to the device.
  const FlatParameters& flatten_parameters(Device device = Device::cpu());
  // The device of the parameters (of the first one; the CPU for a model without any).
  Device device() const;
  const FlatParameters* flat() const { return flat_.get(); }
  // Zeros the flat gradient buffer (or every defined .grad() when it was released or the
  // parameters were not flattened).
  void zero_grad();
  // Replaces every parameter (named_parameters() order) by the given tensor (requires_grad is
  // set), and drops the flat buffers: ZeRO-3 gives each layer its own gatherable buffer (same
  // shapes), tensor parallelism keeps each rank's part (same_shapes false).
  void replace_parameters(const std::vector<Tensor>& values, bool same_shapes = true);
  // The repeated layers a model calls LayerHooks around, in forward order (default: none).
  virtual std::vector<const Module*> layers() const { return {}; }
  void set_layer_hooks(LayerHooks* hooks) { hooks_ = hooks; }
  // How the parameter `name` is split under tensor parallelism (default: not split).
  virtual TensorParallelSplit tensor_parallel_split(const std::string& name) const { return {}; }
  LayerHooks* layer_hooks() const { return hooks_; }

  // Drops the flat gradient buffer and every parameter's .grad() (ZeRO stage 2 keeps only a
  // shard of the gradients); backward then allocates gradients as needed.
  void release_gradient_buffer();

 protected:
  // Registers a trainable parameter (requires_grad is set) and returns its index for param().
  size_t register_parameter(const std::string& name, Tensor value);
  template <typename M>
  M& register_module(const std::string& name, std::unique_ptr<M> module) {
    M& ref = *module;
    children_.emplace_back(name, std::move(module));
    order_.push_back({false, children_.size() - 1});
    return ref;
  }
  const Tensor& param(size_t index) const { return params_[index].second; }

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor*>>& out);
  void collect(const std::string& prefix,
               std::vector<std::pair<std::string, const Tensor*>>& out) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  // Registration order of parameters (true) and children (false): names come out in it, as
  // in PyTorch's named_parameters() for a module that registers in forward order.
  std::vector<std::pair<bool, size_t>> order_;
  bool training_ = true;
  std::unique_ptr<FlatParameters> flat_;
  LayerHooks* hooks_ = nullptr;
};

}  // namespace hfrun::nn
