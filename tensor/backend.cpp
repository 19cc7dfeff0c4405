#include "tensor/backend.h"

#include "tensor/backend/cpu/cpu_backend.h"

namespace hfrun {
namespace {
Backend* g_cuda_backend = nullptr;
}

Backend& backend_for(Device device) {
  static cpu::CpuBackend* cpu_backend = new cpu::CpuBackend();
  if (device.is_cpu()) return *cpu_backend;
  HF_CHECK(g_cuda_backend != nullptr, "no backend for device ", device.str(),
           ": this build has no CUDA backend");
  return *g_cuda_backend;
}

void register_backend(DeviceType type, Backend* backend) {
  HF_CHECK(type == DeviceType::kCUDA, "register_backend: only a CUDA backend can be registered");
  g_cuda_backend = backend;
}

}  // namespace hfrun
