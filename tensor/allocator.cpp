#include "tensor/allocator.h"

#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "common/error.h"

namespace hfrun {
namespace {

constexpr size_t kAlignment = 64;
// The most cached bytes beyond the peak of live ones.
constexpr size_t kMaxCachedBytes = size_t{4} << 30;

// Blocks from this size on are mapped from the kernel directly (and unmapped when the cache is
// emptied) rather than taken from malloc: glibc raises its mmap threshold each time such a
// malloc'd block is freed, after which large blocks come from the heap, fragment it, and the
// process's resident memory creeps up by tens of MB over a run. Mapped blocks keep it flat.
constexpr size_t kMapBytes = size_t{256} << 10;

size_t round_size(size_t n) {
  return (std::max<size_t>(n, 1) + kAlignment - 1) / kAlignment * kAlignment;
}

// Mapped blocks from this size on ask for transparent huge pages (honoured where THP is
// "madvise" or "always"): first touching a 4 KiB page costs a fault, ~13 us each on a VM
// measured here (a 500 MB buffer: ~1.6 s); a 3-step GPT-2 124M run took 27 s there with 4 KiB
// pages, 16 s with huge pages.
constexpr size_t kHugeBytes = size_t{2} << 20;

void* system_alloc(size_t size) {
  if (size < kMapBytes) return std::aligned_alloc(kAlignment, size);
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  if (size >= kHugeBytes) madvise(p, size, MADV_HUGEPAGE);  // advice only: failure is harmless
  return p;                                                 // page-aligned
}

void system_free(void* p, size_t size) {
  if (size < kMapBytes) {
    std::free(p);
  } else {
    munmap(p, size);
  }
}

// Freed blocks are kept for reuse, best fit: a request takes the smallest cached block at least
// its size and at most twice it. (Exact sizes alone held a block for every shape ever seen,
// which with padded batches, a different length every micro batch, grew the cache to
// gigabytes.) Live and cached blocks together are held to kHeldFactor x the peak of live bytes:
// beyond that the least recently freed cached blocks go back to the system. A training step of
// fixed shapes reuses the same blocks every step; one of changing shapes keeps its resident
// memory near its peak of live tensors.
constexpr size_t kHeldNumerator = 5, kHeldDenominator = 4;  // kHeldFactor = 1.25

class CachingCpuAllocator final : public Allocator {
 public:
  ~CachingCpuAllocator() override { empty_cache(); }

  void* allocate(size_t nbytes) override {
    const size_t size = round_size(nbytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = by_size_.lower_bound(size);
      if (it != by_size_.end() && it->first <= 2 * size) {
        const size_t block = it->first;
        void* p = it->second.ptr;
        by_age_.erase(it->second.age);
        by_size_.erase(it);
        stats_.cached_bytes -= block;
        if (block != size) oversized_[p] = block;
        note_alloc(block);
        ++stats_.cache_hits;
        return p;
      }
      // A miss: make room first, counting this block as live.
      evict_to(held_limit(stats_.allocated_bytes + size), size);
    }
    void* p = system_alloc(size);
    if (!p) {
      empty_cache();
      p = system_alloc(size);
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
    if (auto it = oversized_.find(ptr); it != oversized_.end()) {
      size = it->second;
      oversized_.erase(it);
    }
    stats_.allocated_bytes -= size;
    if (size > kMaxCachedBytes) {
      system_free(ptr, size);
      return;
    }
    const uint64_t age = next_age_++;
    auto it = by_size_.emplace(size, Cached{ptr, age});
    by_age_.emplace(age, it);
    stats_.cached_bytes += size;
    evict_to(held_limit(0), 0);
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
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, c] : by_size_) system_free(c.ptr, size);
    by_size_.clear();
    by_age_.clear();
    stats_.cached_bytes = 0;
  }

 private:
  struct Cached {
    void* ptr;
    uint64_t age;
  };
  using BySize = std::multimap<size_t, Cached>;

  // The most live + cached bytes to hold, given that `live` bytes are (about to be) live.
  size_t held_limit(size_t live) const {
    const size_t peak = std::max(high_water_, live);
    return std::min(peak / kHeldDenominator * kHeldNumerator, peak + kMaxCachedBytes);
  }

  // Frees the least recently cached blocks until live + cached + `extra` <= limit.
  void evict_to(size_t limit, size_t extra) {
    while (!by_age_.empty() && stats_.allocated_bytes + stats_.cached_bytes + extra > limit) {
      const BySize::iterator it = by_age_.begin()->second;
      system_free(it->second.ptr, it->first);
      stats_.cached_bytes -= it->first;
      by_age_.erase(by_age_.begin());
      by_size_.erase(it);
    }
  }

  void note_alloc(size_t size) {
    stats_.allocated_bytes += size;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    high_water_ = std::max(high_water_, stats_.allocated_bytes);
  }

  mutable std::mutex mu_;
  size_t high_water_ = 0;  // the run's peak of live bytes (the cache's bound; never reset)
  BySize by_size_;         // cached blocks, for best fit
  std::map<uint64_t, BySize::iterator> by_age_;  // the same, least recently freed first
  uint64_t next_age_ = 0;
  std::unordered_map<void*, size_t> oversized_;  // live blocks larger than their request
  AllocatorStats stats_;
};

}  // namespace

Allocator& cpu_allocator() {
  // Leaked on purpose: tensors in static storage may be freed after main returns.
  static auto* alloc = new CachingCpuAllocator();
  return *alloc;
}

}  // namespace hfrun
