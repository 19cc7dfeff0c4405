// The loop shared by the optimizer updates: one pass over a parameter, its gradient and its
// (contiguous) state buffers, element by element. Contiguous parameter and gradient (the flat
// buffer case) are split into chunks across threads with a simd inner loop; other layouts go
// through the strided iterator. Internal to optim/ (included by .cpp files only).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "tensor/backend/cpu/loops.h"
#include "tensor/tensor.h"

namespace hfrun::optim::detail {

constexpr int64_t kChunk = 1 << 14;

// a * b + c rounded once, where torch's vectorised kernels round once: add(x, y, alpha) is
// fmadd(y, alpha, x) and addcmul's last multiply-add is contracted. Builds without FMA
// instructions (HFRUN_NATIVE=OFF) round twice rather than call libm's software fma.
inline float madd(float a, float b, float c) {
#ifdef __FMA__
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// Calls elem(ip, ig, is) for every element: ip / ig are element offsets into the parameter's
// and gradient's data(), is into each state buffer's (contiguous, the parameter's shape).
template <typename Elem>
void for_each_element(const Tensor& param, const Tensor& grad, Elem&& elem) {
  const int64_t n = param.numel();
  if (param.is_contiguous() && grad.is_contiguous()) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    cpu::parallel_for(chunks, kChunk, [&](int64_t c) {
      const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) elem(i, i, i);
    });
    return;
  }
  const Shape contiguous = contiguous_strides(param.sizes());
  cpu::strided_loop<3>(
      param.sizes(), {param.strides(), grad.strides(), contiguous},
      [&](const std::array<int64_t, 3>& off, int64_t count, const std::array<int64_t, 3>& st) {
        for (int64_t j = 0; j < count; ++j) {
          elem(off[0] + j * st[0], off[1] + j * st[1], off[2] + j * st[2]);
        }
      });
}

}  // namespace hfrun::optim::detail
