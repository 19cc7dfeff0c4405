// Argument checks every ProcessGroup backend runs at the call, before anything is queued, so a
// bad call fails on the calling thread with an hfrun::Error naming the op and the shapes.
#pragma once

#include "tensor/tensor.h"

namespace hfrun::dist::detail {

// `t` is defined, a CPU tensor and contiguous; with `reduction` also f32, i32 or i64.
void check_comm_tensor(const Tensor& t, const char* op, const char* what, bool reduction);
// 0 <= r < size (a root, destination or source rank).
void check_peer(int r, int size, const char* op, const char* what);
// out has size * in.numel() elements and in's dtype; in and out are disjoint or `in` is block
// `rank` of `out` (in place).
void check_allgather(const Tensor& out, const Tensor& in, int size, int rank);
// True when `in` is exactly block `rank` of `out` (an in-place allgather).
bool is_own_block(const Tensor& out, const Tensor& in, int rank);
// in has size * out.numel() elements and out's dtype; in and out are disjoint or `out` is
// block `rank` of `in` (in place).
void check_reduce_scatter(const Tensor& out, const Tensor& in, int size, int rank);

}  // namespace hfrun::dist::detail
