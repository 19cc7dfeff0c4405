#include "distributed/comm/validate.h"

#include <climits>

#include "common/error.h"

namespace hfrun::dist::detail {

void check_comm_tensor(const Tensor& t, const char* op, const char* what, bool reduction) {
  HF_CHECK(t.defined(), op, ": ", what, " tensor is undefined");
  HF_CHECK(t.device().is_cpu(), op, ": ", what, " tensor ", t.str(), " is on ", t.device().str(),
           "; the MPI backend takes CPU tensors");
  HF_CHECK(t.is_contiguous(), op, ": ", what, " tensor ", t.str(), " is not contiguous (strides ",
           shape_str(t.strides()), ")");
  HF_CHECK(t.numel() <= INT_MAX, op, ": ", what, " tensor ", t.str(), " has more than 2^31-1 ",
           "elements; split it into buckets");
  if (reduction) {
    DType d = t.dtype();
    HF_CHECK(d == DType::kF32 || d == DType::kI32 || d == DType::kI64 || d == DType::kBF16, op,
             ": ", what, " tensor ", t.str(), " has dtype ", dtype_name(d),
             "; reductions take f32, i32, i64 or bf16 (convert f16 to f32 first)");
  }
}

void check_peer(int r, int size, const char* op, const char* what) {
  HF_CHECK(r >= 0 && r < size, op, ": ", what, " ", r, " is not a rank of a group of size ", size);
}

bool is_own_block(const Tensor& out, const Tensor& in, int rank) {
  return out.numel() > 0 && in.raw_data() == static_cast<const char*>(out.raw_data()) +
                                                 static_cast<size_t>(rank) * in.nbytes();
}

void check_allgather(const Tensor& out, const Tensor& in, int size, int rank) {
  HF_CHECK(out.dtype() == in.dtype(), "allgather: output ", out.str(), " and input ", in.str(),
           " have different dtypes");
  HF_CHECK(out.numel() == in.numel() * size, "allgather: output ", out.str(), " must have size * ",
           "input elements (", size, " x ", in.numel(), " = ", in.numel() * size, ", input ",
           in.str(), ")");
  const auto* ob = static_cast<const char*>(out.raw_data());
  const auto* ib = static_cast<const char*>(in.raw_data());
  const bool overlap = ib < ob + out.nbytes() && ob < ib + in.nbytes();
  HF_CHECK(!overlap || is_own_block(out, in, rank), "allgather: input ", in.str(),
           " overlaps the output ", out.str(), " other than as this rank's block ", rank);
}

void check_reduce_scatter(const Tensor& out, const Tensor& in, int size, int rank) {
  HF_CHECK(out.dtype() == in.dtype(), "reduce_scatter: output ", out.str(), " and input ", in.str(),
           " have different dtypes");
  HF_CHECK(in.numel() == out.numel() * size, "reduce_scatter: input ", in.str(),
           " must have size * output elements (", size, " x ", out.numel(), " = ",
           out.numel() * size, ", output ", out.str(), ")");
  const auto* ob = static_cast<const char*>(out.raw_data());
  const auto* ib = static_cast<const char*>(in.raw_data());
  const bool overlap = ob < ib + in.nbytes() && ib < ob + out.nbytes();
  HF_CHECK(!overlap || is_own_block(in, out, rank), "reduce_scatter: output ", out.str(),
           " overlaps the input ", in.str(), " other than as this rank's block ", rank);
}

}  // namespace hfrun::dist::detail
