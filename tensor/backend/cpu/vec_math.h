// Branch-free float math and lane-split reductions that GCC vectorises without -ffast-math.
// The functions are always inlined: a call left out of line (GCC declines to inline them into
// some of the many kernel instantiations) keeps the whole loop scalar.
// libm's expf/tanhf are scalar calls; in GELU, softmax and cross-entropy they cost more than
// the memory traffic, so the kernels use these instead.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

namespace hfrun::cpu {

// Independent partial sums per reduction: one AVX-512 register of floats. A single accumulator
// is a serial dependency chain the compiler may not reorder (no -ffast-math).
constexpr int64_t kLanes = 16;

// exp(x), ~2 ulp (Cephes expf): x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial for
// e^r, and 2^n written into the exponent bits. Below -87.33 (e^x subnormal) it returns 0;
// above 88 it saturates at e^88; NaN stays NaN.
[[gnu::always_inline]] inline float exp_f(float x) {
  constexpr float kLo = -87.3365447504f, kHi = 88.0f;
  const bool underflow = x < kLo;
  x = x > kHi ? kHi : x;  // comparisons with NaN are false, so NaN passes through
  x = x < kLo ? kLo : x;
  // n = round(x / ln2) by the 1.5 * 2^23 trick (round to nearest, no library call).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 split in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // 2^n: n + 127 lands in the low mantissa bits of (2^23 + 127 + n); shifting them up by 23
  // puts them in the exponent field (n is in [-126, 127] here, so the field is 1..254).
  const uint32_t bits = std::bit_cast<uint32_t>(n + 8388735.0f) << 23;
  const float y = p * std::bit_cast<float>(bits);
  return underflow ? 0.0f : y;
}

// tanh(x), a few ulp: Cephes tanhf's odd polynomial for |x| < 0.625 (where 1 - 2/(e^2x + 1)
// would cancel), 1 - 2/(e^2|x| + 1) with the sign restored elsewhere. Both are computed and
// one selected, so the loop stays branch-free.
[[gnu::always_inline]] inline float tanh_f(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float z = x * x;
  float p = -5.70498872745e-3f;
  p = p * z + 2.06390887954e-2f;
  p = p * z - 5.37397155531e-2f;
  p = p * z + 1.33314422036e-1f;
  p = p * z - 3.33332819422e-1f;
  const float small = p * z * x + x;
  const float big_abs = 1.0f - 2.0f / (exp_f(2.0f * ax) + 1.0f);
  const float big = x < 0.0f ? -big_abs : big_abs;
  return ax < 0.625f ? small : big;
}

[[gnu::always_inline]] inline float sigmoid_f(float x) {
  return 1.0f / (1.0f + exp_f(-x));
}

// sum of f(i) for i in [0, n), with kLanes partial sums.
template <typename Fn>
inline float lane_sum(int64_t n, Fn&& f) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += f(i + l);
  }
  float s = 0.0f;
  for (; i < n; ++i) s += f(i);
  for (int64_t l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

// max of f(i) for i in [0, n) (-inf when n == 0; NaNs are skipped). An OpenMP simd max
// reduction: GCC leaves `v > m ? v : m` scalar (a compare and a cmov per element) even split
// into lanes by hand, as a vector select it is one compare and a masked move. Max is exact, so
// the lanes' order does not matter (but for the sign of a zero maximum, which no caller sees:
// x - m is the same for either zero).
template <typename Fn>
inline float lane_max(int64_t n, Fn&& f) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    const float v = f(i);
    m = v > m ? v : m;
  }
  return m;
}

}  // namespace hfrun::cpu
