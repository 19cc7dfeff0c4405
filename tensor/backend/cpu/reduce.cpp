// Sum and max over one axis of x viewed as [outer, n, inner], and dropout.
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"

namespace hfrun::cpu {

void CpuBackend::reduce_sum(const Tensor& x, int64_t outer, int64_t n, int64_t inner, Tensor& out) {
  dispatch_float(x.dtype(), "sum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* op = static_cast<T*>(out.raw_data());
    if (inner == 1) {
      // Row sums: double accumulation keeps long rows (e.g. a loss over many tokens) exact enough.
      parallel_for(outer, n, [&](int64_t o) {
        double acc = 0;
        const T* row = xp + o * n;
        for (int64_t i = 0; i < n; ++i) acc += load(row, i);
        store(op, o, static_cast<float>(acc));
      });
      return;
    }
    // Column sums (e.g. a bias gradient over tokens): split the inner dim across threads;
    // sum blocks of kRows rows in f32 (vectorised), then add each block's partial in double so
    // the error does not grow with the number of rows.
    constexpr int64_t kCols = 256, kRows = 64;
    const int64_t col_blocks = (inner + kCols - 1) / kCols;
    parallel_for(outer * col_blocks, n * kCols, [&](int64_t task) {
      const int64_t o = task / col_blocks, c0 = (task % col_blocks) * kCols;
      const int64_t cols = std::min(kCols, inner - c0);
      double total[kCols] = {};
      const T* base = xp + o * n * inner + c0;
      for (int64_t r0 = 0; r0 < n; r0 += kRows) {
        float acc[kCols] = {};
        for (int64_t i = r0; i < std::min(n, r0 + kRows); ++i) {
          const T* row = base + i * inner;
          for (int64_t c = 0; c < cols; ++c) acc[c] += load(row, c);
        }
        for (int64_t c = 0; c < cols; ++c) total[c] += acc[c];
      }
      for (int64_t c = 0; c < cols; ++c)
        store(op, o * inner + c0 + c, static_cast<float>(total[c]));
    });
  });
}

void CpuBackend::reduce_max(const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                            Tensor& values, Tensor& indices) {
  dispatch_float(x.dtype(), "max", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* vp = static_cast<T*>(values.raw_data());
    int64_t* ip = indices.data<int64_t>();
    parallel_for(outer * inner, n, [&](int64_t task) {
      const int64_t o = task / inner, c = task % inner;
      const T* p = xp + o * n * inner + c;
      float best = -std::numeric_limits<float>::infinity();
      int64_t arg = 0;
      for (int64_t i = 0; i < n; ++i) {
        float v = load(p, i * inner);
        if (v > best || std::isnan(v)) {
          best = v;
          arg = i;
          if (std::isnan(v)) break;  // NaN propagates, as torch.max
        }
      }
      store(vp, task, best);
      ip[task] = arg;
    });
  });
}

void CpuBackend::dropout(const Tensor& x, double p, uint64_t seed, Tensor& y) {
  dispatch_float(x.dtype(), "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    const int64_t n = x.numel();
    const float keep_scale = static_cast<float>(1.0 / (1.0 - p));
    const float pf = static_cast<float>(p);
    parallel_for((n + 3) / 4, 4, [&](int64_t blk) {
      auto r = philox4x32(seed, static_cast<uint64_t>(blk));
      for (int j = 0; j < 4 && blk * 4 + j < n; ++j) {
        const int64_t i = blk * 4 + j;
        bool keep = uint_to_unit_float(r[j]) >= pf;
        store(yp, i, keep ? load(xp, i) * keep_scale : 0.0f);
      }
    });
  });
}

}  // namespace hfrun::cpu
