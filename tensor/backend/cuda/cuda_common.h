// Private to the CUDA backend: error checks, the per-device stream, the current-device guard.
// Every CUDA call goes through HF_CUDA_CHECK and every kernel launch is followed by
// HF_CUDA_CHECK_LAUNCH, so a failure names the call or the op and its shapes (and the rank).
// HFRUN_CUDA_LAUNCH_BLOCKING=1 synchronises after each launch, so an error inside a kernel is
// reported by the op that caused it rather than by a later call.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "common/error.h"
#include "tensor/device.h"

namespace hfrun::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
inline void check_cuda(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) [[unlikely]] {
    throw_cuda_error(err, call, file, line);
  }
}

// True when the last launch on this thread failed (or, with HFRUN_CUDA_LAUNCH_BLOCKING=1, when
// the stream reports an error after it); the error is kept for throw_launch_error.
bool launch_failed();
[[noreturn]] void throw_launch_error(const char* op, const std::string& what, const char* file,
                                     int line);

// The stream every hfrun kernel, copy and allocation on `device` is ordered on (created on first
// use; a blocking stream, so it also orders against the legacy default stream).
cudaStream_t stream_for(int device);
// The stream of the current device.
cudaStream_t current_stream();

// Makes `device` current for the scope and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// "rank R: " when a launcher set a rank in the environment, else "".
std::string rank_prefix();

}  // namespace hfrun::cuda

#define HF_CUDA_CHECK(call) ::hfrun::cuda::check_cuda((call), #call, __FILE__, __LINE__)
// After a kernel launch: HF_CUDA_CHECK_LAUNCH("softmax", x.str(), ...) (message built lazily).
#define HF_CUDA_CHECK_LAUNCH(op, ...)                                                       \
  do {                                                                                      \
    if (::hfrun::cuda::launch_failed()) [[unlikely]] {                                      \
      ::hfrun::cuda::throw_launch_error(op, ::hfrun::detail::concat(__VA_ARGS__), __FILE__, \
                                        __LINE__);                                          \
    }                                                                                       \
  } while (0)
