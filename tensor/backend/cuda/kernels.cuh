// Device-side building blocks shared by the .cu files: element types and their f32 conversions,
// dtype dispatch, launch shapes, warp/block reductions, and an N-operand strided indexer.
// Indices are int64 throughout: a tensor may have more than 2^31 elements.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "common/error.h"
#include "tensor/backend/cuda/cuda_backend.h"
#include "tensor/backend/cuda/cuda_common.h"
#include "tensor/dtype.h"
#include "tensor/shape.h"

namespace hfrun::cuda {

using bf16 = __nv_bfloat16;
using f16 = __half;

// ---- element conversions (arithmetic is f32 for 16-bit types, as on the CPU) ----------------
template <typename T>
__device__ __forceinline__ float to_f32(T v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __bfloat162float(v);
  } else if constexpr (std::is_same_v<T, f16>) {
    return __half2float(v);
  } else {
    return static_cast<float>(v);
  }
}
template <typename T>
__device__ __forceinline__ T from_f32(float v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __float2bfloat16_rn(v);  // round to nearest even, as f32_to_bf16 on the host
  } else if constexpr (std::is_same_v<T, f16>) {
    return __float2half_rn(v);
  } else {
    return static_cast<T>(v);
  }
}
template <typename T>
inline constexpr bool kIsHalf = std::is_same_v<T, bf16> || std::is_same_v<T, f16>;

// ---- dtype dispatch (host) --------------------------------------------------------------------
template <typename T>
struct TypeTag {
  using type = T;
};

template <typename Fn>
decltype(auto) dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<bf16>{});
    case DType::kF16:
      return fn(TypeTag<f16>{});
    default:
      HF_THROW(op, " (cuda): dtype ", dtype_name(t), " is not supported (expected f32, bf16, f16)");
  }
}

template <typename Fn>
decltype(auto) dispatch_all(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::kF32:
      return fn(TypeTag<float>{});
    case DType::kBF16:
      return fn(TypeTag<bf16>{});
    case DType::kF16:
      return fn(TypeTag<f16>{});
    case DType::kI32:
      return fn(TypeTag<int32_t>{});
    case DType::kI64:
      return fn(TypeTag<int64_t>{});
    case DType::kU8:
    case DType::kBool:
      return fn(TypeTag<uint8_t>{});
  }
  HF_THROW(op, " (cuda): invalid dtype");
}

template <typename Fn>
decltype(auto) dispatch_index(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::kI32:
      return fn(TypeTag<int32_t>{});
    case DType::kI64:
      return fn(TypeTag<int64_t>{});
    default:
      HF_THROW(op, " (cuda): index dtype ", dtype_name(t), " is not supported (expected i32, i64)");
  }
}

// ---- launch shapes ----------------------------------------------------------------------------
constexpr int kThreads = 256;
// Blocks for a grid-stride loop over n elements: enough to fill any current GPU, never more
// than the work needs (and at least one, so an empty launch stays valid).
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}
// Rows handled one block each: gridDim.x allows 2^31 - 1.
inline unsigned grid_rows(int64_t rows) {
  HF_CHECK(rows < (int64_t{1} << 31), "cuda: ", rows, " rows exceed one launch");
  return static_cast<unsigned>(rows < 1 ? 1 : rows);
}

#define HF_GRID_STRIDE(i, n)                                                             \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// ---- reductions (blockDim.x a multiple of 32, at most 1024) -----------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block, returned to every thread. Fixed reduction tree: deterministic.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : T(0);
  return warp_sum(v);
}

// Max over the block (NaN-ignoring like fmaxf; callers that must propagate NaN check for it).
__device__ inline float block_max(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : -INFINITY;
  return warp_max(v);
}

// Threads for a one-block-per-row kernel over rows of n elements: a power of two in [32, 512].
inline int row_threads(int64_t n) {
  int t = 32;
  while (t < 512 && t < n) t <<= 1;
  return t;
}

// ---- strided indexing -------------------------------------------------------------------------
constexpr int kMaxDims = 10;

// N operands over one logical shape, with dims merged where every operand is contiguous across
// them and size-1 dims dropped (as the CPU backend's strided_loop).
template <int N>
struct StridedIndexer {
  int rank = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];

  // Element offsets of logical element i (row-major) in each operand.
  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t size = sizes[d];
      const int64_t idx = i % size;
      i /= size;
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += idx * strides[k][d];
    }
  }
  // True when every operand is contiguous over the whole shape.
  bool all_contiguous() const {
    if (rank == 0) return true;
    if (rank != 1) return false;
    for (int k = 0; k < N; ++k) {
      if (strides[k][0] != 1) return false;
    }
    return true;
  }
};

template <int N>
StridedIndexer<N> make_indexer(const Shape& shape, const std::array<const Shape*, N>& strides,
                               const char* op) {
  StridedIndexer<N> ix;
  Shape sz;
  std::array<Shape, N> st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sz.empty()) {
      bool merge = true;
      for (int k = 0; k < N; ++k) merge = merge && st[k].back() == (*strides[k])[d] * shape[d];
      if (merge) {
        sz.back() *= shape[d];
        for (int k = 0; k < N; ++k) st[k].back() = (*strides[k])[d];
        continue;
      }
    }
    sz.push_back(shape[d]);
    for (int k = 0; k < N; ++k) st[k].push_back((*strides[k])[d]);
  }
  HF_CHECK(sz.size() <= static_cast<size_t>(kMaxDims), op, " (cuda): ", sz.size(),
           " non-mergeable dims in ", shape_str(shape), " exceed the kernel limit of ", kMaxDims);
  ix.rank = static_cast<int>(sz.size());
  for (int d = 0; d < ix.rank; ++d) {
    ix.sizes[d] = sz[d];
    for (int k = 0; k < N; ++k) ix.strides[k][d] = st[k][d];
  }
  return ix;
}

}  // namespace hfrun::cuda
