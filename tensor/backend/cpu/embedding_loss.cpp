// Embedding lookup and its scatter-add backward; fused log-softmax + NLL cross-entropy.
// Index ranges are validated by the ops layer (tensor/ops/nn.cpp) before these run.
//
//   cross_entropy:  lse[r] = log sum_v exp(logits[r, v]),  loss = mean over counted rows of
//                   (lse[r] - logits[r, target[r]]); rows with target == ignore_index are not
//                   counted (no counted row: NaN, like torch's mean reduction)
//   backward:       glogits[r, v] = (exp(logits[r, v] - lse[r]) - [v == target[r]]) * gloss / count
//                   and 0 on ignored rows
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/vec_math.h"

namespace hfrun::cpu {
namespace {

// log(sum(exp(x))) over one row in f32: a max pass, then a sum of exp(x - max).
template <typename T>
float row_logsumexp(const T* x, int64_t n) {
  const float m = lane_max(n, [x](int64_t i) { return load(x, i); });
  if (std::isinf(m)) return m;  // all -inf (or a +inf logit): exp(x - m) would be NaN
  return m + std::log(lane_sum(n, [x, m](int64_t i) { return exp_f(load(x, i) - m); }));
}

template <typename I>
int64_t count_targets(const I* t, int64_t n, int64_t ignore_index) {
  int64_t count = 0;
  for (int64_t r = 0; r < n; ++r) count += static_cast<int64_t>(t[r]) != ignore_index;
  return count;
}

// One row's gradient over its columns [col0, col0 + n): (exp(x - lse) - [column == t]) * scale,
// 0 where the row is ignored. gr may be xr (the gradient written over the logits): the
// target's logit is read first.
template <typename TX, typename TG>
void row_gradient(const TX* xr, TG* gr, int64_t n, int64_t col0, int64_t t, bool ignored, float lse,
                  float scale) {
  if (ignored) {
    for (int64_t v = 0; v < n; ++v) store(gr, v, 0.0f);
    return;
  }
  const bool here = t >= col0 && t < col0 + n;
  const float pt = here ? exp_f(load(xr, t - col0) - lse) : 0.0f;
  for (int64_t v = 0; v < n; ++v) store(gr, v, exp_f(load(xr, v) - lse) * scale);
  if (here) store(gr, t - col0, (pt - 1.0f) * scale);
}

}  // namespace

void CpuBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  // A row copy is a memcpy of C elements in any dtype.
  const int64_t n = ids.numel();
  const size_t row_bytes = static_cast<size_t>(weight.sizes()[1]) * weight.element_size();
  const char* wp = static_cast<const char*>(weight.raw_data());
  char* op = static_cast<char*>(out.raw_data());
  dispatch_index(ids.dtype(), "embedding", [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* ip = static_cast<const I*>(ids.raw_data());
    parallel_for(n, static_cast<int64_t>(row_bytes) / 4 + 1, [&](int64_t i) {
      std::memcpy(op + i * row_bytes, wp + static_cast<int64_t>(ip[i]) * row_bytes, row_bytes);
    });
  });
}

namespace {

// gy [n, C] rows are summed into gweight [V, C] rows. A stable counting sort groups the
// positions of each id first, so every gweight row belongs to one task and adds its gy rows in
// position order: no races, no atomics, the same bits on any thread count. Without `add` every
// row is written (zeros where no id names it); with `add` a named row gets its sum, rounded to
// the dtype as the dense gradient would hold it, added once, and the other rows are not touched.
void embedding_backward_rows(const Tensor& gy, const Tensor& ids, Tensor& gweight, bool add) {
  const int64_t V = gweight.sizes()[0], C = gweight.sizes()[1], n = ids.numel();
  std::vector<int64_t> first(V + 1, 0), order(n);
  dispatch_index(ids.dtype(), "embedding_backward", [&](auto tag) {
    using I = typename decltype(tag)::type;
    const I* ip = static_cast<const I*>(ids.raw_data());
    for (int64_t i = 0; i < n; ++i) ++first[ip[i] + 1];
    for (int64_t v = 0; v < V; ++v) first[v + 1] += first[v];
    std::vector<int64_t> cursor(first.begin(), first.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[cursor[ip[i]]++] = i;
  });
  dispatch_float(gweight.dtype(), "embedding_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = static_cast<const T*>(gy.raw_data());
    T* gwp = static_cast<T*>(gweight.raw_data());
    constexpr int64_t kCols = 256;
    parallel_for(V, C * (1 + n / std::max<int64_t>(V, 1)), [&](int64_t v) {
      if (add && first[v] == first[v + 1]) return;  // no id names this row
      T* row = gwp + v * C;
      // f32 accumulation in column chunks, one rounding to T per element.
      for (int64_t c0 = 0; c0 < C; c0 += kCols) {
        const int64_t cols = std::min(kCols, C - c0);
        float acc[kCols] = {};
        for (int64_t k = first[v]; k < first[v + 1]; ++k) {
          const T* g = gp + order[k] * C + c0;
          for (int64_t c = 0; c < cols; ++c) acc[c] += load(g, c);
        }
        if (!add) {
          for (int64_t c = 0; c < cols; ++c) store(row, c0 + c, acc[c]);
          continue;
        }
        T sum[kCols];
        for (int64_t c = 0; c < cols; ++c) store(sum, c, acc[c]);
        for (int64_t c = 0; c < cols; ++c) {
          store(row, c0 + c, load(row, c0 + c) + load(static_cast<const T*>(sum), c));
        }
      }
    });
  });
}

}  // namespace

void CpuBackend::embedding_backward(const Tensor& gy, const Tensor& ids, Tensor& gweight) {
  embedding_backward_rows(gy, ids, gweight, /*add=*/false);
}

void CpuBackend::embedding_backward_add(const Tensor& gy, const Tensor& ids, Tensor& gweight) {
  embedding_backward_rows(gy, ids, gweight, /*add=*/true);
}

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                               Tensor& loss, Tensor& lse) {
  const int64_t N = logits.sizes()[0], V = logits.sizes()[1];
  float* lp = lse.data<float>();
  std::vector<float> row_loss(N);
  int64_t count = 0;
  dispatch_index(targets.dtype(), "cross_entropy", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = static_cast<const T*>(logits.raw_data());
      parallel_for(N, 2 * V, [&](int64_t r) {
        const T* xr = xp + r * V;
        lp[r] = row_logsumexp(xr, V);
        const int64_t t = tp[r];
        row_loss[r] = t == ignore_index ? 0.0f : lp[r] - load(xr, t);
      });
    });
    count = count_targets(tp, N, ignore_index);
  });
  // Fixed-order double sum: the loss does not depend on the thread count.
  double total = 0;
  for (int64_t r = 0; r < N; ++r) total += row_loss[r];
  loss.data<float>()[0] = count > 0 ? static_cast<float>(total / static_cast<double>(count))
                                    : std::numeric_limits<float>::quiet_NaN();
}

void CpuBackend::cross_entropy_backward(const Tensor& gloss, const Tensor& logits,
                                        const Tensor& targets, const Tensor& lse,
                                        int64_t ignore_index, Tensor& glogits) {
  const int64_t N = logits.sizes()[0], V = logits.sizes()[1];
  const float* lp = lse.data<float>();
  const float g = gloss.data<float>()[0];
  dispatch_index(targets.dtype(), "cross_entropy_backward", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    const int64_t count = count_targets(tp, N, ignore_index);
    // With no counted row the loss is a constant NaN and every gradient is zero (as torch).
    const float scale = count > 0 ? g / static_cast<float>(count) : 0.0f;
    dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = static_cast<const T*>(logits.raw_data());
      T* gp = static_cast<T*>(glogits.raw_data());
      parallel_for(N, 2 * V, [&](int64_t r) {
        const int64_t t = tp[r];
        row_gradient(xp + r * V, gp + r * V, V, 0, t, t == ignore_index, lp[r], scale);
      });
    });
  });
}

// ---- blocked cross-entropy (logits that come a block of columns at a time) ------------------

void CpuBackend::cross_entropy_fold(const Tensor& logits, int64_t col0, const Tensor& targets,
                                    int64_t ignore_index, Tensor& state) {
  const int64_t N = logits.sizes()[0], n = logits.sizes()[1];
  const float* xp = logits.data<float>();
  float* sp = state.data<float>();
  dispatch_index(targets.dtype(), "cross_entropy_fold", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    parallel_for(N, 2 * n, [&](int64_t r) {
      const float* xr = xp + r * n;
      float* st = sp + r * 3;
      const float m = st[0];
      const float mn = std::max(m, lane_max(n, [xr](int64_t i) { return xr[i]; }));
      // The sum so far rescaled to the new max, plus this block's terms. An infinite max (all
      // -inf so far, or a +inf logit) leaves the sum alone: lse is the max then. A NaN logit
      // makes the sum NaN, as in row_logsumexp (which returns the max only where that is
      // infinite), also when it comes in a block whose max is infinite.
      if (std::isfinite(mn)) {
        const float kept =
            m == -std::numeric_limits<float>::infinity() ? st[1] : st[1] * exp_f(m - mn);
        st[1] = kept + lane_sum(n, [xr, mn](int64_t i) { return exp_f(xr[i] - mn); });
      } else {
        for (int64_t i = 0; i < n; ++i) {
          if (std::isnan(xr[i])) {
            st[1] = std::numeric_limits<float>::quiet_NaN();
            break;
          }
        }
      }
      st[0] = mn;
      const int64_t t = tp[r];
      if (t != ignore_index && t >= col0 && t < col0 + n) st[2] = xr[t - col0];
    });
  });
}

void CpuBackend::cross_entropy_finish(const Tensor& state, const Tensor& targets,
                                      int64_t ignore_index, Tensor& loss, Tensor& lse) {
  const int64_t N = state.sizes()[0];
  const float* sp = state.data<float>();
  float* lp = lse.data<float>();
  int64_t count = 0;
  double total = 0;  // fixed order, as cross_entropy's
  dispatch_index(targets.dtype(), "cross_entropy_finish", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    for (int64_t r = 0; r < N; ++r) {
      const float* st = sp + r * 3;
      lp[r] = std::isinf(st[0]) ? st[0] : st[0] + std::log(st[1]);
      const int64_t t = tp[r];
      if (t == ignore_index) continue;
      total += lp[r] - st[2];
      ++count;
    }
  });
  loss.data<float>()[0] = count > 0 ? static_cast<float>(total / static_cast<double>(count))
                                    : std::numeric_limits<float>::quiet_NaN();
}

void CpuBackend::cross_entropy_block_backward(const Tensor& gloss, const Tensor& logits,
                                              int64_t col0, const Tensor& targets,
                                              const Tensor& lse, int64_t ignore_index,
                                              int64_t count, Tensor& glogits) {
  const int64_t N = logits.sizes()[0], n = logits.sizes()[1];
  const float* lp = lse.data<float>();
  const float* xp = logits.data<float>();
  const float g = gloss.data<float>()[0];
  const float scale = count > 0 ? g / static_cast<float>(count) : 0.0f;
  dispatch_index(targets.dtype(), "cross_entropy_block_backward", [&](auto itag) {
    using I = typename decltype(itag)::type;
    const I* tp = static_cast<const I*>(targets.raw_data());
    dispatch_float(glogits.dtype(), "cross_entropy_block_backward", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* gp = static_cast<T*>(glogits.raw_data());
      parallel_for(N, 2 * n, [&](int64_t r) {
        const int64_t t = tp[r];
        row_gradient(xp + r * n, gp + r * n, n, col0, t, t == ignore_index, lp[r], scale);
      });
    });
  });
}

}  // namespace hfrun::cpu
