// CPU matmul through oneDNN: which operands and which primitive each product gets. The ops
// layer hands us a [batch..., M, K], b [batch..., K, N] already broadcast to out's batch dims;
// matmul_primitives.h describes them to oneDNN and caches the primitives. Here: f16 (and bf16
// where oneDNN has no bf16 kernel) computed in f32, dense copies where only the reference or
// slow kernels take the strides, and the layouts this machine's kernels run slowly (padded
// copies, slices of long reductions, the weight-gradient primitive), each with its measurement.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/cpu/matmul_primitives.h"
#include "tensor/ops.h"
#include "tensor/profiler.h"

namespace hfrun::cpu {
namespace {

// t with its broadcast batch dims (stride 0) shrunk to size 1: oneDNN broadcasts size-1 batch
// dims of src and weights, so no broadcast data is ever materialised.
Tensor shrink_broadcast_dims(const Tensor& t) {
  Shape sizes = t.sizes();
  bool any = false;
  for (int64_t d = 0; d + 2 < t.dim(); ++d) {
    if (t.strides()[d] == 0 && sizes[d] != 1) {
      sizes[d] = 1;
      any = true;
    }
  }
  return any ? make_view(t, sizes, t.strides(), t.offset()) : t;
}

// t's matrices stored densely in t's own orientation: a row-major view contiguous, a transposed
// (column-major) one as the transpose of a contiguous tensor (a transposed probability matrix
// is not copied). No copy when already dense.
Tensor dense_matrices(const Tensor& t) {
  if (t.strides()[t.dim() - 1] == 1 || t.size(-1) == 1) return ops::contiguous(t);
  return ops::transpose(ops::contiguous(ops::transpose(t, -2, -1)), -2, -1);
}

// oneDNN 2.6's bf16 brgemm reads a column-major (transposed) A [M, K] far below its rate when
// A's leading dimension is not a multiple of 128 elements: GPT-2's output-layer weight
// gradient dlogits^T [50257, 256] x x [256, 768], A strided by the vocabulary, ran at 310-370
// GFLOP/s; with A copied to a leading dimension of 50304, 590-650 (2 threads, AVX-512 bf16, no
// AMX; a leading dimension of 16448, a multiple of 64, was as slow as 50257). A large such A is
// copied, in chunks of rows, into a buffer with an aligned leading dimension: one pass over A,
// which the GEMM reads many times. f32 kernels showed no such loss on that CPU; on a
// Sapphire-Rapids-class one they do (see f32_layout_fixes()).
constexpr int64_t kLeadingAlign = 128;
constexpr int64_t kPadMinElements = int64_t{1} << 20;
// bf16 rows copied at a time (f32: half as many): bounds the copy's memory (all of GPT-2's
// dlogits^T at 4 x 256 tokens would be 103 MB more at the step's peak; a chunk is 16 MB) and
// keeps a full chunk's M a multiple of 256 rows (matmul_primitives.cpp's kRowAlign).
constexpr int64_t kPadChunkRows = 8192;

// oneDNN 2.6's f32 brgemm kernels lose up to half their rate to some leading dimensions on
// Sapphire-Rapids-class cores (2 threads, `brg:avx512_core`, 2026-12-07), where an AVX-512 AMD
// core (the same kernels) and AVX2 cores showed no such loss:
//   - a row-major B whose leading dimension is an odd multiple of 1024 elements from 3072 up:
//     [1024, 768] x [768, N] at 178-191 GFLOP/s for N = 3072 or 5120 (83 on one thread) against
//     306-347 for N = 2048, 2816 or 4096, where oneDNN's gemm:jit kernel runs the same product at
//     290-318. That is GPT-2's MLP (c_fc's forward and its weight gradient, dY [T, 3072] as B:
//     0.75 s of a 3.4 s f32 4 x 256 step); at larger K, most leading dimensions but powers of
//     two (brgemm_slow_b below). Those products take the gemm:jit implementation;
//   - a column-major A strided by GPT-2's vocabulary (the tied output layer's weight gradient,
//     dlogits^T [50257, 1024] x x [1024, 768]): 214-226 GFLOP/s, 273-276 through the padded
//     row chunks above.
// Both fixes are taken where oneDNN's best kernel is AMX (the Intel cores where this was
// measured), or where HFRUN_MATMUL_PAD=1 (=0 turns them off): a property of the machine, so
// every rank of a job on one kind of node makes the same choice.
bool amx_gemms() {
  static const bool amx = [] {
    const auto isa = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);
    return (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) & isa) == isa;
  }();
  return amx;
}

bool f32_layout_fixes() {
  static const bool on = [] {
    if (const char* e = std::getenv("HFRUN_MATMUL_PAD"); e != nullptr && *e != '\0') {
      return std::string(e) != "0";
    }
    return amx_gemms();
  }();
  return on;
}

bool padded_copy_pays(const Tensor& a) {
  if (a.dim() != 2 ||
      !(a.dtype() == DType::kBF16 || (a.dtype() == DType::kF32 && f32_layout_fixes()))) {
    return false;
  }
  const int64_t m = a.size(0), k = a.size(1), ld = a.strides()[1];
  return a.strides()[0] == 1 && k > 1 && ld % kLeadingAlign != 0 && m * k >= kPadMinElements;
}

// Runs gemm(a, out), or, where padded_copy_pays(a), gemm(a_rows, out_rows) on up to
// kPadChunkRows rows of a (column-major) and out at a time, each chunk of a copied into one
// buffer as a dense column-major matrix (oneDNN's brgemm takes a transposed A only dense:
// leading dimension = rows; its gemm path, which runs a strided one, is 4-6x slower here).
// Chunks are multiples of kLeadingAlign rows, but for a last one shorter than that.
template <typename Gemm>
void by_padded_row_chunks(const Tensor& a, Tensor& out, Gemm&& gemm) {
  if (!padded_copy_pays(a)) {
    gemm(a, out);
    return;
  }
  const int64_t m = a.size(0), k = a.size(1);
  const int64_t chunk_rows = kPadChunkRows * 2 / static_cast<int64_t>(a.element_size());
  Tensor buffer = ops::empty({k * std::min(m, chunk_rows)}, a.dtype(), a.device());
  for (int64_t r = 0, rows = 0; r < m; r += rows) {
    rows = std::min(chunk_rows, m - r);
    if (rows > kLeadingAlign) rows -= rows % kLeadingAlign;
    Tensor rows_t = ops::view(ops::narrow(buffer, 0, 0, k * rows), {k, rows});  // A^T's rows
    ops::copy_(rows_t, ops::transpose(ops::narrow(a, 0, r, rows), 0, 1));
    Tensor out_rows = ops::narrow(out, 0, r, rows);
    gemm(ops::transpose(rows_t, 0, 1), out_rows);
  }
}

// Where oneDNN 2.6's f32 brgemm runs a row-major B [K, N] (leading dimension ld) far below its
// gemm:jit kernel on these cores (f32_layout_fixes()): an odd multiple of 1024 from 3072 up at
// any K (the first rule above), and at larger K most leading dimensions but
// powers of two. [1024, K] x [K, N], 2 threads, GFLOP/s brgemm / gemm:jit (AMX VM, 2026-12-07):
//   K = 4096: N = 1536 205 / 320, 1792 310 / 328, 2048 348 / 331, 2176 292 / 328, 2304
//   212 / 346, 2560 147 / 323, 3072 132 / 322, 4096 332 / 343, 4608 145 / 336, 4864 214 / 339,
//   5000 236 / 324, 6144 156 / 346, 9728 204 / 339 (M = 256 alike: 2560 144 / 307); below 1536
//   brgemm holds (896 345 / 349, 1152 324 / 299, 1408 313 / 285);
//   K = 1536 to 2048: N = 1536 235-258 / 321-326, 8960 (K = 1536) 324 / 356;
//   K = 1024: N = 1024 336 / 275, 1536 327 / 295, 1792 337 / 321, 2304 301 / 320, 2560
//   239 / 313, 3072 171 / 315, 3584 236 / 314, 4608 237 / 333, 6144 232 / 316;
//   K = 768-896: N = 2304 333 / 330, 2816 328 / 351, 3072 ~185 / ~300, 4864 317 / 345.
// Those products take oneDNN's gemm:jit implementation (Entry's prefer_gemm), on B as it is.
// Qwen2-1.5B's gate/up input gradient ([T, 8960] x [8960, 1536]) is one: 197 -> 314. The
// choice depends on the shapes alone, so every rank of a data-parallel job makes the same one.
bool odd_multiple_of_1024(int64_t ld) {
  return ld % 1024 == 0 && (ld / 1024) % 2 == 1 && ld > 1024;
}

bool power_of_two(int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

bool brgemm_slow_b(const Tensor& b) {
  if (b.dtype() != DType::kF32 || b.dim() != 2 || b.strides()[1] != 1 || b.size(1) < 2 ||
      !f32_layout_fixes()) {
    return false;
  }
  const int64_t k = b.size(0), ld = b.strides()[0];
  if (odd_multiple_of_1024(ld) && b.numel() >= (int64_t{1} << 20)) return true;
  if (power_of_two(ld)) return false;
  return (k >= 1536 && ld >= 1536) || (k >= 768 && ld > 2048);
}

// matmul's oneDNN call on prepared operands (a, b and out name the caller's in errors).
void run_matmul(Tensor ta, Tensor tb, const Tensor& tbias, Tensor& result, const Tensor& a,
                const Tensor& b, const Tensor& out) {
  const DType in_dtype = ta.dtype();
  const bool prefer_gemm = brgemm_slow_b(tb);
  try {
    auto entry = lookup(ta, tb, result, in_dtype, result.dtype(), tbias, false, false, prefer_gemm);
    if (!entry->usable) {
      // Only the reference kernel (or nothing) takes these strides: give oneDNN dense,
      // non-broadcast operands, which its optimised kernels always accept.
      const Shape& os = result.sizes();
      Shape a_shape(os.begin(), os.end() - 2), b_shape(os.begin(), os.end() - 2);
      a_shape.insert(a_shape.end(), {ta.size(-2), ta.size(-1)});
      b_shape.insert(b_shape.end(), {tb.size(-2), tb.size(-1)});
      ta = ops::contiguous(ops::expand(ta, a_shape));
      tb = ops::contiguous(ops::expand(tb, b_shape));
      entry = lookup(ta, tb, result, in_dtype, result.dtype(), tbias, true, false, prefer_gemm);
      HF_CHECK(entry->usable, "matmul: oneDNN cannot compute ", a.str(), " x ", b.str(), " -> ",
               out.str(), ": ", entry->impl);
    }
    if (result.dim() > 2 && entry->impl.rfind("brg", 0) != 0 &&
        entry->dense_copies.load(std::memory_order_relaxed) != Entry::kNoBetter) {
      // oneDNN's brgemm kernels take batched operands only in dense layouts; others go to its
      // older gemm path, which runs batches of small strided matrices several times slower
      // (attention's q, k, v are strided slices of one projection, K^T a transposed view).
      // Dense copies cost a pass over the operands; the GEMM reads them many times.
      Tensor da = dense_matrices(ta), db = ops::contiguous(tb);
      auto dense = lookup(da, db, result, in_dtype, result.dtype(), tbias, false);
      const bool faster = dense->usable && dense->impl.rfind("brg", 0) == 0;
      entry->dense_copies.store(faster ? Entry::kFaster : Entry::kNoBetter,
                                std::memory_order_relaxed);
      if (faster) {
        entry = std::move(dense);
        ta = std::move(da);
        tb = std::move(db);
      }
    }
    execute(*entry, ta, tb, tbias, result);
  } catch (const dnnl::error& err) {
    HF_THROW("matmul: oneDNN failed on ", a.str(), " x ", b.str(), " -> ", out.str(), ": ",
             err.what(), " (status ", static_cast<int>(err.status), ")");
  }
}

// out += x @ tb through a cached primitive with a sum post-op (x, tb in dtype `in`, out a
// contiguous f32 or bf16 [M, N]); a, b and out name the caller's operands in errors.
void run_matmul_add(CpuBackend& self, const Tensor& x, const Tensor& tb, Tensor& y, DType in,
                    const Tensor& a, const Tensor& b, const Tensor& out) {
  try {
    auto entry = lookup(x, tb, y, in, y.dtype(), Tensor(), false,
                        /*accumulate=*/true, brgemm_slow_b(tb));
    if (!entry->usable) {  // no optimised kernel takes this layout: product, then add
      self.Backend::matmul_add(x, tb, y);
      return;
    }
    execute(*entry, x, tb, Tensor(), y);
  } catch (const dnnl::error& err) {
    HF_THROW("matmul_add: oneDNN failed on ", a.str(), " x ", b.str(), " -> ", out.str(), ": ",
             err.what(), " (status ", static_cast<int>(err.status), ")");
  }
}

// Long f32 reductions over a row-major A: oneDNN 2.6 runs a 2-D f32 GEMM whose K is in the tens
// of thousands (on brgemm) well below the rate of the same product in shorter pieces. The
// output layer's input gradient, dlogits [T, V] x W [V, C] with K = V = 50257, ran at 245-290
// GFLOP/s (T = 256 or 1024, C = 768) against 365-375 in 4096-long slices of K (2 threads,
// AVX-512, no AMX). oneDNN runs those slices, strided by V, on its gemm:jit path; copied dense
// they went back to brgemm and 295-310. Such a GEMM runs slice by slice, each slice after the
// first accumulating into the f32 result (a sum post-op): the accumulator is f32 throughout,
// only the points where running sums are stored change. The choice depends on K, A's layout
// and the dtype alone, so every rank of a data-parallel job makes the same one. Not taken:
//   - a column-major A (the weight gradients' x^T, K = tokens): 4-5% slower sliced;
//   - bf16: strided slices ran at 340-430 GFLOP/s; slices copied dense at 560-680, against
//     590-650 for the whole product, a difference inside `hfrun bench matmul`'s noise (2-3 ms
//     of a training step), not worth the copies and a rounded copy of the f32 result.
constexpr int64_t kKSplitMin = 16384;
constexpr int64_t kKChunk = 4096;

bool k_split_pays(const Tensor& a, const Tensor& b) {
  return a.dim() == 2 && b.dim() == 2 && a.dtype() == DType::kF32 && a.size(1) >= kKSplitMin &&
         a.strides()[1] == 1;
}

// Calls gemm(a_slice, b_slice, first) over kKChunk-long slices of the reduction dim, in order.
template <typename Gemm>
void by_k_chunks(const Tensor& a, const Tensor& b, Gemm&& gemm) {
  const int64_t k = a.size(1);
  for (int64_t k0 = 0; k0 < k; k0 += kKChunk) {
    const int64_t len = std::min(kKChunk, k - k0);
    gemm(ops::narrow(a, 1, k0, len), ops::narrow(b, 0, k0, len), k0 == 0);
  }
}

// An f32 weight gradient's product C [M, N] = A B with A = G^T, G [K, M] and B [K, N] dense
// (K = tokens), where f32_layout_fixes() holds: oneDNN 2.6's gemm:jit kernel, reached through
// the inner product's backward-weights primitive, runs the shapes whose brgemm loses rate (an
// unaligned M, B's rows an odd multiple of 1024 long) without the padded copies above, and
// large ones faster. A raw oneDNN product, cold caches, 2 threads, `brg:avx512_core` vs
// `x64:gemm:jit` (GFLOP/s, medians of 21, 2026-12-07): K = 1024, GPT-2's [768, 3072] 173 vs 409
// (~300 through the padded copy), [50257, 768] 228 vs 371, [768, 2304] 370 vs 410, [3072, 768]
// 384 vs 405; the Llama's [1536, 576] 353 vs 318 and [576, 1536] 341 vs 341, so smaller ones
// stay on brgemm. Inside a training step (`HFRUN_PROFILE=shapes`, GPT-2 124M f32): at K = 1024
// [50257, 768] 330 -> 400, [768, 3072] 315 -> 354 (its padded copy of B gone), [3072, 768]
// 339 -> 361, [768, 2304] 334 -> 330; at K = 256 gemm:jit lost ([3072, 768] 371 -> 264,
// [50257, 768] 357 -> 320) but for B's odd rows ([768, 3072] 253 -> 297). (bf16 does not gain:
// on AMX its gemm:jit ran the Llama's weight gradients at 600-815 in a step against brgemm's
// 720-1105.) HFRUN_MATMUL_IP=0|1 overrides (1: every dense transposed f32 product). The choice
// depends on the shapes alone, so every rank of a data-parallel job makes the same one.
bool transposed_product_pays(const Tensor& a, const Tensor& b, const Tensor& bias,
                             const Tensor& out) {
  static const int forced = [] {
    const char* e = std::getenv("HFRUN_MATMUL_IP");
    return e == nullptr || *e == '\0' ? -1 : std::string(e) != "0" ? 1 : 0;
  }();
  if (forced == 0 || (forced < 0 && !f32_layout_fixes())) return false;
  if (a.dim() != 2 || b.dim() != 2 || bias.defined() || a.dtype() != DType::kF32 ||
      b.dtype() != DType::kF32 || out.dtype() != DType::kF32 || !out.is_contiguous() ||
      !b.is_contiguous()) {
    return false;
  }
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m < 2 || k < 2 || n < 2 || a.strides()[0] != 1 || a.strides()[1] != m) return false;
  return forced == 1 || odd_multiple_of_1024(n) ||
         (k >= 1024 && (m % kLeadingAlign != 0 || std::max(m, n) >= 2048));
}

}  // namespace

void CpuBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out) {
  HF_PROFILE_SCOPE("matmul");
  if (out.numel() == 0) return;
  Tensor ta = shrink_broadcast_dims(a), tb = shrink_broadcast_dims(b), tbias = bias;
  // oneDNN 2.6 has no f16 matmul on CPUs without AVX512-FP16, and no bf16 one without AVX-512:
  // compute those in f32 (exact for 16-bit inputs; f32 accumulation as the native kernels, the
  // result rounded once to out's dtype), so mixed precision runs on any CPU, only slower.
  Tensor result = out;
  if (a.dtype() == DType::kF16 || (a.dtype() == DType::kBF16 && !native_bf16_matmul())) {
    ta = ops::to_dtype(ta, DType::kF32);
    tb = ops::to_dtype(tb, DType::kF32);
    if (bias.defined()) tbias = ops::to_dtype(bias, DType::kF32);
    if (out.dtype() != DType::kF32) result = ops::empty(out.sizes(), DType::kF32, out.device());
  }
  if (transposed_product_pays(ta, tb, tbias, result)) {
    auto entry = lookup_weights_gradient(ta.size(0), tb.size(1), ta.size(1));
    if (entry->usable) {
      try {
        execute(*entry, ta, tb, Tensor(), result);
      } catch (const dnnl::error& err) {
        HF_THROW("matmul: oneDNN failed on ", a.str(), " x ", b.str(), " -> ", out.str(), ": ",
                 err.what(), " (status ", static_cast<int>(err.status), ")");
      }
      if (!result.is_same(out)) copy(result, out);
      return;
    }
  }
  if (!matrix_layout_ok(ta)) ta = ops::contiguous(ta);
  if (!matrix_layout_ok(tb)) tb = ops::contiguous(tb);
  if (k_split_pays(ta, tb)) {
    // The slices accumulate in f32: a 16-bit result (of widened f16 operands) is rounded once,
    // at the end.
    if (result.dtype() != DType::kF32) result = ops::empty(out.sizes(), DType::kF32, out.device());
    by_k_chunks(ta, tb, [&](const Tensor& a_k, const Tensor& b_k, bool first) {
      if (first) {
        run_matmul(a_k, b_k, tbias, result, a, b, out);
      } else {
        run_matmul_add(*this, a_k, b_k, result, DType::kF32, a, b, out);
      }
    });
  } else {
    by_padded_row_chunks(ta, result, [&](const Tensor& rows_a, Tensor& rows_out) {
      run_matmul(rows_a, tb, tbias, rows_out, a, b, out);
    });
  }
  if (!result.is_same(out)) copy(result, out);
}

void CpuBackend::matmul_add(const Tensor& a, const Tensor& b, Tensor& out) {
  HF_PROFILE_SCOPE("matmul");
  if (out.numel() == 0) return;
  HF_CHECK(a.dim() == 2 && b.dim() == 2 && out.is_contiguous() &&
               (out.dtype() == DType::kF32 || out.dtype() == DType::kBF16),
           "matmul_add: a ", a.str(), " @ b ", b.str(), " into ", out.str(),
           ": 2-D operands and a contiguous f32 or bf16 destination");
  // Two bf16 operands go to oneDNN as they are where it has bf16 kernels (mixed precision's
  // weight gradients, accumulated in f32); anything else is widened to f32 first (exact).
  const DType in = a.dtype() == DType::kBF16 && b.dtype() == DType::kBF16 && native_bf16_matmul()
                       ? DType::kBF16
                       : DType::kF32;
  Tensor ta = a.dtype() == in ? a : ops::to_dtype(a, DType::kF32);
  Tensor tb = b.dtype() == in ? b : ops::to_dtype(b, DType::kF32);
  if (!matrix_layout_ok(ta)) ta = ops::contiguous(ta);
  if (!matrix_layout_ok(tb)) tb = ops::contiguous(tb);
  if (out.dtype() == DType::kF32 && k_split_pays(ta, tb)) {  // (a bf16 out: rounded once)
    by_k_chunks(ta, tb, [&](const Tensor& a_k, const Tensor& b_k, bool) {
      run_matmul_add(*this, a_k, b_k, out, in, a, b, out);
    });
  } else {
    by_padded_row_chunks(ta, out, [&](const Tensor& x, Tensor& y) {
      run_matmul_add(*this, x, tb, y, in, a, b, out);
    });
  }
}

// A bf16 output layer over a large vocabulary is bound by writing its f32 logits where the GEMM
// runs on AMX: [1024, 576] x [576, 50257]^T ran at 856-971 GFLOP/s, the same product a block of
// 2048 columns at a time at 1777 (2 threads, `brg:avx512_core_amx_bf16`, 2026-12-07), so
// recomputing the blocks in the backward costs about what the logits' passes cost, and their
// memory goes. With fewer logits the whole product is not so bound ([256, 768] x [768, 50257]^T
// at 1085, its blocks at 1154) and the recomputation gains nothing: GPT-2 124M at 4 x 64 tokens
// (12.9M logits) took 0.399 / 0.413 / 0.409 -> 0.402 / 0.408 / 0.428 s per step blocked, at
// 4 x 256 (51.5M) 1.093 / 1.110 / 1.129 -> 1.073 / 1.041 / 1.057 s. f32 GEMMs run at their rate
// either way (305 / 307): recomputing would add a third to the head.
constexpr int64_t kMinBlockedLogits = int64_t{1} << 25;

bool CpuBackend::prefers_cross_entropy_blocks(DType gemm_dtype, int64_t logits) const {
  return gemm_dtype == DType::kBF16 && logits >= kMinBlockedLogits && amx_gemms();
}

}  // namespace hfrun::cpu
