// Copies with casts, fills, seeded random fills, axpy/scale.
#include <algorithm>
#include <cmath>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/philox.h"

namespace hfrun::cpu {
namespace {

template <typename Dst, typename Src>
inline Dst convert(Src v) {
  if constexpr (std::is_same_v<Dst, Src>) {
    return v;
  } else if constexpr (std::is_same_v<Src, BFloat16> || std::is_same_v<Src, Float16> ||
                       std::is_same_v<Dst, BFloat16> || std::is_same_v<Dst, Float16>) {
    Dst out;
    float f = load(&v, 0);
    store(&out, 0, f);
    return out;
  } else {
    return static_cast<Dst>(v);
  }
}

}  // namespace

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  const bool to_bool = dst.dtype() == DType::kBool;
  dispatch_all(dst.dtype(), "copy", [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_all(src.dtype(), "copy", [&](auto st) {
      using S = typename decltype(st)::type;
      D* d = static_cast<D*>(dst.raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      strided_loop<2>(
          dst.sizes(), {dst.strides(), src.strides()},
          [&](std::array<int64_t, 2> off, int64_t n, std::array<int64_t, 2> inc) {
            D* dp = d + off[0];
            const S* sp = s + off[1];
            if (to_bool) {
              for (int64_t i = 0; i < n; ++i)
                dp[i * inc[0]] = convert<D>(load(sp, i * inc[1]) != 0.0f ? 1.0f : 0.0f);
            } else if (inc[0] == 1 && inc[1] == 1) {
              if constexpr (std::is_same_v<D, Float16> && std::is_same_v<S, float>) {
                f32_to_f16_n(sp, dp, n);
              } else if constexpr (std::is_same_v<D, float> && std::is_same_v<S, Float16>) {
                f16_to_f32_n(sp, dp, n);
              } else {
                for (int64_t i = 0; i < n; ++i) dp[i] = convert<D>(sp[i]);
              }
            } else {
              for (int64_t i = 0; i < n; ++i) dp[i * inc[0]] = convert<D>(sp[i * inc[1]]);
            }
          });
    });
  });
}

void CpuBackend::fill(Tensor& dst, double value) {
  dispatch_all(dst.dtype(), "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T v;
    if constexpr (std::is_same_v<T, BFloat16> || std::is_same_v<T, Float16>) {
      store(&v, 0, static_cast<float>(value));
    } else {
      v = static_cast<T>(value);
    }
    T* p = static_cast<T*>(dst.raw_data());
    parallel_for(dst.numel(), 1, [&](int64_t i) { p[i] = v; });
  });
}

void CpuBackend::fill_random(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset, double a,
                             double b) {
  // Element i uses Philox counter offset + i/4, word i%4 (normal: Box-Muller over a pair of
  // counters' words), so the values depend only on (seed, offset, i). The words come
  // kPhiloxBatch counters at a time, and a normal pair (cos for the even element, sin for the
  // odd one, over the same two words) takes one log and one sincos: glibc's sincos gives sin's
  // and cos's own results, so the values are those of one call each (about half the time of
  // computing each element on its own, the largest share of a model's initialisation).
  dispatch_float(dst.dtype(), "fill_random", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(dst.raw_data());
    const int64_t n = dst.numel();
    constexpr int64_t kBlock = 4 * kPhiloxBatch;
    // A normal draw costs ~20 elementwise ops' worth (a log, a sincos): threads from ~1.6k on.
    parallel_for((n + kBlock - 1) / kBlock, kind == RandomKind::kUniform ? kBlock : 20 * kBlock,
                 [=](int64_t blk) {
                   uint32_t r[kBlock];
                   philox4x32_batch(seed, offset + static_cast<uint64_t>(blk) * kPhiloxBatch, r);
                   const int64_t i0 = blk * kBlock, m = std::min(kBlock, n - i0);
                   T* out = p + i0;
                   if (kind == RandomKind::kUniform) {
                     for (int64_t e = 0; e < m; ++e) {
                       store(out, e, static_cast<float>(a + (b - a) * uint_to_unit_float(r[e])));
                     }
                     return;
                   }
                   for (int64_t e = 0; e < m; e += 2) {
                     const double u1 = (static_cast<double>(r[e]) + 1.0) / 4294967297.0;
                     const double u2 = static_cast<double>(r[e + 1]) / 4294967296.0;
                     const double rad = std::sqrt(-2.0 * std::log(u1));
                     double sin_v, cos_v;
                     ::sincos(2 * M_PI * u2, &sin_v, &cos_v);
                     store(out, e, static_cast<float>(a + b * (rad * cos_v)));
                     if (e + 1 < m) store(out, e + 1, static_cast<float>(a + b * (rad * sin_v)));
                   }
                 });
  });
}

void CpuBackend::axpy(Tensor& dst, const Tensor& src, double alpha) {
  dispatch_float(dst.dtype(), "add_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = static_cast<T*>(dst.raw_data());
    const T* s = static_cast<const T*>(src.raw_data());
    const float al = static_cast<float>(alpha);
    if constexpr (std::is_same_v<T, float>) {
      parallel_for(dst.numel(), 1, [&](int64_t i) { d[i] += al * s[i]; });
    } else {
      parallel_for(dst.numel(), 1, [&](int64_t i) { store(d, i, load(d, i) + al * load(s, i)); });
    }
  });
}

void CpuBackend::scale(Tensor& dst, double alpha) {
  dispatch_float(dst.dtype(), "scale_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = static_cast<T*>(dst.raw_data());
    const float al = static_cast<float>(alpha);
    parallel_for(dst.numel(), 1, [&](int64_t i) { store(d, i, load(d, i) * al); });
  });
}

}  // namespace hfrun::cpu
