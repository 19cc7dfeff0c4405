#include "tensor/tensor.h"

#include <cstring>
#include <sstream>

#include "tensor/ops.h"

namespace hfrun {

TensorImpl& Tensor::impl() const {
  HF_CHECK(impl_ != nullptr, "use of an undefined tensor");
  return *impl_;
}

void Tensor::check_dtype(DType want, const char* what) const {
  HF_CHECK(dtype() == want, what, ": tensor is ", str(), ", requested ", dtype_name(want));
}

// wrap_dim accepts dims 0 and -1 for a rank-0 tensor, which has no size to read.
int64_t Tensor::size(int64_t d) const {
  HF_CHECK(dim() > 0, "size: ", str(), " has no dims");
  return sizes()[wrap_dim(d, dim(), "size")];
}
int64_t Tensor::stride(int64_t d) const {
  HF_CHECK(dim() > 0, "stride: ", str(), " has no dims");
  return strides()[wrap_dim(d, dim(), "stride")];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  const auto& sz = sizes();
  const auto& st = strides();
  for (size_t i = sz.size(); i-- > 0;) {
    if (sz[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sz[i];
  }
  return true;
}

bool Tensor::shares_storage_with(const Tensor& o) const {
  return defined() && o.defined() && storage() == o.storage();
}

void* Tensor::raw_data() const {
  Storage* st = storage().get();
  HF_CHECK(st->is_materialized(), "tensor ", str(),
           ": its storage was released (a ZeRO-3 parameter used while not gathered)");
  return static_cast<char*>(st->data()) + offset() * static_cast<int64_t>(element_size());
}

bool Tensor::is_uniquely_owned() const {
  return impl_ && impl_.use_count() == 1 && impl_->storage.use_count() == 1 && !impl_->autograd &&
         is_contiguous() && nbytes() == impl_->storage->nbytes();
}

bool Tensor::requires_grad() const {
  auto* m = impl().autograd.get();
  return m && (m->requires_grad || m->grad_fn);
}

Tensor& Tensor::set_requires_grad(bool on) {
  HF_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can be marked; ", str(),
           " was produced by an op");
  HF_CHECK(!on || is_floating(dtype()),
           "set_requires_grad: only floating tensors can require "
           "gradients, got ",
           str());
  ensure_autograd_meta().requires_grad = on;
  return *this;
}

bool Tensor::is_leaf() const {
  auto* m = impl().autograd.get();
  return !m || !m->grad_fn;
}

Tensor Tensor::grad() const {
  auto* m = impl().autograd.get();
  if (!m || !m->grad) return Tensor();
  if (m->grad_zero_pending) {
    ops::fill_(*m->grad, 0.0);
    m->grad_zero_pending = false;
  }
  return *m->grad;
}

void Tensor::zero_grad_lazily() {
  auto* m = impl().autograd.get();
  if (m && m->grad && m->grad->defined()) m->grad_zero_pending = true;
}

void Tensor::set_grad(const Tensor& g) {
  auto& m = ensure_autograd_meta();
  m.grad_zero_pending = false;
  if (!g.defined()) {
    m.grad.reset();
  } else {
    m.grad = std::make_shared<Tensor>(g);
  }
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<autograd::Node> kNone;
  auto* m = impl().autograd.get();
  return m ? m->grad_fn : kNone;
}

AutogradMeta& Tensor::ensure_autograd_meta() {
  auto& i = impl();
  if (!i.autograd) i.autograd = std::make_shared<AutogradMeta>();
  return *i.autograd;
}

Tensor Tensor::detach() const {
  auto t = std::make_shared<TensorImpl>(impl());
  t->autograd.reset();
  return Tensor(std::move(t));
}

namespace {
// Calls fn(linear_index_into_storage_elements) for every element in row-major order.
template <typename Fn>
void for_each_offset(const Tensor& t, Fn&& fn) {
  int64_t n = t.numel();
  if (n == 0) return;
  const Shape& sz = t.sizes();
  const Shape& st = t.strides();
  Shape idx(sz.size(), 0);
  int64_t off = 0;
  for (int64_t k = 0; k < n; ++k) {
    fn(off);
    for (size_t d = sz.size(); d-- > 0;) {
      if (++idx[d] < sz[d]) {
        off += st[d];
        break;
      }
      off -= st[d] * (sz[d] - 1);
      idx[d] = 0;
    }
  }
}

double load_as_double(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::kF32:
      return static_cast<const float*>(base)[i];
    case DType::kBF16:
      return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::kF16:
      return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::kI32:
      return static_cast<const int32_t*>(base)[i];
    case DType::kI64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::kU8:
      return static_cast<const uint8_t*>(base)[i];
    case DType::kBool:
      return static_cast<const uint8_t*>(base)[i] ? 1.0 : 0.0;
  }
  return 0;
}
}  // namespace

std::vector<float> Tensor::to_vector() const {
  if (!device().is_cpu()) return ops::to_device(*this, Device::cpu()).to_vector();
  std::vector<float> out;
  out.reserve(numel());
  const void* base = raw_data();
  DType t = dtype();
  for_each_offset(
      *this, [&](int64_t i) { out.push_back(static_cast<float>(load_as_double(base, t, i))); });
  return out;
}

std::vector<int64_t> Tensor::to_int_vector() const {
  if (!device().is_cpu()) return ops::to_device(*this, Device::cpu()).to_int_vector();
  std::vector<int64_t> out;
  out.reserve(numel());
  const void* base = raw_data();
  DType t = dtype();
  for_each_offset(*this, [&](int64_t i) {
    out.push_back(t == DType::kI64 ? static_cast<const int64_t*>(base)[i]
                                   : static_cast<int64_t>(load_as_double(base, t, i)));
  });
  return out;
}

float Tensor::item() const {
  HF_CHECK(numel() == 1, "item: tensor ", str(), " has ", numel(), " elements, expected 1");
  return to_vector()[0];
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  std::string s = std::string(dtype_name(dtype())) + shape_str(sizes());
  if (!device().is_cpu()) s += "@" + device().str();
  return s;
}

std::string Tensor::repr(int64_t max_elements) const {
  std::ostringstream os;
  os << str() << " {";
  auto v = to_vector();
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()) && i < max_elements; ++i) {
    os << (i ? ", " : "") << v[i];
  }
  if (static_cast<int64_t>(v.size()) > max_elements) os << ", ...";
  os << '}';
  return os.str();
}

Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  auto t = std::make_shared<TensorImpl>();
  t->storage = base.storage();
  t->sizes = std::move(sizes);
  t->strides = std::move(strides);
  t->offset = offset;
  t->dtype = base.dtype();
  return Tensor(std::move(t));
}

}  // namespace hfrun
