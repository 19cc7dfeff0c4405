// The CPU's fused attention: flash-style in that the [T, S] probabilities never reach memory,
// row blocks in that each block of kBlockRows queries takes its whole visible key range at once
// (no running rescale). Per head and block of queries, in a thread's L2-sized buffers:
//   scores = q_blk k^T (f32), masked softmax (the composed path's arithmetic), out = P v;
// the block's keys are only those some query of it sees: a causal block skips the keys after
// its last query and a sliding window those before its first query's window, so causal
// attention does a little over half the composed path's multiply-adds. The backward recomputes
// P from lse and runs the composed backward's products block by block:
//   dP = dO v^T, dS = scale P (dP - rowsum(dP P)), dQ = dS k, dK += dS^T q, dV += P^T dO,
// dK and dV summed in f32 per KV head (over its query heads and blocks), rounded once.
// Attention dropout drops P row by row with ops::dropout's mask over the [B, H, T, S] element
// index (regenerated in the backward), so the probabilities still never reach memory:
//   out = (P o M / (1 - p)) v,  dP = (dO v^T) o M / (1 - p),  dV += (P o M / (1 - p))^T dO.
// Each GEMM is a oneDNN primitive run from inside the parallel loop, so on the calling thread
// alone: the work is split by heads and blocks, never inside a product, and every result is the
// same for any thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/dispatch.h"
#include "tensor/backend/cpu/loops.h"
#include "tensor/backend/cpu/matmul_primitives.h"
#include "tensor/backend/cpu/philox.h"
#include "tensor/backend/cpu/vec_math.h"

namespace hfrun::cpu {
namespace {

// Queries per block: a block's f32 scores are kBlockRows x S (128 KB at S = 256); 128 rows ran
// faster than 32, 64 or 256 at S = 256 and 1024 (README "Performance").
constexpr int64_t kBlockRows = 128;
// A block's key range starts and ends on multiples of kKeyAlign (or at S), the few extra keys
// masked: fewer distinct GEMM shapes, so fewer primitives to create and cache.
constexpr int64_t kKeyAlign = 32;
constexpr float kInf = std::numeric_limits<float>::infinity();

// This thread's buffer `Slot` of at least `bytes` (loops.h's thread_buffer).
template <int Slot>
void* thread_buffer(size_t bytes) {
  return cpu::thread_buffer<std::integral_constant<int, Slot>>(bytes);
}

// fn(i) for i in [0, n) on the OpenMP threads, always inside a parallel region (so the GEMMs
// run on the calling thread), dynamically scheduled (padded batches' heads differ in work); the
// first exception is rethrown here once the loop is done.
template <typename Fn>
void parallel_items(int64_t n, Fn&& fn) {
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      fn(i);
    } catch (...) {
#pragma omp critical(hfrun_cpu_attention_error)
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  }
  if (error) std::rethrow_exception(error);
}

// A [B, H, rows, D] view with unit last stride: head (b, h)'s matrix, rows sr apart.
template <typename T>
struct Heads {
  T* data;
  int64_t sb, sh, sr;
  explicit Heads(const Tensor& t)
      : data(static_cast<T*>(t.raw_data())), sb(t.stride(0)), sh(t.stride(1)), sr(t.stride(2)) {}
  T* at(int64_t b, int64_t h, int64_t row) const { return data + b * sb + h * sh + row * sr; }
};

// The keys query row i sees, [first, end), as scaled_masked_softmax masks them.
struct Mask {
  int64_t t, s;
  bool causal;
  int64_t window;
  const int32_t* lengths;  // null without padding
  int64_t end(int64_t b, int64_t i) const {
    int64_t e = causal ? std::clamp<int64_t>(i + (s - t) + 1, 0, s) : s;
    if (lengths != nullptr) e = std::min<int64_t>(e, std::max<int32_t>(lengths[b], 0));
    return e;
  }
  int64_t first(int64_t b, int64_t i) const {
    return causal && window > 0 ? std::clamp<int64_t>(i + (s - t) + 1 - window, 0, end(b, i)) : 0;
  }
};

// A block of queries [r0, r0 + m) and the aligned key range [k0, k0 + n) it computes (n = 0:
// no query of it sees a key).
struct Block {
  int64_t r0, m, k0, n;
};
Block block_of(const Mask& mask, int64_t b, int64_t blk) {
  Block k{blk * kBlockRows, std::min(kBlockRows, mask.t - blk * kBlockRows), 0, 0};
  // first() and end() never decrease along the rows: the first row starts the range, the last
  // ends it.
  const int64_t lo = mask.first(b, k.r0), hi = mask.end(b, k.r0 + k.m - 1);
  if (hi <= lo) return k;
  k.k0 = lo / kKeyAlign * kKeyAlign;
  k.n = std::min(mask.s, (hi + kKeyAlign - 1) / kKeyAlign * kKeyAlign) - k.k0;
  return k;
}

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, float> ? DType::kF32 : DType::kBF16;
}

template <typename T>
void store_row(T* dst, const float* src, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (dst != src) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  } else {
    for (int64_t j = 0; j < n; ++j) store(dst, j, src[j]);
  }
}

// out = a @ b for a's, b's and out's layouts (in: T; out: T or f32), optionally out += a @ b.
template <typename T>
void gemm(const Matrix& a, const void* pa, const Matrix& b, const void* pb, const Matrix& out,
          void* pout, DType out_dtype, bool accumulate = false) {
  run_matrices(a, pa, b, pb, out, pout, dtype_of<T>(), out_dtype, accumulate);
}

// rows rows of `bytes` each from src (rows src_stride bytes apart) to dst (dst_stride apart).
// Head rows are short (128 bytes for 64 bf16): a memcpy call per row costs more than the copy,
// so the usual sizes get copies of a constant size, which the compiler inlines.
void copy_rows(char* dst, int64_t dst_stride, const char* src, int64_t src_stride, int64_t rows,
               int64_t bytes) {
  const auto each = [&](auto size) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(size));
    }
  };
  switch (bytes) {
    case 64:
      return each(std::integral_constant<int64_t, 64>{});
    case 128:
      return each(std::integral_constant<int64_t, 128>{});
    case 256:
      return each(std::integral_constant<int64_t, 256>{});
    case 512:
      return each(std::integral_constant<int64_t, 512>{});
    default:
      return each(bytes);
  }
}

// Head (b, h) of x as a dense [rows, cols] matrix: x's own memory where its rows are
// adjacent, else a copy in this thread's buffer `Slot`. oneDNN 2.6 runs a strided operand (the
// heads of a [B, T, H, D] projection, rows H * D apart) on its gemm:jit kernels, a dense one on
// brgemm (AMX where the CPU has it).
template <int Slot, typename T>
const T* dense_head(const Heads<const T>& x, int64_t b, int64_t h, int64_t rows, int64_t cols) {
  const T* src = x.at(b, h, 0);
  if (x.sr == cols || rows <= 1) return src;
  T* dst = static_cast<T*>(thread_buffer<Slot>(sizeof(T) * rows * cols));
  const int64_t row_bytes = cols * static_cast<int64_t>(sizeof(T));
  copy_rows(reinterpret_cast<char*>(dst), row_bytes, reinterpret_cast<const char*>(src),
            x.sr * static_cast<int64_t>(sizeof(T)), rows, row_bytes);
  return dst;
}

// Where a product writes head (b, h)'s rows [r0, r0 + rows) of x: in place where they are
// dense, else this thread's buffer `Slot`, which store_head() then copies to them.
template <int Slot, typename T>
T* head_rows_out(const Heads<T>& x, int64_t b, int64_t h, int64_t r0, int64_t rows, int64_t cols) {
  if (x.sr == cols || rows <= 1) return x.at(b, h, r0);
  return static_cast<T*>(thread_buffer<Slot>(sizeof(T) * rows * cols));
}
template <typename T>
void store_head(const Heads<T>& x, int64_t b, int64_t h, int64_t r0, const T* src, int64_t rows,
                int64_t cols) {
  T* dst = x.at(b, h, r0);
  if (dst == src) return;
  const int64_t row_bytes = cols * static_cast<int64_t>(sizeof(T));
  copy_rows(reinterpret_cast<char*>(dst), x.sr * static_cast<int64_t>(sizeof(T)),
            reinterpret_cast<const char*>(src), row_bytes, rows, row_bytes);
}

template <typename T>
void zero_rows(T* p, int64_t rows, int64_t cols, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memset(static_cast<void*>(p + r * stride), 0, static_cast<size_t>(cols) * sizeof(T));
  }
}

// The probabilities' dropout for one row: keep[j] (1 or 0) for elements [first, first + count)
// of the mask (ops::dropout's: element i kept iff word i % 4 of Philox counter i / 4 >= p).
struct RowDropout {
  uint64_t key;
  float p, keep_scale;
  void keep(int64_t first, int64_t count, uint8_t* keep) const {
    uint32_t words[4 * kPhiloxBatch];
    uint64_t counter = static_cast<uint64_t>(first) / 4;
    int64_t skip = first % 4, done = 0;
    while (done < count) {
      philox4x32_batch(key, counter, words);
      const int64_t m = std::min<int64_t>(4 * kPhiloxBatch - skip, count - done);
      for (int64_t w = 0; w < m; ++w) keep[done + w] = uint_to_unit_float(words[skip + w]) >= p;
      done += m;
      skip = 0;
      counter += kPhiloxBatch;
    }
  }
};

// Row r of a block's probabilities p (n keys) from its scores x, visible keys [f, e), as
// scaled_masked_softmax computes them (the scaled scores, their max, exp and sum, times 1 / sum;
// the exps are left in x), the rest 0. With `keep` (dropout: its flags for [f, e)), p is the
// dropped probabilities, ops::dropout's (P * keep_scale or 0). Returns the row's log-sum-exp
// (+inf when it sees nothing), the undropped softmax's.
template <typename T>
float softmax_row(float* x, T* p, int64_t f, int64_t e, int64_t n, float scale,
                  const uint8_t* keep = nullptr, float keep_scale = 1.0f) {
  for (int64_t j = 0; j < f; ++j) store(p, j, 0.0f);
  for (int64_t j = std::max(e, f); j < n; ++j) store(p, j, 0.0f);
  if (e <= f) return kInf;
  float* xv = x + f;
  T* pv = p + f;
  const int64_t cnt = e - f;
  const float mx = lane_max(cnt, [xv, scale](int64_t j) { return scale * xv[j]; });
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= cnt; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      xv[j + l] = exp_f(scale * xv[j + l] - mx);
      lanes[l] += xv[j + l];
    }
  }
  float sum = 0.0f;
  for (; j < cnt; ++j) {
    xv[j] = exp_f(scale * xv[j] - mx);
    sum += xv[j];
  }
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  const float inv = 1.0f / sum;
  if (keep == nullptr) {
    for (int64_t i = 0; i < cnt; ++i) store(pv, i, xv[i] * inv);
  } else {
    for (int64_t i = 0; i < cnt; ++i) store(pv, i, keep[i] ? xv[i] * inv * keep_scale : 0.0f);
  }
  return mx + std::log(sum);
}

// Row r of the score gradient ds (n keys) from the scores x and the probabilities' gradient g,
// visible keys [f, e), lse l: P = exp(scale x - l) (left in x, and in p for a 16-bit T) and
// ds = scale P (g - rowsum(g P)) as attention_scores_backward rounds it; 0 outside [f, e). With
// `keep` (dropout: its flags for [f, e)), g is first dropped as dropout_backward drops it (in
// place) and p (x's memory for f32) gets the dropped probabilities, as the forward's.
template <typename T>
void score_gradient_row(float* x, float* g, T* p, T* ds, int64_t f, int64_t e, int64_t n,
                        float scale, float l, const uint8_t* keep = nullptr,
                        float keep_scale = 1.0f) {
  for (int64_t j = 0; j < f; ++j) {
    store(ds, j, 0.0f);
    store(p, j, 0.0f);
  }
  for (int64_t j = std::max(e, f); j < n; ++j) {
    store(ds, j, 0.0f);
    store(p, j, 0.0f);
  }
  if (e <= f) return;
  if (keep != nullptr) {
    for (int64_t j = f; j < e; ++j) g[j] = keep[j - f] ? g[j] * keep_scale : 0.0f;
  }
  float lanes[kLanes] = {};
  int64_t j = f;
  for (; j + kLanes <= e; j += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) {
      x[j + k] = exp_f(scale * x[j + k] - l);
      lanes[k] += g[j + k] * x[j + k];
    }
  }
  float dot = 0.0f;
  for (; j < e; ++j) {
    x[j] = exp_f(scale * x[j] - l);
    dot += g[j] * x[j];
  }
  for (int64_t k = 0; k < kLanes; ++k) dot += lanes[k];
  if (keep == nullptr) {
    for (int64_t i = f; i < e; ++i) {
      if constexpr (!std::is_same_v<T, float>) store(p, i, x[i]);
      store(ds, i, x[i] * (g[i] - dot) * scale);
    }
    return;
  }
  for (int64_t i = f; i < e; ++i) {
    const float pi = x[i];
    store(ds, i, pi * (g[i] - dot) * scale);
    store(p, i, keep[i - f] ? pi * keep_scale : 0.0f);  // after ds: p may be x's memory
  }
}

template <typename T>
void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Mask& mask, float scale,
             const RowDropout* drop, Tensor& out, Tensor& lse) {
  const int64_t bsz = q.size(0), h = q.size(1), d = q.size(3), dv = v.size(3);
  const int64_t group = h / k.size(1), s = mask.s, t = mask.t;
  const int64_t blocks = (t + kBlockRows - 1) / kBlockRows;
  const Heads<const T> qh(q), kh(k), vh(v);
  const Heads<T> oh(out);
  float* lse_p = lse.data<float>();
  parallel_items(bsz * h, [&](int64_t item) {
    const int64_t b = item / h, hq = item % h, hk = hq / group;
    const T* qd = dense_head<0>(qh, b, hq, t, d);
    const T* kd = dense_head<1>(kh, b, hk, s, d);
    const T* vd = dense_head<2>(vh, b, hk, s, dv);
    float* sc = static_cast<float*>(thread_buffer<3>(sizeof(float) * kBlockRows * s));
    T* p = std::is_same_v<T, float> ? reinterpret_cast<T*>(sc)
                                    : static_cast<T*>(thread_buffer<4>(sizeof(T) * kBlockRows * s));
    uint8_t* keep =
        drop != nullptr ? static_cast<uint8_t*>(thread_buffer<6>(static_cast<size_t>(s))) : nullptr;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const Block bl = block_of(mask, b, blk);
      float* lse_rows = lse_p + (b * h + hq) * t + bl.r0;
      if (bl.n == 0) {
        zero_rows(oh.at(b, hq, bl.r0), bl.m, dv, oh.sr);
        std::fill(lse_rows, lse_rows + bl.m, kInf);
        continue;
      }
      const int64_t n = bl.n;
      gemm<T>({bl.m, d, d, 1}, qd + bl.r0 * d, {d, n, 1, d}, kd + bl.k0 * d, {bl.m, n, n, 1}, sc,
              DType::kF32);
      for (int64_t r = 0; r < bl.m; ++r) {
        const int64_t i = bl.r0 + r, f = mask.first(b, i), e = mask.end(b, i);
        if (keep != nullptr && e > f) drop->keep(((b * h + hq) * t + i) * s + f, e - f, keep);
        lse_rows[r] = softmax_row(sc + r * n, p + r * n, f - bl.k0, e - bl.k0, n, scale, keep,
                                  drop != nullptr ? drop->keep_scale : 1.0f);
      }
      T* o = head_rows_out<5>(oh, b, hq, bl.r0, bl.m, dv);
      gemm<T>({bl.m, n, n, 1}, p, {n, dv, dv, 1}, vd + bl.k0 * dv, {bl.m, dv, dv, 1}, o,
              dtype_of<T>());
      store_head(oh, b, hq, bl.r0, o, bl.m, dv);
    }
  });
}

template <typename T>
void backward(const Tensor& gout, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& lse, const Mask& mask, float scale, const RowDropout* drop, Tensor& gq,
              Tensor& gk, Tensor& gv) {
  const int64_t bsz = q.size(0), h = q.size(1), hkv = k.size(1), d = q.size(3), dv = v.size(3);
  const int64_t group = h / hkv, s = mask.s, t = mask.t;
  const int64_t blocks = (t + kBlockRows - 1) / kBlockRows;
  const Heads<const T> qh(q), kh(k), vh(v), goh(gout);
  const Heads<T> gqh(gq), gkh(gk), gvh(gv);
  const float* lse_p = lse.data<float>();
  constexpr bool kF32 = std::is_same_v<T, float>;
  // One item per KV head: its dK and dV sum over the group's query heads and blocks.
  parallel_items(bsz * hkv, [&](int64_t item) {
    const int64_t b = item / hkv, hk = item % hkv;
    const T* kd = dense_head<0>(kh, b, hk, s, d);
    const T* vd = dense_head<1>(vh, b, hk, s, dv);
    float* acc_k = static_cast<float*>(thread_buffer<2>(sizeof(float) * s * d));
    float* acc_v = static_cast<float*>(thread_buffer<3>(sizeof(float) * s * dv));
    float* pf = static_cast<float*>(thread_buffer<4>(sizeof(float) * kBlockRows * s));
    float* dp = static_cast<float*>(thread_buffer<5>(sizeof(float) * kBlockRows * s));
    T* p = kF32 ? reinterpret_cast<T*>(pf)
                : static_cast<T*>(thread_buffer<6>(sizeof(T) * kBlockRows * s));
    T* ds = kF32 ? reinterpret_cast<T*>(dp)
                 : static_cast<T*>(thread_buffer<7>(sizeof(T) * kBlockRows * s));
    uint8_t* keep = drop != nullptr
                        ? static_cast<uint8_t*>(thread_buffer<11>(static_cast<size_t>(s)))
                        : nullptr;
    std::memset(acc_k, 0, sizeof(float) * s * d);
    std::memset(acc_v, 0, sizeof(float) * s * dv);
    for (int64_t hq = hk * group; hq < (hk + 1) * group; ++hq) {
      const T* qd = dense_head<8>(qh, b, hq, t, d);
      const T* god = dense_head<9>(goh, b, hq, t, dv);
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const Block bl = block_of(mask, b, blk);
        if (bl.n == 0) {
          zero_rows(gqh.at(b, hq, bl.r0), bl.m, d, gqh.sr);
          continue;
        }
        const int64_t n = bl.n;
        const float* lse_rows = lse_p + (b * h + hq) * t + bl.r0;
        const T* q_rows = qd + bl.r0 * d;
        const T* go_rows = god + bl.r0 * dv;
        const T* k_rows = kd + bl.k0 * d;
        gemm<T>({bl.m, d, d, 1}, q_rows, {d, n, 1, d}, k_rows, {bl.m, n, n, 1}, pf, DType::kF32);
        gemm<T>({bl.m, dv, dv, 1}, go_rows, {dv, n, 1, dv}, vd + bl.k0 * dv, {bl.m, n, n, 1}, dp,
                DType::kF32);
        for (int64_t r = 0; r < bl.m; ++r) {
          const int64_t i = bl.r0 + r;
          const int64_t f = mask.first(b, i) - bl.k0, e = mask.end(b, i) - bl.k0;
          if (keep != nullptr && e > f)
            drop->keep(((b * h + hq) * t + i) * s + bl.k0 + f, e - f, keep);
          score_gradient_row(pf + r * n, dp + r * n, p + r * n, ds + r * n, f, e, n, scale,
                             lse_rows[r], keep, drop != nullptr ? drop->keep_scale : 1.0f);
        }
        // dQ = dS k, dK += dS^T q, dV += P^T dO (f32 sums, rounded once below).
        T* gq_rows = head_rows_out<10>(gqh, b, hq, bl.r0, bl.m, d);
        gemm<T>({bl.m, n, n, 1}, ds, {n, d, d, 1}, k_rows, {bl.m, d, d, 1}, gq_rows, dtype_of<T>());
        store_head(gqh, b, hq, bl.r0, gq_rows, bl.m, d);
        gemm<T>({n, bl.m, 1, n}, ds, {bl.m, d, d, 1}, q_rows, {n, d, d, 1}, acc_k + bl.k0 * d,
                DType::kF32, true);
        gemm<T>({n, bl.m, 1, n}, p, {bl.m, dv, dv, 1}, go_rows, {n, dv, dv, 1}, acc_v + bl.k0 * dv,
                DType::kF32, true);
      }
    }
    for (int64_t j = 0; j < s; ++j) {
      store_row(gkh.at(b, hk, j), acc_k + j * d, d);
      store_row(gvh.at(b, hk, j), acc_v + j * dv, dv);
    }
  });
}

bool unit_last_stride(const Tensor& t) {
  return t.dim() == 4 && (t.size(3) <= 1 || t.stride(3) == 1);
}

template <typename Fn>
void dispatch_attention(DType t, Fn&& fn) {
  if (t == DType::kF32) return fn(TypeTag<float>{});
  if (t == DType::kBF16) return fn(TypeTag<BFloat16>{});
  HF_THROW("fused_attention (cpu): dtype ", dtype_name(t), " is not supported");
}

// The kernels' view of a dropout mask: ops::dropout's threshold and scale, as it rounds them.
RowDropout row_dropout(const DropoutMask& d) {
  return {d.key, static_cast<float>(d.p), static_cast<float>(1.0 / (1.0 - d.p))};
}

Mask mask_of(const Tensor& q, const Tensor& k, bool causal, int64_t window,
             const Tensor& key_lengths) {
  return {q.size(2), k.size(2), causal, window,
          key_lengths.defined() ? key_lengths.data<int32_t>() : nullptr};
}

}  // namespace

bool CpuBackend::fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v,
                                           int64_t /*window*/, const DropoutMask& /*dropout*/) {
  const DType t = q.dtype();
  if (t != DType::kF32 && !(t == DType::kBF16 && native_bf16_matmul())) return false;
  if (k.dtype() != t || v.dtype() != t) return false;
  if (!q.device().is_cpu() || !k.device().is_cpu() || !v.device().is_cpu()) return false;
  if (k.size(1) == 0 || q.size(1) % k.size(1) != 0 || k.size(2) != v.size(2)) return false;
  return unit_last_stride(q) && unit_last_stride(k) && unit_last_stride(v);
}

void CpuBackend::fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                 double scale, const Tensor& key_lengths, int64_t window,
                                 const DropoutMask& dropout, Tensor& out, Tensor& lse) {
  HF_CHECK(unit_last_stride(out) && lse.is_contiguous(), "fused_attention (cpu): out ", out.str(),
           " needs a unit last stride, lse ", lse.str(), " to be contiguous");
  const Mask mask = mask_of(q, k, causal, window, key_lengths);
  const RowDropout drop = row_dropout(dropout);
  dispatch_attention(q.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    forward<T>(q, k, v, mask, static_cast<float>(scale), dropout.p > 0 ? &drop : nullptr, out, lse);
  });
}

void CpuBackend::fused_attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                          const Tensor& v, const Tensor& /*out*/, const Tensor& lse,
                                          bool causal, double scale, const Tensor& key_lengths,
                                          int64_t window, const DropoutMask& dropout, Tensor& gq,
                                          Tensor& gk, Tensor& gv) {
  for (const Tensor* x : std::initializer_list<const Tensor*>{&gout, &gq, &gk, &gv}) {
    HF_CHECK(unit_last_stride(*x), "fused_attention_backward (cpu): ", x->str(),
             " needs a unit last stride");
  }
  const Mask mask = mask_of(q, k, causal, window, key_lengths);
  const RowDropout drop = row_dropout(dropout);
  dispatch_attention(q.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    backward<T>(gout, q, k, v, lse, mask, static_cast<float>(scale),
                dropout.p > 0 ? &drop : nullptr, gq, gk, gv);
  });
}

}  // namespace hfrun::cpu
