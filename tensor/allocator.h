// Memory for tensor storage. The CPU allocator hands out 64-byte-aligned blocks and keeps freed
// blocks in per-size free lists, so a training step that allocates the same sizes every step
// makes no system allocations in steady state.
#pragma once

#include <cstddef>
#include <cstdint>

namespace hfrun {

struct AllocatorStats {
  size_t allocated_bytes = 0;  // live blocks handed out
  size_t cached_bytes = 0;     // freed blocks kept for reuse
  size_t peak_allocated_bytes = 0;
  uint64_t system_allocs = 0;  // calls that reached the system allocator
  uint64_t cache_hits = 0;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void empty_cache() = 0;  // returns cached blocks to the system
  // Starts peak_allocated_bytes again from the bytes live now (torch.cuda's
  // reset_peak_memory_stats), so that a measurement sees its own peak, not an earlier one.
  virtual void reset_peak() = 0;
};

Allocator& cpu_allocator();

}  // namespace hfrun
