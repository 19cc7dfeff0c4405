#include "tensor/allocator.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "common/error.h"

namespace hfrun {
namespace {

constexpr size_t kAlignment = 64;
// Above this many cached bytes, freed blocks go back to the system instead of the cache.
constexpr size_t kMaxCachedBytes = size_t{4} << 30;

size_t round_size(size_t n) {
  return (std::max<size_t>(n, 1) + kAlignment - 1) / kAlignment * kAlignment;
}

class CachingCpuAllocator final : public Allocator {
 public:
  ~CachingCpuAllocator() override { empty_cache(); }

  void* allocate(size_t nbytes) override {
    size_t size = round_size(nbytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= size;
        note_alloc(size);
        ++stats_.cache_hits;
        return p;
      }
    }
    void* p = std::aligned_alloc(kAlignment, size);
    if (!p) {
      empty_cache();
      p = std::aligned_alloc(kAlignment, size);
    }
    HF_CHECK(p != nullptr, "cpu allocator: out of memory allocating ", nbytes, " bytes");
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.system_allocs;
    note_alloc(size);
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) override {
    if (!ptr) return;
    size_t size = round_size(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocated_bytes -= size;
    if (stats_.cached_bytes + size > kMaxCachedBytes) {
      std::free(ptr);
      return;
    }
    free_[size].push_back(ptr);
    stats_.cached_bytes += size;
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_) {
      for (void* p : blocks) std::free(p);
    }
    free_.clear();
    stats_.cached_bytes = 0;
  }

 private:
  void note_alloc(size_t size) {
    stats_.allocated_bytes += size;
    if (stats_.allocated_bytes > stats_.peak_allocated_bytes) {
      stats_.peak_allocated_bytes = stats_.allocated_bytes;
    }
  }

  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  AllocatorStats stats_;
};

}  // namespace

Allocator& cpu_allocator() {
  // Leaked on purpose: tensors in static storage may be freed after main returns.
  static auto* alloc = new CachingCpuAllocator();
  return *alloc;
}

}  // namespace hfrun
