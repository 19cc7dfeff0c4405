// PLACEHOLDER (being replaced by the nn work): throws until implemented.
#include "tensor/backend/cpu/cpu_backend.h"
namespace hfrun::cpu {
void CpuBackend::embedding(const Tensor&, const Tensor&, Tensor&) { HF_THROW("not built yet"); }
void CpuBackend::embedding_backward(const Tensor&, const Tensor&, Tensor&) { HF_THROW("not built yet"); }
void CpuBackend::cross_entropy(const Tensor&, const Tensor&, int64_t, Tensor&, Tensor&) { HF_THROW("not built yet"); }
void CpuBackend::cross_entropy_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, Tensor&) { HF_THROW("not built yet"); }
}  // namespace hfrun::cpu
