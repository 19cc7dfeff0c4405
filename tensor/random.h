// Seeded random numbers. Philox-4x32-10, the counter-based generator PyTorch's CUDA backend and
// JAX use: the stream for (seed, offset) is the same on any thread count and any device, so
// data order, init and dropout masks are reproducible and can be resumed from a checkpoint.
#pragma once

#include <array>
#include <cstdint>

namespace hfrun {

// Philox-4x32-10's round multipliers and key increments (Salmon et al.), shared by every
// implementation of it: philox4x32 below, the CPU's batched one (tensor/backend/cpu/philox.h)
// and the CUDA kernels'.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

// A dropout mask over a tensor's elements in memory order: element i is dropped iff word i % 4
// of philox4x32(key, i / 4), as uint_to_unit_float gives it, is below p; kept elements are
// multiplied by 1 / (1 - p). ops::dropout's mask, and that of the kernels that drop inside a
// fused op (attention's probabilities).
struct DropoutMask {
  double p = 0;  // 0: nothing dropped
  uint64_t key = 0;
};

// Four 32-bit outputs for counter `counter` under key `seed`.
std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t counter);
// Uniform float in [0, 1) from 24 random bits.
inline float uint_to_unit_float(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }  // counters consumed so far (save/restore this)
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
    block_used_ = 4;  // the cached block belongs to the old state: next_u32 draws afresh
  }
  // Reserves n counters and returns the first; each counter yields 4 x 32 random bits.
  uint64_t advance(uint64_t n) {
    uint64_t first = offset_;
    offset_ += n;
    return first;
  }
  uint32_t next_u32();
  double next_uniform();  // [0, 1)

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
  std::array<uint32_t, 4> block_{};
  int block_used_ = 4;
};

}  // namespace hfrun
