// PLACEHOLDER (being replaced by the matmul/attention work): throws until implemented.
#include "tensor/backend/cpu/cpu_backend.h"
namespace hfrun::cpu {
void CpuBackend::softmax(const Tensor&, int64_t, int64_t, int64_t, bool, Tensor&) { HF_THROW("softmax: not built yet"); }
void CpuBackend::softmax_backward(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, bool, Tensor&) { HF_THROW("softmax: not built yet"); }
void CpuBackend::scaled_masked_softmax(const Tensor&, double, bool, Tensor&) { HF_THROW("softmax: not built yet"); }
}  // namespace hfrun::cpu
