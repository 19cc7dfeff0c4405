// Copies that cross the host/device boundary. The device side is made contiguous in the source
// dtype (a device kernel handles strides, broadcasts and casts), the bytes move with one
// cudaMemcpyAsync on the device's stream, and the host side is finished by the CPU backend.
// Transfers are synchronous with respect to the host: when copy() returns, the host buffer may be
// reused or freed, and downloaded values are readable.
#include "tensor/backend/cuda/cuda_backend.h"
#include "tensor/backend/cuda/cuda_common.h"
#include "tensor/ops.h"

namespace hfrun::cuda {
namespace {

bool dense_same_dtype(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.is_contiguous() && b.is_contiguous();
}

void memcpy_sync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, Device device,
                 const Tensor& from, const Tensor& to) {
  if (bytes == 0) return;
  DeviceGuard guard(device);
  cudaStream_t s = stream_for(device.index);
  const cudaError_t err = cudaMemcpyAsync(dst, src, bytes, kind, s);
  const cudaError_t sync = err == cudaSuccess ? cudaStreamSynchronize(s) : err;
  if (sync != cudaSuccess) {
    throw_cuda_error(
        sync,
        detail::concat("copy ", from.str(), " -> ", to.str(), " (cudaMemcpyAsync ",
                       kind == cudaMemcpyHostToDevice ? "H2D" : "D2H", ", ", bytes, " bytes)")
            .c_str(),
        __FILE__, __LINE__);
  }
}

}  // namespace

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  if (dst.numel() == 0) return;
  const Device sd = src.device(), dd = dst.device();
  HF_CHECK(sd.is_cuda() || dd.is_cuda(), "cuda copy: neither ", src.str(), " nor ", dst.str(),
           " is on a CUDA device");
  Backend& cpu = backend_for(Device::cpu());
  if (sd.is_cuda() && dd.is_cuda()) {
    if (sd == dd) {
      copy_on_device(src, dst);
    } else {  // between two GPUs: through the host (rare: hfrun runs one device per process)
      Tensor h = ops::empty(src.sizes(), src.dtype(), Device::cpu());
      copy(src, h);
      copy(h, dst);
    }
    return;
  }
  if (dd.is_cuda()) {  // host -> device
    Tensor h = src;
    if (!src.is_contiguous() || src.sizes() != dst.sizes()) {
      h = ops::empty(dst.sizes(), src.dtype(), Device::cpu());
      cpu.copy(src, h);
    }
    Tensor d = dense_same_dtype(h, dst) ? dst : ops::empty(dst.sizes(), src.dtype(), dd);
    memcpy_sync(d.raw_data(), h.raw_data(), h.nbytes(), cudaMemcpyHostToDevice, dd, src, dst);
    if (!d.is_same(dst)) copy_on_device(d, dst);
    return;
  }
  // device -> host
  Tensor d = src;
  if (!src.is_contiguous() || src.sizes() != dst.sizes()) {
    d = ops::empty(dst.sizes(), src.dtype(), sd);
    copy_on_device(src, d);
  }
  Tensor h = dense_same_dtype(d, dst) ? dst : ops::empty(dst.sizes(), src.dtype(), Device::cpu());
  memcpy_sync(h.raw_data(), d.raw_data(), d.nbytes(), cudaMemcpyDeviceToHost, sd, src, dst);
  if (!h.is_same(dst)) cpu.copy(h, dst);
}

}  // namespace hfrun::cuda
