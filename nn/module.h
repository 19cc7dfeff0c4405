// nn::Module: a tree of modules holding named parameters, with HF's dotted names falling out of
// the tree ("model.layers.3.self_attn.q_proj.weight"), train/eval mode, a compute dtype for
// mixed precision, and flat storage: flatten_parameters() moves every parameter into one
// contiguous buffer (and every gradient into another) with each parameter a view, so an
// optimizer step, a DDP bucket or a ZeRO shard is a range of offsets (llm.c's
// malloc_and_point_parameters).
//
// Parameters are held through handles (nn::Parameter): flattening, ZeRO-3's per-block buffers
// and tensor parallelism replace the tensor a parameter is, and every handle sees the new one.
// A Tensor copied out of a handle is a snapshot of the storage at that moment.
//
// Parallelism is applied from outside (distributed/parallel/): a model declares its repeated
// blocks (blocks(): the ZeRO-3 and activation-checkpointing unit) and its tensor-parallel plan
// (tensor_parallel_plan(): module-path pattern -> colwise | rowwise | vocab, as HF's
// base_model_tp_plan); it never mentions a process group.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/tensor_parallel.h"
#include "tensor/tensor.h"

namespace hfrun::nn {

// Where a parameter lives in the flat buffers (in elements).
struct FlatSlot {
  std::string name;
  int64_t offset = 0;
  int64_t numel = 0;
};

// The trainable parameters come first (named_parameters() order), then the frozen ones; the
// gradient buffer covers the trainable ones only.
struct FlatParameters {
  Tensor params;  // 1-D, every parameter is a view into it
  Tensor grads;   // 1-D over params[0, trainable); each trainable .grad() is a view into it
                  // (undefined without a gradient buffer; see Module::zero_grad_lazily)
  std::vector<FlatSlot> slots;  // in buffer order
  int64_t trainable = 0;        // elements of params (aligned) holding trainable parameters
};

// What a parameter is, shared by its module and every handle to it.
struct ParameterSlot : std::enable_shared_from_this<ParameterSlot> {
  Tensor value;
  // How it is split under tensor parallelism (set when a plan is applied; not split before).
  TensorParallelSplit split;
  // False for a frozen parameter (a LoRA base weight): no gradient, no optimizer state.
  bool trainable = true;
};

// A handle to a module's parameter that follows it through flattening and resharding.
class Parameter {
 public:
  Parameter() = default;
  bool defined() const { return slot_ != nullptr; }
  const Tensor& get() const { return slot_->value; }
  // The tensor, or an undefined one for an empty handle (an optional bias).
  Tensor get_or_none() const { return slot_ ? slot_->value : Tensor(); }
  operator const Tensor&() const { return slot_->value; }  // NOLINT: a handle reads as its tensor
  const Tensor* operator->() const { return &slot_->value; }
  const TensorParallelSplit& split() const { return slot_->split; }

 private:
  friend class Module;
  explicit Parameter(std::shared_ptr<ParameterSlot> slot) : slot_(std::move(slot)) {}
  std::shared_ptr<ParameterSlot> slot_;
};

class Module;

// Runs around a module's forward when installed on it (ZeRO-3 gathers a block's parameters
// before and releases them after). after_forward returns the tensor forward continues with
// (the same values; it may attach an autograd node whose backward gathers them again).
class ForwardHook {
 public:
  virtual ~ForwardHook() = default;
  virtual void before_forward(Module& module) = 0;
  virtual Tensor after_forward(Module& module, const Tensor& out) = 0;
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
  // The trainable ones (all unless set_trainable froze some), in the same order.
  std::vector<std::pair<std::string, Tensor>> named_trainable_parameters() const;
  int64_t num_trainable_parameters() const;
  bool is_trainable(const std::string& name) const;
  // Freezes every parameter for which trainable(name) is false and unfreezes the others (a
  // frozen parameter does not require grad). Before flatten_parameters().
  void set_trainable(const std::function<bool(const std::string&)>& trainable);
  // The parameter with this full name; throws naming it when absent.
  Tensor parameter(const std::string& name) const;
  // A handle to it (stays valid through flattening and resharding).
  Parameter parameter_handle(const std::string& name) const;
  // Copies `value` (cast to the parameter's dtype) into a parameter, checking the shape.
  void load_parameter(const std::string& name, const Tensor& value);
  // This module and every descendant with its dotted path ("" for this one), depth-first.
  std::vector<std::pair<std::string, Module*>> named_modules();
  // The child registered under `name` (one path component), or null.
  Module* child(const std::string& name) const;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // Mixed precision: the dtype GEMMs run in (bf16 copies of activations and weights, f32
  // accumulation), for this module and its children; nullopt = the parameters' own (f32).
  void set_compute_dtype(std::optional<DType> dtype);
  std::optional<DType> compute_dtype() const { return compute_dtype_; }

  // Moves every parameter into one f32 buffer on `device` (parameters aligned to 16 elements,
  // the trainable ones first) and gives each trainable one a zero gradient view in a buffer
  // over them. Values are kept. Models are built
  // (and seeded) on the CPU; this is where a GPU run moves them to the device.
  // gradient_buffer false: no gradient buffer (grads undefined; backward allocates gradients
  // as needed), for ZeRO stages 2 and 3, which keep only a shard of the gradients.
  const FlatParameters& flatten_parameters(Device device = Device::cpu(),
                                           bool gradient_buffer = true);
  // The device of the parameters (of the first one; the CPU for a model without any).
  Device device() const;
  const FlatParameters* flat() const { return flat_.get(); }
  // Zeros the flat gradient buffer (or every defined .grad() when it was released or the
  // parameters were not flattened).
  void zero_grad();
  // The same zeros without writing them (Tensor::zero_grad_lazily on every gradient): the next
  // backward writes each gradient over its stale values instead of adding, and a gradient it
  // does not reach is filled when its grad() is read. flat()->grads holds stale values until
  // then: code that reads it must read the parameters' grad() first. What Accelerator uses.
  void zero_grad_lazily();
  // Replaces every parameter (named_parameters() order) by the given tensor (requires_grad is
  // set), and drops the flat buffers: ZeRO-3 gives each block its own gatherable buffer (same
  // shapes), tensor parallelism keeps each rank's part (same_shapes false).
  void replace_parameters(const std::vector<Tensor>& values, bool same_shapes = true);
  // Makes `buffer` the flat parameter buffer: every parameter becomes a view of it at its slot,
  // keeping its gradient and requires_grad. `buffer` already holds the values (1-D f32, as many
  // elements as flat()->params, on the same device): ZeRO-1/2 hand over memory that every
  // data-parallel rank of a node maps, which one rank filled.
  void move_flat_parameters(const Tensor& buffer);
  // The same for the flat gradient buffer: every trainable parameter's gradient becomes a view
  // of `buffer` (1-D f32 as flat()->grads, which it replaces), holding the values it held
  // (copied) and whether they are zeroed lazily.
  void move_flat_gradients(const Tensor& buffer);
  // Drops the flat gradient buffer and every parameter's .grad() (ZeRO stage 2 keeps only a
  // shard of the gradients); backward then allocates gradients as needed.
  void release_gradient_buffer();

  // The repeated blocks, in forward order (transformer layers): ZeRO-3 gathers each around
  // its forward and backward. Default: none.
  virtual std::vector<Module*> blocks() { return {}; }
  // Which submodules tensor parallelism splits, and how (default: none).
  virtual TensorParallelPlan tensor_parallel_plan() const { return {}; }
  // How the parameter `name` is split under tensor parallelism: as the applied plan split it,
  // or, before (or without) tensor parallelism, as this model's plan would split it, so that a
  // checkpoint written with any tensor-parallel size can be read into any other.
  TensorParallelSplit tensor_parallel_split(const std::string& name) const;
  // Installed by distributed/ (one per module; null removes it).
  void set_forward_hook(ForwardHook* hook) { hook_ = hook; }
  ForwardHook* forward_hook() const { return hook_; }

 protected:
  // Registers a trainable parameter (requires_grad is set) and returns its handle.
  Parameter register_parameter(const std::string& name, Tensor value);
  template <typename M>
  M& register_module(const std::string& name, std::unique_ptr<M> module) {
    M& ref = *module;
    add_child(name, std::move(module));
    return ref;
  }
  // Replaces the tensor of one of this module's own parameters (shape may change: a tensor-
  // parallel part) and records its split; drops the flat buffers of this module.
  void reset_parameter(const Parameter& p, Tensor value, const TensorParallelSplit& split);
  // Runs `body` (this module's forward) inside the installed hook, if any.
  template <typename F>
  Tensor hooked(F&& body) {
    if (hook_ == nullptr) return body();
    hook_->before_forward(*this);
    return hook_->after_forward(*this, body());
  }

 private:
  void add_child(const std::string& name, std::unique_ptr<Module> module);
  void collect(const std::string& prefix,
               std::vector<std::pair<std::string, ParameterSlot*>>& out) const;
  // For move_flat_parameters / move_flat_gradients: checks that `buffer` can replace `old` (1-D
  // f32, as many elements, same device) and pairs each flat slot with its parameter.
  std::vector<std::pair<const FlatSlot*, ParameterSlot*>> flat_slots_for(const Tensor& buffer,
                                                                         const Tensor& old,
                                                                         const char* what) const;

  std::vector<std::pair<std::string, std::shared_ptr<ParameterSlot>>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
  // Registration order of parameters (true) and children (false): names come out in it, as
  // in PyTorch's named_parameters() for a module that registers in forward order.
  std::vector<std::pair<bool, size_t>> order_;
  bool training_ = true;
  std::optional<DType> compute_dtype_;
  std::unique_ptr<FlatParameters> flat_;
  ForwardHook* hook_ = nullptr;
};

}  // namespace hfrun::nn
