// Softmax and log-softmax over x viewed as [outer, n, inner] (forward and backward) and the
// scaled, causally masked softmax of attention scores. f32 math for every dtype:
//   softmax(x) = exp(x - max) / sum(exp(x - max)),  log_softmax(x) = (x - max) - log(sum)
//   backward:    softmax gx = y * (gy - sum(gy * y)),  log_softmax gx = gy - exp(y) * sum(gy)
// Contiguous rows (inner == 1) get one block per row with block reductions; a strided softmax
// dim gets one thread per (outer, inner) column, so neighbouring threads read neighbouring
// addresses.
#include <cmath>

#include "tensor/backend/cuda/kernels.cuh"

namespace hfrun::cuda {
namespace {

template <typename T>
__global__ void softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n,
                                    bool log) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n;
  const T* xr = x + base;
  T* yr = y + base;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, to_f32(xr[i]));
  m = block_max(m);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += expf(to_f32(xr[i]) - m);
  s = block_sum(s);
  if (log) {
    const float log_sum = logf(s);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      yr[i] = from_f32<T>((to_f32(xr[i]) - m) - log_sum);
    }
  } else {
    const float inv = 1.0f / s;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      yr[i] = from_f32<T>(expf(to_f32(xr[i]) - m) * inv);
    }
  }
}

template <typename T>
__global__ void softmax_columns_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer,
                                       int64_t n, int64_t inner, bool log) {
  HF_GRID_STRIDE(task, outer * inner) {
    const int64_t base = (task / inner) * n * inner + task % inner;
    const T* xc = x + base;
    T* yc = y + base;
    float m = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      const float v = to_f32(xc[i * inner]);
      m = v > m ? v : m;
    }
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += expf(to_f32(xc[i * inner]) - m);
    if (log) {
      const float log_sum = logf(s);
      for (int64_t i = 0; i < n; ++i) {
        yc[i * inner] = from_f32<T>((to_f32(xc[i * inner]) - m) - log_sum);
      }
    } else {
      const float inv = 1.0f / s;
      for (int64_t i = 0; i < n; ++i)
        yc[i * inner] = from_f32<T>(expf(to_f32(xc[i * inner]) - m) * inv);
    }
  }
}

template <typename T>
__global__ void softmax_backward_rows_kernel(const T* __restrict__ gy, const T* __restrict__ y,
                                             T* __restrict__ gx, int64_t n, bool log) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * n;
  const T* g = gy + base;
  const T* yr = y + base;
  T* out = gx + base;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    acc += log ? to_f32(g[i]) : to_f32(g[i]) * to_f32(yr[i]);
  }
  acc = block_sum(acc);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float gv = to_f32(g[i]), yv = to_f32(yr[i]);
    out[i] = from_f32<T>(log ? gv - expf(yv) * acc : yv * (gv - acc));
  }
}

template <typename T>
__global__ void softmax_backward_columns_kernel(const T* __restrict__ gy, const T* __restrict__ y,
                                                T* __restrict__ gx, int64_t outer, int64_t n,
                                                int64_t inner, bool log) {
  HF_GRID_STRIDE(task, outer * inner) {
    const int64_t base = (task / inner) * n * inner + task % inner;
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = base + i * inner;
      acc += log ? to_f32(gy[at]) : to_f32(gy[at]) * to_f32(y[at]);
    }
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = base + i * inner;
      const float gv = to_f32(gy[at]), yv = to_f32(y[at]);
      gx[at] = from_f32<T>(log ? gv - expf(yv) * acc : yv * (gv - acc));
    }
  }
}

// Row r of scores [BH, T, S] is query i = r % T; it sees keys first <= j < visible, where
// visible is i + (S - T) + 1 clamped to [0, S] when causal (the queries are the last T of S
// positions) and S otherwise, and at most lengths[r / rows_per_batch] with padding; first is 0,
// or with a sliding window (causal, window > 0) i + (S - T) + 1 - window. Masked and fully
// masked positions get probability 0.
template <typename T>
__global__ void scaled_masked_softmax_kernel(const T* __restrict__ scores, T* __restrict__ probs,
                                             int64_t t, int64_t s, float scale, bool causal,
                                             int64_t window, const int32_t* __restrict__ lengths,
                                             int64_t rows_per_batch) {
  const int64_t row = blockIdx.x;
  const int64_t i = row % t;
  int64_t visible = s;
  if (causal) visible = min(max(i + (s - t) + 1, int64_t{0}), s);
  if (lengths != nullptr) {
    visible = min(visible, static_cast<int64_t>(max(lengths[row / rows_per_batch], 0)));
  }
  const int64_t first = causal && window > 0 ? max(i + (s - t) + 1 - window, int64_t{0}) : 0;
  const T* xr = scores + row * s;
  T* pr = probs + row * s;
  float m = -INFINITY;
  for (int64_t j = first + threadIdx.x; j < visible; j += blockDim.x)
    m = fmaxf(m, scale * to_f32(xr[j]));
  m = block_max(m);
  float sum = 0.0f;
  for (int64_t j = first + threadIdx.x; j < visible; j += blockDim.x)
    sum += expf(scale * to_f32(xr[j]) - m);
  sum = block_sum(sum);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < s; j += blockDim.x) {
    pr[j] = from_f32<T>(j >= first && j < visible ? expf(scale * to_f32(xr[j]) - m) * inv : 0.0f);
  }
}

}  // namespace

void CudaBackend::softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log,
                          Tensor& y) {
  if (x.numel() == 0) return;
  DeviceGuard guard(x.device());
  const char* name = log ? "log_softmax" : "softmax";
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    if (inner == 1) {
      softmax_rows_kernel<T>
          <<<grid_rows(outer), row_threads(n), 0, current_stream()>>>(xp, yp, n, log);
    } else {
      softmax_columns_kernel<T><<<grid_for(outer * inner), kThreads, 0, current_stream()>>>(
          xp, yp, outer, n, inner, log);
    }
  });
  HF_CUDA_CHECK_LAUNCH(name, x.str(), " as [", outer, ", ", n, ", ", inner, "]");
}

void CudaBackend::softmax_backward(const Tensor& gy, const Tensor& y, int64_t outer, int64_t n,
                                   int64_t inner, bool log, Tensor& gx) {
  if (y.numel() == 0) return;
  DeviceGuard guard(y.device());
  const char* name = log ? "log_softmax_backward" : "softmax_backward";
  dispatch_float(y.dtype(), name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = static_cast<const T*>(gy.raw_data());
    const T* yp = static_cast<const T*>(y.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    if (inner == 1) {
      softmax_backward_rows_kernel<T>
          <<<grid_rows(outer), row_threads(n), 0, current_stream()>>>(gp, yp, gxp, n, log);
    } else {
      softmax_backward_columns_kernel<T>
          <<<grid_for(outer * inner), kThreads, 0, current_stream()>>>(gp, yp, gxp, outer, n, inner,
                                                                       log);
    }
  });
  HF_CUDA_CHECK_LAUNCH(name, y.str(), " as [", outer, ", ", n, ", ", inner, "]");
}

void CudaBackend::scaled_masked_softmax(const Tensor& scores, double scale, bool causal,
                                        int64_t window, const Tensor& key_lengths, Tensor& probs) {
  if (scores.numel() == 0) return;
  const int64_t bh = scores.size(0), t = scores.size(1), s = scores.size(2);
  const auto* lengths =
      key_lengths.defined() ? static_cast<const int32_t*>(key_lengths.raw_data()) : nullptr;
  const int64_t rows_per_batch = lengths != nullptr ? bh / key_lengths.size(0) * t : 1;
  DeviceGuard guard(scores.device());
  dispatch_float(scores.dtype(), "scaled_masked_softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    scaled_masked_softmax_kernel<T><<<grid_rows(bh * t), row_threads(s), 0, current_stream()>>>(
        static_cast<const T*>(scores.raw_data()), static_cast<T*>(probs.raw_data()), t, s,
        static_cast<float>(scale), causal, window, lengths, rows_per_batch);
  });
  HF_CUDA_CHECK_LAUNCH("scaled_masked_softmax", scores.str(), " scale ", scale,
                       causal ? " causal" : "");
}

}  // namespace hfrun::cuda
