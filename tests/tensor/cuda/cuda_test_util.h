// Helpers for the CUDA tests: skip without a device, make identical inputs on any device, and
// compare a device result with the CPU reference by relative L2 error.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensor/ops.h"

// Every CUDA test starts with this: without a device (CI, a laptop) it skips with the reason.
#define HF_REQUIRE_CUDA()                                                          \
  do {                                                                             \
    if (::hfrun::cuda_device_count() == 0) GTEST_SKIP() << ::hfrun::cuda_status(); \
  } while (0)

namespace hfrun::testing {

inline Device cuda0() {
  return Device::cuda(0);
}

// A seeded normal tensor made on the CPU (f32, scaled, cast to dtype) and moved to `device`:
// the CPU and CUDA runs of a case see bitwise identical inputs.
inline Tensor make_input(const Shape& shape, uint64_t seed, Device device,
                         DType dtype = DType::kF32, double scale = 1.0, double shift = 0.0) {
  Generator gen(seed);
  Tensor t = ops::randn(shape, gen, DType::kF32, shift, scale);
  return ops::to_device(ops::to_dtype(t, dtype), device);
}

// ||got - want|| / ||want|| over all elements (0 when both are zero); NaN in the same places
// counts as equal, NaN in only one of them as an infinite error.
inline double rel_l2(const Tensor& got, const Tensor& want) {
  if (got.sizes() != want.sizes()) return std::numeric_limits<double>::infinity();
  const std::vector<float> g = got.to_vector(), w = want.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool gn = std::isnan(g[i]), wn = std::isnan(w[i]);
    if (gn || wn) {
      if (gn != wn) return std::numeric_limits<double>::infinity();
      continue;
    }
    const double d = static_cast<double>(g[i]) - w[i];
    num += d * d;
    den += static_cast<double>(w[i]) * w[i];
  }
  if (num == 0) return 0;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

}  // namespace hfrun::testing
