// Differentiable elementwise functions and reductions. Broadcast inputs get their gradient
// summed back to their own shape (ops::sum_to).
#include "autograd/functions.h"
#include "autograd/node.h"

namespace hfrun {

using autograd::needs_grad;
using autograd::record;
using Grads = std::vector<Tensor>;

namespace {
// Gradient for an input of shape/dtype like `like`: reduced over broadcast dims, cast back.
Tensor reduce_like(const Tensor& g, const Shape& shape, DType dtype) {
  return ops::to_dtype(ops::sum_to(g, shape), dtype);
}
// x's shape with the reduced dims (all when dims is empty) set to 1.
Shape keepdim_shape(const Tensor& x, const std::vector<int64_t>& dims) {
  Shape kept = x.sizes();
  if (dims.empty() || x.dim() == 0) {  // a scalar's dims 0/-1 name no entry of kept
    for (auto& d : kept) d = 1;
  } else {
    for (int64_t d : dims) kept[wrap_dim(d, x.dim(), "reduce")] = 1;
  }
  return kept;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Shape sa = a.sizes(), sb = b.sizes();
  DType ta = a.dtype(), tb = b.dtype();
  return record("add", {a, b}, ops::add(a, b), [=](const Tensor& g) -> Grads {
    return {reduce_like(g, sa, ta), reduce_like(g, sb, tb)};
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Shape sa = a.sizes(), sb = b.sizes();
  DType ta = a.dtype(), tb = b.dtype();
  return record("sub", {a, b}, ops::sub(a, b), [=](const Tensor& g) -> Grads {
    return {reduce_like(g, sa, ta), reduce_like(ops::neg(g), sb, tb)};
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  if (!needs_grad({&a, &b})) return ops::mul(a, b);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor ad = a.detach(), bd = b.detach();
  return record("mul", {a, b}, ops::mul(a, b), [=](const Tensor& g) -> Grads {
    return {ga ? reduce_like(ops::mul(g, bd), ad.sizes(), ad.dtype()) : Tensor(),
            gb ? reduce_like(ops::mul(g, ad), bd.sizes(), bd.dtype()) : Tensor()};
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  if (!needs_grad({&a, &b})) return ops::div(a, b);
  bool ga = a.requires_grad(), gb = b.requires_grad();
  Tensor bd = b.detach();
  Tensor y = ops::div(a, b);
  Tensor yd = y;
  Shape sa = a.sizes();
  DType ta = a.dtype();
  return record("div", {a, b}, y, [=](const Tensor& g) -> Grads {
    Tensor g_over_b = ops::div(g, bd);
    // d(a/b)/db = -a/b^2 = -y/b
    return {ga ? reduce_like(g_over_b, sa, ta) : Tensor(),
            gb ? reduce_like(ops::neg(ops::mul(g_over_b, yd)), bd.sizes(), bd.dtype()) : Tensor()};
  });
}

Tensor add_scalar(const Tensor& x, double s) {
  return record("add_scalar", {x}, ops::add_scalar(x, s),
                [](const Tensor& g) -> Grads { return {g}; });
}

Tensor mul_scalar(const Tensor& x, double s) {
  return record("mul_scalar", {x}, ops::mul_scalar(x, s),
                [s](const Tensor& g) -> Grads { return {ops::mul_scalar(g, s)}; });
}

Tensor pow_scalar(const Tensor& x, double p) {
  Tensor xd = x.detach();
  return record("pow_scalar", {x}, ops::pow_scalar(x, p), [xd, p](const Tensor& g) -> Grads {
    // x^0 is constant: p * x^-1 would be 0 * inf = NaN at x = 0 (torch returns zeros too).
    if (p == 0.0) return {ops::zeros(xd.sizes(), xd.dtype(), xd.device())};
    return {ops::mul(g, ops::mul_scalar(ops::pow_scalar(xd, p - 1), p))};
  });
}

Tensor unary(ops::UnaryOp op, const Tensor& x) {
  Tensor y = ops::unary(op, x);
  if (!needs_grad({&x})) return y;
  // Ops whose derivative is a function of y alone save only y; the others save only x.
  using U = ops::UnaryOp;
  bool from_y = op == U::kExp || op == U::kTanh || op == U::kSqrt || op == U::kRsqrt ||
                op == U::kSigmoid || op == U::kNeg;
  Tensor saved_x = from_y ? ops::empty({0}) : x.detach();
  Tensor saved_y = from_y ? y : Tensor();
  Shape shape = x.sizes();
  return record(ops::unary_op_name(op), {x}, y, [=](const Tensor& g) -> Grads {
    if (op == U::kNeg) return {ops::neg(g)};
    // For y-only ops the backend reads y; x is only passed for its shape.
    Tensor xin = from_y ? saved_y : saved_x;
    return {ops::unary_backward(op, g, xin, saved_y)};
  });
}

Tensor neg(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kNeg, x);
}
Tensor exp(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kExp, x);
}
Tensor log(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kLog, x);
}
Tensor tanh(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kTanh, x);
}
Tensor sqrt(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kSqrt, x);
}
Tensor sigmoid(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kSigmoid, x);
}
Tensor relu(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kRelu, x);
}
Tensor silu(const Tensor& x) {
  return hfrun::unary(ops::UnaryOp::kSilu, x);
}
Tensor swiglu(const Tensor& gate, const Tensor& up) {
  if (gate.sizes() != up.sizes() || gate.dtype() != up.dtype()) return mul(silu(gate), up);
  if (!needs_grad({&gate, &up})) return ops::swiglu(gate, up);
  const bool gg = gate.requires_grad(), gu = up.requires_grad();
  Tensor gd = gate.detach(), ud = up.detach();
  return record("swiglu", {gate, up}, ops::swiglu(gate, up), [=](const Tensor& g) -> Grads {
    auto [g_gate, g_up] = ops::swiglu_backward(g, gd, ud);
    return {gg ? g_gate : Tensor(), gu ? g_up : Tensor()};
  });
}

Tensor gelu(const Tensor& x, bool tanh_approx) {
  return hfrun::unary(tanh_approx ? ops::UnaryOp::kGeluTanh : ops::UnaryOp::kGelu, x);
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  Tensor c = cond.detach();
  Shape sa = a.sizes(), sb = b.sizes();
  DType ta = a.dtype(), tb = b.dtype();
  return record("where", {a, b}, ops::where(cond, a, b), [=](const Tensor& g) -> Grads {
    Tensor zero = ops::scalar(0.0, g.dtype());
    return {reduce_like(ops::where(c, g, zero), sa, ta),
            reduce_like(ops::where(c, zero, g), sb, tb)};
  });
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  Tensor m = mask.detach();
  return record(
      "masked_fill", {x}, ops::masked_fill(x, mask, value),
      [m](const Tensor& g) -> Grads { return {ops::where(m, ops::scalar(0.0, g.dtype()), g)}; });
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Shape in = x.sizes();
  Tensor y = ops::sum(x, dims, keepdim);
  Shape kept = keepdim_shape(x, dims);
  return record("sum", {x}, y, [in, kept](const Tensor& g) -> Grads {
    return {ops::contiguous(ops::expand(ops::reshape(g, kept), in))};
  });
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  Shape in = x.sizes();
  Tensor y = ops::mean(x, dims, keepdim);
  double count = static_cast<double>(x.numel()) / std::max<int64_t>(y.numel(), 1);
  Shape kept = keepdim_shape(x, dims);
  return record("mean", {x}, y, [in, kept, count](const Tensor& g) -> Grads {
    return {ops::mul_scalar(ops::expand(ops::reshape(g, kept), in), 1.0 / count)};
  });
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  ops::MaxResult r = ops::max(x, dim, keepdim);
  int64_t d = wrap_dim(dim, x.dim(), "max");
  Shape in = x.sizes();
  DType dt = x.dtype();
  Tensor indices = keepdim ? r.indices : ops::unsqueeze(r.indices, d);
  return record("max", {x}, r.values, [in, dt, d, indices, keepdim](const Tensor& g) -> Grads {
    // Scatter g into the argmax positions: one-hot mask = (arange(n) == index) along d.
    Shape ar_shape(in.size(), 1);
    ar_shape[d] = in[d];
    Tensor positions = ops::reshape(ops::to_device(ops::arange(in[d]), indices.device()), ar_shape);
    Tensor onehot = ops::eq(positions, indices);
    Tensor gk = keepdim ? g : ops::unsqueeze(g, d);
    return {ops::where(onehot, gk, ops::scalar(0.0, dt))};
  });
}

}  // namespace hfrun
