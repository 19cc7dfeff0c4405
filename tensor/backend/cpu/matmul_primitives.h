// The CPU backend's oneDNN matmul primitives, internal to tensor/backend/cpu: a product
// described to oneDNN as directly as its strides allow, one primitive per problem in a bounded
// least-recently-used cache, run on this thread's stream and scratchpad. matmul.cpp decides
// which operands oneDNN gets (copies, padding, slices, which primitive); this runs them.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "tensor/tensor.h"

namespace hfrun::cpu {

// Whether oneDNN reads t's last two dims as they are: row- or column-major (a unit stride along
// one, a leading dimension at least the other's size).
bool matrix_layout_ok(const Tensor& t);

// A cached primitive with the descriptors its memory arguments are built from.
struct Entry {
  bool usable = false;  // false: oneDNN only offers its reference kernel, or none at all
  std::string impl;     // oneDNN's implementation name, or the creation error
  dnnl::primitive prim;
  dnnl::memory::desc a_md, b_md, bias_md, out_md, scratch_md;
  bool has_bias = false;
  // An inner product's backward-weights primitive (see transposed_product_pays): a_md is its
  // diff_dst (A^T), b_md its src, out_md its diff_weights.
  bool weights_gradient = false;
  // A long 2-D problem run as two (see kRowAlign): the first head_rows rows, then the rest.
  std::shared_ptr<const Entry> head, tail;
  int64_t head_rows = 0;
  // Batched problems that oneDNN gives to its gemm path, not brgemm: whether dense copies of
  // the operands get brgemm (kUnknown until the first call tries).
  enum DenseCopies : int { kUnknown, kFaster, kNoBetter };
  mutable std::atomic<int> dense_copies{kUnknown};
};

// The cached primitive of out = a @ b (+ bias), or out += a @ b with `accumulate` (oneDNN's sum
// post-op), for operands in dtype `in` and out in `out_dtype`, as their shapes and strides give
// the problem (a, b and out share their rank; broadcast batch dims have stride 0). Not `usable`
// where oneDNN offers only its reference kernel, unless allow_ref. `prefer_gemm`: where oneDNN's
// first choice is a brgemm kernel, its next one that is neither brgemm nor the reference kernel
// (its gemm path), if it has one; matmul.cpp says where that pays.
std::shared_ptr<const Entry> lookup(const Tensor& a, const Tensor& b, const Tensor& out, DType in,
                                    DType out_dtype, const Tensor& bias, bool allow_ref,
                                    bool accumulate = false, bool prefer_gemm = false);
// C [M, N] = A^T B for A^T [K, M] and B [K, N] dense row-major f32, C dense f32: oneDNN's
// inner-product backward-weights primitive (diff_dst A^T, src B, diff_weights C).
std::shared_ptr<const Entry> lookup_weights_gradient(int64_t m, int64_t n, int64_t k);
// Runs e on the tensors' data (bias undefined when e has none).
void execute(const Entry& e, const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out);

// A matrix of a kernel's own buffers: sizes and strides in elements (row- or column-major).
struct Matrix {
  int64_t rows, cols, row_stride, col_stride;
};
// out = a @ b (+= with `accumulate`) for 2-D operands on raw pointers, laid out as given, through
// the shared cache's primitive of that problem (oneDNN's reference kernel where it has no
// other). For kernels that run thousands of small products per op, from inside an OpenMP
// parallel region, where each runs on the calling thread alone (oneDNN does not nest its
// threads): each thread keeps the primitives it ran with their oneDNN memory objects (a few
// microseconds per call otherwise: the cache's key and lock, three memory objects), pointed at
// the new data on every call.
void run_matrices(const Matrix& a, const void* pa, const Matrix& b, const void* pb,
                  const Matrix& out, void* pout, DType in, DType out_dtype,
                  bool accumulate = false);
// Whether this CPU's oneDNN computes bf16 matmuls at all (it needs AVX-512; on an AVX2-only CPU
// it offers no kernel, not even its reference one). Probed once.
bool native_bf16_matmul();

}  // namespace hfrun::cpu
