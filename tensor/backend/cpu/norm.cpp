// PLACEHOLDER (being replaced by the nn work): throws until implemented.
#include "tensor/backend/cpu/cpu_backend.h"
namespace hfrun::cpu {
void CpuBackend::layer_norm(const Tensor&, const Tensor&, const Tensor&, double, Tensor&, Tensor&, Tensor&) { HF_THROW("not built yet"); }
void CpuBackend::layer_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, Tensor&) { HF_THROW("not built yet"); }
void CpuBackend::rms_norm(const Tensor&, const Tensor&, double, Tensor&, Tensor&) { HF_THROW("not built yet"); }
void CpuBackend::rms_norm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&) { HF_THROW("not built yet"); }
}  // namespace hfrun::cpu
