#include "data/sampler.h"

#include <numeric>
#include <utility>

#include "common/error.h"
#include "tensor/random.h"

namespace hfrun::data {

namespace {

constexpr uint64_t kCountersPerEpoch = uint64_t{1} << 40;

// Uniform integer in [0, bound) from 64 random bits, without modulo bias: draws below
// 2^64 mod bound are rejected, leaving a multiple of bound equally likely values.
uint64_t uniform_below(Generator& gen, uint64_t bound) {
  const uint64_t reject_below = (uint64_t{0} - bound) % bound;  // 2^64 mod bound
  for (;;) {
    uint64_t hi = gen.next_u32();  // two statements: the draw order must be fixed
    uint64_t x = (hi << 32) | gen.next_u32();
    if (x >= reject_below) return x % bound;
  }
}

}  // namespace

void BatchLayout::validate() const {
  HF_CHECK_INPUT(micro_batch >= 1, "micro_batch_size must be >= 1, got ", micro_batch);
  HF_CHECK_INPUT(grad_accum >= 1, "grad_accum_steps must be >= 1, got ", grad_accum);
  HF_CHECK_INPUT(world >= 1, "data-parallel world size must be >= 1, got ", world);
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  HF_CHECK(n >= 0 && epoch >= 0, "epoch_permutation: n ", n, ", epoch ", epoch);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  Generator gen(seed);
  gen.set_state(seed, static_cast<uint64_t>(epoch) * kCountersPerEpoch);
  // Fisher-Yates from the top: position i swaps with a uniform j in [0, i].
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(uniform_below(gen, static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

GlobalSampler::GlobalSampler(int64_t num_samples, bool shuffle, uint64_t seed)
    : n_(num_samples), shuffle_(shuffle), seed_(seed) {
  HF_CHECK_INPUT(n_ > 0, "GlobalSampler: the dataset has no samples");
}

std::shared_ptr<const std::vector<int64_t>> GlobalSampler::permutation(int64_t epoch) const {
  HF_CHECK(epoch >= 0, "GlobalSampler: negative epoch ", epoch);
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch != cached_epoch_ || !cached_) {
    if (shuffle_) {
      cached_ = std::make_shared<const std::vector<int64_t>>(epoch_permutation(n_, seed_, epoch));
    } else {
      std::vector<int64_t> identity(static_cast<size_t>(n_));
      std::iota(identity.begin(), identity.end(), int64_t{0});
      cached_ = std::make_shared<const std::vector<int64_t>>(std::move(identity));
    }
    cached_epoch_ = epoch;
  }
  return cached_;
}

int64_t GlobalSampler::sample_at(int64_t position) const {
  HF_CHECK(position >= 0, "GlobalSampler: negative position ", position);
  if (!shuffle_) return position % n_;
  return (*permutation(position / n_))[static_cast<size_t>(position % n_)];
}

std::vector<int64_t> GlobalSampler::batch_indices(const BatchLayout& layout, int64_t step,
                                                  int64_t micro_step, int64_t rank) const {
  layout.validate();
  HF_CHECK(step >= 0, "batch_indices: negative step ", step);
  HF_CHECK(micro_step >= 0 && micro_step < layout.grad_accum, "batch_indices: micro step ",
           micro_step, " out of range for grad_accum ", layout.grad_accum);
  HF_CHECK(rank >= 0 && rank < layout.world, "batch_indices: rank ", rank,
           " out of range for world ", layout.world);
  int64_t first = layout.position(step, micro_step, rank);
  std::vector<int64_t> out(static_cast<size_t>(layout.micro_batch));
  for (int64_t j = 0; j < layout.micro_batch; ++j)
    out[static_cast<size_t>(j)] = sample_at(first + j);
  return out;
}

}  // namespace hfrun::data
