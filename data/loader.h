// Batches for training and evaluation, read from a TokenStream (data/dataset.h) in the order
// GlobalSampler (data/sampler.h) defines.
//
// TokenLoader prepares the next few batches on a background thread (a bounded queue) so the
// training step never waits for token copies. It never hangs: destroying it stops and joins the
// thread whatever the consumer did, and an error in the thread is rethrown by next().
// It never ends either: epochs repeat; the trainer decides when to stop.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/sampler.h"
#include "tensor/tensor.h"

namespace hfrun::data {

struct Batch {
  Tensor inputs;                 // i64 [rows, seq_len]: window[0, seq_len) of each sample
  Tensor targets;                // i64 [rows, seq_len]: window[1, seq_len + 1)
  int64_t step = 0;              // optimizer step (training) or batch number (validation)
  int64_t micro_step = 0;        // 0..grad_accum-1 (always 0 for validation)
  std::vector<int64_t> samples;  // sample index of each row, for logs and tests
};

struct LoaderOptions {
  int64_t seq_len = 0;
  int64_t micro_batch = 1;  // rows per rank per micro step
  int64_t grad_accum = 1;
  int64_t rank = 0;  // data-parallel rank and world size
  int64_t world = 1;
  bool shuffle = false;
  uint64_t seed = 0;
  int prefetch = 4;  // batches prepared ahead
};

// Where a loader stands: next() returns (step, micro_step) next. position is the global flat
// position of that micro step's first sample, step*G + micro_step*B*R, so the state is the same
// on every rank and a checkpoint stores it once.
struct LoaderState {
  int64_t position = 0;
  int64_t step = 0;
  int64_t micro_step = 0;
  bool operator==(const LoaderState&) const = default;
};

// The state after one more micro step of `layout`.
void advance_loader_state(LoaderState& state, const BatchLayout& layout);
// An invalid-input error unless `state` is a micro step of `layout` (a checkpoint written with a
// different global batch cannot resume).
void check_loader_state(const LoaderState& state, const BatchLayout& layout);

// A loader whose position a checkpoint stores (TokenLoader, and the records' RecordLoader).
class ResumableLoader {
 public:
  virtual ~ResumableLoader() = default;
  virtual LoaderState state() const = 0;
  // Continues at `state` (from state() of this or an earlier run with the same data, seed and
  // global batch), so the batches that follow are those an uninterrupted run would see.
  virtual void restore(const LoaderState& state) = 0;
};

class TokenLoader : public ResumableLoader {
 public:
  // Throws kInvalidInput for a bad layout or a stream too short for one sample.
  TokenLoader(std::shared_ptr<const TokenStream> stream, const LoaderOptions& options);
  ~TokenLoader();
  TokenLoader(const TokenLoader&) = delete;
  TokenLoader& operator=(const TokenLoader&) = delete;

  // This rank's next micro batch. Rethrows an error raised while preparing it.
  Batch next();
  LoaderState state() const override { return state_; }
  void restore(const LoaderState& state) override;

  const BatchLayout& layout() const { return layout_; }
  const GlobalSampler& sampler() const { return sampler_; }
  int64_t num_samples() const { return sampler_.num_samples(); }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  Batch make_batch(int64_t step, int64_t micro_step) const;
  void produce(LoaderState from);
  void start();
  void stop();

  std::shared_ptr<const TokenStream> stream_;
  LoaderOptions options_;
  BatchLayout layout_;
  GlobalSampler sampler_;
  LoaderState state_;  // the consumer's position

  std::mutex mu_;
  std::condition_variable ready_;  // a slot was queued
  std::condition_variable space_;  // a slot was taken, or stop
  std::deque<Slot> queue_;
  bool stop_ = false;
  std::thread producer_;
};

// Every complete window of a stream once, in order, without shuffling: batch k of rank r holds
// samples k*B*R + r*B + [0, B), clipped to the samples there are. Every rank gets the same
// num_batches() batches (collectives stay matched); the last ones may have fewer rows, or none
// (shape [0, seq_len]), so average losses by target count, not by batch.
class ValidationLoader {
 public:
  ValidationLoader(std::shared_ptr<const TokenStream> stream, int64_t seq_len, int64_t batch_size,
                   int64_t rank = 0, int64_t world = 1);

  int64_t num_samples() const { return num_samples_; }
  int64_t num_batches() const;
  std::optional<Batch> next();  // nullopt after the last batch
  void reset() { next_batch_ = 0; }

 private:
  std::shared_ptr<const TokenStream> stream_;
  int64_t seq_len_, batch_size_, rank_, world_;
  int64_t num_samples_;
  int64_t next_batch_ = 0;
};

// Builds a batch of the given samples' windows (inputs and targets as above).
Batch make_window_batch(const TokenStream& stream, int64_t seq_len,
                        const std::vector<int64_t>& samples);

}  // namespace hfrun::data
