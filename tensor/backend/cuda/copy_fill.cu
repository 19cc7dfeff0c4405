// Same-device copies with casts (any dtype pair, any strides, stride-0 broadcast sources), fills,
// Philox random fills, axpy/scale and dropout. Random values and dropout masks come from the
// same Philox-4x32-10 counters as the CPU backend (tensor/random.cpp): element i uses counter
// offset + i/4, word i%4, so a tensor initialised on either device holds the same values. The
// double-precision steps use explicit round-to-nearest intrinsics (no fused multiply-add), as the
// host code compiles; only log/sin/cos may differ from glibc in the last bit of a double, which
// survives the rounding to f32 with a probability of about 2^-28 per element.
#include <cmath>

#include "tensor/backend/cuda/kernels.cuh"
#include "tensor/random.h"

namespace hfrun::cuda {
namespace {

// ---- copy ---------------------------------------------------------------------------------------
template <typename D, typename S, bool kToBool>
__device__ __forceinline__ D convert(S v) {
  if constexpr (kToBool) {
    return static_cast<D>(to_f32(v) != 0.0f);
  } else if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (kIsHalf<D> || kIsHalf<S>) {
    return from_f32<D>(to_f32(v));
  } else {
    return static_cast<D>(v);
  }
}

template <typename D, typename S, bool kToBool>
__global__ void copy_contiguous_kernel(D* __restrict__ d, const S* __restrict__ s, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    d[i] = convert<D, S, kToBool>(s[i]);
  }
}

// Four elements per thread through one vector load and store each (both sides aligned to four
// elements): the casts around every mixed-precision GEMM are bandwidth-bound.
template <typename T>
struct alignas(sizeof(T) * 4) Vec4 {
  T v[4];
};

template <typename D, typename S, bool kToBool>
__global__ void copy_contiguous_vec4_kernel(D* __restrict__ d, const S* __restrict__ s,
                                            int64_t n4) {
  HF_GRID_STRIDE(i, n4) {
    const Vec4<S> a = reinterpret_cast<const Vec4<S>*>(s)[i];
    Vec4<D> b;
#pragma unroll
    for (int e = 0; e < 4; ++e) b.v[e] = convert<D, S, kToBool>(a.v[e]);
    reinterpret_cast<Vec4<D>*>(d)[i] = b;
  }
}

template <typename D, typename S, bool kToBool>
__global__ void copy_strided_kernel(D* d, const S* s, StridedIndexer<2> ix, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    int64_t off[2];
    ix.offsets(i, off);
    d[off[0]] = convert<D, S, kToBool>(s[off[1]]);
  }
}

// ---- fill ---------------------------------------------------------------------------------------
template <typename T>
__global__ void fill_kernel(T* __restrict__ p, T v, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    p[i] = v;
  }
}

template <typename T>
T host_value(double value) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __float2bfloat16_rn(static_cast<float>(value));
  } else if constexpr (std::is_same_v<T, f16>) {
    return __float2half_rn(static_cast<float>(value));
  } else {
    return static_cast<T>(value);
  }
}

// ---- Philox-4x32-10, as philox4x32() in tensor/random.cpp ---------------------------------------
__device__ __forceinline__ uint4 philox(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const uint32_t hi1 = __umulhi(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return make_uint4(c0, c1, c2, c3);
}

__device__ __forceinline__ uint32_t word(const uint4& r, int j) {
  return j == 0 ? r.x : (j == 1 ? r.y : (j == 2 ? r.z : r.w));
}

// uint_to_unit_float (tensor/random.h): 24 random bits scaled into [0, 1).
__device__ __forceinline__ float unit_float(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

template <typename T, bool kNormal>
__global__ void fill_random_kernel(T* __restrict__ p, int64_t n, uint64_t seed, uint64_t offset,
                                   double a, double b) {
  const int64_t blocks = (n + 3) / 4;
  HF_GRID_STRIDE(blk, blocks) {
    const uint4 r = philox(seed, offset + static_cast<uint64_t>(blk));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = blk * 4 + j;
      if (i >= n) break;
      float v;
      if constexpr (!kNormal) {
        v = __double2float_rn(
            __dadd_rn(a, __dmul_rn(__dsub_rn(b, a), static_cast<double>(unit_float(word(r, j))))));
      } else {
        // Box-Muller on words (j & ~1, j | 1): cos for even j, sin for odd j.
        const double u1 =
            __ddiv_rn(__dadd_rn(static_cast<double>(word(r, j & ~1)), 1.0), 4294967297.0);
        const double u2 = __ddiv_rn(static_cast<double>(word(r, j | 1)), 4294967296.0);
        const double rad = __dsqrt_rn(__dmul_rn(-2.0, log(u1)));
        const double angle = __dmul_rn(2.0 * M_PI, u2);
        const double z = __dmul_rn(rad, (j & 1) ? sin(angle) : cos(angle));
        v = __double2float_rn(__dadd_rn(a, __dmul_rn(b, z)));
      }
      p[i] = from_f32<T>(v);
    }
  }
}

// ---- axpy, scale, dropout -----------------------------------------------------------------------
template <typename T>
__global__ void axpy_kernel(T* __restrict__ d, const T* __restrict__ s, float alpha, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    d[i] = from_f32<T>(to_f32(d[i]) + alpha * to_f32(s[i]));
  }
}

template <typename T>
__global__ void scale_kernel(T* __restrict__ d, float alpha, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    d[i] = from_f32<T>(to_f32(d[i]) * alpha);
  }
}

template <typename T>
__global__ void dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, float p,
                               float keep_scale, uint64_t seed) {
  const int64_t blocks = (n + 3) / 4;
  HF_GRID_STRIDE(blk, blocks) {
    const uint4 r = philox(seed, static_cast<uint64_t>(blk));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = blk * 4 + j;
      if (i >= n) break;
      const bool keep = unit_float(word(r, j)) >= p;
      y[i] = from_f32<T>(keep ? to_f32(x[i]) * keep_scale : 0.0f);
    }
  }
}

}  // namespace

void CudaBackend::copy_on_device(const Tensor& src, Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device());
  cudaStream_t stream = current_stream();
  const bool to_bool = dst.dtype() == DType::kBool && src.dtype() != DType::kBool;
  const auto ix = make_indexer<2>(dst.sizes(), {&dst.strides(), &src.strides()}, "copy");
  dispatch_all(dst.dtype(), "copy", [&](auto dt) {
    using D = typename decltype(dt)::type;
    dispatch_all(src.dtype(), "copy", [&](auto st) {
      using S = typename decltype(st)::type;
      D* d = static_cast<D*>(dst.raw_data());
      const S* s = static_cast<const S*>(src.raw_data());
      auto launch = [&](auto to_bool_c) {
        constexpr bool kToBool = decltype(to_bool_c)::value;
        const bool aligned = reinterpret_cast<uintptr_t>(d) % (4 * sizeof(D)) == 0 &&
                             reinterpret_cast<uintptr_t>(s) % (4 * sizeof(S)) == 0;
        if (ix.all_contiguous() && aligned && n >= 4) {
          const int64_t n4 = n / 4;
          copy_contiguous_vec4_kernel<D, S, kToBool>
              <<<grid_for(n4), kThreads, 0, stream>>>(d, s, n4);
          if (n > 4 * n4) {
            copy_contiguous_kernel<D, S, kToBool>
                <<<1, kThreads, 0, stream>>>(d + 4 * n4, s + 4 * n4, n - 4 * n4);
          }
        } else if (ix.all_contiguous()) {
          copy_contiguous_kernel<D, S, kToBool><<<grid_for(n), kThreads, 0, stream>>>(d, s, n);
        } else {
          copy_strided_kernel<D, S, kToBool><<<grid_for(n), kThreads, 0, stream>>>(d, s, ix, n);
        }
      };
      if constexpr (std::is_same_v<D, uint8_t>) {
        if (to_bool) {
          launch(std::true_type{});
          return;
        }
      }
      launch(std::false_type{});
    });
  });
  HF_CUDA_CHECK_LAUNCH("copy", src.str(), " -> ", dst.str());
}

void CudaBackend::fill(Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device());
  dispatch_all(dst.dtype(), "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T v = host_value<T>(value);
    fill_kernel<T>
        <<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<T*>(dst.raw_data()), v, n);
  });
  HF_CUDA_CHECK_LAUNCH("fill", dst.str(), " with ", value);
}

void CudaBackend::fill_random(Tensor& dst, RandomKind kind, uint64_t seed, uint64_t offset,
                              double a, double b) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device());
  dispatch_float(dst.dtype(), "fill_random", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* p = static_cast<T*>(dst.raw_data());
    const unsigned grid = grid_for((n + 3) / 4);
    if (kind == RandomKind::kUniform) {
      fill_random_kernel<T, false>
          <<<grid, kThreads, 0, current_stream()>>>(p, n, seed, offset, a, b);
    } else {
      fill_random_kernel<T, true>
          <<<grid, kThreads, 0, current_stream()>>>(p, n, seed, offset, a, b);
    }
  });
  HF_CUDA_CHECK_LAUNCH("fill_random", dst.str(), " seed ", seed, " offset ", offset);
}

void CudaBackend::axpy(Tensor& dst, const Tensor& src, double alpha) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device());
  dispatch_float(dst.dtype(), "add_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    axpy_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(
        static_cast<T*>(dst.raw_data()), static_cast<const T*>(src.raw_data()),
        static_cast<float>(alpha), n);
  });
  HF_CUDA_CHECK_LAUNCH("add_", dst.str(), " += ", alpha, " * ", src.str());
}

void CudaBackend::scale(Tensor& dst, double alpha) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceGuard guard(dst.device());
  dispatch_float(dst.dtype(), "scale_", [&](auto tag) {
    using T = typename decltype(tag)::type;
    scale_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<T*>(dst.raw_data()),
                                                                    static_cast<float>(alpha), n);
  });
  HF_CUDA_CHECK_LAUNCH("scale_", dst.str(), " *= ", alpha);
}

void CudaBackend::dropout(const Tensor& x, double p, uint64_t seed, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device());
  const float keep_scale = static_cast<float>(1.0 / (1.0 - p));
  dispatch_float(x.dtype(), "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_kernel<T><<<grid_for((n + 3) / 4), kThreads, 0, current_stream()>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), n,
        static_cast<float>(p), keep_scale, seed);
  });
  HF_CUDA_CHECK_LAUNCH("dropout", x.str(), " p ", p, " seed ", seed);
}

}  // namespace hfrun::cuda
