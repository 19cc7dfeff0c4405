// LayerNorm and RMSNorm over the last dim of x [rows, C], forward and backward side by side.
// Arithmetic and the saved statistics are f32 whatever x's dtype; y and gx keep x's dtype.
// The ops layer (tensor/ops/nn.cpp) hands weight/bias in as f32 [C] and wants gw/gb as f32 [C].
//
//   LayerNorm:  mean = sum(x) / C,  var = sum((x - mean)^2) / C,  rstd = 1 / sqrt(var + eps)
//               xhat = (x - mean) * rstd,  y = xhat * w + b
//               gx = rstd * (g - mean(g) - xhat * mean(g * xhat))   with g = gy * w
//   RMSNorm:    rstd = 1 / sqrt(sum(x^2) / C + eps),  xhat = x * rstd,  y = xhat * w
//               gx = rstd * (g - xhat * mean(g * xhat))
//   Both:       gw = sum over rows of gy * xhat,  gb = sum over rows of gy
#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/vec_math.h"

namespace hfrun::cpu {
namespace {

// Row blocks for the gw/gb partial sums. The split depends only on `rows`, never on the thread
// count, and the partials are reduced in block order, so gw/gb are bitwise identical on any
// number of threads (no atomics anywhere).
struct RowBlocks {
  int64_t size, count;
};
RowBlocks row_blocks(int64_t rows) {
  const int64_t size = std::max<int64_t>(16, (rows + 63) / 64);
  return {size, (rows + size - 1) / size};
}

// out[c] = sum over blocks b (in order) of partial[b, c]; partial is [blocks, C].
void reduce_partials(const std::vector<float>& partial, int64_t blocks, int64_t C, float* out) {
  constexpr int64_t kCols = 256;
  parallel_for((C + kCols - 1) / kCols, blocks * kCols, [&](int64_t task) {
    const int64_t c0 = task * kCols, c1 = std::min(C, c0 + kCols);
    for (int64_t c = c0; c < c1; ++c) out[c] = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      const float* p = partial.data() + b * C;
      for (int64_t c = c0; c < c1; ++c) out[c] += p[c];
    }
  });
}

float* f32_or_null(Tensor& t) {
  return t.defined() ? t.data<float>() : nullptr;
}

}  // namespace

void CpuBackend::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps,
                            Tensor& y, Tensor& mean, Tensor& rstd) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  const float* wp = w.data<float>();
  const float* bp = b.data<float>();
  float* mp = mean.data<float>();
  float* rp = rstd.data<float>();
  const float epsf = static_cast<float>(eps);
  dispatch_float(x.dtype(), "layer_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    parallel_for(rows, 4 * C, [&](int64_t r) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      // Two passes (mean, then centred squares): no cancellation when |mean| >> std.
      const float mu = lane_sum(C, [&](int64_t i) { return load(xr, i); }) / C;
      const float var = lane_sum(C,
                                 [&](int64_t i) {
                                   const float d = load(xr, i) - mu;
                                   return d * d;
                                 }) /
                        C;
      const float rs = 1.0f / std::sqrt(var + epsf);
      for (int64_t c = 0; c < C; ++c) store(yr, c, (load(xr, c) - mu) * rs * wp[c] + bp[c]);
      mp[r] = mu;
      rp[r] = rs;
    });
  });
}

void CpuBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                     const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor& gw,
                                     Tensor& gb) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  const float* wp = w.data<float>();
  const float* mp = mean.data<float>();
  const float* rp = rstd.data<float>();
  float* gwp = f32_or_null(gw);
  float* gbp = f32_or_null(gb);
  const RowBlocks blk = row_blocks(rows);
  std::vector<float> pw(gwp ? blk.count * C : 0), pb(gbp ? blk.count * C : 0);
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* gp = static_cast<const T*>(gy.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    parallel_for(blk.count, blk.size * C * 8, [&](int64_t bi) {
      float* pwb = gwp ? pw.data() + bi * C : nullptr;
      float* pbb = gbp ? pb.data() + bi * C : nullptr;
      if (pwb) std::fill(pwb, pwb + C, 0.0f);
      if (pbb) std::fill(pbb, pbb + C, 0.0f);
      const int64_t r1 = std::min(rows, (bi + 1) * blk.size);
      for (int64_t r = bi * blk.size; r < r1; ++r) {
        const T* xr = xp + r * C;
        const T* gr = gp + r * C;
        T* gxr = gxp + r * C;
        const float mu = mp[r], rs = rp[r];
        const float mean_g = lane_sum(C, [&](int64_t i) { return load(gr, i) * wp[i]; }) / C;
        const float mean_gxhat =
            lane_sum(C,
                     [&](int64_t i) { return load(gr, i) * wp[i] * ((load(xr, i) - mu) * rs); }) /
            C;
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = (load(xr, c) - mu) * rs;
          store(gxr, c, rs * (load(gr, c) * wp[c] - mean_g - xhat * mean_gxhat));
        }
        if (pwb) {
          for (int64_t c = 0; c < C; ++c) pwb[c] += load(gr, c) * ((load(xr, c) - mu) * rs);
        }
        if (pbb) {
          for (int64_t c = 0; c < C; ++c) pbb[c] += load(gr, c);
        }
      }
    });
  });
  if (gwp) reduce_partials(pw, blk.count, C, gwp);
  if (gbp) reduce_partials(pb, blk.count, C, gbp);
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& w, double eps, Tensor& y, Tensor& rstd) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  const float* wp = w.data<float>();
  float* rp = rstd.data<float>();
  const float epsf = static_cast<float>(eps);
  dispatch_float(x.dtype(), "rms_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(y.raw_data());
    parallel_for(rows, 3 * C, [&](int64_t r) {
      const T* xr = xp + r * C;
      T* yr = yp + r * C;
      const float ms = lane_sum(C,
                                [&](int64_t i) {
                                  const float v = load(xr, i);
                                  return v * v;
                                }) /
                       C;
      const float rs = 1.0f / std::sqrt(ms + epsf);
      for (int64_t c = 0; c < C; ++c) store(yr, c, load(xr, c) * rs * wp[c]);
      rp[r] = rs;
    });
  });
}

void CpuBackend::rms_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                   const Tensor& rstd, Tensor& gx, Tensor& gw) {
  const int64_t C = x.sizes().back(), rows = x.numel() / C;
  const float* wp = w.data<float>();
  const float* rp = rstd.data<float>();
  float* gwp = f32_or_null(gw);
  const RowBlocks blk = row_blocks(rows);
  std::vector<float> pw(gwp ? blk.count * C : 0);
  dispatch_float(x.dtype(), "rms_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* gp = static_cast<const T*>(gy.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    parallel_for(blk.count, blk.size * C * 6, [&](int64_t bi) {
      float* pwb = gwp ? pw.data() + bi * C : nullptr;
      if (pwb) std::fill(pwb, pwb + C, 0.0f);
      const int64_t r1 = std::min(rows, (bi + 1) * blk.size);
      for (int64_t r = bi * blk.size; r < r1; ++r) {
        const T* xr = xp + r * C;
        const T* gr = gp + r * C;
        T* gxr = gxp + r * C;
        const float rs = rp[r];
        const float mean_gxhat =
            lane_sum(C, [&](int64_t i) { return load(gr, i) * wp[i] * (load(xr, i) * rs); }) / C;
        for (int64_t c = 0; c < C; ++c) {
          const float xhat = load(xr, c) * rs;
          store(gxr, c, rs * (load(gr, c) * wp[c] - xhat * mean_gxhat));
        }
        if (pwb) {
          for (int64_t c = 0; c < C; ++c) pwb[c] += load(gr, c) * (load(xr, c) * rs);
        }
      }
    });
  });
  if (gwp) reduce_partials(pw, blk.count, C, gwp);
}

}  // namespace hfrun::cpu
