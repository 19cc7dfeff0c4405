// PLACEHOLDER (being replaced by the matmul work): throws until implemented.
#include "tensor/backend/cpu/cpu_backend.h"
namespace hfrun::cpu {
void CpuBackend::matmul(const Tensor&, const Tensor&, const Tensor&, Tensor&) { HF_THROW("matmul: not built yet"); }
}  // namespace hfrun::cpu
