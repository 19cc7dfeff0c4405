// CUDA runtime state shared by the backend: error reporting, one stream per device, the device
// guard, device discovery, and the backend/allocator entry points that tensor/backend.cpp and
// tensor/storage.cpp call when built with CUDA.
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "tensor/backend/cuda/cuda_backend.h"
#include "tensor/backend/cuda/cuda_common.h"

namespace hfrun::cuda {
namespace {

thread_local cudaError_t t_launch_error = cudaSuccess;

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::string(v) != "0";
}

std::mutex g_stream_mutex;
std::vector<cudaStream_t> g_streams;  // by device index; null until first use

}  // namespace

std::string rank_prefix() {
  for (const char* name : {"RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(name); v && *v) return std::string("rank ") + v + ": ";
  }
  return "";
}

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  int device = -1;
  cudaGetDevice(&device);  // best effort: the error itself may make this fail too
  cudaGetLastError();      // clear a non-sticky error so later calls start clean
  throw Error(detail::concat(rank_prefix(), call, " failed on cuda:", device, ": ",
                             cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"),
              file, line);
}

bool launch_blocking() {
  static const bool on = env_flag("HFRUN_CUDA_LAUNCH_BLOCKING");
  return on;
}

bool launch_failed() {
  t_launch_error = cudaGetLastError();
  if (t_launch_error == cudaSuccess && launch_blocking()) {
    t_launch_error = cudaStreamSynchronize(current_stream());
  }
  return t_launch_error != cudaSuccess;
}

void throw_launch_error(const char* op, const std::string& what, const char* file, int line) {
  const cudaError_t err = t_launch_error;
  int device = -1;
  cudaGetDevice(&device);
  cudaGetLastError();
  throw Error(detail::concat(rank_prefix(), op, ": CUDA kernel failed on cuda:", device, " for ",
                             what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")",
                             launch_blocking() ? ""
                                               : " [set HFRUN_CUDA_LAUNCH_BLOCKING=1 to pin an "
                                                 "asynchronous error on the op that caused it]"),
              file, line);
}

cudaStream_t stream_for(int device) {
  std::lock_guard<std::mutex> lock(g_stream_mutex);
  if (device >= static_cast<int>(g_streams.size())) g_streams.resize(device + 1, nullptr);
  if (!g_streams[device]) {
    DeviceGuard guard(device);
    cudaStream_t s = nullptr;
    HF_CUDA_CHECK(cudaStreamCreate(&s));
    g_streams[device] = s;  // lives until the process exits (tensors may outlive main)
  }
  return g_streams[device];
}

cudaStream_t current_stream() {
  int device = 0;
  HF_CUDA_CHECK(cudaGetDevice(&device));
  return stream_for(device);
}

DeviceGuard::DeviceGuard(Device device) : DeviceGuard(device.index) {
  HF_CHECK(device.is_cuda(), "DeviceGuard: ", device.str(), " is not a CUDA device");
}

DeviceGuard::DeviceGuard(int index) {
  int current = 0;
  HF_CUDA_CHECK(cudaGetDevice(&current));
  if (current != index) {
    HF_CHECK(index >= 0 && index < device_count(), "cuda:", index, " does not exist (",
             device_status(), ")");
    HF_CUDA_CHECK(cudaSetDevice(index));
    previous_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0) cudaSetDevice(previous_);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string pci_bus_id(int index) {
  char id[32] = {};
  if (cudaDeviceGetPCIBusId(id, sizeof(id), index) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return id;
}

std::string device_status() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return detail::concat("no CUDA device: cudaGetDeviceCount failed: ", cudaGetErrorName(err),
                          " (", cudaGetErrorString(err), ")");
  }
  if (n == 0) return "no CUDA device: cudaGetDeviceCount returned 0";
  std::string s = detail::concat(n, " CUDA device(s):");
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess) {
      s += detail::concat(i ? ", " : " ", "cuda:", i, " ", prop.name, " (sm_", prop.major,
                          prop.minor, ", ", prop.totalGlobalMem >> 20, " MiB)");
    }
  }
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return s + detail::concat("; driver ", driver / 1000, ".", driver % 1000 / 10, ", runtime ",
                            runtime / 1000, ".", runtime % 1000 / 10);
}

Backend& backend() {
  static auto* b = new CudaBackend();  // leaked on purpose, as the CPU backend
  return *b;
}

}  // namespace hfrun::cuda
