// Tensor creation, copies and casts.
#include <algorithm>
#include <limits>
#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::ops {

Tensor empty(const Shape& shape, DType dtype, Device device) {
  // The byte size must fit in int64 (offsets are int64 elements): a product that wraps would
  // give a tiny block under a huge shape.
  int64_t nbytes = static_cast<int64_t>(dtype_size(dtype));
  for (int64_t d : shape) {
    HF_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(shape));
    HF_CHECK(!__builtin_mul_overflow(nbytes, d, &nbytes), "empty: shape ", shape_str(shape), " of ",
             dtype_name(dtype), " is too large");
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(nbytes), device);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}
Tensor ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}
Tensor empty_like(const Tensor& t) {
  return empty(t.sizes(), t.dtype(), t.device());
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.sizes(), t.dtype(), t.device());
}
Tensor scalar(double value, DType dtype, Device device) {
  return full({}, value, dtype, device);
}

Tensor arange(int64_t n, DType dtype) {
  HF_CHECK(n >= 0, "arange: length must be >= 0, got ", n);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return from_ints(v, {n}, dtype);
}

Tensor from_vector(const std::vector<float>& values, const Shape& shape, DType dtype) {
  HF_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
           "from_vector: ", values.size(), " values for shape ", shape_str(shape));
  Tensor src = empty(shape, DType::kF32);
  std::copy(values.begin(), values.end(), src.data<float>());
  return to_dtype(src, dtype);
}

Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype) {
  HF_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_ints: ", values.size(),
           " values for shape ", shape_str(shape));
  Tensor src = empty(shape, DType::kI64);
  std::copy(values.begin(), values.end(), src.data<int64_t>());
  return to_dtype(src, dtype);
}

struct DeferredRandom::Pending {
  std::weak_ptr<Storage> storage;
  int64_t numel;
  RandomKind kind;
  uint64_t seed, offset;
  double a, b;
};

namespace {
thread_local DeferredRandom* t_deferring = nullptr;
}  // namespace

struct DeferredRandomAccess {
  static void record(DeferredRandom& d, const Tensor& t, RandomKind kind, uint64_t seed,
                     uint64_t offset, double a, double b) {
    d.pending_.push_back({t.storage(), t.numel(), kind, seed, offset, a, b});
  }

  // The innermost scope still open on this thread, or null.
  static DeferredRandom* open_scope() {
    DeferredRandom* d = t_deferring;
    while (d != nullptr && !d->open_) d = d->previous_;
    return d;
  }
};

DeferredRandom::DeferredRandom() : previous_(t_deferring) {
  t_deferring = this;
}
DeferredRandom::~DeferredRandom() {
  // Unlinked from this thread's chain wherever it is (scopes may end in any order).
  if (t_deferring == this) {
    t_deferring = previous_;
    return;
  }
  for (DeferredRandom* d = t_deferring; d != nullptr; d = d->previous_) {
    if (d->previous_ == this) {
      d->previous_ = previous_;
      return;
    }
  }
}
void DeferredRandom::stop() {
  open_ = false;
}
bool DeferredRandom::fill(Tensor& t) const {
  for (const Pending& p : pending_) {
    const std::shared_ptr<Storage> s = p.storage.lock();
    if (s == nullptr || s != t.storage() || t.numel() != p.numel || !t.is_contiguous() ||
        t.raw_data() != s->data()) {
      continue;
    }
    backend_for(t.device()).fill_random(t, p.kind, p.seed, p.offset, p.a, p.b);
    return true;
  }
  return false;
}

namespace {
Tensor random_tensor(const Shape& shape, Generator& gen, DType dtype, RandomKind kind, double a,
                     double b, Device device, const char* op) {
  HF_CHECK(is_floating(dtype), op, ": dtype must be floating, got ", dtype_name(dtype));
  Tensor t = empty(shape, dtype, device);
  uint64_t offset = gen.advance(static_cast<uint64_t>((t.numel() + 3) / 4));
  if (DeferredRandom* d = DeferredRandomAccess::open_scope(); d != nullptr) {
    // NaN, not random: cheap, and loud where a deferred value is used unfilled.
    backend_for(t.device()).fill(t, std::numeric_limits<double>::quiet_NaN());
    DeferredRandomAccess::record(*d, t, kind, gen.seed(), offset, a, b);
  } else {
    backend_for(t.device()).fill_random(t, kind, gen.seed(), offset, a, b);
  }
  return t;
}
}  // namespace

Tensor randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std,
             Device device) {
  return random_tensor(shape, gen, dtype, RandomKind::kNormal, mean, std, device, "randn");
}
Tensor rand(const Shape& shape, Generator& gen, DType dtype, double lo, double hi, Device device) {
  return random_tensor(shape, gen, dtype, RandomKind::kUniform, lo, hi, device, "rand");
}

Tensor to_device(const Tensor& x, Device device) {
  HF_CHECK(x.defined(), "to_device: undefined tensor");
  if (x.device() == device) return x.detach();
  Tensor out = empty(x.sizes(), x.dtype(), device);
  // The device side's backend does host <-> device transfers (either side may be the CPU).
  backend_for(device.is_cpu() ? x.device() : device).copy(x, out);
  return out;
}

Tensor contiguous(const Tensor& x) {
  return x.is_contiguous() ? x.detach() : clone(x);
}

Tensor clone(const Tensor& x) {
  Tensor out = empty(x.sizes(), x.dtype(), x.device());
  backend_for(x.device()).copy(x, out);
  return out;
}

namespace {
// The dim order that makes x contiguous when x is a permutation of a contiguous tensor (a
// transposed weight, say), or empty when it is not.
std::vector<int64_t> dense_order(const Tensor& x) {
  std::vector<int64_t> order(static_cast<size_t>(x.dim()));
  for (int64_t d = 0; d < x.dim(); ++d) order[d] = d;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return x.strides()[a] > x.strides()[b]; });
  return permute(x, order).is_contiguous() ? order : std::vector<int64_t>{};
}
}  // namespace

bool is_dense(const Tensor& x) {
  return x.is_contiguous() || !dense_order(x).empty();
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x.detach();
  if (!x.is_contiguous() && x.numel() > 1) {
    // Cast in memory order and keep the layout: a transposed weight stays a transposed view
    // (GEMMs read it through its strides) instead of being read column by column.
    const std::vector<int64_t> order = dense_order(x);
    if (!order.empty()) {
      Tensor xp = permute(x, order);
      Tensor yp = empty(xp.sizes(), dtype, x.device());
      backend_for(x.device()).copy(xp, yp);
      std::vector<int64_t> inverse(order.size());
      for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int64_t>(i);
      return permute(yp, inverse);
    }
  }
  Tensor out = empty(x.sizes(), dtype, x.device());
  backend_for(x.device()).copy(x, out);
  return out;
}

namespace {
// [first, last] element offsets a view touches in its storage (numel > 0).
std::pair<int64_t, int64_t> storage_span(const Tensor& t) {
  int64_t lo = t.offset(), hi = t.offset();
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t reach = (t.sizes()[d] - 1) * t.strides()[d];
    (reach < 0 ? lo : hi) += reach;
  }
  return {lo, hi};
}
}  // namespace

void copy_(Tensor& dst, const Tensor& src) {
  HF_CHECK(dst.device() == src.device() || dst.device().is_cpu() || src.device().is_cpu(),
           "copy_: ", src.str(), " to ", dst.str(),
           ": copies between two devices go through the host (copy to cpu first)");
  for (int64_t d = 0; d < dst.dim(); ++d) {
    HF_CHECK(dst.strides()[d] != 0 || dst.sizes()[d] <= 1, "copy_: destination ", dst.str(),
             " is a broadcast (expanded) view; several of its elements share one memory location");
  }
  Tensor s = src.sizes() == dst.sizes() ? src : expand(src, dst.sizes());
  if (dst.numel() > 0 && s.numel() > 0 && s.shares_storage_with(dst) &&
      !(s.offset() == dst.offset() && s.strides() == dst.strides())) {
    // Overlapping source and destination (copy_(x, transpose(x)), say): read from a snapshot,
    // or threads would read elements another thread has already overwritten.
    auto [slo, shi] = storage_span(s);
    auto [dlo, dhi] = storage_span(dst);
    if (slo <= dhi && dlo <= shi) s = clone(s);
  }
  // A host <-> device copy is done by the device side's backend.
  backend_for(dst.device().is_cpu() ? s.device() : dst.device()).copy(s, dst);
}

void fill_(Tensor& dst, double value) {
  if (dst.is_contiguous()) {
    backend_for(dst.device()).fill(dst, value);
  } else {
    copy_(dst, scalar(value, dst.dtype(), dst.device()));
  }
}

void add_(Tensor& dst, const Tensor& src, double alpha) {
  HF_CHECK(dst.sizes() == src.sizes() && dst.dtype() == src.dtype(), "add_: ", dst.str(),
           " += ", src.str(), ": shapes and dtypes must match");
  HF_CHECK(dst.device() == src.device(), "add_: ", dst.str(), " += ", src.str(),
           ": tensors on different devices");
  const bool overlapping = [&] {
    for (int64_t d = 0; d < dst.dim(); ++d) {
      if (dst.strides()[d] == 0 && dst.sizes()[d] > 1) return true;
    }
    return false;
  }();
  if (alpha == 1.0 && (!src.is_contiguous() || !dst.is_contiguous()) && !overlapping &&
      !src.shares_storage_with(dst)) {
    // A strided source (the gradient of a transposed view) or destination (a slice of a larger
    // gradient) is added in one pass, without a contiguous copy of either.
    backend_for(dst.device()).binary(BinaryOp::kAdd, dst, src, dst);
    return;
  }
  HF_CHECK(dst.is_contiguous(), "add_: destination ", dst.str(),
           " must be contiguous (or, with alpha 1, a non-overlapping view apart from the source)");
  backend_for(dst.device()).axpy(dst, contiguous(src), alpha);
}

void scale_(Tensor& dst, double alpha) {
  HF_CHECK(dst.is_contiguous(), "scale_: destination ", dst.str(), " must be contiguous");
  backend_for(dst.device()).scale(dst, alpha);
}

}  // namespace hfrun::ops
