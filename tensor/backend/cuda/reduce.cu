// Sum and max over the middle axis of x viewed as [outer, n, inner]. Sums accumulate in double,
// in a fixed order (no atomics): the same bits on every run. Contiguous rows (inner == 1) get
// one block per row. Columns (inner > 1, e.g. a bias gradient: [tokens, C] summed over tokens)
// of long n are cut into chunks of kChunkRows rows: a block of 32 columns x 8 row-threads sums
// one chunk of 32 columns (neighbouring threads read neighbouring addresses), writing double
// partials that a second kernel adds in chunk order; short columns use one thread per column.
// (One thread per column over n = 8192 left the GPU nearly idle: 148 of 273 ms of a GPT-2
// 124M bf16 step on an H200.)
#include <cmath>

#include "tensor/backend/cuda/kernels.cuh"
#include "tensor/storage.h"

namespace hfrun::cuda {
namespace {

template <typename T>
__global__ void sum_rows_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n) {
  const T* row = x + static_cast<int64_t>(blockIdx.x) * n;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += to_f32(row[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = from_f32<T>(static_cast<float>(acc));
}

template <typename T>
__global__ void sum_columns_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t outer,
                                   int64_t n, int64_t inner) {
  HF_GRID_STRIDE(task, outer * inner) {
    const int64_t o = task / inner, c = task % inner;
    const T* p = x + o * n * inner + c;
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += to_f32(p[i * inner]);
    out[task] = from_f32<T>(static_cast<float>(acc));
  }
}

constexpr int kColumnTile = 32;  // columns per block (threadIdx.x)
constexpr int kRowThreads = 8;   // threads along n per column (threadIdx.y)
constexpr int64_t kChunkRows = 256;

template <typename T>
__global__ void sum_column_chunks_kernel(const T* __restrict__ x, double* __restrict__ partial,
                                         int64_t n, int64_t inner, int64_t chunks) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t chunk = blockIdx.y, o = blockIdx.z;
  double acc = 0;
  if (c < inner) {
    const int64_t begin = chunk * kChunkRows, end = min(n, begin + kChunkRows);
    const T* p = x + o * n * inner + c;
    for (int64_t i = begin + threadIdx.y; i < end; i += kRowThreads) acc += to_f32(p[i * inner]);
  }
  __shared__ double rows[kRowThreads][kColumnTile];
  rows[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < inner) {
    double total = 0;
    for (int r = 0; r < kRowThreads; ++r) total += rows[r][threadIdx.x];
    partial[(o * chunks + chunk) * inner + c] = total;
  }
}

template <typename T>
__global__ void sum_chunk_partials_kernel(const double* __restrict__ partial, T* __restrict__ out,
                                          int64_t outer, int64_t chunks, int64_t inner) {
  HF_GRID_STRIDE(task, outer * inner) {
    const int64_t o = task / inner, c = task % inner;
    double acc = 0;
    for (int64_t k = 0; k < chunks; ++k) acc += partial[(o * chunks + k) * inner + c];
    out[task] = from_f32<T>(static_cast<float>(acc));
  }
}

// (value, index) of the max: NaN wins (the first NaN), then the larger value, then the lower
// index, as the CPU loop that keeps the first maximum and stops at the first NaN.
struct ArgMax {
  float v;
  int64_t i;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  const bool na = isnan(a.v), nb = isnan(b.v);
  if (na || nb) return na && (!nb || a.i < b.i) ? a : b;
  if (a.v != b.v) return a.v > b.v ? a : b;
  return a.i < b.i ? a : b;
}

template <typename T>
__global__ void max_rows_kernel(const T* __restrict__ x, T* __restrict__ values,
                                int64_t* __restrict__ indices, int64_t n) {
  const T* row = x + static_cast<int64_t>(blockIdx.x) * n;
  ArgMax best{-INFINITY, INT64_MAX};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) best = better(best, {to_f32(row[i]), i});
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    best = better(best, other);
  }
  __shared__ ArgMax partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) best = better(best, partial[w]);
    // A row of -inf keeps index 0, as on the CPU.
    if (best.i == INT64_MAX) best.i = 0;
    values[blockIdx.x] = from_f32<T>(best.v);
    indices[blockIdx.x] = best.i;
  }
}

template <typename T>
__global__ void max_columns_kernel(const T* __restrict__ x, T* __restrict__ values,
                                   int64_t* __restrict__ indices, int64_t outer, int64_t n,
                                   int64_t inner) {
  HF_GRID_STRIDE(task, outer * inner) {
    const int64_t o = task / inner, c = task % inner;
    const T* p = x + o * n * inner + c;
    float best = -INFINITY;
    int64_t arg = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float v = to_f32(p[i * inner]);
      if (v > best || isnan(v)) {
        best = v;
        arg = i;
        if (isnan(v)) break;
      }
    }
    values[task] = from_f32<T>(best);
    indices[task] = arg;
  }
}

}  // namespace

void CudaBackend::reduce_sum(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                             Tensor& out) {
  if (outer * inner == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), "sum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* op = static_cast<T*>(out.raw_data());
    const int64_t chunks = (n + kChunkRows - 1) / kChunkRows;
    if (inner == 1) {
      sum_rows_kernel<T><<<grid_rows(outer), row_threads(n), 0, current_stream()>>>(xp, op, n);
    } else if (chunks >= 2 && chunks <= 65535 && outer <= 65535) {
      // Double partials in a stream-ordered scratch block of the caching allocator.
      Storage scratch(static_cast<size_t>(outer * chunks * inner) * sizeof(double), x.device());
      double* partial = static_cast<double*>(scratch.data());
      const dim3 block(kColumnTile, kRowThreads);
      const dim3 grid(static_cast<unsigned>((inner + kColumnTile - 1) / kColumnTile),
                      static_cast<unsigned>(chunks), static_cast<unsigned>(outer));
      sum_column_chunks_kernel<T>
          <<<grid, block, 0, current_stream()>>>(xp, partial, n, inner, chunks);
      HF_CUDA_CHECK_LAUNCH("sum", x.str(), " as [", outer, ", ", n, ", ", inner, "] (chunks)");
      sum_chunk_partials_kernel<T><<<grid_for(outer * inner), kThreads, 0, current_stream()>>>(
          partial, op, outer, chunks, inner);
    } else {
      sum_columns_kernel<T>
          <<<grid_for(outer * inner), kThreads, 0, current_stream()>>>(xp, op, outer, n, inner);
    }
  });
  HF_CUDA_CHECK_LAUNCH("sum", x.str(), " as [", outer, ", ", n, ", ", inner, "]");
}

void CudaBackend::reduce_max(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                             Tensor& values, Tensor& indices) {
  if (outer * inner == 0) return;
  DeviceGuard guard(x.device());
  dispatch_float(x.dtype(), "max", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* vp = static_cast<T*>(values.raw_data());
    int64_t* ip = static_cast<int64_t*>(indices.raw_data());
    if (inner == 1) {
      max_rows_kernel<T><<<grid_rows(outer), row_threads(n), 0, current_stream()>>>(xp, vp, ip, n);
    } else {
      max_columns_kernel<T>
          <<<grid_for(outer * inner), kThreads, 0, current_stream()>>>(xp, vp, ip, outer, n, inner);
    }
  });
  HF_CUDA_CHECK_LAUNCH("max", x.str(), " as [", outer, ", ", n, ", ", inner, "]");
}

}  // namespace hfrun::cuda
