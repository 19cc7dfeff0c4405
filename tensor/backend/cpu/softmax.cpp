// Softmax kernels over x viewed as [outer, n, inner], with f32 math for every floating dtype.
// Numerically stable: softmax(x) = exp(x - max) / sum(exp(x - max)), and
// log_softmax(x) = x - (max + log(sum(exp(x - max)))). Rows run in parallel; the inner loops
// are written so GCC vectorises them without -ffast-math: an exp that is plain arithmetic and
// reductions kept in kLanes independent partial results (no reassociation needed).
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/vec_math.h"

namespace hfrun::cpu {
namespace {

constexpr int64_t kCols = 64;  // inner columns per task when softmax runs over a strided dim
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float row_max(const float* x, int64_t n) {
  return lane_max(n, [x](int64_t i) { return x[i]; });
}

// e[i] = exp(x[i] - m) (e may alias x); returns sum(e).
float exp_and_sum(const float* x, float m, float* e, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      e[i + l] = exp_f(x[i + l] - m);
      lanes[l] += e[i + l];
    }
  }
  float s = 0.0f;
  for (; i < n; ++i) {
    e[i] = exp_f(x[i] - m);
    s += e[i];
  }
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

// Per-thread f32 row buffer for the 16-bit dtypes and the scaled attention scores.
float* row_buffer(int64_t n) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.resize(n);
  return buf.data();
}

// Softmax of contiguous rows of length n (the dim is innermost).
template <typename T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  parallel_for(rows, n * 8, [&](int64_t r) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const float* xf;
    float* ef;  // where exp(x - max) goes
    if constexpr (std::is_same_v<T, float>) {
      xf = xr;
      ef = yr;
    } else {
      float* buf = row_buffer(n);
      for (int64_t i = 0; i < n; ++i) buf[i] = load(xr, i);
      xf = ef = buf;
    }
    const float m = row_max(xf, n);
    if (log) {
      // (x - max) - log(sum): subtracting max first keeps large x from cancelling.
      const float log_sum = std::log(lane_sum(n, [&](int64_t i) { return exp_f(xf[i] - m); }));
      for (int64_t i = 0; i < n; ++i) store(yr, i, (xf[i] - m) - log_sum);
    } else {
      const float inv = 1.0f / exp_and_sum(xf, m, ef, n);
      for (int64_t i = 0; i < n; ++i) store(yr, i, ef[i] * inv);
    }
  });
}

// Softmax over n with stride `inner`: each task takes up to kCols adjacent columns of one outer
// slice and keeps their running max/sum in arrays, so the inner loops run along memory.
template <typename T>
void softmax_strided(const T* x, T* y, int64_t outer, int64_t n, int64_t inner, bool log) {
  const int64_t chunks = (inner + kCols - 1) / kCols;
  parallel_for(outer * chunks, n * kCols * 8, [&](int64_t task) {
    const int64_t j0 = (task % chunks) * kCols, w = std::min(kCols, inner - j0);
    const int64_t base = (task / chunks) * n * inner + j0;
    const T* xb = x + base;
    T* yb = y + base;
    float mx[kCols], sum[kCols] = {};
    std::fill(mx, mx + kCols, kNegInf);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < w; ++j) {
        const float v = load(xb, i * inner + j);
        mx[j] = v > mx[j] ? v : mx[j];
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < w; ++j) sum[j] += exp_f(load(xb, i * inner + j) - mx[j]);
    }
    if (log) {
      for (int64_t j = 0; j < w; ++j) sum[j] = std::log(sum[j]);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < w; ++j) {
          store(yb, i * inner + j, (load(xb, i * inner + j) - mx[j]) - sum[j]);
        }
      }
    } else {
      for (int64_t j = 0; j < w; ++j) sum[j] = 1.0f / sum[j];
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < w; ++j) {
          store(yb, i * inner + j, exp_f(load(xb, i * inner + j) - mx[j]) * sum[j]);
        }
      }
    }
  });
}

// softmax:     gx = y * (gy - sum(gy * y))
// log_softmax: gx = gy - exp(y) * sum(gy)
template <typename T>
void softmax_backward_rows(const T* gy, const T* y, T* gx, int64_t rows, int64_t n, bool log) {
  parallel_for(rows, n * 4, [&](int64_t r) {
    const T* g = gy + r * n;
    const T* yr = y + r * n;
    T* out = gx + r * n;
    if (log) {
      const float s = lane_sum(n, [&](int64_t i) { return load(g, i); });
      for (int64_t i = 0; i < n; ++i) store(out, i, load(g, i) - exp_f(load(yr, i)) * s);
    } else {
      const float dot = lane_sum(n, [&](int64_t i) { return load(g, i) * load(yr, i); });
      for (int64_t i = 0; i < n; ++i) store(out, i, load(yr, i) * (load(g, i) - dot));
    }
  });
}

template <typename T>
void softmax_backward_strided(const T* gy, const T* y, T* gx, int64_t outer, int64_t n,
                              int64_t inner, bool log) {
  const int64_t chunks = (inner + kCols - 1) / kCols;
  parallel_for(outer * chunks, n * kCols * 4, [&](int64_t task) {
    const int64_t j0 = (task % chunks) * kCols, w = std::min(kCols, inner - j0);
    const int64_t base = (task / chunks) * n * inner + j0;
    const T* g = gy + base;
    const T* yb = y + base;
    T* out = gx + base;
    float acc[kCols] = {};
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < w; ++j) {
        const int64_t at = i * inner + j;
        acc[j] += log ? load(g, at) : load(g, at) * load(yb, at);
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < w; ++j) {
        const int64_t at = i * inner + j;
        const float gv = load(g, at), yv = load(yb, at);
        store(out, at, log ? gv - exp_f(yv) * acc[j] : yv * (gv - acc[j]));
      }
    }
  });
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, int64_t outer, int64_t n, int64_t inner, bool log,
                         Tensor& y) {
  if (x.numel() == 0) return;
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    if (inner == 1) {
      softmax_rows(xp, yp, outer, n, log);
    } else {
      softmax_strided(xp, yp, outer, n, inner, log);
    }
  });
}

void CpuBackend::softmax_backward(const Tensor& gy, const Tensor& y, int64_t outer, int64_t n,
                                  int64_t inner, bool log, Tensor& gx) {
  if (y.numel() == 0) return;
  dispatch_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = static_cast<const T*>(gy.raw_data());
    const T* yp = static_cast<const T*>(y.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    if (inner == 1) {
      softmax_backward_rows(gp, yp, gxp, outer, n, log);
    } else {
      softmax_backward_strided(gp, yp, gxp, outer, n, inner, log);
    }
  });
}

// Row i of a [T, S] score block sees keys j <= i + (S - T) when causal (the queries are the last
// T of S positions) and j < key_lengths[b] with padding; a row that sees nothing gets all-zero
// probabilities.
void CpuBackend::scaled_masked_softmax(const Tensor& scores, double scale, bool causal,
                                       int64_t window, const Tensor& key_lengths, Tensor& probs) {
  const int64_t bh = scores.size(0), t = scores.size(1), s = scores.size(2);
  if (scores.numel() == 0) return;
  const float sc = static_cast<float>(scale);
  const int32_t* lengths = key_lengths.defined() ? key_lengths.data<int32_t>() : nullptr;
  const int64_t rows_per_batch = lengths != nullptr ? bh / key_lengths.size(0) * t : 1;
  dispatch_float(scores.dtype(), "scaled_masked_softmax", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(scores.raw_data());
    T* pp = static_cast<T*>(probs.raw_data());
    parallel_for(bh * t, s * 8, [&](int64_t row) {
      const int64_t i = row % t;
      int64_t visible = causal ? std::clamp<int64_t>(i + (s - t) + 1, 0, s) : s;
      if (lengths != nullptr) {
        visible = std::min<int64_t>(visible, std::max<int32_t>(lengths[row / rows_per_batch], 0));
      }
      // Keys [first, visible): a sliding window drops those `window` or more behind the query.
      const int64_t first =
          causal && window > 0 ? std::clamp<int64_t>(i + (s - t) + 1 - window, 0, visible) : 0;
      const int64_t n = visible - first;
      const T* xr = xp + row * s;
      T* pr = pp + row * s;
      float* buf = row_buffer(s);
      for (int64_t j = 0; j < first; ++j) store(pr, j, 0.0f);
      for (int64_t j = 0; j < n; ++j) buf[j] = sc * load(xr, first + j);
      if (n > 0) {
        const float m = row_max(buf, n);
        const float inv = 1.0f / exp_and_sum(buf, m, buf, n);
        for (int64_t j = 0; j < n; ++j) store(pr, first + j, buf[j] * inv);
      }
      for (int64_t j = visible; j < s; ++j) store(pr, j, 0.0f);
    });
  });
}

// gscores = scale * softmax_backward(gp, probs) in one pass per row: the dot product, then each
// element's f32 gradient, its f32 product with the scale, and the store in gscores' dtype, the
// values softmax_backward_rows, scale() and copy() produce one after the other.
void CpuBackend::attention_scores_backward(const Tensor& gp, const Tensor& probs, int64_t n,
                                           double scale, Tensor& gscores) {
  if (probs.numel() == 0) return;
  const int64_t rows = probs.numel() / n;
  const float al = static_cast<float>(scale);
  const float* g = gp.data<float>();
  const float* y = probs.data<float>();
  dispatch_float(gscores.dtype(), "attention_scores_backward", [&](auto tag) {
    using U = typename decltype(tag)::type;
    U* out = static_cast<U*>(gscores.raw_data());
    parallel_for(rows, n * 4, [&](int64_t r) {
      const float* gr = g + r * n;
      const float* yr = y + r * n;
      U* o = out + r * n;
      const float dot = lane_sum(n, [&](int64_t i) { return gr[i] * yr[i]; });
      for (int64_t i = 0; i < n; ++i) {
        const float gx = yr[i] * (gr[i] - dot);
        store(o, i, gx * al);
      }
    });
  });
}

}  // namespace hfrun::cpu
