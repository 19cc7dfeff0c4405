// matmul: a [..., M, K] @ b [..., K, N] (+ bias [N]) -> [..., M, N]. Validation, dtype rule and
// batch broadcasting here; the backend sees both operands expanded (stride 0, no copy) to the
// output's batch dims and chooses how to run them.
#include <algorithm>
#include <string>

#include "tensor/backend.h"
#include "tensor/ops.h"

namespace hfrun::ops {
namespace {

// "matmul: <what> (a f32[2, 3], b f32[4, 5])": every message names both operands.
std::string operands(const Tensor& a, const Tensor& b) {
  return detail::concat(" (a ", a.str(), ", b ", b.str(), ")");
}

// bf16/f16 inputs accumulate in f32 and may write f32 or their own dtype; f32 writes f32.
bool out_dtype_ok(DType in, DType out) {
  return out == DType::kF32 || out == in;
}

}  // namespace

namespace {

// The checked shape of a matmul: broadcast batch dims, sizes, output dtype, contiguous bias.
struct MatmulShape {
  Shape batch;
  int64_t m = 0, k = 0, n = 0;
  DType out_t = DType::kF32;
  Tensor bias_c;
};

MatmulShape check_matmul(const Tensor& a, const Tensor& b, const Tensor& bias,
                         std::optional<DType> out_dtype) {
  HF_CHECK(a.defined() && b.defined(), "matmul: undefined input");
  HF_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dims",
           operands(a, b));
  HF_CHECK(a.device() == b.device(), "matmul: operands on different devices", operands(a, b));
  HF_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ", operands(a, b));
  HF_CHECK(is_floating(a.dtype()), "matmul: expected floating operands", operands(a, b));
  MatmulShape r;
  r.m = a.size(-2);
  r.k = a.size(-1);
  r.n = b.size(-1);
  HF_CHECK(b.size(-2) == r.k, "matmul: inner dims differ (K = ", r.k, " vs ", b.size(-2), ")",
           operands(a, b));

  // Batch dims broadcast NumPy-style (right-aligned; size 1 or missing dims stretch).
  const Shape a_batch(a.sizes().begin(), a.sizes().end() - 2);
  const Shape b_batch(b.sizes().begin(), b.sizes().end() - 2);
  const size_t nb = std::max(a_batch.size(), b_batch.size());
  r.batch.resize(nb);
  for (size_t i = 0; i < nb; ++i) {
    const int64_t da = i + a_batch.size() >= nb ? a_batch[i + a_batch.size() - nb] : 1;
    const int64_t db = i + b_batch.size() >= nb ? b_batch[i + b_batch.size() - nb] : 1;
    HF_CHECK(da == db || da == 1 || db == 1, "matmul: batch dims do not broadcast", operands(a, b));
    r.batch[i] = da == 1 ? db : da;
  }

  r.out_t = out_dtype.value_or(a.dtype());
  HF_CHECK(out_dtype_ok(a.dtype(), r.out_t), "matmul: cannot write ", dtype_name(r.out_t), " from ",
           dtype_name(a.dtype()),
           " operands (f32 -> f32; bf16/f16 -> f32 or the "
           "input dtype)",
           operands(a, b));
  if (bias.defined()) {
    HF_CHECK(bias.dim() == 1 && bias.size(0) == r.n, "matmul: bias ", bias.str(), " must be [", r.n,
             "]", operands(a, b));
    HF_CHECK(bias.dtype() == DType::kF32 || bias.dtype() == a.dtype(), "matmul: bias ", bias.str(),
             " must be f32 or the operands' dtype", operands(a, b));
    HF_CHECK(bias.device() == a.device(), "matmul: bias ", bias.str(), " on another device",
             operands(a, b));
    r.bias_c = contiguous(bias);
  }
  return r;
}

// The result of a matmul with K = 0: the bias broadcast over the rows, or zeros.
void empty_sum(Tensor& out, const Tensor& bias_c) {
  if (bias_c.defined()) {
    copy_(out, bias_c);
  } else {
    fill_(out, 0.0);
  }
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias,
              std::optional<DType> out_dtype) {
  const MatmulShape ms = check_matmul(a, b, bias, out_dtype);
  Shape out_shape = ms.batch;
  out_shape.insert(out_shape.end(), {ms.m, ms.n});
  Tensor out = empty(out_shape, ms.out_t, a.device());
  if (out.numel() == 0) return out;
  if (ms.k == 0) {
    empty_sum(out, ms.bias_c);
    return out;
  }
  Shape a_shape = ms.batch, b_shape = ms.batch;
  a_shape.insert(a_shape.end(), {ms.m, ms.k});
  b_shape.insert(b_shape.end(), {ms.k, ms.n});
  backend_for(a.device()).matmul(expand(a, a_shape), expand(b, b_shape), ms.bias_c, out);
  return out;
}

namespace {

// The operands of matmul_add_ and matmul_into_ (`what` names the call; `bf16_out`: a bf16 out
// of bf16 operands is taken too).
void check_into(const char* what, const Tensor& out, const Tensor& a, const Tensor& b,
                bool bf16_out = false) {
  HF_CHECK(
      a.defined() && b.defined() && out.defined() && a.dim() == 2 && b.dim() == 2 && out.dim() == 2,
      what, ": a [M, K], b [K, N] and out [M, N] must be defined and 2-D");
  HF_CHECK(a.size(1) == b.size(0) && out.size(0) == a.size(0) && out.size(1) == b.size(1), what,
           ": ", out.str(), " from ", a.str(), " @ ", b.str(), ": shapes do not match");
  const bool out_ok = out.dtype() == DType::kF32 ||
                      (bf16_out && out.dtype() == DType::kBF16 && a.dtype() == DType::kBF16);
  HF_CHECK(out_ok && out.is_contiguous() && a.dtype() == b.dtype() && is_floating(a.dtype()), what,
           ": ", out.str(), " from ", a.str(), " @ ", b.str(), ": a contiguous f32 destination",
           bf16_out ? " (or bf16, from bf16 operands)" : "", " and floating operands of one dtype");
  HF_CHECK(a.device() == out.device() && b.device() == out.device(), what, ": ", a.str(), ", ",
           b.str(), " and ", out.str(), " must be on one device");
}

}  // namespace

void matmul_add_(Tensor& out, const Tensor& a, const Tensor& b) {
  check_into("matmul_add_", out, a, b, /*bf16_out=*/true);
  if (out.numel() == 0 || a.size(1) == 0) return;
  backend_for(out.device()).matmul_add(a, b, out);
}

void matmul_into_(Tensor& out, const Tensor& a, const Tensor& b) {
  check_into("matmul_into_", out, a, b);
  if (out.numel() == 0) return;
  if (a.size(1) == 0) {
    fill_(out, 0.0);
    return;
  }
  backend_for(out.device()).matmul(a, b, Tensor(), out);
}

// pre = a @ b + bias, out = gelu_tanh(pre), both out_dtype; one GEMM with a GELU epilogue where
// the backend has it.
MatmulGeluResult matmul_gelu(const Tensor& a, const Tensor& b, const Tensor& bias,
                             std::optional<DType> out_dtype) {
  const MatmulShape ms = check_matmul(a, b, bias, out_dtype);
  HF_CHECK(a.dim() == 2 && b.dim() == 2, "matmul_gelu: a [M, K] and b [K, N] must be 2-D",
           operands(a, b));
  MatmulGeluResult r;
  r.out = empty({ms.m, ms.n}, ms.out_t, a.device());
  r.pre = empty({ms.m, ms.n}, ms.out_t, a.device());
  if (r.out.numel() == 0) return r;
  if (ms.k == 0) {
    empty_sum(r.pre, ms.bias_c);
    r.out = unary(UnaryOp::kGeluTanh, r.pre);
    return r;
  }
  backend_for(a.device()).matmul_gelu(a, b, ms.bias_c, r.out, r.pre);
  return r;
}

}  // namespace hfrun::ops
