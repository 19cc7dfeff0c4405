// Introspection of the CPU backend's oneDNN state, for tests and diagnostics. No oneDNN types
// here: the dnnl headers stay private to tensor/backend/cpu/*.cpp.
#pragma once

#include <cstddef>
#include <string>

namespace hfrun::cpu {

// Number of matmul primitives created so far (one per distinct problem: shapes, strides,
// dtypes, bias). Repeating a call with the same problem must not grow it.
size_t matmul_cache_size();
// The most primitives the cache keeps (least recently used ones are dropped beyond it).
size_t matmul_cache_capacity();

// oneDNN's implementation name for the most recently executed matmul on this thread
// ("brg:avx512_core", "gemm:jit", ...); empty before the first call.
std::string matmul_last_impl();

}  // namespace hfrun::cpu
