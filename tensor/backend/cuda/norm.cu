// LayerNorm and RMSNorm over the last dim of x [rows, C], forward and backward side by side (the
// formulas are in tensor/backend/cpu/norm.cpp). One block per row with block reductions; the
// statistics, weight and bias are f32. gw/gb are column sums over rows, done without atomics:
// each block of rows writes a partial row (the same row blocks as the CPU backend), then one
// thread per column adds the partials in block order, so gw/gb are the same bits on every run.
#include <cmath>

#include "tensor/backend/cuda/kernels.cuh"
#include "tensor/ops.h"

namespace hfrun::cuda {
namespace {

struct RowBlocks {
  int64_t size, count;
};
RowBlocks row_blocks(int64_t rows) {
  const int64_t size = std::max<int64_t>(16, (rows + 63) / 64);
  return {size, (rows + size - 1) / size};
}

template <typename T>
__global__ void layer_norm_kernel(const T* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ b, T* __restrict__ y,
                                  float* __restrict__ mean, float* __restrict__ rstd, int64_t C,
                                  float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  T* yr = y + r * C;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += to_f32(xr[c]);
  const float mu = block_sum(s) / C;
  // Two passes (mean, then centred squares): no cancellation when |mean| >> std.
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = to_f32(xr[c]) - mu;
    sq += d * d;
  }
  const float var = block_sum(sq) / C;
  const float rs = 1.0f / sqrtf(var + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    yr[c] = from_f32<T>((to_f32(xr[c]) - mu) * rs * w[c] + b[c]);
  }
  if (threadIdx.x == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
}

// gx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * w.
template <typename T>
__global__ void layer_norm_backward_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                           const float* __restrict__ w,
                                           const float* __restrict__ mean,
                                           const float* __restrict__ rstd, T* __restrict__ gx,
                                           int64_t C) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  const T* gr = gy + r * C;
  T* gxr = gx + r * C;
  const float mu = mean[r], rs = rstd[r];
  float sg = 0.0f, sgx = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = to_f32(gr[c]) * w[c];
    sg += g;
    sgx += g * ((to_f32(xr[c]) - mu) * rs);
  }
  const float mean_g = block_sum(sg) / C;
  const float mean_gxhat = block_sum(sgx) / C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float xhat = (to_f32(xr[c]) - mu) * rs;
    gxr[c] = from_f32<T>(rs * (to_f32(gr[c]) * w[c] - mean_g - xhat * mean_gxhat));
  }
}

template <typename T>
__global__ void rms_norm_kernel(const T* __restrict__ x, const float* __restrict__ w,
                                T* __restrict__ y, float* __restrict__ rstd, int64_t C, float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  T* yr = y + r * C;
  float sq = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(xr[c]);
    sq += v * v;
  }
  const float rs = 1.0f / sqrtf(block_sum(sq) / C + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    yr[c] = from_f32<T>(to_f32(xr[c]) * rs * w[c]);
  if (threadIdx.x == 0) rstd[r] = rs;
}

// gx = rstd * (g - xhat * mean(g * xhat)) with g = gy * w.
template <typename T>
__global__ void rms_norm_backward_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                         const float* __restrict__ w,
                                         const float* __restrict__ rstd, T* __restrict__ gx,
                                         int64_t C) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  const T* gr = gy + r * C;
  T* gxr = gx + r * C;
  const float rs = rstd[r];
  float sgx = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    sgx += to_f32(gr[c]) * w[c] * (to_f32(xr[c]) * rs);
  }
  const float mean_gxhat = block_sum(sgx) / C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float xhat = to_f32(xr[c]) * rs;
    gxr[c] = from_f32<T>(rs * (to_f32(gr[c]) * w[c] - xhat * mean_gxhat));
  }
}

// partial_w[blk, c] = sum over the block's rows of gy * xhat, partial_b[blk, c] = sum of gy.
// mean is null for RMSNorm (xhat = x * rstd); partial_w/partial_b may be null.
template <typename T>
__global__ void norm_param_partials_kernel(const T* __restrict__ gy, const T* __restrict__ x,
                                           const float* __restrict__ mean,
                                           const float* __restrict__ rstd,
                                           float* __restrict__ partial_w,
                                           float* __restrict__ partial_b, int64_t rows, int64_t C,
                                           int64_t block_rows) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t blk = blockIdx.y;
  const int64_t r0 = blk * block_rows, r1 = min(rows, r0 + block_rows);
  float sw = 0.0f, sb = 0.0f;
  for (int64_t r = r0; r < r1; ++r) {
    const float g = to_f32(gy[r * C + c]);
    const float xhat =
        mean ? (to_f32(x[r * C + c]) - mean[r]) * rstd[r] : to_f32(x[r * C + c]) * rstd[r];
    sw += g * xhat;
    sb += g;
  }
  if (partial_w) partial_w[blk * C + c] = sw;
  if (partial_b) partial_b[blk * C + c] = sb;
}

// out[c] = sum over blocks (in order) of partial[blk, c].
__global__ void sum_partials_kernel(const float* __restrict__ partial, float* __restrict__ out,
                                    int64_t blocks, int64_t C) {
  HF_GRID_STRIDE(c, C) {
    float s = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) s += partial[b * C + c];
    out[c] = s;
  }
}

float* f32_or_null(const Tensor& t) {
  return t.defined() ? static_cast<float*>(t.raw_data()) : nullptr;
}

// gw (and gb) from gy, x and the saved statistics; either may be undefined.
template <typename T>
void norm_param_grads(const Tensor& gy, const Tensor& x, const float* mean, const float* rstd,
                      Tensor& gw, Tensor& gb, const char* op) {
  if (!gw.defined() && !gb.defined()) return;
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  if (rows == 0) {
    if (gw.defined()) backend().fill(gw, 0.0);
    if (gb.defined()) backend().fill(gb, 0.0);
    return;
  }
  const RowBlocks blk = row_blocks(rows);
  HF_CHECK(blk.count < 65536, op, " (cuda): too many row blocks for ", x.str());
  Tensor pw = gw.defined() ? ops::empty({blk.count, C}, DType::kF32, x.device()) : Tensor();
  Tensor pb = gb.defined() ? ops::empty({blk.count, C}, DType::kF32, x.device()) : Tensor();
  cudaStream_t stream = current_stream();
  const dim3 grid(static_cast<unsigned>((C + kThreads - 1) / kThreads),
                  static_cast<unsigned>(blk.count));
  norm_param_partials_kernel<T><<<grid, kThreads, 0, stream>>>(
      static_cast<const T*>(gy.raw_data()), static_cast<const T*>(x.raw_data()), mean, rstd,
      f32_or_null(pw), f32_or_null(pb), rows, C, blk.size);
  HF_CUDA_CHECK_LAUNCH(op, " weight/bias partial sums for ", x.str());
  if (pw.defined()) {
    sum_partials_kernel<<<grid_for(C), kThreads, 0, stream>>>(f32_or_null(pw), f32_or_null(gw),
                                                              blk.count, C);
    HF_CUDA_CHECK_LAUNCH(op, " weight gradient for ", x.str());
  }
  if (pb.defined()) {
    sum_partials_kernel<<<grid_for(C), kThreads, 0, stream>>>(f32_or_null(pb), f32_or_null(gb),
                                                              blk.count, C);
    HF_CUDA_CHECK_LAUNCH(op, " bias gradient for ", x.str());
  }
}

}  // namespace

void CudaBackend::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                             Tensor& y, Tensor& mean, Tensor& rstd) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  if (rows == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    layer_norm_kernel<T><<<grid_rows(rows), row_threads(C), 0, current_stream()>>>(
        static_cast<const T*>(x.raw_data()), f32_or_null(w), f32_or_null(b),
        static_cast<T*>(y.raw_data()), f32_or_null(mean), f32_or_null(rstd), C,
        static_cast<float>(eps));
  });
  HF_CUDA_CHECK_LAUNCH("layer_norm", x.str());
}

void CudaBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                      const Tensor& mean, const Tensor& rstd, Tensor& gx,
                                      Tensor& gw, Tensor& gb) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (rows > 0) {
      layer_norm_backward_kernel<T><<<grid_rows(rows), row_threads(C), 0, current_stream()>>>(
          static_cast<const T*>(gy.raw_data()), static_cast<const T*>(x.raw_data()), f32_or_null(w),
          f32_or_null(mean), f32_or_null(rstd), static_cast<T*>(gx.raw_data()), C);
      HF_CUDA_CHECK_LAUNCH("layer_norm_backward", x.str());
    }
    norm_param_grads<T>(gy, x, f32_or_null(mean), f32_or_null(rstd), gw, gb, "layer_norm_backward");
  });
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  if (rows == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), "rms_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    rms_norm_kernel<T><<<grid_rows(rows), row_threads(C), 0, current_stream()>>>(
        static_cast<const T*>(x.raw_data()), f32_or_null(w), static_cast<T*>(y.raw_data()),
        f32_or_null(rstd), C, static_cast<float>(eps));
  });
  HF_CUDA_CHECK_LAUNCH("rms_norm", x.str());
}

void CudaBackend::rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                    const Tensor& rstd, Tensor& gx, Tensor& gw) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  DeviceGuard guard(x.device());
  Tensor no_bias;
  dispatch_float(x.dtype(), "rms_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (rows > 0) {
      rms_norm_backward_kernel<T><<<grid_rows(rows), row_threads(C), 0, current_stream()>>>(
          static_cast<const T*>(gy.raw_data()), static_cast<const T*>(x.raw_data()), f32_or_null(w),
          f32_or_null(rstd), static_cast<T*>(gx.raw_data()), C);
      HF_CUDA_CHECK_LAUNCH("rms_norm_backward", x.str());
    }
    norm_param_grads<T>(gy, x, nullptr, f32_or_null(rstd), gw, no_bias, "rms_norm_backward");
  });
}

}  // namespace hfrun::cuda
