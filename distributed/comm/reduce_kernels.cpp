#include "distributed/comm/reduce_kernels.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "tensor/dtype.h"

namespace hfrun::dist::detail {
namespace {

template <typename T>
void divide_by(T* p, int64_t count, T n) {
  for (int64_t i = 0; i < count; ++i) p[i] = static_cast<T>(p[i] / n);
}

}  // namespace

void divide_in_place(Tensor& t, int n) {
  HF_CHECK(n > 0, "avg: group size ", n, " is not positive");
  switch (t.dtype()) {
    case DType::kF32:
      return divide_by(static_cast<float*>(t.raw_data()), t.numel(), static_cast<float>(n));
    case DType::kI32:
      return divide_by(static_cast<int32_t*>(t.raw_data()), t.numel(), static_cast<int32_t>(n));
    case DType::kI64:
      return divide_by(static_cast<int64_t*>(t.raw_data()), t.numel(), static_cast<int64_t>(n));
    default:
      HF_THROW("avg: unsupported dtype ", dtype_name(t.dtype()));
  }
}

void bf16_sum_into(const uint16_t* a, uint16_t* b, size_t n) {
  for (size_t i = 0; i < n; ++i) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

// In blocks that fit in L1: every source's elements of a block are read before the block of
// `out` is written, so `out` may be one of the sources (any of them); each block is a few simple
// loops the compiler vectorises.
void sum_f32(const void* const* srcs, int p, float* out, size_t n, int divide) {
  constexpr size_t kBlock = 1024;
  float acc[kBlock];
  const float d = static_cast<float>(divide);
  for (size_t at = 0; at < n; at += kBlock) {
    const size_t m = std::min(kBlock, n - at);
    const float* a = static_cast<const float*>(srcs[0]) + at;
    const float* b = static_cast<const float*>(srcs[1]) + at;
    for (size_t i = 0; i < m; ++i) acc[i] = a[i] + b[i];
    for (int q = 2; q < p; ++q) {
      const float* c = static_cast<const float*>(srcs[q]) + at;
      for (size_t i = 0; i < m; ++i) acc[i] += c[i];
    }
    if (divide > 0) {
      for (size_t i = 0; i < m; ++i) acc[i] /= d;
    }
    std::memcpy(out + at, acc, m * sizeof(float));
  }
}

void sum2_f32(float* io, const float* other, float* copy, size_t n, int divide) {
  if (divide > 0) {
    const float d = static_cast<float>(divide);
    for (size_t i = 0; i < n; ++i) copy[i] = io[i] = (io[i] + other[i]) / d;
  } else {
    for (size_t i = 0; i < n; ++i) copy[i] = io[i] = io[i] + other[i];
  }
}

void sum2_bf16(uint16_t* io, const uint16_t* other, uint16_t* copy, size_t n) {
  for (size_t i = 0; i < n; ++i)
    copy[i] = io[i] = f32_to_bf16(bf16_to_f32(io[i]) + bf16_to_f32(other[i]));
}

void sum_bf16(const void* const* srcs, int p, uint16_t* out, size_t n, float* acc) {
  const auto* a = static_cast<const uint16_t*>(srcs[0]);
  const auto* b = static_cast<const uint16_t*>(srcs[1]);
  if (p == 2) {
    for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
    return;
  }
  for (size_t i = 0; i < n; ++i) acc[i] = bf16_to_f32(a[i]) + bf16_to_f32(b[i]);
  for (int q = 2; q < p; ++q) {
    const auto* c = static_cast<const uint16_t*>(srcs[q]);
    for (size_t i = 0; i < n; ++i) acc[i] += bf16_to_f32(c[i]);
  }
  for (size_t i = 0; i < n; ++i) out[i] = f32_to_bf16(acc[i]);
}

}  // namespace hfrun::dist::detail
