// Rotary position embedding (rotate-half form) in one pass over x, cos and sin: the composed
// form (two multiplies, a negation, a concatenation and an add, each a pass of its own, twice
// per attention layer and again in the backward) rounded the same way, step by step.
#include <cstdint>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/ops.h"

namespace hfrun::cpu {

Tensor CpuBackend::rotary(const Tensor& x, const Tensor& cos, const Tensor& sin, bool backward) {
  const int64_t dims = x.dim();
  if (dims < 2 || x.size(-1) % 2 != 0 || x.stride(-1) != 1 || !cos.is_contiguous() ||
      !sin.is_contiguous() || cos.dtype() != x.dtype() || sin.dtype() != x.dtype() ||
      cos.dim() != 2 || cos.sizes() != sin.sizes() || cos.size(0) != x.size(-2) ||
      cos.size(1) != x.size(-1) ||
      !(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16 || x.dtype() == DType::kF16)) {
    return Tensor();
  }
  Tensor y = ops::empty(x.sizes(), x.dtype(), x.device());
  const int64_t D = x.size(-1), half = D / 2, T = x.size(-2);
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  const Shape& sizes = x.sizes();
  const Shape& strides = x.strides();
  dispatch_float(x.dtype(), "rotary", [&](auto tag) {
    using E = typename decltype(tag)::type;
    const E* xp = x.data<E>();
    const E* cp = cos.data<E>();
    const E* sp = sin.data<E>();
    E* yp = y.data<E>();
    parallel_for(rows, D * 4, [&](int64_t r) {
      // Row r's offset in x (its leading indices, the last of them t).
      int64_t rest = r, off = 0;
      for (int64_t d = dims - 2; d >= 0; --d) {
        off += (rest % sizes[d]) * strides[d];
        rest /= sizes[d];
      }
      const int64_t t = r % T;
      const E* xr = xp + off;
      const E* c = cp + t * D;
      const E* s = sp + t * D;
      E* yr = yp + r * D;
      // Forward: [a c1 - b s1, b c2 + a s2]. Backward, x c - rotate_half(x s): [a c1 + b s2,
      // b c2 - a s1]. The sign of the second product: -1 / +1 forward, +1 / -1 backward.
      const float first = backward ? 1.0f : -1.0f;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = load(xr, i), b = load(xr, i + half);
        const float ac = round_to<E>(a * load(c, i)), bc = round_to<E>(b * load(c, i + half));
        const float s1 = load(s, i), s2 = load(s, i + half);
        const float p1 = round_to<E>(b * (backward ? s2 : s1));
        const float p2 = round_to<E>(a * (backward ? s1 : s2));
        store(yr, i, ac + first * p1);
        store(yr, i + half, bc - first * p2);
      }
    });
  });
  return y;
}

}  // namespace hfrun::cpu
