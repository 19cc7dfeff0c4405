// Tensor: a value handle (cheap to copy, like std::shared_ptr) to shape + strides + offset +
// dtype over shared Storage. Views share storage. Copying a Tensor never copies data.
//
// Ops live outside the class: hfrun::ops (tensor/ops.h) are the raw kernels with no autograd;
// the differentiable functions that models call are in autograd/functions.h (hfrun::matmul,
// hfrun::gelu, ...). The class itself only carries the autograd metadata as data.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace hfrun {

namespace autograd {
class Node;
}
class Tensor;

// Autograd state of one tensor; the engine that reads it is in autograd/.
struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<Tensor> grad;  // accumulated gradient of a leaf
  // The gradient is zero but `grad` was not written (Tensor::zero_grad_lazily): its buffer
  // holds stale values that the next gradient overwrites, or grad() fills if it is read first.
  bool grad_zero_pending = false;
  std::shared_ptr<autograd::Node> grad_fn;  // the node that produced a non-leaf
  std::weak_ptr<autograd::Node>
      grad_accumulator;  // a leaf's accumulate node, while a graph uses it
  // Called when a leaf's gradient for the current backward is final (DDP hooks here).
  std::vector<std::function<void(Tensor&)>> grad_ready_hooks;
  // Where an embedding lookup of this leaf hands its gradient rows (autograd::
  // set_row_gradient_handler) instead of producing a dense gradient.
  std::function<void(const Tensor& dy, const Tensor& ids)> row_gradient_handler;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::kF32;
  std::shared_ptr<AutogradMeta> autograd;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& sizes() const { return impl().sizes; }
  const Shape& strides() const { return impl().strides; }
  int64_t size(int64_t dim) const;
  int64_t stride(int64_t dim) const;
  int64_t dim() const { return static_cast<int64_t>(impl().sizes.size()); }
  int64_t numel() const { return shape_numel(impl().sizes); }
  int64_t offset() const { return impl().offset; }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  size_t element_size() const { return dtype_size(dtype()); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  bool shares_storage_with(const Tensor& other) const;

  // Pointer to element 0 (storage data + offset). T must match dtype().
  void* raw_data() const;
  template <typename T>
  T* data() const {
    check_dtype(DTypeOf<T>::value, "data<T>()");
    return static_cast<T*>(raw_data());
  }

  // Autograd metadata (the engine is in autograd/).
  bool requires_grad() const;
  // Marks a leaf as a trainable tensor; throws for a non-leaf or a non-floating dtype.
  Tensor& set_requires_grad(bool on);
  bool is_leaf() const;
  // Undefined when none was accumulated. A gradient zeroed lazily is filled with zeros here
  // first, so every reader sees the zeros.
  Tensor grad() const;
  void set_grad(const Tensor& g);
  // Zeros the gradient without writing its buffer: the first gradient accumulated into it
  // (AccumulateGrad, a backward's gradient sink) overwrites it, and one never written is
  // filled by grad(). Code that reads the buffer through another view (a flat gradient buffer)
  // must call grad() first. No-op without a gradient.
  void zero_grad_lazily();
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  AutogradMeta* autograd_meta() const { return impl().autograd.get(); }
  AutogradMeta& ensure_autograd_meta();
  // Drops autograd metadata: the result is a leaf with requires_grad false, sharing storage.
  Tensor detach() const;

  // Host-side element access for tests, logging and small glue (copies; slow on purpose).
  std::vector<float> to_vector() const;  // any dtype, converted to float
  std::vector<int64_t> to_int_vector() const;
  float item() const;                                 // single-element tensor as float
  std::string str() const;                            // "f32[2, 3]" (what error messages print)
  std::string repr(int64_t max_elements = 32) const;  // with values

  // True when this handle is the only reference to its impl and storage and it spans the whole
  // storage: the engine may then hand it over instead of copying it.
  bool is_uniquely_owned() const;

  TensorImpl* impl_ptr() const { return impl_.get(); }
  bool is_same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  TensorImpl& impl() const;
  void check_dtype(DType want, const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Builds a tensor over existing storage (a view). Sizes/strides in elements.
Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset);

}  // namespace hfrun
