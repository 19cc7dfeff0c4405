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

// out[i] = srcs[0][i] + srcs[1][i] + ... (p >= 2 sources, added in that order), then divided by
// `divide` when it is > 0 (IEEE division, as divide_in_place). `out` may be one of the sources
// exactly (the same address), not part of one.
// The sources are untyped so that callers holding byte pointers need no pointer punning.
void sum_f32(const void* const* srcs, int p, float* out, size_t n, int divide);

// Two ranks' sum in place: io[i] = io[i] + other[i] (then divided by `divide` when > 0), also
// written to copy[i]. None of the three overlap.
void sum2_f32(float* io, const float* other, float* copy, size_t n, int divide);
void sum2_bf16(uint16_t* io, const uint16_t* other, uint16_t* copy, size_t n);

// out[i] = bf16(f32(srcs[0][i]) + f32(srcs[1][i]) + ...), accumulated in f32 and rounded once;
// `acc` (n floats) is scratch for p > 2. `out` may be one of the sources exactly, not part of
// one.
void sum_bf16(const void* const* srcs, int p, uint16_t* out, size_t n, float* acc);

}  // namespace hfrun::dist::detail
