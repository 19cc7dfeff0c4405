// Unary (forward and backward), pow, binary ops over strided/broadcast operands, and where.
// Formulas are the CPU backend's (tensor/backend/cpu/elementwise.cpp) with CUDA's libm in f32.
#include <cmath>

#include "tensor/backend/cuda/kernels.cuh"

namespace hfrun::cuda {
namespace {

using ops::UnaryOp;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

__device__ __forceinline__ float sigmoid_f(float x) {
  return 1.0f / (1.0f + expf(-x));
}

template <UnaryOp kOp>
__device__ __forceinline__ float unary_f(float x) {
  if constexpr (kOp == UnaryOp::kNeg) return -x;
  if constexpr (kOp == UnaryOp::kExp) return expf(x);
  if constexpr (kOp == UnaryOp::kLog) return logf(x);
  if constexpr (kOp == UnaryOp::kTanh) return tanhf(x);
  if constexpr (kOp == UnaryOp::kSqrt) return sqrtf(x);
  if constexpr (kOp == UnaryOp::kRsqrt) return 1.0f / sqrtf(x);
  if constexpr (kOp == UnaryOp::kSigmoid) return sigmoid_f(x);
  if constexpr (kOp == UnaryOp::kRelu) return x > 0.0f ? x : 0.0f;
  if constexpr (kOp == UnaryOp::kSilu) return x * sigmoid_f(x);
  if constexpr (kOp == UnaryOp::kGelu) return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  if constexpr (kOp == UnaryOp::kGeluTanh) {
    return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
  }
  if constexpr (kOp == UnaryOp::kAbs) return fabsf(x);
  if constexpr (kOp == UnaryOp::kSquare) return x * x;
  return 0.0f;
}

// dy/dx given x and y = f(x).
template <UnaryOp kOp>
__device__ __forceinline__ float unary_grad_f(float x, float y) {
  if constexpr (kOp == UnaryOp::kNeg) return -1.0f;
  if constexpr (kOp == UnaryOp::kExp) return y;
  if constexpr (kOp == UnaryOp::kLog) return 1.0f / x;
  if constexpr (kOp == UnaryOp::kTanh) return 1.0f - y * y;
  if constexpr (kOp == UnaryOp::kSqrt) return 0.5f / y;
  if constexpr (kOp == UnaryOp::kRsqrt) return -0.5f * y * y * y;
  if constexpr (kOp == UnaryOp::kSigmoid) return y * (1.0f - y);
  if constexpr (kOp == UnaryOp::kRelu) return x > 0.0f ? 1.0f : 0.0f;
  if constexpr (kOp == UnaryOp::kSilu) {
    const float s = sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
  }
  if constexpr (kOp == UnaryOp::kGelu) {
    return 0.5f * (1.0f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
  }
  if constexpr (kOp == UnaryOp::kGeluTanh) {
    const float inner = kSqrt2OverPi * (x + 0.044715f * x * x * x);
    const float t = tanhf(inner);
    const float dinner = kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dinner;
  }
  if constexpr (kOp == UnaryOp::kAbs) return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
  if constexpr (kOp == UnaryOp::kSquare) return 2.0f * x;
  return 0.0f;
}

template <typename Fn>
void dispatch_unary(UnaryOp op, Fn&& fn) {
  switch (op) {
#define HF_CASE(name) \
  case UnaryOp::name: \
    return fn(std::integral_constant<UnaryOp, UnaryOp::name>{})
    HF_CASE(kNeg);
    HF_CASE(kExp);
    HF_CASE(kLog);
    HF_CASE(kTanh);
    HF_CASE(kSqrt);
    HF_CASE(kRsqrt);
    HF_CASE(kSigmoid);
    HF_CASE(kRelu);
    HF_CASE(kSilu);
    HF_CASE(kGelu);
    HF_CASE(kGeluTanh);
    HF_CASE(kAbs);
    HF_CASE(kSquare);
#undef HF_CASE
  }
}

template <typename T, UnaryOp kOp>
__global__ void unary_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    y[i] = from_f32<T>(unary_f<kOp>(to_f32(x[i])));
  }
}

// y may be null: the formula then recomputes it from x.
template <typename T, UnaryOp kOp>
__global__ void unary_backward_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                      const T* __restrict__ y, T* __restrict__ gx, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    const float xv = to_f32(x[i]);
    const float yv = y ? to_f32(y[i]) : unary_f<kOp>(xv);
    gx[i] = from_f32<T>(to_f32(gy[i]) * unary_grad_f<kOp>(xv, yv));
  }
}

template <typename T>
__global__ void pow_kernel(const T* __restrict__ x, T* __restrict__ y, float p, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    y[i] = from_f32<T>(powf(to_f32(x[i]), p));
  }
}

// ---- binary -----------------------------------------------------------------------------------
template <BinaryOp kOp>
__device__ __forceinline__ float binary_f(float a, float b) {
  if constexpr (kOp == BinaryOp::kAdd) return a + b;
  if constexpr (kOp == BinaryOp::kSub) return a - b;
  if constexpr (kOp == BinaryOp::kMul) return a * b;
  if constexpr (kOp == BinaryOp::kDiv) return a / b;
  if constexpr (kOp == BinaryOp::kMax) return (a > b || isnan(a)) ? a : b;
  return 0.0f;
}

template <BinaryOp kOp, typename T>
__device__ __forceinline__ T binary_int(T a, T b) {
  if constexpr (kOp == BinaryOp::kAdd) return a + b;
  if constexpr (kOp == BinaryOp::kSub) return a - b;
  if constexpr (kOp == BinaryOp::kMul) return a * b;
  if constexpr (kOp == BinaryOp::kDiv) return b == 0 ? T(0) : a / b;
  if constexpr (kOp == BinaryOp::kMax) return a > b ? a : b;
  return T(0);
}

template <BinaryOp kOp, typename T>
__device__ __forceinline__ T binary_value(T a, T b) {
  if constexpr (std::is_same_v<T, float> || kIsHalf<T>) {
    return from_f32<T>(binary_f<kOp>(to_f32(a), to_f32(b)));
  } else {
    return binary_int<kOp, T>(a, b);
  }
}

template <BinaryOp kOp, typename T>
__global__ void binary_kernel(const T* a, const T* b, T* out, StridedIndexer<3> ix, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    int64_t off[3];
    ix.offsets(i, off);
    out[off[0]] = binary_value<kOp, T>(a[off[1]], b[off[2]]);
  }
}

template <BinaryOp kOp, typename T>
__global__ void binary_contiguous_kernel(const T* a, const T* b, T* out, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    out[i] = binary_value<kOp, T>(a[i], b[i]);
  }
}

// Comparisons: 16-bit floats compare as f32, every other type exactly in its own type.
template <typename T>
__device__ __forceinline__ auto compare_value(T v) {
  if constexpr (kIsHalf<T>) {
    return to_f32(v);
  } else {
    return v;
  }
}

template <typename T>
__global__ void compare_kernel(BinaryOp op, const T* a, const T* b, uint8_t* out,
                               StridedIndexer<3> ix, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    int64_t off[3];
    ix.offsets(i, off);
    const auto x = compare_value(a[off[1]]);
    const auto y = compare_value(b[off[2]]);
    out[off[0]] = op == BinaryOp::kEq ? x == y : (op == BinaryOp::kGt ? x > y : x < y);
  }
}

template <typename T>
__global__ void where_kernel(const uint8_t* cond, const T* a, const T* b, T* out,
                             StridedIndexer<4> ix, int64_t n) {
  HF_GRID_STRIDE(i, n) {
    int64_t off[4];
    ix.offsets(i, off);
    out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]];
  }
}

template <typename Fn>
void dispatch_arith(BinaryOp op, Fn&& fn) {
  switch (op) {
    case BinaryOp::kAdd:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kAdd>{});
    case BinaryOp::kSub:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kSub>{});
    case BinaryOp::kMul:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kMul>{});
    case BinaryOp::kDiv:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kDiv>{});
    case BinaryOp::kMax:
      return fn(std::integral_constant<BinaryOp, BinaryOp::kMax>{});
    default:
      HF_THROW("binary (cuda): not an arithmetic op");
  }
}

}  // namespace

void CudaBackend::unary(ops::UnaryOp op, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), ops::unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_unary(op, [&](auto op_c) {
      unary_kernel<T, decltype(op_c)::value><<<grid_for(n), kThreads, 0, current_stream()>>>(
          static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), n);
    });
  });
  HF_CUDA_CHECK_LAUNCH(ops::unary_op_name(op), x.str());
}

void CudaBackend::unary_backward(ops::UnaryOp op, const Tensor& gy, const Tensor& x,
                                 const Tensor& y, Tensor& gx) {
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), ops::unary_op_name(op), [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* yp = y.defined() ? static_cast<const T*>(y.raw_data()) : nullptr;
    dispatch_unary(op, [&](auto op_c) {
      unary_backward_kernel<T, decltype(op_c)::value>
          <<<grid_for(n), kThreads, 0, current_stream()>>>(static_cast<const T*>(gy.raw_data()),
                                                           static_cast<const T*>(x.raw_data()), yp,
                                                           static_cast<T*>(gx.raw_data()), n);
    });
  });
  HF_CUDA_CHECK_LAUNCH(ops::unary_op_name(op), " backward of ", x.str());
}

void CudaBackend::pow_scalar(const Tensor& x, double p, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), "pow_scalar", [&](auto tag) {
    using T = typename decltype(tag)::type;
    pow_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(
        static_cast<const T*>(x.raw_data()), static_cast<T*>(y.raw_data()), static_cast<float>(p),
        n);
  });
  HF_CUDA_CHECK_LAUNCH("pow_scalar", x.str(), " ^ ", p);
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(out.device());
  cudaStream_t stream = current_stream();
  const auto ix =
      make_indexer<3>(out.sizes(), {&out.strides(), &a.strides(), &b.strides()}, "binary");
  if (op == BinaryOp::kEq || op == BinaryOp::kGt || op == BinaryOp::kLt) {
    dispatch_all(a.dtype(), "compare", [&](auto tag) {
      using T = typename decltype(tag)::type;
      compare_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
          op, static_cast<const T*>(a.raw_data()), static_cast<const T*>(b.raw_data()),
          static_cast<uint8_t*>(out.raw_data()), ix, n);
    });
    HF_CUDA_CHECK_LAUNCH("compare", a.str(), " vs ", b.str());
    return;
  }
  dispatch_arith(op, [&](auto op_c) {
    constexpr BinaryOp kOp = decltype(op_c)::value;
    dispatch_all(out.dtype(), "binary", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* ap = static_cast<const T*>(a.raw_data());
      const T* bp = static_cast<const T*>(b.raw_data());
      T* op_ = static_cast<T*>(out.raw_data());
      if (ix.all_contiguous()) {
        binary_contiguous_kernel<kOp, T><<<grid_for(n), kThreads, 0, stream>>>(ap, bp, op_, n);
      } else {
        binary_kernel<kOp, T><<<grid_for(n), kThreads, 0, stream>>>(ap, bp, op_, ix, n);
      }
    });
  });
  HF_CUDA_CHECK_LAUNCH("binary", a.str(), " op ", static_cast<int>(op), " ", b.str(), " -> ",
                       out.str());
}

void CudaBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(out.device());
  const auto ix = make_indexer<4>(
      out.sizes(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()}, "where");
  dispatch_all(out.dtype(), "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    where_kernel<T><<<grid_for(n), kThreads, 0, current_stream()>>>(
        static_cast<const uint8_t*>(cond.raw_data()), static_cast<const T*>(a.raw_data()),
        static_cast<const T*>(b.raw_data()), static_cast<T*>(out.raw_data()), ix, n);
  });
  HF_CUDA_CHECK_LAUNCH("where", cond.str(), ", ", a.str(), ", ", b.str());
}

}  // namespace hfrun::cuda
