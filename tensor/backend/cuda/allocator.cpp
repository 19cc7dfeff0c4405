// Caching device allocator, one per device. Freed blocks go to exact size-class free lists and
// are handed out again without cudaMalloc, so a training step that allocates the same sizes every
// step makes no cudaMalloc (nor the implicit synchronisation of cudaFree) in steady state.
//
// Reuse is safe without events because every kernel and copy that touches hfrun memory runs on
// the device's one stream (cuda_common.h): work that used a block was enqueued before the block
// was freed, work that uses it next is enqueued after, and the stream runs them in that order.
// (A consumer on another stream, NCCL say, must order itself against this stream first.)
//
// Size classes: below 1 MiB, multiples of 512 bytes; above, multiples of 1/8 of the size's power
// of two, so a block wastes at most 12.5% and the number of classes stays small.
#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "tensor/backend/cuda/cuda_backend.h"
#include "tensor/backend/cuda/cuda_common.h"

namespace hfrun::cuda {
namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;
constexpr size_t kSmallGranule = 512;

size_t size_class(size_t nbytes) {
  const size_t n = std::max<size_t>(nbytes, 1);
  if (n < kSmallLimit) return (n + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
  const size_t pow2 = size_t{1} << (63 - __builtin_clzll(n));
  const size_t granule = pow2 / 8;
  return (n + granule - 1) / granule * granule;
}

class CachingDeviceAllocator final : public Allocator {
 public:
  explicit CachingDeviceAllocator(int device) : device_(device) {}

  void* allocate(size_t nbytes) override {
    const size_t size = size_class(nbytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= size;
        ++stats_.cache_hits;
        note_alloc(size);
        return p;
      }
    }
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // out of memory is not sticky: clear it, free the cache, retry
      empty_cache();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      const AllocatorStats s = stats();
      HF_THROW(rank_prefix(), "cuda:", device_, " allocator: cudaMalloc of ", size, " bytes (for ",
               nbytes, ") failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
               "); hfrun holds ", s.allocated_bytes >> 20, " MiB in live tensors, the device has ",
               free_b >> 20, " of ", total_b >> 20, " MiB free");
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.system_allocs;
    note_alloc(size);
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    const size_t size = size_class(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocated_bytes -= size;
    stats_.cached_bytes += size;
    free_[size].push_back(ptr);
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }

  void empty_cache() override {
    std::unordered_map<size_t, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(free_);
      stats_.cached_bytes = 0;
    }
    if (blocks.empty()) return;
    DeviceGuard guard(device_);
    // cudaFree waits for the device, so no queued kernel still reads a block we return.
    for (auto& [size, list] : blocks) {
      for (void* p : list) HF_CUDA_CHECK(cudaFree(p));
    }
  }

 private:
  void note_alloc(size_t size) {
    stats_.allocated_bytes += size;
    if (stats_.allocated_bytes > stats_.peak_allocated_bytes) {
      stats_.peak_allocated_bytes = stats_.allocated_bytes;
    }
  }

  const int device_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

}  // namespace

Allocator& allocator(int device) {
  constexpr int kMaxDevices = 64;
  HF_CHECK(device >= 0 && device < kMaxDevices, "cuda allocator: invalid device index ", device);
  // Leaked on purpose: tensors in static storage may be freed after main returns.
  static auto* allocators = new CachingDeviceAllocator* [kMaxDevices] {};
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (!allocators[device]) allocators[device] = new CachingDeviceAllocator(device);
  return *allocators[device];
}

}  // namespace hfrun::cuda
