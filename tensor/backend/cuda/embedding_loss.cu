// Embedding lookup and its deterministic backward; fused log-softmax + NLL cross-entropy.
// The ops layer validates ids and targets on the host first (tensor/ops/nn.cpp); the kernels
// still never read outside the table: an out-of-range id reads zeros, an out-of-range target
// gives a NaN loss.
//
// embedding_backward sums the gy rows of each id without float atomics (whose order, and so
// whose rounding, changes from run to run): the positions are sorted by id with a stable radix
// sort (equal ids keep position order), then one block per distinct id adds its rows in position
// order, column-parallel. The result is the same bits every run, and the same order of additions
// as the CPU backend's counting sort.
//
//   cross_entropy:  lse[r] = log sum_v exp(logits[r, v]),  loss = mean over counted rows of
//                   (lse[r] - logits[r, target[r]]); rows with target == ignore_index are not
//                   counted (no counted row: NaN)
//   backward:       glogits[r, v] = (exp(logits[r, v] - lse[r]) - [v == target[r]]) * gloss / count
#include <cub/device/device_radix_sort.cuh>

#include <cmath>

#include "tensor/backend/cuda/kernels.cuh"
#include "tensor/ops.h"

namespace hfrun::cuda {
namespace {

// ---- embedding ----------------------------------------------------------------------------------
template <typename E, typename I>
__global__ void embedding_kernel(const E* __restrict__ w, const I* __restrict__ ids,
                                 E* __restrict__ out, int64_t n, int64_t V, int64_t C) {
  HF_GRID_STRIDE(k, n * C) {
    const int64_t i = k / C, c = k % C;
    const int64_t id = static_cast<int64_t>(ids[i]);
    out[k] = id >= 0 && id < V ? w[id * C + c] : E{};
  }
}

// keys[i] = ids[i] (V for an out-of-range id: sorted last and skipped), values[i] = i.
template <typename I>
__global__ void sort_keys_kernel(const I* __restrict__ ids, int32_t* __restrict__ keys,
                                 int32_t* __restrict__ values, int64_t n, int64_t V) {
  HF_GRID_STRIDE(i, n) {
    const int64_t id = static_cast<int64_t>(ids[i]);
    keys[i] = static_cast<int32_t>(id >= 0 && id < V ? id : V);
    values[i] = static_cast<int32_t>(i);
  }
}

// Block (k, column chunk): when sorted position k starts a run of equal ids, sums the gy rows of
// that run (in position order) into gweight's row for the id.
template <typename T>
__global__ void embedding_backward_kernel(const T* __restrict__ gy,
                                          const int32_t* __restrict__ keys,
                                          const int32_t* __restrict__ positions,
                                          T* __restrict__ gweight, int64_t n, int64_t V,
                                          int64_t C) {
  const int64_t k = blockIdx.x;
  const int32_t id = keys[k];
  if ((k > 0 && keys[k - 1] == id) || id >= V) return;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.0f;
  for (int64_t j = k; j < n && keys[j] == id; ++j) {
    acc += to_f32(gy[static_cast<int64_t>(positions[j]) * C + c]);
  }
  gweight[static_cast<int64_t>(id) * C + c] = from_f32<T>(acc);
}

template <int kBytes>
struct Word;
template <>
struct Word<1> {
  using type = uint8_t;
};
template <>
struct Word<2> {
  using type = uint16_t;
};
template <>
struct Word<4> {
  using type = uint32_t;
};
template <>
struct Word<8> {
  using type = uint64_t;
};

// ---- cross-entropy ------------------------------------------------------------------------------
template <typename T, typename I>
__global__ void cross_entropy_rows_kernel(const T* __restrict__ logits, const I* __restrict__ t,
                                          float* __restrict__ lse, float* __restrict__ row_loss,
                                          int64_t V, int64_t ignore_index) {
  const int64_t r = blockIdx.x;
  const T* xr = logits + r * V;
  float m = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, to_f32(xr[v]));
  m = block_max(m);
  float s = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += expf(to_f32(xr[v]) - m);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    // All -inf (or a +inf logit): exp(x - m) would be NaN; the CPU returns m as well.
    const float l = isinf(m) ? m : m + logf(s);
    lse[r] = l;
    const int64_t target = static_cast<int64_t>(t[r]);
    float loss = 0.0f;
    if (target != ignore_index) loss = target >= 0 && target < V ? l - to_f32(xr[target]) : NAN;
    row_loss[r] = loss;
  }
}

// One block: loss = sum(row_loss) / count in double, in a fixed order.
template <typename I>
__global__ void cross_entropy_mean_kernel(const float* __restrict__ row_loss,
                                          const I* __restrict__ t, float* __restrict__ loss,
                                          int64_t N, int64_t ignore_index) {
  double total = 0;
  long long count = 0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x) {
    total += row_loss[r];
    count += static_cast<int64_t>(t[r]) != ignore_index;
  }
  total = block_sum(total);
  count = block_sum(count);
  if (threadIdx.x == 0) {
    *loss = count > 0 ? static_cast<float>(total / static_cast<double>(count)) : NAN;
  }
}

template <typename I>
__global__ void count_targets_kernel(const I* __restrict__ t, long long* __restrict__ count,
                                     int64_t N, int64_t ignore_index) {
  long long c = 0;
  for (int64_t r = threadIdx.x; r < N; r += blockDim.x)
    c += static_cast<int64_t>(t[r]) != ignore_index;
  c = block_sum(c);
  if (threadIdx.x == 0) *count = c;
}

template <typename T, typename I>
__global__ void cross_entropy_backward_kernel(const float* __restrict__ gloss,
                                              const long long* __restrict__ count, const T* logits,
                                              const I* __restrict__ t,
                                              const float* __restrict__ lse, T* g, int64_t V,
                                              int64_t ignore_index) {
  // g may be logits (the gradient written over them): each thread reads an element before it
  // writes the same one, so neither pointer is __restrict__.
  const int64_t r = blockIdx.x;
  const T* xr = logits + r * V;
  T* gr = g + r * V;
  const int64_t target = static_cast<int64_t>(t[r]);
  // With no counted row the loss is a constant NaN and every gradient is zero (as torch).
  const long long n = *count;
  const float scale = n > 0 ? *gloss / static_cast<float>(n) : 0.0f;
  if (target == ignore_index) {
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) gr[v] = from_f32<T>(0.0f);
    return;
  }
  const float l = lse[r];
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float p = expf(to_f32(xr[v]) - l);
    gr[v] = from_f32<T>((v == target ? p - 1.0f : p) * scale);
  }
}

}  // namespace

void CudaBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t n = ids.numel(), V = weight.size(0), C = weight.size(1);
  if (n * C == 0) return;
  DeviceGuard guard(weight.device());
  auto launch = [&](auto word_tag) {
    using E = typename decltype(word_tag)::type;
    dispatch_index(ids.dtype(), "embedding", [&](auto itag) {
      using I = typename decltype(itag)::type;
      embedding_kernel<E, I><<<grid_for(n * C), kThreads, 0, current_stream()>>>(
          static_cast<const E*>(weight.raw_data()), static_cast<const I*>(ids.raw_data()),
          static_cast<E*>(out.raw_data()), n, V, C);
    });
  };
  // A row copy moves bytes: any dtype, by element size.
  switch (weight.element_size()) {
    case 1:
      launch(TypeTag<Word<1>::type>{});
      break;
    case 2:
      launch(TypeTag<Word<2>::type>{});
      break;
    case 4:
      launch(TypeTag<Word<4>::type>{});
      break;
    case 8:
      launch(TypeTag<Word<8>::type>{});
      break;
    default:
      HF_THROW("embedding (cuda): unsupported element size of ", weight.str());
  }
  HF_CUDA_CHECK_LAUNCH("embedding", weight.str(), " ids ", ids.str());
}

void CudaBackend::embedding_backward(const Tensor& gy, const Tensor& ids, Tensor& gweight) {
  const int64_t V = gweight.size(0), C = gweight.size(1), n = ids.numel();
  DeviceGuard guard(gy.device());
  fill(gweight, 0.0);  // ids that never occur get zero rows
  if (n == 0 || C == 0) return;
  HF_CHECK(n < (int64_t{1} << 31) && V < (int64_t{1} << 31) - 1, "embedding_backward (cuda): ", n,
           " ids into ", V, " rows exceed the 32-bit sort keys");
  HF_CHECK((C + kThreads - 1) / kThreads < 65536, "embedding_backward (cuda): ", C,
           " columns exceed one launch");
  cudaStream_t stream = current_stream();
  const Device dev = gy.device();
  Tensor keys_in = ops::empty({n}, DType::kI32, dev), keys = ops::empty({n}, DType::kI32, dev);
  Tensor pos_in = ops::empty({n}, DType::kI32, dev), pos = ops::empty({n}, DType::kI32, dev);
  auto* kin = static_cast<int32_t*>(keys_in.raw_data());
  auto* kout = static_cast<int32_t*>(keys.raw_data());
  auto* pin = static_cast<int32_t*>(pos_in.raw_data());
  auto* pout = static_cast<int32_t*>(pos.raw_data());
  dispatch_index(ids.dtype(), "embedding_backward", [&](auto itag) {
    using I = typename decltype(itag)::type;
    sort_keys_kernel<I><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const I*>(ids.raw_data()),
                                                              kin, pin, n, V);
  });
  HF_CUDA_CHECK_LAUNCH("embedding_backward", "sort keys of ", ids.str());
  int end_bit = 1;
  while (end_bit < 32 && (int64_t{1} << end_bit) <= V) ++end_bit;  // keys are in [0, V]
  size_t temp_bytes = 0;
  const int items = static_cast<int>(n);
  HF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, kin, kout, pin, pout, items, 0,
                                                end_bit, stream));
  Tensor temp =
      ops::empty({static_cast<int64_t>(std::max<size_t>(temp_bytes, 1))}, DType::kU8, dev);
  HF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, kin, kout, pin, pout,
                                                items, 0, end_bit, stream));
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((C + kThreads - 1) / kThreads));
  dispatch_float(gy.dtype(), "embedding_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_backward_kernel<T>
        <<<grid, kThreads, 0, stream>>>(static_cast<const T*>(gy.raw_data()), kout, pout,
                                        static_cast<T*>(gweight.raw_data()), n, V, C);
  });
  HF_CUDA_CHECK_LAUNCH("embedding_backward", gy.str(), " ids ", ids.str(), " -> ", gweight.str());
}

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                                Tensor& loss, Tensor& lse) {
  const int64_t N = logits.size(0), V = logits.size(1);
  DeviceGuard guard(logits.device());
  cudaStream_t stream = current_stream();
  Tensor row_loss = ops::empty({std::max<int64_t>(N, 1)}, DType::kF32, logits.device());
  auto* lp = static_cast<float*>(lse.raw_data());
  auto* rl = static_cast<float*>(row_loss.raw_data());
  dispatch_index(targets.dtype(), "cross_entropy", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    if (N > 0) {
      dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = typename decltype(tag)::type;
        cross_entropy_rows_kernel<T, I><<<grid_rows(N), row_threads(V), 0, stream>>>(
            static_cast<const T*>(logits.raw_data()), tp, lp, rl, V, ignore_index);
      });
      HF_CUDA_CHECK_LAUNCH("cross_entropy", logits.str(), " targets ", targets.str());
    }
    cross_entropy_mean_kernel<I>
        <<<1, 1024, 0, stream>>>(rl, tp, static_cast<float*>(loss.raw_data()), N, ignore_index);
    HF_CUDA_CHECK_LAUNCH("cross_entropy", "mean over rows of ", logits.str());
  });
}

void CudaBackend::cross_entropy_backward(const Tensor& gloss, const Tensor& logits,
                                         const Tensor& targets, const Tensor& lse,
                                         int64_t ignore_index, Tensor& glogits) {
  const int64_t N = logits.size(0), V = logits.size(1);
  if (N == 0) return;
  DeviceGuard guard(logits.device());
  cudaStream_t stream = current_stream();
  Tensor count = ops::empty({1}, DType::kI64, logits.device());
  auto* cp = static_cast<long long*>(count.raw_data());
  dispatch_index(targets.dtype(), "cross_entropy_backward", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    count_targets_kernel<I><<<1, 1024, 0, stream>>>(tp, cp, N, ignore_index);
    HF_CUDA_CHECK_LAUNCH("cross_entropy_backward", "count of targets ", targets.str());
    dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      cross_entropy_backward_kernel<T, I><<<grid_rows(N), row_threads(V), 0, stream>>>(
          static_cast<const float*>(gloss.raw_data()), cp, static_cast<const T*>(logits.raw_data()),
          tp, static_cast<const float*>(lse.raw_data()), static_cast<T*>(glogits.raw_data()), V,
          ignore_index);
    });
    HF_CUDA_CHECK_LAUNCH("cross_entropy_backward", logits.str(), " targets ", targets.str());
  });
}

}  // namespace hfrun::cuda
