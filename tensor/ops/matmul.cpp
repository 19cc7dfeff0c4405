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

Tensor matmul(const Tensor& a, const Tensor& b, const Tensor& bias,
              std::optional<DType> out_dtype) {
  HF_CHECK(a.defined() && b.defined(), "matmul: undefined input");
  HF_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dims",
           operands(a, b));
  HF_CHECK(a.device() == b.device(), "matmul: operands on different devices", operands(a, b));
  HF_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ", operands(a, b));
  HF_CHECK(is_floating(a.dtype()), "matmul: expected floating operands", operands(a, b));
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  HF_CHECK(b.size(-2) == k, "matmul: inner dims differ (K = ", k, " vs ", b.size(-2), ")",
           operands(a, b));

  // Batch dims broadcast NumPy-style (right-aligned; size 1 or missing dims stretch).
  const Shape a_batch(a.sizes().begin(), a.sizes().end() - 2);
  const Shape b_batch(b.sizes().begin(), b.sizes().end() - 2);
  const size_t nb = std::max(a_batch.size(), b_batch.size());
  Shape batch(nb);
  for (size_t i = 0; i < nb; ++i) {
    const int64_t da = i + a_batch.size() >= nb ? a_batch[i + a_batch.size() - nb] : 1;
    const int64_t db = i + b_batch.size() >= nb ? b_batch[i + b_batch.size() - nb] : 1;
    HF_CHECK(da == db || da == 1 || db == 1, "matmul: batch dims do not broadcast", operands(a, b));
    batch[i] = da == 1 ? db : da;
  }

  const DType out_t = out_dtype.value_or(a.dtype());
  HF_CHECK(out_dtype_ok(a.dtype(), out_t), "matmul: cannot write ", dtype_name(out_t), " from ",
           dtype_name(a.dtype()),
           " operands (f32 -> f32; bf16/f16 -> f32 or the "
           "input dtype)",
           operands(a, b));
  Tensor bias_c;
  if (bias.defined()) {
    HF_CHECK(bias.dim() == 1 && bias.size(0) == n, "matmul: bias ", bias.str(), " must be [", n,
             "]", operands(a, b));
    HF_CHECK(bias.dtype() == DType::kF32 || bias.dtype() == a.dtype(), "matmul: bias ", bias.str(),
             " must be f32 or the operands' dtype", operands(a, b));
    HF_CHECK(bias.device() == a.device(), "matmul: bias ", bias.str(), " on another device",
             operands(a, b));
    bias_c = contiguous(bias);
  }

  Shape out_shape = batch;
  out_shape.insert(out_shape.end(), {m, n});
  Tensor out = empty(out_shape, out_t, a.device());
  if (out.numel() == 0) return out;
  if (k == 0) {
    // An empty sum: zeros, plus the bias when there is one.
    if (bias_c.defined()) {
      copy_(out, bias_c);
    } else {
      fill_(out, 0.0);
    }
    return out;
  }
  Shape a_shape = batch, b_shape = batch;
  a_shape.insert(a_shape.end(), {m, k});
  b_shape.insert(b_shape.end(), {k, n});
  backend_for(a.device()).matmul(expand(a, a_shape), expand(b, b_shape), bias_c, out);
  return out;
}

}  // namespace hfrun::ops
