#include "data/loader.h"

#include <algorithm>
#include <utility>

#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::data {

Batch make_window_batch(const TokenStream& stream, int64_t seq_len,
                        const std::vector<int64_t>& samples) {
  auto rows = static_cast<int64_t>(samples.size());
  Batch b;
  b.inputs = ops::empty({rows, seq_len}, DType::kI64);
  b.targets = ops::empty({rows, seq_len}, DType::kI64);
  int64_t* in = rows > 0 ? b.inputs.data<int64_t>() : nullptr;
  int64_t* tg = rows > 0 ? b.targets.data<int64_t>() : nullptr;
  std::vector<int32_t> window(static_cast<size_t>(seq_len + 1));
  for (int64_t r = 0; r < rows; ++r) {
    stream.sample(samples[static_cast<size_t>(r)], seq_len, window.data());
    std::copy_n(window.begin(), seq_len, in + r * seq_len);
    std::copy_n(window.begin() + 1, seq_len, tg + r * seq_len);
  }
  b.samples = samples;
  return b;
}

namespace {

BatchLayout layout_of(const LoaderOptions& o) {
  BatchLayout l{o.micro_batch, o.grad_accum, o.world};
  l.validate();
  HF_CHECK_INPUT(o.rank >= 0 && o.rank < o.world, "data-parallel rank ", o.rank,
                 " out of range for world size ", o.world);
  HF_CHECK_INPUT(o.prefetch >= 1, "loader prefetch must be >= 1, got ", o.prefetch);
  return l;
}

int64_t checked_samples(const std::shared_ptr<const TokenStream>& stream, int64_t seq_len) {
  HF_CHECK(stream != nullptr, "loader: no token stream given");
  return stream->require_samples(seq_len);
}

}  // namespace

TokenLoader::TokenLoader(std::shared_ptr<const TokenStream> stream, const LoaderOptions& options)
    : stream_(std::move(stream)),
      options_(options),
      layout_(layout_of(options)),
      sampler_(checked_samples(stream_, options.seq_len), options.shuffle, options.seed) {}

TokenLoader::~TokenLoader() {
  stop();
}

void advance_loader_state(LoaderState& s, const BatchLayout& layout) {
  s.position += layout.micro_batch * layout.world;
  if (++s.micro_step == layout.grad_accum) {
    s.micro_step = 0;
    ++s.step;
  }
}

Batch TokenLoader::make_batch(int64_t step, int64_t micro_step) const {
  Batch b = make_window_batch(*stream_, options_.seq_len,
                              sampler_.batch_indices(layout_, step, micro_step, options_.rank));
  b.step = step;
  b.micro_step = micro_step;
  return b;
}

void TokenLoader::produce(LoaderState from) {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      space_.wait(lock,
                  [&] { return stop_ || queue_.size() < static_cast<size_t>(options_.prefetch); });
      if (stop_) return;
    }
    Slot slot;
    try {
      slot.batch = make_batch(from.step, from.micro_step);
    } catch (...) {
      slot.error = std::current_exception();
    }
    bool failed = slot.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(slot));
    }
    ready_.notify_one();
    if (failed) return;  // the error stays queued; next() reports it from then on
    advance_loader_state(from, layout_);
  }
}

void TokenLoader::start() {
  stop_ = false;
  producer_ = std::thread([this, from = state_] { produce(from); });
}

void TokenLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  space_.notify_all();
  if (producer_.joinable()) producer_.join();
  queue_.clear();
}

Batch TokenLoader::next() {
  // The thread starts on first use, so a restore() right after construction wastes no work.
  if (!producer_.joinable()) start();
  Slot slot;
  {
    std::unique_lock<std::mutex> lock(mu_);
    ready_.wait(lock, [&] { return !queue_.empty(); });
    if (queue_.front().error) std::rethrow_exception(queue_.front().error);
    slot = std::move(queue_.front());
    queue_.pop_front();
  }
  space_.notify_one();
  advance_loader_state(state_, layout_);
  return std::move(slot.batch);
}

void check_loader_state(const LoaderState& state, const BatchLayout& layout) {
  HF_CHECK_INPUT(state.step >= 0 && state.micro_step >= 0 && state.micro_step < layout.grad_accum &&
                     state.position == layout.position(state.step, state.micro_step, 0),
                 "loader state (position ", state.position, ", step ", state.step, ", micro step ",
                 state.micro_step, ") does not fit this batch layout (global batch ",
                 layout.global_batch(), ", grad_accum ", layout.grad_accum,
                 "): resume with the same global batch size");
}

void TokenLoader::restore(const LoaderState& state) {
  check_loader_state(state, layout_);
  stop();
  state_ = state;
}

ValidationLoader::ValidationLoader(std::shared_ptr<const TokenStream> stream, int64_t seq_len,
                                   int64_t batch_size, int64_t rank, int64_t world)
    : stream_(std::move(stream)),
      seq_len_(seq_len),
      batch_size_(batch_size),
      rank_(rank),
      world_(world),
      num_samples_(checked_samples(stream_, seq_len)) {
  BatchLayout{batch_size, 1, world}.validate();
  HF_CHECK_INPUT(rank >= 0 && rank < world, "data-parallel rank ", rank,
                 " out of range for world size ", world);
}

int64_t ValidationLoader::num_batches() const {
  int64_t per_batch = batch_size_ * world_;
  return (num_samples_ + per_batch - 1) / per_batch;
}

std::optional<Batch> ValidationLoader::next() {
  if (next_batch_ >= num_batches()) return std::nullopt;
  int64_t first = next_batch_ * batch_size_ * world_ + rank_ * batch_size_;
  int64_t last = std::min(first + batch_size_, num_samples_);
  std::vector<int64_t> samples;
  for (int64_t i = first; i < last; ++i) samples.push_back(i);
  Batch b = make_window_batch(*stream_, seq_len_, samples);
  b.step = next_batch_++;
  return b;
}

}  // namespace hfrun::data
