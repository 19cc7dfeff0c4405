// The arithmetic the MPI backend does on host buffers itself: the average's division after a
// sum, and the bf16 sum MPI has no type for. Compiled at -O3 without trapping math
// (distributed/CMakeLists.txt) so that the loops vectorise: a gradient bucket's division ran at
// ~3.5 ns per element as scalar code, on the thread that progresses the collectives.
#pragma once

#include <cstddef>
#include <cstdint>

#include "tensor/tensor.h"

namespace hfrun::dist::detail {

// t /= n element by element (ReduceOp::kAvg after the sum): f32 by IEEE division (exactly what
// the scalar loop gave), integers truncating toward zero as C++ division does.
void divide_in_place(Tensor& t, int n);

// b[i] = bf16(f32(a[i]) + f32(b[i])), rounded to nearest even, as NCCL adds bf16.
void bf16_sum_into(const uint16_t* a, uint16_t* b, size_t n);

}  // namespace hfrun::dist::detail
