// Loop helpers for CPU kernels: dtype load/store through f32, a parallel-for that stays serial
// for small sizes, and an N-operand strided iterator that merges contiguous dims.
#pragma once

#include <omp.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <type_traits>

#include "tensor/dtype.h"
#include "tensor/shape.h"

namespace hfrun::cpu {

// A grow-only buffer of at least `bytes` per thread and Tag (each Tag type has its own), 64-byte
// aligned for vector loads; kept for the thread's life.
template <typename Tag>
void* thread_buffer(size_t bytes) {
  struct Buffer {
    void* ptr = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(ptr); }
  };
  thread_local Buffer buf;
  if (bytes > buf.size) {
    std::free(buf.ptr);
    const size_t rounded = (bytes + 63) / 64 * 64;
    buf.ptr = std::aligned_alloc(64, rounded);
    buf.size = buf.ptr != nullptr ? rounded : 0;
    if (buf.ptr == nullptr) throw std::bad_alloc();
  }
  return buf.ptr;
}

// Below this many elements, threading costs more than it saves.
constexpr int64_t kParallelGrain = 1 << 15;

template <typename Fn>
void parallel_for(int64_t n, int64_t cost_per_item, Fn&& fn) {
  if (n * cost_per_item < kParallelGrain || omp_get_max_threads() == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

// Element type <-> float used for arithmetic. Half types are stored as uint16_t.
template <typename T>
inline float load(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}
template <typename T>
inline void store(T* p, int64_t i, float v) {
  p[i] = static_cast<T>(v);
}
template <>
inline float load<BFloat16>(const BFloat16* p, int64_t i) {
  return bf16_to_f32(p[i].bits);
}
template <>
inline void store<BFloat16>(BFloat16* p, int64_t i, float v) {
  p[i].bits = f32_to_bf16(v);
}
// f16 <-> f32 by the CPU's F16C instructions where the build has them (one instruction, the
// same round-to-nearest-even results as the portable f16_to_f32 / f32_to_f16; only a NaN's
// payload bits may differ), else by those portable functions.
template <>
inline float load<Float16>(const Float16* p, int64_t i) {
#if defined(__F16C__)
  return _cvtsh_ss(p[i].bits);
#else
  return f16_to_f32(p[i].bits);
#endif
}
template <>
inline void store<Float16>(Float16* p, int64_t i, float v) {
#if defined(__F16C__)
  // _mm_cvtps_ph rather than _cvtss_sh, whose clang macro is a C99 compound literal.
  p[i].bits = static_cast<uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0));
#else
  p[i].bits = f32_to_f16(v);
#endif
}

// v rounded to T, as a composed op's stored result is (identity for f32): fused kernels that
// stand for several ops round each intermediate the way those ops store it.
template <typename T>
inline float round_to(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return round_to_bf16(v);
  } else {
    T t;
    store(&t, 0, v);
    return load(&t, 0);
  }
}

// Contiguous f32 -> f16 and f16 -> f32, 8 at a time with F16C.
inline void f32_to_f16_n(const float* s, Float16* d, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
  }
#endif
  for (; i < n; ++i) store(d, i, s[i]);
}
inline void f16_to_f32_n(const Float16* s, float* d, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) d[i] = load(s, i);
}

// Calls fn(std::array<int64_t, N> offsets, int64_t count, std::array<int64_t, N> inner_strides)
// once per innermost row of `shape` (or per piece of a long one), with element offsets into
// each operand. Dims that are contiguous across all operands are merged first so the inner
// rows are as long as possible; fn must treat its calls as independent runs of elements.
template <size_t N, typename Fn>
void strided_loop(const Shape& shape, const std::array<Shape, N>& strides, Fn&& fn) {
  // Coalesce: drop size-1 dims, merge i with i+1 when stride_i == stride_{i+1} * size_{i+1}.
  Shape sz;
  std::array<Shape, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sz.empty()) {
      bool merge = true;
      for (size_t k = 0; k < N; ++k) merge = merge && st[k].back() == strides[k][d] * shape[d];
      if (merge) {
        sz.back() *= shape[d];
        for (size_t k = 0; k < N; ++k) st[k].back() = strides[k][d];
        continue;
      }
    }
    sz.push_back(shape[d]);
    for (size_t k = 0; k < N; ++k) st[k].push_back(strides[k][d]);
  }
  if (shape_numel(shape) == 0) return;
  if (sz.empty()) {
    sz.push_back(1);
    for (size_t k = 0; k < N; ++k) st[k].push_back(0);
  }
  const int64_t rank = static_cast<int64_t>(sz.size());
  const int64_t inner = sz.back();
  std::array<int64_t, N> inner_st;
  for (size_t k = 0; k < N; ++k) inner_st[k] = st[k].back();
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < rank; ++d) rows *= sz[d];
  // Few long rows (a contiguous tensor is one) are cut into pieces, or one thread would do
  // all the work; a piece is a multiple of 64 elements so vector stores stay aligned.
  int64_t piece = inner;
  const int64_t threads = omp_get_max_threads();
  if (threads > 1 && rows < 4 * threads && inner >= 2 * kParallelGrain) {
    const int64_t target = std::max(kParallelGrain, inner / (4 * threads));
    piece = (target + 63) / 64 * 64;
  }
  const int64_t per_row = (inner + piece - 1) / piece;
  parallel_for(rows * per_row, std::min(piece, inner), [&](int64_t item) {
    std::array<int64_t, N> off{};
    int64_t r = item / per_row;
    const int64_t lo = (item % per_row) * piece;
    for (int64_t d = rank - 2; d >= 0; --d) {
      int64_t idx = r % sz[d];
      r /= sz[d];
      for (size_t k = 0; k < N; ++k) off[k] += idx * st[k][d];
    }
    for (size_t k = 0; k < N; ++k) off[k] += lo * inner_st[k];
    fn(off, std::min(piece, inner - lo), inner_st);
  });
}

}  // namespace hfrun::cpu
