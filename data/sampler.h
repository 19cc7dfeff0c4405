// The order in which training consumes samples (CONTRACT.md "Semantics that must hold").
//
// Samples are consumed along a flat position axis k = 0, 1, 2, ... that runs through epochs:
// epoch e = k / n covers positions [e*n, (e+1)*n) for n samples, and
//   shuffle = false:  sample(k) = k mod n
//   shuffle = true:   sample(k) = perm_e[k mod n]
// where perm_e is a Fisher-Yates permutation of [0, n) driven by Philox under the run's seed,
// with epoch e's random numbers at counters [e * 2^40, ...) of Generator(seed): a different
// permutation per epoch, a function of (seed, e, n) only, so it is the same for every world
// size and thread count, and any epoch can be recomputed on resume without replaying others.
//
// Batch layout, with micro batch B, grad_accum A, data-parallel world R and global batch
// G = B*A*R: micro step m (0..A-1) of optimizer step s on rank r consumes positions
//   s*G + m*(B*R) + r*B + [0, B).
// So step s consumes positions [s*G, (s+1)*G) whatever R is, and with shuffle = false those are
// samples [s*G, (s+1)*G) of the first epoch.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace hfrun::data {

struct BatchLayout {
  int64_t micro_batch = 1;  // B: samples per rank per micro step
  int64_t grad_accum = 1;   // A: micro steps per optimizer step
  int64_t world = 1;        // R: data-parallel ranks
  int64_t global_batch() const { return micro_batch * grad_accum * world; }  // G
  // Flat position of the first sample of (step, micro_step) for `rank`.
  int64_t position(int64_t step, int64_t micro_step, int64_t rank) const {
    return step * global_batch() + micro_step * micro_batch * world + rank * micro_batch;
  }
  void validate() const;  // kInvalidInput unless B, A, R >= 1
};

class GlobalSampler {
 public:
  GlobalSampler(int64_t num_samples, bool shuffle, uint64_t seed);

  int64_t num_samples() const { return n_; }
  bool shuffle() const { return shuffle_; }
  uint64_t seed() const { return seed_; }

  // Sample index at flat position k >= 0.
  int64_t sample_at(int64_t position) const;
  // perm_e (the identity when shuffle is off). Thread-safe; the latest epoch is cached.
  std::shared_ptr<const std::vector<int64_t>> permutation(int64_t epoch) const;
  // The B sample indices that `rank` consumes at (step, micro_step).
  std::vector<int64_t> batch_indices(const BatchLayout& layout, int64_t step, int64_t micro_step,
                                     int64_t rank) const;

 private:
  int64_t n_;
  bool shuffle_;
  uint64_t seed_;
  mutable std::mutex mu_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::shared_ptr<const std::vector<int64_t>> cached_;
};

// Fisher-Yates permutation of [0, n) for (seed, epoch) as described above.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace hfrun::data
