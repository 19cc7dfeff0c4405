// Fused optimizer updates and the gradient-norm reduction on a GPU, each one launch over every
// parameter (PyTorch's multi_tensor_apply idea): the host cuts each tensor into chunks of
// kChunk elements, uploads a table of tensors (pointers and scalars) and chunks, and block b
// updates chunk b. The per-element arithmetic is the CPU backend's (optim_update.cpp) in the
// same order with fmaf where the CPU fuses a multiply-add; sqrt and division are IEEE (nvcc's
// defaults) and --fmad=false keeps the compiler from contracting anything else, so an update is
// bitwise the CPU's on a CPU build with FMA.
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "tensor/backend/cuda/kernels.cuh"
#include "tensor/ops.h"

namespace hfrun::cuda {
namespace {

constexpr int64_t kChunk = 1 << 14;

struct Chunk {
  int64_t begin, end;  // element range of tensor `index`
  int64_t index;
};

struct AdamWSeg {
  float* p;
  const float* g;
  float* m;
  float* v;
  AdamWScalars s;
};

struct SgdSeg {
  float* p;
  const float* g;
  float* buf;  // null without momentum
  SGDScalars s;
};

struct SquaresSeg {
  float* x;  // written only when unscaling
};

struct UnscaleSeg {
  float* x;
};

// The segment table and its chunks in device memory. `buffer` owns it; dropping it after the
// launch is safe: the caching allocator hands the block out again only to work queued later on
// the same stream.
template <typename Seg>
struct DeviceTable {
  Tensor buffer;
  const Seg* segs = nullptr;
  const Chunk* chunks = nullptr;
  int64_t num_chunks = 0;
};

template <typename Seg>
DeviceTable<Seg> upload_table(const std::vector<Seg>& segs, const std::vector<int64_t>& sizes,
                              Device device) {
  std::vector<Chunk> chunks;
  for (size_t i = 0; i < segs.size(); ++i) {
    for (int64_t lo = 0; lo < sizes[i]; lo += kChunk) {
      chunks.push_back({lo, std::min(sizes[i], lo + kChunk), static_cast<int64_t>(i)});
    }
  }
  DeviceTable<Seg> t;
  t.num_chunks = static_cast<int64_t>(chunks.size());
  if (chunks.empty()) return t;
  const size_t seg_bytes = (segs.size() * sizeof(Seg) + 15) / 16 * 16;
  const size_t bytes = seg_bytes + chunks.size() * sizeof(Chunk);
  Tensor host = ops::empty({static_cast<int64_t>(bytes)}, DType::kU8);
  auto* h = static_cast<unsigned char*>(host.raw_data());
  std::memcpy(h, segs.data(), segs.size() * sizeof(Seg));
  std::memcpy(h + seg_bytes, chunks.data(), chunks.size() * sizeof(Chunk));
  t.buffer = ops::to_device(host, device);  // synchronous: `host` may go
  auto* d = static_cast<unsigned char*>(t.buffer.raw_data());
  t.segs = reinterpret_cast<const Seg*>(d);
  t.chunks = reinterpret_cast<const Chunk*>(d + seg_bytes);
  return t;
}

// One element: p, m, v updated in place from g (the CPU backend's order of operations).
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v,
                                              const AdamWScalars& s) {
  g *= s.grad_scale;
  const float pi = p * s.decay;
  const float mi = fmaf(g, s.one_minus_beta1, m * s.beta1);
  const float vi = fmaf(s.one_minus_beta2 * g, g, v * s.beta2);
  const float denom = sqrtf(vi) / s.bias_correction2_sqrt + s.eps;
  m = mi;
  v = vi;
  p = pi + s.neg_step_size * mi / denom;
}

// Chunks start at multiples of kChunk, so a segment whose four arrays are 16-byte aligned is
// read and written as float4 (the usual case: flat-buffer views of GPT-2's tensors); the same
// per-element arithmetic either way.
__global__ void adamw_kernel(const AdamWSeg* __restrict__ segs, const Chunk* __restrict__ chunks) {
  const Chunk c = chunks[blockIdx.x];
  const AdamWSeg seg = segs[c.index];
  const AdamWScalars s = seg.s;
  int64_t tail = c.begin;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(seg.p) | reinterpret_cast<uintptr_t>(seg.g) |
                         reinterpret_cast<uintptr_t>(seg.m) | reinterpret_cast<uintptr_t>(seg.v);
  if ((bits & 15) == 0) {
    const int64_t n4 = (c.end - c.begin) / 4;
    for (int64_t j = threadIdx.x; j < n4; j += blockDim.x) {
      const int64_t i = c.begin + 4 * j;
      float4 p = *reinterpret_cast<const float4*>(seg.p + i);
      const float4 g = *reinterpret_cast<const float4*>(seg.g + i);
      float4 m = *reinterpret_cast<const float4*>(seg.m + i);
      float4 v = *reinterpret_cast<const float4*>(seg.v + i);
      adamw_element(p.x, g.x, m.x, v.x, s);
      adamw_element(p.y, g.y, m.y, v.y, s);
      adamw_element(p.z, g.z, m.z, v.z, s);
      adamw_element(p.w, g.w, m.w, v.w, s);
      *reinterpret_cast<float4*>(seg.p + i) = p;
      *reinterpret_cast<float4*>(seg.m + i) = m;
      *reinterpret_cast<float4*>(seg.v + i) = v;
    }
    tail = c.begin + 4 * n4;
  }
  for (int64_t i = tail + threadIdx.x; i < c.end; i += blockDim.x) {
    adamw_element(seg.p[i], seg.g[i], seg.m[i], seg.v[i], s);
  }
}

__global__ void sgd_kernel(const SgdSeg* __restrict__ segs, const Chunk* __restrict__ chunks) {
  const Chunk c = chunks[blockIdx.x];
  const SgdSeg seg = segs[c.index];
  const SGDScalars s = seg.s;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    const float p = seg.p[i];
    const float g = seg.g[i] * s.grad_scale;
    const float d = s.l2 ? fmaf(p, s.weight_decay, g) : g;
    if (seg.buf == nullptr) {
      seg.p[i] = fmaf(d, s.neg_lr, p);
      continue;
    }
    const float b = s.first ? d : fmaf(d, s.one_minus_dampening, seg.buf[i] * s.momentum);
    seg.buf[i] = b;
    seg.p[i] = fmaf(s.nesterov ? fmaf(b, s.momentum, d) : b, s.neg_lr, p);
  }
}

// With inv_scale != 1 each element is unscaled in place first (loss scaling), and its square
// is the unscaled value's.
__global__ void squares_kernel(const SquaresSeg* __restrict__ segs,
                               const Chunk* __restrict__ chunks, float inv_scale,
                               double* __restrict__ partial) {
  const Chunk c = chunks[blockIdx.x];
  float* x = segs[c.index].x;
  double acc = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    float f = x[i];
    if (inv_scale != 1.0f) {
      f *= inv_scale;
      x[i] = f;
    }
    const double v = f;
    acc += v * v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Loss scaling's unscale: x *= inv_scale (not when it is 1, as torch), and *found = 1 when an
// element is inf or NaN.
__global__ void unscale_kernel(const UnscaleSeg* __restrict__ segs,
                               const Chunk* __restrict__ chunks, float inv_scale,
                               int* __restrict__ found) {
  const Chunk c = chunks[blockIdx.x];
  float* x = segs[c.index].x;
  bool bad = false;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    const float v = x[i];
    bad = bad || !isfinite(v);
    if (inv_scale != 1.0f) x[i] = v * inv_scale;
  }
  if (__syncthreads_or(bad) && threadIdx.x == 0) *found = 1;
}

// One block: thread t sums partials t, t + blockDim, ... in order, then a fixed tree.
__global__ void sum_partials_kernel(const double* __restrict__ partial, int64_t n,
                                    double* __restrict__ out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) *out = acc;
}

void check_operand(const char* op, const char* what, const Tensor& t, const Tensor& param,
                   bool contiguous) {
  HF_CHECK(t.dtype() == DType::kF32 && t.device() == param.device() && t.sizes() == param.sizes(),
           op, " (cuda): ", what, " ", t.str(), " must be f32 on ", param.device().str(),
           " with the parameter's shape ", shape_str(param.sizes()));
  HF_CHECK(!contiguous || t.is_contiguous(), op, " (cuda): ", what, " ", t.str(),
           " must be contiguous");
}

// The kernels read contiguous memory: a strided parameter is updated in a contiguous copy that
// is written back afterwards (rare: flat-buffer parameters are contiguous views), a strided
// gradient is read from a contiguous copy.
struct Operands {
  std::vector<std::pair<Tensor, Tensor>> write_back;  // (strided parameter, its copy)
  Tensor param_of(const Tensor& param) {
    if (param.is_contiguous()) return param;
    Tensor c = ops::contiguous(param);
    write_back.emplace_back(param, c);
    return c;
  }
  void finish() {
    for (auto& [param, c] : write_back) ops::copy_(param, c);
  }
};

Device common_device(const char* op, const std::vector<Tensor>& params) {
  const Device d = params.front().device();
  for (const Tensor& p : params) {
    HF_CHECK(p.device() == d, op, " (cuda): parameters on ", d.str(), " and ", p.device().str(),
             " in one update");
  }
  HF_CHECK(d.is_cuda(), op, " (cuda): parameter on ", d.str());
  return d;
}

// The updates' 16-bit parameter copies (AdamWUpdate::param_copy), cast from the updated
// parameters on the same stream: a pass of their own here, not fused into the update kernel.
template <typename Update>
void write_param_copies(CudaBackend& backend, const char* op, const std::vector<Update>& updates) {
  for (const Update& u : updates) {
    if (!u.param_copy.defined()) continue;
    Tensor dst = u.param_copy;
    HF_CHECK((dst.dtype() == DType::kBF16 || dst.dtype() == DType::kF16) && dst.is_contiguous() &&
                 dst.sizes() == u.param.sizes() && dst.device() == u.param.device(),
             op, " (cuda): the parameter's copy ", dst.str(),
             " must be a contiguous bf16 or f16 tensor of ", u.param.str(),
             "'s shape on its device");
    backend.copy(u.param, dst);
  }
}

}  // namespace

void CudaBackend::adamw_update(const std::vector<AdamWUpdate>& updates) {
  if (updates.empty()) return;
  std::vector<Tensor> params;
  for (const auto& u : updates) params.push_back(u.param);
  const Device device = common_device("adamw", params);
  DeviceGuard guard(device);
  Operands ops_;
  std::vector<AdamWSeg> segs;
  std::vector<int64_t> sizes;
  std::vector<Tensor> keep;  // contiguous gradient copies, alive until the launch is queued
  for (const auto& u : updates) {
    check_operand("adamw", "gradient", u.grad, u.param, false);
    check_operand("adamw", "exp_avg", u.exp_avg, u.param, true);
    check_operand("adamw", "exp_avg_sq", u.exp_avg_sq, u.param, true);
    Tensor p = ops_.param_of(u.param);
    Tensor g = ops::contiguous(u.grad);
    keep.push_back(g);
    segs.push_back({p.data<float>(), g.data<float>(), u.exp_avg.data<float>(),
                    u.exp_avg_sq.data<float>(), u.s});
    sizes.push_back(p.numel());
  }
  DeviceTable<AdamWSeg> t = upload_table(segs, sizes, device);
  if (t.num_chunks > 0) {
    adamw_kernel<<<grid_rows(t.num_chunks), kThreads, 0, current_stream()>>>(t.segs, t.chunks);
    HF_CUDA_CHECK_LAUNCH("adamw", updates.size(), " parameters, ", t.num_chunks, " chunks");
  }
  ops_.finish();
  write_param_copies(*this, "adamw", updates);
}

void CudaBackend::sgd_update(const std::vector<SGDUpdate>& updates) {
  if (updates.empty()) return;
  std::vector<Tensor> params;
  for (const auto& u : updates) params.push_back(u.param);
  const Device device = common_device("sgd", params);
  DeviceGuard guard(device);
  Operands ops_;
  std::vector<SgdSeg> segs;
  std::vector<int64_t> sizes;
  std::vector<Tensor> keep;
  for (const auto& u : updates) {
    check_operand("sgd", "gradient", u.grad, u.param, false);
    if (u.momentum_buffer.defined()) {
      check_operand("sgd", "momentum_buffer", u.momentum_buffer, u.param, true);
    }
    Tensor p = ops_.param_of(u.param);
    Tensor g = ops::contiguous(u.grad);
    keep.push_back(g);
    segs.push_back({p.data<float>(), g.data<float>(),
                    u.momentum_buffer.defined() ? u.momentum_buffer.data<float>() : nullptr, u.s});
    sizes.push_back(p.numel());
  }
  DeviceTable<SgdSeg> t = upload_table(segs, sizes, device);
  if (t.num_chunks > 0) {
    sgd_kernel<<<grid_rows(t.num_chunks), kThreads, 0, current_stream()>>>(t.segs, t.chunks);
    HF_CUDA_CHECK_LAUNCH("sgd", updates.size(), " parameters, ", t.num_chunks, " chunks");
  }
  ops_.finish();
  write_param_copies(*this, "sgd", updates);
}

double CudaBackend::sum_squares(const std::vector<Tensor>& xs, float inv_scale) {
  if (xs.empty()) return 0;
  const Device device = common_device("sum_squares", xs);
  DeviceGuard guard(device);
  std::vector<SquaresSeg> segs;
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) {
    HF_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(), "sum_squares (cuda): ", x.str(),
             " must be contiguous f32");
    segs.push_back({x.data<float>()});
    sizes.push_back(x.numel());
  }
  DeviceTable<SquaresSeg> t = upload_table(segs, sizes, device);
  if (t.num_chunks == 0) return 0;
  // Partials as f64 in an i64-sized buffer (the tensor library has no f64 dtype).
  Tensor partial = ops::empty({t.num_chunks + 1}, DType::kI64, device);
  auto* pp = static_cast<double*>(partial.raw_data());
  squares_kernel<<<grid_rows(t.num_chunks), kThreads, 0, current_stream()>>>(t.segs, t.chunks,
                                                                             inv_scale, pp);
  HF_CUDA_CHECK_LAUNCH("sum_squares", xs.size(), " tensors, ", t.num_chunks, " chunks");
  sum_partials_kernel<<<1, 1024, 0, current_stream()>>>(pp, t.num_chunks, pp + t.num_chunks);
  HF_CUDA_CHECK_LAUNCH("sum_squares", "the sum of ", t.num_chunks, " partials");
  double total = 0;
  cudaStream_t s = current_stream();
  HF_CUDA_CHECK(
      cudaMemcpyAsync(&total, pp + t.num_chunks, sizeof(double), cudaMemcpyDeviceToHost, s));
  HF_CUDA_CHECK(cudaStreamSynchronize(s));
  return total;
}

bool CudaBackend::unscale_grads(const std::vector<Tensor>& xs, float inv_scale) {
  if (xs.empty()) return false;
  const Device device = common_device("unscale_grads", xs);
  DeviceGuard guard(device);
  std::vector<UnscaleSeg> segs;
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) {
    HF_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(), "unscale_grads (cuda): ", x.str(),
             " must be contiguous f32");
    segs.push_back({x.data<float>()});
    sizes.push_back(x.numel());
  }
  DeviceTable<UnscaleSeg> t = upload_table(segs, sizes, device);
  if (t.num_chunks == 0) return false;
  Tensor flag = ops::zeros({1}, DType::kI32, device);
  int* fp = flag.data<int32_t>();
  unscale_kernel<<<grid_rows(t.num_chunks), kThreads, 0, current_stream()>>>(t.segs, t.chunks,
                                                                             inv_scale, fp);
  HF_CUDA_CHECK_LAUNCH("unscale_grads", xs.size(), " tensors, ", t.num_chunks, " chunks");
  int found = 0;
  cudaStream_t s = current_stream();
  HF_CUDA_CHECK(cudaMemcpyAsync(&found, fp, sizeof(int), cudaMemcpyDeviceToHost, s));
  HF_CUDA_CHECK(cudaStreamSynchronize(s));
  return found != 0;
}

void CudaBackend::synchronize(Device device) {
  HF_CHECK(device.is_cuda(), "synchronize (cuda): ", device.str(), " is not a CUDA device");
  DeviceGuard guard(device);
  HF_CUDA_CHECK(cudaStreamSynchronize(stream_for(device.index)));
}

}  // namespace hfrun::cuda
