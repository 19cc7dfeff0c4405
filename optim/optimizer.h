// Optimizers over named f32 parameters: the Optimizer base (lr, step count, zero_grad, state as
// named tensors for checkpoints) and AdamW / SGD, which follow torch.optim.AdamW /
// torch.optim.SGD (single-tensor code path) number for number.
//
// Parameters may be views into one flat buffer, and so may their gradients (DESIGN.md); the
// update is one fused pass over every parameter's memory (the device backend's adamw_update /
// sgd_update: on the CPU a vectorised loop per parameter, on a GPU one kernel launch for all).
// Parameters live on one device (cpu or cuda:N), and so does the optimizer state: one flat
// buffer per kind ("exp_avg", ...) with a view per parameter, so ZeRO sharding of state is
// offset arithmetic too.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::optim {

// One trainable parameter. `decay`: weight decay applies to it; by default to parameters with
// ndim >= 2 (weights), not to biases, norm gains or scalars.
struct ParamRef {
  std::string name;
  Tensor param;
  bool decay = param.defined() && param.dim() >= 2;
};

// Named parameters (e.g. a module's named_parameters()) with the default decay rule.
std::vector<ParamRef> param_refs(const std::vector<std::pair<std::string, Tensor>>& named);

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter whose grad is defined (others are skipped and keep their
  // state and per-parameter step, as torch does), then step_count() += 1. grad_scale (>= 0,
  // finite) multiplies every gradient element in f32 as the update reads it, with the same
  // result as scaling the gradients in place first (torch's clip_grad_norm_ then step()), one
  // pass over them fewer; the gradients themselves are left as they are.
  void step(double grad_scale = 1.0);
  // step(grad_scale) that also refreshes mixed precision's 16-bit weight copies: `copies` has
  // one entry per params(), undefined or a contiguous bf16/f16 tensor of that parameter's shape
  // on its device, and each parameter the step updates gets its new value written into its copy
  // in the update's own pass, rounded as ops::to_dtype rounds it (the copy a cast after the step
  // would make, without a pass of its own). Returns, per parameter, whether its copy was written;
  // a parameter without a gradient is not updated, and its copy is left as it is.
  std::vector<bool> step(double grad_scale, const std::vector<Tensor>& copies);
  // Zeroes every defined grad in place (the grad tensors stay allocated, so views into a flat
  // gradient buffer stay views), or with set_to_none drops them as torch's set_to_none=True.
  void zero_grad(bool set_to_none = false);

  double lr() const { return lr_; }
  void set_lr(double lr);  // what a schedule calls before each step
  int64_t step_count() const { return step_count_; }
  const std::vector<ParamRef>& params() const { return params_; }
  // Where the parameters and the optimizer state live.
  Device device() const { return device_; }

  // State for checkpoints: "step" (i64 scalar: optimizer steps taken), per parameter
  // "step.<name>" (i64 scalar: updates of that parameter) and "<kind>.<name>" for each state
  // buffer kind (AdamW: exp_avg, exp_avg_sq; SGD with momentum: momentum_buffer). The tensors
  // are views of the live state; copy them to keep a snapshot.
  NamedTensors state_tensors() const;
  // Bytes of the state buffers (what the optimizer adds to a rank's memory).
  int64_t state_bytes() const;
  // Restores exactly the set of names state_tensors() produces; an unknown, missing or
  // duplicate name, or a shape that differs from the parameter's, is an error naming it.
  // After share_step(), only this process's ranges of the state buffers are written.
  void load_state_tensors(const NamedTensors& state);

  // Shares the step with other processes that map the same parameters (the DDP ranks of one
  // node, keeping one copy in node shared memory): from now on this one updates only elements
  // [first, second) of each parameter (ranges[i] for params()[i], in its contiguous element
  // order; empty: none of it). It reads only those gradient elements and writes only those of
  // the parameter, its state and its weight copy; step counts advance as before. The state
  // buffers move into memory the sharers map, `state_memory(numel)` (1-D f32, zeroed; this
  // process's ranges of the current state are copied there), so once every sharer has stepped,
  // state_tensors() holds every parameter's whole state, as a replicated optimizer's. The
  // sharers' ranges must not overlap and must cover what is to be updated. Before the first
  // step; once.
  void share_step(const std::vector<std::pair<int64_t, int64_t>>& ranges,
                  const std::function<Tensor(int64_t)>& state_memory);
  bool step_shared() const { return !ranges_.empty(); }

 protected:
  Optimizer(std::vector<ParamRef> params, double lr, const char* kind);
  // Adds a zero-initialised state buffer kind (one flat f32 buffer, a view per parameter).
  void add_state_kind(const std::string& kind);
  // One parameter's update in this step: its index, the elements to update (the parameter, or
  // after share_step() 1-D views of its range) with the matching views of its (f32, same
  // device) gradient, its state buffers (by kind, in add_state_kind order) and its 16-bit copy
  // to write (or undefined), and its step count (from 1).
  struct PendingUpdate {
    size_t index;
    Tensor param, grad;
    std::vector<Tensor> state;
    int64_t param_step;
    Tensor copy;
  };
  // Updates every parameter listed (those with a gradient), in one backend call, reading each
  // gradient element times grad_scale (f32).
  virtual void update(const std::vector<PendingUpdate>& updates, float grad_scale) = 0;

 private:
  const char* kind_;  // "AdamW" / "SGD", for messages
  std::vector<ParamRef> params_;
  std::vector<int64_t> param_steps_;
  std::vector<std::string> state_kinds_;
  std::vector<std::vector<Tensor>> state_views_;     // [kind][param]
  std::vector<std::pair<int64_t, int64_t>> ranges_;  // share_step()'s, or empty
  Device device_ = Device::cpu();
  double lr_;
  int64_t step_count_ = 0;
};

// torch.optim.AdamW defaults.
struct AdamWOptions {
  double lr = 1e-3;
  std::array<double, 2> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled; only for ParamRef::decay parameters
};

// Per parameter with grad g at its step t (from 1), in f32 as torch computes it:
//   p *= 1 - lr * wd                      (decay parameters)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<ParamRef> params, AdamWOptions options = {});
  const AdamWOptions& options() const { return options_; }

 private:
  void update(const std::vector<PendingUpdate>& updates, float grad_scale) override;
  AdamWOptions options_;
};

// torch.optim.SGD defaults (torch requires lr; ours defaults to 1e-3).
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  // L2 added to the gradient (torch's SGD); decay parameters only
  bool nesterov = false;
};

// Per parameter: d = g + wd p (decay parameters); with momentum, buf = d on the parameter's
// first step, else buf = momentum buf + (1 - dampening) d, and d = nesterov ? d + momentum buf
// : buf; p -= lr d.
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamRef> params, SGDOptions options = {});
  const SGDOptions& options() const { return options_; }

 private:
  void update(const std::vector<PendingUpdate>& updates, float grad_scale) override;
  SGDOptions options_;
};

}  // namespace hfrun::optim
