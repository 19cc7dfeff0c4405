#include "tensor/backend.h"

#include "tensor/backend/cpu/cpu_backend.h"
#ifdef HFRUN_WITH_CUDA
#include "tensor/backend/cuda/cuda_backend.h"
#endif

namespace hfrun {
namespace {
Backend* g_cuda_backend = nullptr;
}

Backend& backend_for(Device device) {
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

void synchronize(Device device) {
  if (device.is_cpu()) return;
  backend_for(device).synchronize(device);
}

}  // namespace hfrun
