#include "tensor/backend.h"

#include <map>
#include <memory>
#include <mutex>

#include "tensor/backend/cpu/cpu_backend.h"
#include "tensor/backend/profiling_backend.h"
#include "tensor/ops.h"
#include "tensor/profiler.h"
#ifdef HFRUN_WITH_CUDA
#include "tensor/backend/cuda/cuda_backend.h"
#endif

namespace hfrun {
namespace {
Backend* g_cuda_backend = nullptr;
}

namespace {

Backend& device_backend(Device device) {
  static cpu::CpuBackend* cpu_backend = new cpu::CpuBackend();
  if (device.is_cpu()) return *cpu_backend;
  if (g_cuda_backend) return *g_cuda_backend;
#ifdef HFRUN_WITH_CUDA
  // Called directly rather than registered from a static initialiser, which the linker drops
  // from a static library when nothing else references its object file.
  return cuda::backend();
#else
  HF_THROW("no backend for device ", device.str(), ": this build has no CUDA backend");
#endif
}

}  // namespace

void Backend::matmul_gelu(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out,
                          Tensor& pre) {
  matmul(a, b, bias, pre);
  unary(ops::UnaryOp::kGeluTanh, pre, out);
}

void Backend::matmul_add(const Tensor& a, const Tensor& b, Tensor& out) {
  Tensor product = ops::empty(out.sizes(), out.dtype(), out.device());
  matmul(a, b, Tensor(), product);
  binary(BinaryOp::kAdd, out, product, out);
}

void Backend::embedding_backward_add(const Tensor& gy, const Tensor& ids, Tensor& gweight) {
  Tensor dense = ops::empty(gweight.sizes(), gweight.dtype(), gweight.device());
  embedding_backward(gy, ids, dense);
  binary(BinaryOp::kAdd, gweight, dense, gweight);
}

void Backend::attention_scores_backward(const Tensor& gp, const Tensor& probs, int64_t n,
                                        double scale, Tensor& gscores) {
  const int64_t rows = n == 0 ? 0 : probs.numel() / n;
  Tensor gx = gscores.dtype() == DType::kF32
                  ? gscores
                  : ops::empty(probs.sizes(), DType::kF32, probs.device());
  softmax_backward(gp, probs, rows, n, 1, false, gx);
  this->scale(gx, scale);
  if (gx.dtype() != gscores.dtype()) copy(gx, gscores);
}

Tensor Backend::rotary(const Tensor&, const Tensor&, const Tensor&, bool) {
  return Tensor();
}

Tensor Backend::swiglu(const Tensor&, const Tensor&) {
  return Tensor();
}

std::pair<Tensor, Tensor> Backend::swiglu_backward(const Tensor&, const Tensor&, const Tensor&) {
  return {};
}

void Backend::cross_entropy_fold(const Tensor&, int64_t, const Tensor&, int64_t, Tensor&) {
  HF_THROW("cross_entropy_fold: the ", name(), " backend has no blocked cross-entropy kernels");
}

void Backend::cross_entropy_finish(const Tensor&, const Tensor&, int64_t, Tensor&, Tensor&) {
  HF_THROW("cross_entropy_finish: the ", name(), " backend has no blocked cross-entropy kernels");
}

void Backend::cross_entropy_block_backward(const Tensor&, const Tensor&, int64_t, const Tensor&,
                                           const Tensor&, int64_t, int64_t, Tensor&) {
  HF_THROW("cross_entropy_block_backward: the ", name(),
           " backend has no blocked cross-entropy kernels");
}

void Backend::fused_attention(const Tensor&, const Tensor&, const Tensor&, bool, double,
                              const Tensor&, int64_t, const DropoutMask&, Tensor&, Tensor&) {
  HF_THROW("fused_attention: the ", name(), " backend has no fused attention kernel");
}

void Backend::fused_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       const Tensor&, const Tensor&, bool, double, const Tensor&,
                                       int64_t, const DropoutMask&, Tensor&, Tensor&, Tensor&) {
  HF_THROW("fused_attention_backward: the ", name(), " backend has no fused attention kernel");
}

Backend& backend_for(Device device) {
  Backend& inner = device_backend(device);
  if (!profiler::enabled()) return inner;
  // Profiling: every call timed by name (device calls synchronised); one wrapper per device.
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::unique_ptr<ProfilingBackend>>* wrappers =
      new std::map<std::pair<int, int>, std::unique_ptr<ProfilingBackend>>;
  std::lock_guard<std::mutex> lock(mu);
  auto& w = (*wrappers)[{static_cast<int>(device.type), device.index}];
  if (!w) w = std::make_unique<ProfilingBackend>(inner, device);
  return *w;
}

void register_backend(DeviceType type, Backend* backend) {
  HF_CHECK(type == DeviceType::kCUDA, "register_backend: only a CUDA backend can be registered");
  g_cuda_backend = backend;
}

int cuda_device_count() {
#ifdef HFRUN_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

std::string cuda_status() {
#ifdef HFRUN_WITH_CUDA
  return cuda::device_status();
#else
  return "no CUDA device: this build has no CUDA backend (configure with -DHFRUN_CUDA=ON)";
#endif
}

std::string cuda_pci_bus_id(int index) {
#ifdef HFRUN_WITH_CUDA
  return cuda::pci_bus_id(index);
#else
  (void)index;
  return "";
#endif
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
  backend_for(device).synchronize(device);
}

}  // namespace hfrun
