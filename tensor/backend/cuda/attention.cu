// Fused (flash-style) scaled dot-product attention for bf16/f16 q, k, v [B, H, T|S, D] with
// D in {16, 32, 64, 128}: the [T, S] probabilities are never stored. Tensor cores through WMMA
// (16x16x16 bf16/f16 products, f32 accumulation); softmax arithmetic in f32.
//
// Forward: one block of 4 warps per (64 queries, batch*head); each warp owns 16 query rows. For
// each 64-key tile (up to the causal diagonal): S = Q K^T into shared memory, an online softmax
// per row (running max m and sum l), P = exp(scale*S - m) rounded to the input type, O = O *
// exp(m_old - m) + P V with O kept in f32 in shared memory. At the end out = O / l and
// lse = m + log l (+inf for a row with no visible key: its out is 0, its gradients 0).
//
// Backward (no atomics, so gradients are the same bits on every run): delta = rowsum(dO * O);
// then one kernel per 64-key tile accumulates dV = P^T dO and dK = dS^T Q over the query tiles
// that see it, and one kernel per 64-query tile accumulates dQ = dS K over its key tiles, where
// P = exp(scale * Q K^T - lse) is recomputed and dS = scale * P * (dO V^T - delta).
//
// Masking follows scaled_masked_softmax: query i sees key j iff j <= i + (S - T) when causal, and
// j < key_lengths[b] with padding (each block reads its batch's length into p.lim first).
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <mutex>
#include <type_traits>

#include "tensor/backend/cuda/kernels.cuh"

namespace hfrun::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kTile = 64;          // queries or keys per tile
constexpr int kAttnThreads = 128;  // 4 warps x 16 rows
constexpr int kLdS = kTile + 4;    // f32 score tiles (a multiple of 4, as WMMA needs)
constexpr int kLdP = kTile + 8;    // 16-bit probability tiles (a multiple of 8)

// One [B, H, rows, D] operand: base pointer and element strides (the last stride is 1).
struct HeadView {
  void* p;
  int64_t sb, sh, st;
};

struct AttnParams {
  HeadView q, k, v, o, go, out, gq, gk, gv;
  float* lse;              // [B * H, T]
  float* delta;            // [B * H, T], backward
  int heads, t, s, off;    // off = S - T: query i sees keys j <= i + off when causal
  int kv_heads;            // K and V heads: query head h reads KV head h / (heads / kv_heads)
  int lim;                 // keys [lim, S) are padding: S, or this block's batch's key length
  const int32_t* key_len;  // [B] or null
  bool causal;
  float scale;
};

template <typename T>
__device__ __forceinline__ T* head_ptr(const HeadView& v, int bh, int heads) {
  return static_cast<T*>(v.p) + static_cast<int64_t>(bh / heads) * v.sb +
         static_cast<int64_t>(bh % heads) * v.sh;
}

// The K or V head that query batch*head `bh` reads (grouped-query attention shares one KV head
// among heads / kv_heads consecutive query heads; no copy of K, V is made).
template <typename T>
__device__ __forceinline__ T* kv_ptr(const HeadView& v, int bh, const AttnParams& p) {
  const int group = p.heads / p.kv_heads;
  return static_cast<T*>(v.p) + static_cast<int64_t>(bh / p.heads) * v.sb +
         static_cast<int64_t>((bh % p.heads) / group) * v.sh;
}

// Shared-memory layout of the three kernels (byte sizes; every piece a multiple of 128 bytes).
template <typename T, int D>
struct Layout {
  static constexpr int kLd = D + 8;   // 16-bit [64, D] tiles
  static constexpr int kLdO = D + 4;  // f32 [64, D] accumulators / staging
  static constexpr size_t kTileBytes = size_t{kTile} * kLd * sizeof(T);
  static constexpr size_t kSBytes = size_t{kTile} * kLdS * sizeof(float);
  static constexpr size_t kPBytes = size_t{kTile} * kLdP * sizeof(T);
  static constexpr size_t kOBytes = size_t{kTile} * kLdO * sizeof(float);
  static constexpr size_t kForward = 3 * kTileBytes + kSBytes + kPBytes + kOBytes;
  static constexpr size_t kBackwardKV =
      4 * kTileBytes + 2 * kSBytes + 2 * kPBytes + 2 * kTile * sizeof(float);
  static constexpr size_t kBackwardQ = 4 * kTileBytes + 2 * kSBytes + kPBytes;
  static_assert(2 * kTileBytes >= kOBytes, "two 16-bit tiles must hold an f32 staging tile");
};

// Rows [row0, row0 + 64) of a [rows, D] matrix (row stride `st`) into a [64, D + 8] tile; rows
// past `rows` are zeros. 16-byte loads: the caller checked the alignment.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T* __restrict__ dst, const T* __restrict__ src,
                                          int64_t st, int row0, int rows) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < kTile * kChunks; i += kAttnThreads) {
    const int r = i / kChunks, c = i % kChunks;
    uint4 x = make_uint4(0u, 0u, 0u, 0u);
    if (row0 + r < rows)
      x = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(row0 + r) * st + c * 8);
    *reinterpret_cast<uint4*>(dst + r * (D + 8) + c * 8) = x;
  }
}

// dst[0, W) = src[0, W) * mul rounded to T, in 16-byte stores (W a multiple of 8).
template <typename T, int W>
__device__ __forceinline__ void store_row(T* __restrict__ dst, const float* __restrict__ src,
                                          float mul) {
#pragma unroll
  for (int c = 0; c < W; c += 8) {
    alignas(16) T tmp[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) tmp[e] = from_f32<T>(src[c + e] * mul);
    *reinterpret_cast<uint4*>(dst + c) = *reinterpret_cast<const uint4*>(tmp);
  }
}

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// out[16, 64] (f32, ld kLdS) = a[16, D] b[64, D]^T for a warp; a and b are 16-bit tiles with
// leading dimension D + 8 (b's rows read as the columns of b^T).
template <typename T, int D>
__device__ __forceinline__ void gemm_abt(float* out, const T* a, const T* b) {
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      FragA<T> fa;
      FragBCol<T> fb;
      wmma::load_matrix_sync(fa, a + kk * 16, D + 8);
      wmma::load_matrix_sync(fb, b + n * 16 * (D + 8) + kk * 16, D + 8);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kLdS, wmma::mem_row_major);
  }
}

// acc[n] += p[16, 64] (16-bit, ld kLdP) x b[64, D] (16-bit, ld D + 8), n over D / 16 columns.
template <typename T, int D>
__device__ __forceinline__ void gemm_pb(FragC (&acc)[D / 16], const T* p, const T* b) {
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    FragA<T> fa;
    wmma::load_matrix_sync(fa, p + kk * 16, kLdP);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      FragBRow<T> fb;
      wmma::load_matrix_sync(fb, b + kk * 16 * (D + 8) + n * 16, D + 8);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// The last key (exclusive) any query of the tile starting at q0 sees.
__device__ __forceinline__ int key_end(const AttnParams& p, int q0) {
  if (!p.causal) return p.lim;
  const int last_q = min(q0 + kTile, p.t) - 1;
  return min(p.lim, max(0, last_q + p.off + 1));
}

__device__ __forceinline__ bool visible(const AttnParams& p, int qi, int kj) {
  return qi < p.t && kj < p.lim && (!p.causal || kj <= qi + p.off);
}

// p.lim for a block of batch b.
__device__ __forceinline__ void limit_keys(AttnParams& p, int b) {
  if (p.key_len != nullptr) p.lim = min(p.s, max(0, p.key_len[b]));
}

// In the per-row phases a lane owns row rr = lane % 16 of its warp's 16 and half = lane / 16 of
// the columns; it walks its columns starting at a lane-dependent rotation so that the 32 lanes
// hit 32 different shared-memory banks (the f32 row pitch is 4 banks).
struct RowLane {
  int rr, half, rot;
  __device__ RowLane() {
    const int lane = threadIdx.x & 31;
    rr = lane & 15;
    half = lane >> 4;
    rot = (rr >> 3) + 2 * half;
  }
  // Column of step c in [0, W) of this lane's half of a 2W-wide row.
  template <int W>
  __device__ __forceinline__ int col(int c) const {
    return half * W + ((c + rot) & (W - 1));
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads) attention_forward_kernel(AttnParams p) {
#if __CUDA_ARCH__ >= 800
  using L = Layout<T, D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qs = reinterpret_cast<T*>(smem);
  T* ks = reinterpret_cast<T*>(smem + L::kTileBytes);
  T* vs = reinterpret_cast<T*>(smem + 2 * L::kTileBytes);
  float* ss = reinterpret_cast<float*>(smem + 3 * L::kTileBytes);
  T* ps = reinterpret_cast<T*>(smem + 3 * L::kTileBytes + L::kSBytes);
  float* os = reinterpret_cast<float*>(smem + 3 * L::kTileBytes + L::kSBytes + L::kPBytes);

  const int warp = threadIdx.x >> 5, bh = blockIdx.y, q0 = blockIdx.x * kTile;
  limit_keys(p, bh / p.heads);
  const T* q = head_ptr<T>(p.q, bh, p.heads);
  const T *k = kv_ptr<T>(p.k, bh, p), *v = kv_ptr<T>(p.v, bh, p);
  load_tile<T, D>(qs, q, p.q.st, q0, p.t);
  for (int i = threadIdx.x; i < kTile * L::kLdO; i += kAttnThreads) os[i] = 0.0f;
  __syncthreads();

  const RowLane rl;
  const int qi = q0 + warp * 16 + rl.rr;
  float* sw = ss + warp * 16 * kLdS;
  T* pw = ps + warp * 16 * kLdP;
  float* ow = os + warp * 16 * L::kLdO;
  const T* qw = qs + warp * 16 * L::kLd;
  float m_run = -INFINITY, l_run = 0.0f;
  const int tiles = (key_end(p, q0) + kTile - 1) / kTile;
  for (int j = 0; j < tiles; ++j) {
    const int k0 = j * kTile;
    __syncthreads();  // every warp is done with the previous K, V tiles
    load_tile<T, D>(ks, k, p.k.st, k0, p.s);
    load_tile<T, D>(vs, v, p.v.st, k0, p.s);
    __syncthreads();
    gemm_abt<T, D>(sw, qw, ks);
    __syncwarp();
    // Online softmax over this tile's 64 columns of row rr (two lanes per row).
    float m_tile = -INFINITY;
#pragma unroll 8
    for (int c = 0; c < kTile / 2; ++c) {
      const int col = rl.col<kTile / 2>(c);
      float& x = sw[rl.rr * kLdS + col];
      x = visible(p, qi, k0 + col) ? x * p.scale : -INFINITY;
      m_tile = fmaxf(m_tile, x);
    }
    m_tile = fmaxf(m_tile, __shfl_xor_sync(0xffffffffu, m_tile, 16));
    const float m_new = fmaxf(m_run, m_tile);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no key seen yet: keep zeros
    const float alpha = __expf(m_run - m_use);
    float sum = 0.0f;
#pragma unroll 8
    for (int c = 0; c < kTile / 2; ++c) {
      const int col = rl.col<kTile / 2>(c);
      const float e = __expf(sw[rl.rr * kLdS + col] - m_use);
      pw[rl.rr * kLdP + col] = from_f32<T>(e);
      sum += e;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 16);
    l_run = l_run * alpha + sum;
    m_run = m_new;
#pragma unroll 8
    for (int c = 0; c < D / 2; ++c) ow[rl.rr * L::kLdO + rl.col<D / 2>(c)] *= alpha;
    __syncwarp();
    // O_w += P_w V, accumulating in place in shared memory.
    FragC acc[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; ++n)
      wmma::load_matrix_sync(acc[n], ow + n * 16, L::kLdO, wmma::mem_row_major);
    gemm_pb<T, D>(acc, pw, vs);
#pragma unroll
    for (int n = 0; n < D / 16; ++n)
      wmma::store_matrix_sync(ow + n * 16, acc[n], L::kLdO, wmma::mem_row_major);
    __syncwarp();
  }
  if (qi < p.t) {
    T* out = head_ptr<T>(p.out, bh, p.heads) + static_cast<int64_t>(qi) * p.out.st;
    const float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
    store_row<T, D / 2>(out + rl.half * (D / 2), ow + rl.rr * L::kLdO + rl.half * (D / 2), inv);
    if (rl.half == 0)
      p.lse[static_cast<int64_t>(bh) * p.t + qi] = l_run > 0.0f ? m_run + logf(l_run) : INFINITY;
  }
#else
  __trap();  // fused_attention_supported() refuses devices below sm_80
#endif
}

// delta[row] = sum_d dO[row, d] * O[row, d] in f32: one warp per query row; blockIdx.y is the
// batch*head.
template <typename T>
__global__ void attention_delta_kernel(AttnParams p, int d) {
  const int qi = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (qi >= p.t) return;
  const int bh = blockIdx.y;
  const T* o = head_ptr<T>(p.o, bh, p.heads) + static_cast<int64_t>(qi) * p.o.st;
  const T* go = head_ptr<T>(p.go, bh, p.heads) + static_cast<int64_t>(qi) * p.go.st;
  float acc = 0.0f;
  for (int c = threadIdx.x & 31; c < d; c += 32) acc += to_f32(o[c]) * to_f32(go[c]);
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) p.delta[static_cast<int64_t>(bh) * p.t + qi] = acc;
}

// Writes a warp's 16 x D accumulator rows through its f32 staging rows (ld D + 4) to rows
// [row0, row0 + 16) of g (those below `rows`).
template <typename T, int D>
__device__ __forceinline__ void write_rows(const FragC (&acc)[D / 16], float* stage,
                                           const RowLane& rl, T* g, int64_t st, int row0,
                                           int rows) {
#pragma unroll
  for (int n = 0; n < D / 16; ++n)
    wmma::store_matrix_sync(stage + n * 16, acc[n], D + 4, wmma::mem_row_major);
  __syncwarp();
  const int r = row0 + rl.rr;
  if (r < rows) {
    store_row<T, D / 2>(g + static_cast<int64_t>(r) * st + rl.half * (D / 2),
                        stage + rl.rr * (D + 4) + rl.half * (D / 2), 1.0f);
  }
  __syncwarp();
}

// dK, dV of one 64-key tile (blockIdx.x) of one batch*KV head (blockIdx.y); warp w owns keys
// [16w, 16w + 16) and keeps their dK, dV in registers across the query tiles of every query
// head that reads this KV head (one, or heads / kv_heads with grouped-query attention): the
// group's sum is made in registers, in a fixed order, without atomics.
template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads) attention_backward_kv_kernel(AttnParams p) {
#if __CUDA_ARCH__ >= 800
  using L = Layout<T, D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = reinterpret_cast<T*>(smem + L::kTileBytes);
  T* qs = reinterpret_cast<T*>(smem + 2 * L::kTileBytes);
  T* dos = reinterpret_cast<T*>(smem + 3 * L::kTileBytes);
  float* st = reinterpret_cast<float*>(smem + 4 * L::kTileBytes);
  float* dpt = reinterpret_cast<float*>(smem + 4 * L::kTileBytes + L::kSBytes);
  T* pt = reinterpret_cast<T*>(smem + 4 * L::kTileBytes + 2 * L::kSBytes);
  T* dst = reinterpret_cast<T*>(smem + 4 * L::kTileBytes + 2 * L::kSBytes + L::kPBytes);
  float* lse_s =
      reinterpret_cast<float*>(smem + 4 * L::kTileBytes + 2 * L::kSBytes + 2 * L::kPBytes);
  float* delta_s = lse_s + kTile;

  const int warp = threadIdx.x >> 5, bkv = blockIdx.y, k0 = blockIdx.x * kTile;
  const int group = p.heads / p.kv_heads;
  limit_keys(p, bkv / p.kv_heads);
  load_tile<T, D>(ks, head_ptr<T>(p.k, bkv, p.kv_heads), p.k.st, k0, p.s);
  load_tile<T, D>(vs, head_ptr<T>(p.v, bkv, p.kv_heads), p.v.st, k0, p.s);

  const RowLane rl;
  const int kj = k0 + warp * 16 + rl.rr;
  float* stw = st + warp * 16 * kLdS;
  float* dptw = dpt + warp * 16 * kLdS;
  T* ptw = pt + warp * 16 * kLdP;
  T* dstw = dst + warp * 16 * kLdP;
  const T* kw = ks + warp * 16 * L::kLd;
  const T* vw = vs + warp * 16 * L::kLd;
  FragC dk[D / 16], dv[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  // Queries that see key k0 or later: i + off >= k0.
  const int q_begin = p.causal ? max(0, k0 - p.off) : 0;
  for (int g = 0; g < group; ++g) {
    const int bh = (bkv / p.kv_heads) * p.heads + (bkv % p.kv_heads) * group + g;
    const T* q = head_ptr<T>(p.q, bh, p.heads);
    const T* go = head_ptr<T>(p.go, bh, p.heads);
    const int64_t row_base = static_cast<int64_t>(bh) * p.t;
    for (int q0 = (q_begin / kTile) * kTile; q0 < p.t; q0 += kTile) {
      __syncthreads();  // every warp is done with the previous Q, dO tiles
      load_tile<T, D>(qs, q, p.q.st, q0, p.t);
      load_tile<T, D>(dos, go, p.go.st, q0, p.t);
      for (int r = threadIdx.x; r < kTile; r += kAttnThreads) {
        const bool in = q0 + r < p.t;
        lse_s[r] = in ? p.lse[row_base + q0 + r] : INFINITY;
        delta_s[r] = in ? p.delta[row_base + q0 + r] : 0.0f;
      }
      __syncthreads();
      gemm_abt<T, D>(stw, kw, qs);    // S^T = K_w Q^T
      gemm_abt<T, D>(dptw, vw, dos);  // dP^T = V_w dO^T
      __syncwarp();
#pragma unroll 8
      for (int c = 0; c < kTile / 2; ++c) {
        const int col = rl.col<kTile / 2>(c);
        const int at = rl.rr * kLdS + col;
        const float pr = visible(p, q0 + col, kj) ? __expf(stw[at] * p.scale - lse_s[col]) : 0.0f;
        const float ds = pr * (dptw[at] - delta_s[col]) * p.scale;
        ptw[rl.rr * kLdP + col] = from_f32<T>(pr);
        dstw[rl.rr * kLdP + col] = from_f32<T>(ds);
      }
      __syncwarp();
      gemm_pb<T, D>(dv, ptw, dos);  // dV_w += P^T_w dO
      gemm_pb<T, D>(dk, dstw, qs);  // dK_w += dS^T_w Q
    }
  }
  __syncthreads();  // the Q and dO tiles become the f32 staging area
  float* stage = reinterpret_cast<float*>(qs) + warp * 16 * L::kLdO;
  write_rows<T, D>(dv, stage, rl, head_ptr<T>(p.gv, bkv, p.kv_heads), p.gv.st, k0 + warp * 16, p.s);
  write_rows<T, D>(dk, stage, rl, head_ptr<T>(p.gk, bkv, p.kv_heads), p.gk.st, k0 + warp * 16, p.s);
#else
  __trap();
#endif
}

// dQ of one 64-query tile (blockIdx.x) of one batch*head (blockIdx.y); warp w owns queries
// [16w, 16w + 16) and keeps their dQ in registers across the key tiles.
template <typename T, int D>
__global__ void __launch_bounds__(kAttnThreads) attention_backward_q_kernel(AttnParams p) {
#if __CUDA_ARCH__ >= 800
  using L = Layout<T, D>;
  extern __shared__ __align__(128) unsigned char smem[];
  T* qs = reinterpret_cast<T*>(smem);
  T* dos = reinterpret_cast<T*>(smem + L::kTileBytes);
  T* ks = reinterpret_cast<T*>(smem + 2 * L::kTileBytes);
  T* vs = reinterpret_cast<T*>(smem + 3 * L::kTileBytes);
  float* ss = reinterpret_cast<float*>(smem + 4 * L::kTileBytes);
  float* dps = reinterpret_cast<float*>(smem + 4 * L::kTileBytes + L::kSBytes);
  T* dss = reinterpret_cast<T*>(smem + 4 * L::kTileBytes + 2 * L::kSBytes);

  const int warp = threadIdx.x >> 5, bh = blockIdx.y, q0 = blockIdx.x * kTile;
  limit_keys(p, bh / p.heads);
  const T *k = kv_ptr<T>(p.k, bh, p), *v = kv_ptr<T>(p.v, bh, p);
  load_tile<T, D>(qs, head_ptr<T>(p.q, bh, p.heads), p.q.st, q0, p.t);
  load_tile<T, D>(dos, head_ptr<T>(p.go, bh, p.heads), p.go.st, q0, p.t);

  const RowLane rl;
  const int qi = q0 + warp * 16 + rl.rr;
  const int64_t row = static_cast<int64_t>(bh) * p.t + qi;
  const float lse = qi < p.t ? p.lse[row] : INFINITY;
  const float delta = qi < p.t ? p.delta[row] : 0.0f;
  float* sw = ss + warp * 16 * kLdS;
  float* dpw = dps + warp * 16 * kLdS;
  T* dsw = dss + warp * 16 * kLdP;
  const T* qw = qs + warp * 16 * L::kLd;
  const T* dow = dos + warp * 16 * L::kLd;
  FragC dq[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(dq[n], 0.0f);
  const int tiles = (key_end(p, q0) + kTile - 1) / kTile;
  for (int j = 0; j < tiles; ++j) {
    const int k0 = j * kTile;
    __syncthreads();
    load_tile<T, D>(ks, k, p.k.st, k0, p.s);
    load_tile<T, D>(vs, v, p.v.st, k0, p.s);
    __syncthreads();
    gemm_abt<T, D>(sw, qw, ks);    // S = Q_w K^T
    gemm_abt<T, D>(dpw, dow, vs);  // dP = dO_w V^T
    __syncwarp();
#pragma unroll 8
    for (int c = 0; c < kTile / 2; ++c) {
      const int col = rl.col<kTile / 2>(c);
      const int at = rl.rr * kLdS + col;
      const float pr = visible(p, qi, k0 + col) ? __expf(sw[at] * p.scale - lse) : 0.0f;
      dsw[rl.rr * kLdP + col] = from_f32<T>(pr * (dpw[at] - delta) * p.scale);
    }
    __syncwarp();
    gemm_pb<T, D>(dq, dsw, ks);  // dQ_w += dS_w K
  }
  __syncthreads();  // the K and V tiles become the f32 staging area
  float* stage = reinterpret_cast<float*>(ks) + warp * 16 * L::kLdO;
  write_rows<T, D>(dq, stage, rl, head_ptr<T>(p.gq, bh, p.heads), p.gq.st, q0 + warp * 16, p.t);
#else
  __trap();
#endif
}

// ---- host side ----------------------------------------------------------------------------------

struct DeviceLimits {
  int major = 0;
  size_t smem_optin = 0;
};
DeviceLimits device_limits(int device) {
  static std::mutex mu;
  static DeviceLimits cache[64];
  static bool known[64] = {};
  if (device < 0 || device >= 64) return {};
  std::lock_guard<std::mutex> lock(mu);
  if (!known[device]) {
    int major = 0, smem = 0;
    HF_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    HF_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    cache[device] = {major, static_cast<size_t>(smem)};
    known[device] = true;
  }
  return cache[device];
}

template <typename T, int D>
size_t smem_needed() {
  using L = Layout<T, D>;
  return std::max({L::kForward, L::kBackwardKV, L::kBackwardQ});
}

size_t smem_for_head_size(int64_t d) {
  switch (d) {
    case 16:
      return smem_needed<bf16, 16>();
    case 32:
      return smem_needed<bf16, 32>();
    case 64:
      return smem_needed<bf16, 64>();
    case 128:
      return smem_needed<bf16, 128>();
    default:
      return 0;
  }
}

// A [B, H, rows, D] operand the kernels can read with 16-byte loads.
bool kernel_layout(const Tensor& x) {
  if (x.stride(3) != 1) return false;
  if (reinterpret_cast<uintptr_t>(x.raw_data()) % 16 != 0) return false;
  for (int d = 0; d < 3; ++d) {
    if (x.size(d) > 1 && x.stride(d) % 8 != 0) return false;
  }
  return true;
}

HeadView head_view(const Tensor& x) {
  return {x.raw_data(), x.stride(0), x.stride(1), x.stride(2)};
}

AttnParams make_params(const Tensor& q, const Tensor& k, bool causal, double scale,
                       const Tensor& key_lengths) {
  AttnParams p{};
  p.key_len = key_lengths.defined() ? static_cast<const int32_t*>(key_lengths.raw_data()) : nullptr;
  p.heads = static_cast<int>(q.size(1));
  p.kv_heads = static_cast<int>(k.size(1));
  p.t = static_cast<int>(q.size(2));
  p.s = static_cast<int>(k.size(2));
  p.off = p.s - p.t;
  p.lim = p.s;
  p.causal = causal;
  p.scale = static_cast<float>(scale);
  return p;
}

template <typename Kernel>
void launch(Kernel kernel, size_t smem, dim3 grid, const AttnParams& p) {
  HF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  kernel<<<grid, kAttnThreads, smem, current_stream()>>>(p);
}

// Calls fn(TypeTag<T>, std::integral_constant<int, D>) for q's dtype and head size.
template <typename Fn>
void dispatch_attention(const Tensor& q, Fn&& fn) {
  auto with_type = [&](auto tag) {
    switch (q.size(3)) {
      case 16:
        return fn(tag, std::integral_constant<int, 16>{});
      case 32:
        return fn(tag, std::integral_constant<int, 32>{});
      case 64:
        return fn(tag, std::integral_constant<int, 64>{});
      case 128:
        return fn(tag, std::integral_constant<int, 128>{});
      default:
        HF_THROW("fused_attention (cuda): head size ", q.size(3), " is not supported");
    }
  };
  if (q.dtype() == DType::kBF16) return with_type(TypeTag<bf16>{});
  if (q.dtype() == DType::kF16) return with_type(TypeTag<f16>{});
  HF_THROW("fused_attention (cuda): dtype ", dtype_name(q.dtype()), " is not supported");
}

}  // namespace

bool CudaBackend::fused_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v,
                                            int64_t window, const DropoutMask& dropout) {
  // The kernels have no sliding window and no dropout; the composed path has both.
  if (window > 0 || dropout.p > 0) return false;
  if (q.dtype() != DType::kBF16 && q.dtype() != DType::kF16) return false;
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype()) return false;
  if (!q.device().is_cuda() || k.device() != q.device() || v.device() != q.device()) return false;
  const int64_t d = q.size(3);
  const size_t smem = smem_for_head_size(d);
  if (smem == 0 || k.size(3) != d || v.size(3) != d) return false;
  if (k.size(1) != v.size(1) || k.size(1) == 0 || q.size(1) % k.size(1) != 0) return false;
  const DeviceLimits lim = device_limits(q.device().index);
  if (lim.major < 8 || lim.smem_optin < smem) return false;
  if (q.size(0) * q.size(1) > 65535 || q.size(2) >= (int64_t{1} << 30) ||
      k.size(2) >= (int64_t{1} << 30))
    return false;
  return kernel_layout(q) && kernel_layout(k) && kernel_layout(v);
}

void CudaBackend::fused_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                  double scale, const Tensor& key_lengths, int64_t window,
                                  const DropoutMask& dropout, Tensor& out, Tensor& lse) {
  HF_CHECK(window == 0, "fused_attention (cuda): no sliding window kernel");
  HF_CHECK(dropout.p == 0, "fused_attention (cuda): no dropout kernel");
  DeviceGuard guard(q.device());
  HF_CHECK(kernel_layout(out), "fused_attention (cuda): output layout ", out.str());
  AttnParams p = make_params(q, k, causal, scale, key_lengths);
  p.q = head_view(q);
  p.k = head_view(k);
  p.v = head_view(v);
  p.out = head_view(out);
  p.lse = static_cast<float*>(lse.raw_data());
  const dim3 grid(static_cast<unsigned>((p.t + kTile - 1) / kTile),
                  static_cast<unsigned>(q.size(0) * q.size(1)));
  dispatch_attention(q, [&](auto tag, auto dim) {
    using T = typename decltype(tag)::type;
    constexpr int D = decltype(dim)::value;
    launch(attention_forward_kernel<T, D>, Layout<T, D>::kForward, grid, p);
  });
  HF_CUDA_CHECK_LAUNCH("fused_attention", "q ", q.str(), ", k ", k.str(), ", v ", v.str());
}

void CudaBackend::fused_attention_backward(const Tensor& gout, const Tensor& q, const Tensor& k,
                                           const Tensor& v, const Tensor& out, const Tensor& lse,
                                           bool causal, double scale, const Tensor& key_lengths,
                                           int64_t window, const DropoutMask& dropout, Tensor& gq,
                                           Tensor& gk, Tensor& gv) {
  HF_CHECK(window == 0, "fused_attention_backward (cuda): no sliding window kernel");
  HF_CHECK(dropout.p == 0, "fused_attention_backward (cuda): no dropout kernel");
  DeviceGuard guard(q.device());
  for (const Tensor* x :
       std::initializer_list<const Tensor*>{&q, &k, &v, &gout, &out, &gq, &gk, &gv}) {
    HF_CHECK(kernel_layout(*x), "fused_attention_backward (cuda): layout of ", x->str());
  }
  AttnParams p = make_params(q, k, causal, scale, key_lengths);
  p.q = head_view(q);
  p.k = head_view(k);
  p.v = head_view(v);
  p.o = head_view(out);
  p.go = head_view(gout);
  p.gq = head_view(gq);
  p.gk = head_view(gk);
  p.gv = head_view(gv);
  p.lse = static_cast<float*>(lse.raw_data());
  const unsigned bh = static_cast<unsigned>(q.size(0) * q.size(1));
  const unsigned bkv = static_cast<unsigned>(k.size(0) * k.size(1));
  // delta lives in the caching allocator for the duration of the call.
  Tensor delta = ops::empty({q.size(0), q.size(1), q.size(2)}, DType::kF32, q.device());
  p.delta = static_cast<float*>(delta.raw_data());
  constexpr int kRowsPerBlock = 8;
  dispatch_attention(q, [&](auto tag, auto dim) {
    using T = typename decltype(tag)::type;
    constexpr int D = decltype(dim)::value;
    attention_delta_kernel<T>
        <<<dim3(static_cast<unsigned>((p.t + kRowsPerBlock - 1) / kRowsPerBlock), bh),
           kRowsPerBlock * 32, 0, current_stream()>>>(p, D);
  });
  HF_CUDA_CHECK_LAUNCH("fused_attention_backward (delta)", "out ", out.str());
  dispatch_attention(q, [&](auto tag, auto dim) {
    using T = typename decltype(tag)::type;
    constexpr int D = decltype(dim)::value;
    launch(attention_backward_kv_kernel<T, D>, Layout<T, D>::kBackwardKV,
           dim3(static_cast<unsigned>((p.s + kTile - 1) / kTile), bkv), p);
  });
  HF_CUDA_CHECK_LAUNCH("fused_attention_backward (dk, dv)", "q ", q.str(), ", k ", k.str());
  dispatch_attention(q, [&](auto tag, auto dim) {
    using T = typename decltype(tag)::type;
    constexpr int D = decltype(dim)::value;
    launch(attention_backward_q_kernel<T, D>, Layout<T, D>::kBackwardQ,
           dim3(static_cast<unsigned>((p.t + kTile - 1) / kTile), bh), p);
  });
  HF_CUDA_CHECK_LAUNCH("fused_attention_backward (dq)", "q ", q.str(), ", k ", k.str());
}

}  // namespace hfrun::cuda
