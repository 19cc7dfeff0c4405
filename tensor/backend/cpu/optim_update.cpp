// Fused optimizer updates and the gradient-norm reduction on the CPU: one pass over a
// parameter, its gradient and its (contiguous) state buffers. Contiguous parameter and gradient
// (the flat buffer case) are split into chunks across threads with a simd inner loop; other
// layouts go through the strided iterator. The per-element arithmetic is torch's (see
// optim/adamw.cpp and optim/sgd.cpp for the order of operations it follows).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/loops.h"

namespace hfrun::cpu {
namespace {

constexpr int64_t kChunk = 1 << 14;

// a * b + c rounded once, where torch's vectorised kernels round once: add(x, y, alpha) is
// fmadd(y, alpha, x) and addcmul's last multiply-add is contracted. Builds without FMA
// instructions (HFRUN_NATIVE=OFF) round twice rather than call libm's software fma.
inline float madd(float a, float b, float c) {
#ifdef __FMA__
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// The parameter's 16-bit copy (AdamWUpdate::param_copy), written from the updated f32 values.
class CopyWriter {
 public:
  CopyWriter(CpuBackend& backend, const Tensor& copy, const Tensor& param, const char* op)
      : backend_(backend), copy_(copy) {
    if (!copy.defined()) return;
    HF_CHECK((copy.dtype() == DType::kBF16 || copy.dtype() == DType::kF16) &&
                 copy.is_contiguous() && copy.sizes() == param.sizes() &&
                 copy.device() == param.device(),
             op, ": the parameter's copy ", copy.str(),
             " must be a contiguous bf16 or f16 tensor of ", param.str(), "'s shape on its device");
  }
  bool defined() const { return copy_.defined(); }
  // Elements [lo, hi) from a contiguous parameter's updated values, while they are in cache: the
  // conversions copy() makes, so the copy is bitwise the cast of the new parameter.
  void write(const float* p, int64_t lo, int64_t hi) const {
    if (copy_.dtype() == DType::kF16) {
      f32_to_f16_n(p + lo, copy_.data<Float16>() + lo, hi - lo);
      return;
    }
    BFloat16* c = copy_.data<BFloat16>();
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) store(c, i, p[i]);
  }
  // A strided parameter's whole copy, after its update.
  void write_all(const Tensor& param) const {
    Tensor dst = copy_;
    backend_.copy(param, dst);
  }

 private:
  CpuBackend& backend_;
  Tensor copy_;
};

// Calls elem(ip, ig, is) for every element: ip / ig are element offsets into the parameter's
// and gradient's data(), is into each state buffer's (contiguous, the parameter's shape). Then
// the parameter's copy, if any, is written: chunk by chunk as each is updated.
template <typename Elem>
void for_each_element(const Tensor& param, const Tensor& grad, const CopyWriter& copy,
                      Elem&& elem) {
  const int64_t n = param.numel();
  if (param.is_contiguous() && grad.is_contiguous()) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    const float* p = param.data<float>();
    parallel_for(chunks, kChunk, [&](int64_t c) {
      const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) elem(i, i, i);
      if (copy.defined()) copy.write(p, lo, hi);
    });
    return;
  }
  const Shape contiguous = contiguous_strides(param.sizes());
  strided_loop<3>(
      param.sizes(), {param.strides(), grad.strides(), contiguous},
      [&](const std::array<int64_t, 3>& off, int64_t count, const std::array<int64_t, 3>& st) {
        for (int64_t j = 0; j < count; ++j) {
          elem(off[0] + j * st[0], off[1] + j * st[1], off[2] + j * st[2]);
        }
      });
  if (copy.defined()) copy.write_all(param);
}

// Sum of squares of a contiguous f32 range: per-chunk double partials summed in chunk order.
// With inv_scale != 1 the range is first unscaled in place, in the same pass.
double sum_squares_of(float* x, int64_t n, float inv_scale) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, kChunk, [&](int64_t c) {
    const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    // Independent lanes: one accumulator would be a serial chain of dependent adds.
    constexpr int64_t kLanes = 16;
    double acc[kLanes] = {};
    if (inv_scale != 1.0f) {
      for (int64_t i = lo; i < hi; ++i) x[i] *= inv_scale;  // stays in cache for the squares
    }
    int64_t i = lo;
    for (; i + kLanes <= hi; i += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(x[i + l]) * x[i + l];
    }
    for (; i < hi; ++i) acc[0] += static_cast<double>(x[i]) * x[i];
    double sum = 0;
    for (double a : acc) sum += a;
    partial[static_cast<size_t>(c)] = sum;
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

void CpuBackend::adamw_update(const std::vector<AdamWUpdate>& updates) {
  for (const AdamWUpdate& u : updates) {
    const AdamWScalars s = u.s;
    float* p = u.param.data<float>();
    const float* g = u.grad.data<float>();
    float* m = u.exp_avg.data<float>();
    float* v = u.exp_avg_sq.data<float>();
    const CopyWriter copy(*this, u.param_copy, u.param, "adamw_update");
    for_each_element(u.param, u.grad, copy, [=](int64_t ip, int64_t ig, int64_t is) {
      const float gi = g[ig] * s.grad_scale;
      const float pi = p[ip] * s.decay;
      const float mi = madd(gi, s.one_minus_beta1, m[is] * s.beta1);
      const float vi = madd(s.one_minus_beta2 * gi, gi, v[is] * s.beta2);
      const float denom = std::sqrt(vi) / s.bias_correction2_sqrt + s.eps;
      m[is] = mi;
      v[is] = vi;
      p[ip] = pi + s.neg_step_size * mi / denom;
    });
  }
}

void CpuBackend::sgd_update(const std::vector<SGDUpdate>& updates) {
  for (const SGDUpdate& u : updates) {
    const SGDScalars s = u.s;
    float* p = u.param.data<float>();
    const float* g = u.grad.data<float>();
    const CopyWriter copy(*this, u.param_copy, u.param, "sgd_update");
    if (!u.momentum_buffer.defined()) {
      for_each_element(u.param, u.grad, copy, [=](int64_t ip, int64_t ig, int64_t) {
        const float gi = g[ig] * s.grad_scale;
        const float d = s.l2 ? madd(p[ip], s.weight_decay, gi) : gi;
        p[ip] = madd(d, s.neg_lr, p[ip]);
      });
      continue;
    }
    float* buf = u.momentum_buffer.data<float>();
    for_each_element(u.param, u.grad, copy, [=](int64_t ip, int64_t ig, int64_t is) {
      const float gi = g[ig] * s.grad_scale;
      const float d = s.l2 ? madd(p[ip], s.weight_decay, gi) : gi;
      const float b = s.first ? d : madd(d, s.one_minus_dampening, buf[is] * s.momentum);
      buf[is] = b;
      p[ip] = madd(s.nesterov ? madd(b, s.momentum, d) : b, s.neg_lr, p[ip]);
    });
  }
}

double CpuBackend::sum_squares(const std::vector<Tensor>& xs, float inv_scale) {
  double total = 0;
  for (const Tensor& x : xs) {
    HF_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(), "sum_squares: ", x.str(),
             " must be contiguous f32");
    total += sum_squares_of(x.data<float>(), x.numel(), inv_scale);
  }
  return total;
}

bool CpuBackend::unscale_grads(const std::vector<Tensor>& xs, float inv_scale) {
  bool found = false;
  for (const Tensor& x : xs) {
    HF_CHECK(x.dtype() == DType::kF32 && x.is_contiguous(), "unscale_grads: ", x.str(),
             " must be contiguous f32");
    float* p = x.data<float>();
    const int64_t n = x.numel();
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<uint8_t> bad(static_cast<size_t>(chunks), 0);
    parallel_for(chunks, kChunk, [&](int64_t c) {
      const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
      // x - x is 0 for a finite x and NaN for inf or NaN: a branch-free test that vectorises.
      float probe = 0;
      if (inv_scale == 1.0f) {
#pragma omp simd reduction(+ : probe)
        for (int64_t i = lo; i < hi; ++i) probe += p[i] - p[i];
      } else {
#pragma omp simd reduction(+ : probe)
        for (int64_t i = lo; i < hi; ++i) {
          probe += p[i] - p[i];
          p[i] *= inv_scale;
        }
      }
      bad[static_cast<size_t>(c)] = std::isnan(probe) ? 1 : 0;
    });
    for (uint8_t b : bad) found = found || b != 0;
  }
  return found;
}

void CpuBackend::synchronize(Device) {}

}  // namespace hfrun::cpu
