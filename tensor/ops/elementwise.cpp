// Elementwise ops: dtype promotion and broadcasting here, arithmetic in the backend.
#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::ops {
namespace {

// Result dtype of a binary op: equal dtypes stay; mixed floating promote to f32; floating with
// integer gives the floating one; mixed integers give i64.
DType promote(DType a, DType b) {
  if (a == b) return a;
  bool fa = is_floating(a), fb = is_floating(b);
  if (fa && fb) return DType::kF32;
  if (fa) return a;
  if (fb) return b;
  return DType::kI64;
}

// A rank-0 CPU tensor (a scalar) combines with a tensor on any device, as in PyTorch: it is
// moved to that device. Any other device mismatch is an error.
Tensor on_device(const Tensor& t, Device device) {
  if (t.device() == device || t.dim() != 0 || !t.device().is_cpu()) return t;
  return to_device(t, device);
}

Tensor binary_op(BinaryOp op, const Tensor& a_in, const Tensor& b_in, const char* name) {
  HF_CHECK(a_in.defined() && b_in.defined(), name, ": undefined input");
  const Device device = a_in.dim() == 0 && a_in.device().is_cpu() ? b_in.device() : a_in.device();
  const Tensor a = on_device(a_in, device), b = on_device(b_in, device);
  HF_CHECK(a.device() == b.device(), name, ": inputs on different devices: ", a.str(), " and ",
           b.str());
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
  bool compare = op == BinaryOp::kEq || op == BinaryOp::kGt || op == BinaryOp::kLt;
  DType compute = promote(a.dtype(), b.dtype());
  if (compute == DType::kBool) compute = DType::kU8;
  Tensor ac = to_dtype(a, compute), bc = to_dtype(b, compute);
  Tensor out = empty(shape, compare ? DType::kBool : compute, a.device());
  backend_for(a.device()).binary(op, expand(ac, shape), expand(bc, shape), out);
  return out;
}

Tensor float_input(const Tensor& x, const char* name) {
  HF_CHECK(x.defined(), name, ": undefined input");
  HF_CHECK(is_floating(x.dtype()), name, ": expected a floating tensor, got ", x.str());
  return contiguous(x);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kAdd, a, b, "add");
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kSub, a, b, "sub");
}
Tensor mul(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kMul, a, b, "mul");
}
Tensor div(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kDiv, a, b, "div");
}
Tensor maximum(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kMax, a, b, "maximum");
}
Tensor eq(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kEq, a, b, "eq");
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kGt, a, b, "gt");
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return binary_op(BinaryOp::kLt, a, b, "lt");
}

Tensor add_scalar(const Tensor& x, double s) {
  return binary_op(BinaryOp::kAdd, x,
                   scalar(s, is_floating(x.dtype()) ? x.dtype() : DType::kF32, x.device()),
                   "add_scalar");
}
Tensor mul_scalar(const Tensor& x, double s) {
  return binary_op(BinaryOp::kMul, x,
                   scalar(s, is_floating(x.dtype()) ? x.dtype() : DType::kF32, x.device()),
                   "mul_scalar");
}

Tensor pow_scalar(const Tensor& x, double p) {
  Tensor xc = float_input(x, "pow_scalar");
  Tensor y = empty_like(xc);
  backend_for(x.device()).pow_scalar(xc, p, y);
  return y;
}

const char* unary_op_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::kNeg:
      return "neg";
    case UnaryOp::kExp:
      return "exp";
    case UnaryOp::kLog:
      return "log";
    case UnaryOp::kTanh:
      return "tanh";
    case UnaryOp::kSqrt:
      return "sqrt";
    case UnaryOp::kRsqrt:
      return "rsqrt";
    case UnaryOp::kSigmoid:
      return "sigmoid";
    case UnaryOp::kRelu:
      return "relu";
    case UnaryOp::kSilu:
      return "silu";
    case UnaryOp::kGelu:
      return "gelu";
    case UnaryOp::kGeluTanh:
      return "gelu_tanh";
    case UnaryOp::kAbs:
      return "abs";
    case UnaryOp::kSquare:
      return "square";
  }
  return "unary";
}

Tensor unary(UnaryOp op, const Tensor& x) {
  Tensor xc = float_input(x, unary_op_name(op));
  Tensor y = empty_like(xc);
  backend_for(x.device()).unary(op, xc, y);
  return y;
}

Tensor unary_backward(UnaryOp op, const Tensor& gy, const Tensor& x, const Tensor& y) {
  const char* name = unary_op_name(op);
  HF_CHECK(gy.sizes() == x.sizes(), name, " backward: gradient ", gy.str(),
           " does not match input ", x.str());
  Tensor xc = float_input(x, name);
  Tensor gc = contiguous(to_dtype(gy, x.dtype()));
  Tensor yc = y.defined() ? contiguous(y) : Tensor();
  Tensor gx = empty_like(xc);
  backend_for(x.device()).unary_backward(op, gc, xc, yc, gx);
  return gx;
}

Tensor where(const Tensor& cond, const Tensor& a_in, const Tensor& b_in) {
  HF_CHECK(cond.defined() && a_in.defined() && b_in.defined(), "where: undefined input");
  const Tensor a = on_device(a_in, cond.device()), b = on_device(b_in, cond.device());
  HF_CHECK(cond.dtype() == DType::kBool || cond.dtype() == DType::kU8,
           "where: condition must be "
           "bool or u8, got ",
           cond.str());
  HF_CHECK(cond.device() == a.device() && b.device() == a.device(),
           "where: inputs on different devices: ", cond.str(), ", ", a.str(), ", ", b.str());
  Shape shape =
      broadcast_shapes(broadcast_shapes(cond.sizes(), a.sizes(), "where"), b.sizes(), "where");
  DType t = promote(a.dtype(), b.dtype());
  Tensor out = empty(shape, t, a.device());
  backend_for(a.device())
      .where(expand(cond, shape), expand(to_dtype(a, t), shape), expand(to_dtype(b, t), shape),
             out);
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  HF_CHECK(broadcast_shapes(mask.sizes(), x.sizes(), "masked_fill") == x.sizes(),
           "masked_fill: "
           "mask ",
           mask.str(), " must broadcast to ", x.str());
  return where(mask, scalar(value, x.dtype(), x.device()), x);
}

}  // namespace hfrun::ops
