// TokenLoader: batch contents, resume, shutdown and error propagation; ValidationLoader.
#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "data/loader.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

using testing::TempDir;

// Token i = i, so a window's first token tells which sample it is.
std::shared_ptr<const TokenStream> counting_stream(int64_t n) {
  std::vector<int32_t> toks(static_cast<size_t>(n));
  std::iota(toks.begin(), toks.end(), 0);
  return std::make_shared<const TokenStream>(std::move(toks));
}

std::vector<Batch> take(TokenLoader& loader, int n) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].step, b[i].step) << i;
    EXPECT_EQ(a[i].micro_step, b[i].micro_step) << i;
    EXPECT_EQ(a[i].samples, b[i].samples) << i;
    EXPECT_EQ(a[i].inputs.to_int_vector(), b[i].inputs.to_int_vector()) << i;
    EXPECT_EQ(a[i].targets.to_int_vector(), b[i].targets.to_int_vector()) << i;
  }
}

TEST(TokenLoader, BatchesHoldTheSampleWindows) {
  auto stream = counting_stream(50);  // seq_len 4: floor(49 / 4) = 12 samples
  TokenLoader loader(stream,
                     {.seq_len = 4, .micro_batch = 2, .grad_accum = 3, .rank = 1, .world = 2});
  for (int64_t i = 0; i < 5; ++i) {
    Batch b = loader.next();
    EXPECT_EQ(b.step, i / 3);
    EXPECT_EQ(b.micro_step, i % 3);
    EXPECT_EQ(b.inputs.dtype(), DType::kI64);
    EXPECT_EQ(b.inputs.sizes(), (Shape{2, 4}));
    EXPECT_EQ(b.targets.sizes(), (Shape{2, 4}));
    // Rank 1 of 2 takes the second B = 2 of each micro step's B*R = 4 positions.
    int64_t pos = b.step * 12 + b.micro_step * 4 + 2;
    std::vector<int64_t> want_in, want_tg;
    for (int64_t r = 0; r < 2; ++r) {
      int64_t sample = (pos + r) % 12;
      EXPECT_EQ(b.samples[static_cast<size_t>(r)], sample);
      for (int64_t t = 0; t < 4; ++t) {
        want_in.push_back(sample * 4 + t);
        want_tg.push_back(sample * 4 + t + 1);  // targets are inputs shifted by one token
      }
    }
    EXPECT_EQ(b.inputs.to_int_vector(), want_in);
    EXPECT_EQ(b.targets.to_int_vector(), want_tg);
  }
}

TEST(TokenLoader, ResumeMidEpochAndAcrossEpochBoundary) {
  auto stream = counting_stream(200);  // seq_len 8: 24 samples; G = 6 -> 4 steps per epoch
  for (bool shuffle : {false, true}) {
    LoaderOptions o{.seq_len = 8,
                    .micro_batch = 1,
                    .grad_accum = 3,
                    .rank = 1,
                    .world = 2,
                    .shuffle = shuffle,
                    .seed = 99,
                    .prefetch = 3};
    TokenLoader full(stream, o);
    auto want = take(full, 40);  // 13+ optimizer steps: more than three epochs
    // Stop after k micro steps: mid step (k % 3 != 0), mid epoch, and right at the boundary
    // of epoch 1 (4 steps * 3 micro steps = 12).
    for (int k : {5, 11, 12, 13}) {
      LoaderState st;
      {
        TokenLoader first(stream, o);
        take(first, k);
        st = first.state();
      }  // destroyed with batches still prefetched
      EXPECT_EQ(st.step, k / 3);
      EXPECT_EQ(st.micro_step, k % 3);
      EXPECT_EQ(st.position, (k / 3) * 6 + (k % 3) * 2);
      TokenLoader resumed(stream, o);
      resumed.restore(st);
      expect_same_batches(take(resumed, 40 - k), std::vector<Batch>(want.begin() + k, want.end()));
    }
  }
}

TEST(TokenLoader, RestoreInPlaceRewinds) {
  auto stream = counting_stream(100);
  TokenLoader loader(stream, {.seq_len = 4, .micro_batch = 2, .shuffle = true, .seed = 5});
  auto a = take(loader, 3);
  LoaderState st = loader.state();
  auto b = take(loader, 20);
  loader.restore(st);
  expect_same_batches(take(loader, 20), b);
  loader.restore(LoaderState{});
  expect_same_batches(take(loader, 3), a);
}

TEST(TokenLoader, StepBoundaryStateMovesAcrossWorldSizes) {
  // A run with R = 1 stopped after step 2 continues with R = 2 (same G = 4): step 3 covers the
  // same samples.
  auto stream = counting_stream(300);
  LoaderOptions one{.seq_len = 4, .micro_batch = 2, .grad_accum = 2, .shuffle = true, .seed = 3};
  TokenLoader ref(stream, one);
  take(ref, 6);
  LoaderState st = ref.state();
  std::vector<int64_t> want;
  for (const auto& b : take(ref, 2)) want.insert(want.end(), b.samples.begin(), b.samples.end());
  std::vector<int64_t> got;
  for (int64_t r = 0; r < 2; ++r) {
    TokenLoader l(stream, {.seq_len = 4,
                           .micro_batch = 2,
                           .grad_accum = 1,
                           .rank = r,
                           .world = 2,
                           .shuffle = true,
                           .seed = 3});
    l.restore(st);
    Batch b = l.next();
    EXPECT_EQ(b.step, 3);
    got.insert(got.end(), b.samples.begin(), b.samples.end());
  }
  EXPECT_EQ(got, want);
}

TEST(TokenLoader, RestoreRejectsStateOfAnotherLayout) {
  TokenLoader l(counting_stream(100), {.seq_len = 4, .micro_batch = 2, .grad_accum = 2});
  // position 2 is micro step 1 of step 0 here (B*R = 2); claiming step 1 contradicts it.
  testing::expect_input_error([&] { l.restore({.position = 2, .step = 1, .micro_step = 0}); },
                              {"position 2", "global batch 4"});
  testing::expect_input_error([&] { l.restore({.position = 6, .step = 1, .micro_step = 2}); },
                              {"micro step 2"});
  l.restore({.position = 6, .step = 1, .micro_step = 1});
  EXPECT_EQ(l.next().samples, (std::vector<int64_t>{6, 7}));
}

TEST(TokenLoader, DestroyedEarlyDoesNotHang) {
  auto stream = counting_stream(5000);
  // On a detached thread that owns what it uses, so a hang fails this test instead of blocking
  // the whole suite.
  auto finished = std::make_shared<std::promise<void>>();
  std::future<void> done = finished->get_future();
  std::thread([stream, finished] {
    { TokenLoader never_used(stream, {.seq_len = 8, .micro_batch = 4}); }
    {
      TokenLoader full_queue(stream, {.seq_len = 8, .micro_batch = 4, .prefetch = 2});
      full_queue.next();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // producer waits for space
    }
    for (int i = 0; i < 20; ++i) {
      TokenLoader l(stream, {.seq_len = 8, .micro_batch = 64, .prefetch = 8});
      l.next();  // destroyed while the producer is mid-batch
    }
    finished->set_value();
  }).detach();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(30)), std::future_status::ready);
}

TEST(TokenLoader, ProducerErrorReachesTheConsumer) {
  // A version-2 shard whose token 9 is >= 2^31: opening succeeds (header only), reading the
  // window that holds it fails on the producer thread.
  TempDir dir;
  std::vector<uint32_t> toks(40);
  std::iota(toks.begin(), toks.end(), 0u);
  toks[9] = 0xFFFFFFFFu;
  std::vector<int32_t> header(256, 0);
  header[0] = kShardMagic;
  header[1] = 2;
  header[2] = 40;
  std::string bytes(reinterpret_cast<const char*>(header.data()), 1024);
  bytes.append(reinterpret_cast<const char*>(toks.data()), toks.size() * 4);
  std::string p = dir.write("corrupt.bin", bytes);
  auto stream = std::make_shared<const TokenStream>(std::vector<std::string>{p},
                                                    testing::byte_encode, testing::kByteEot);
  TokenLoader l(stream, {.seq_len = 4, .micro_batch = 1});
  EXPECT_EQ(l.next().samples, std::vector<int64_t>{0});  // tokens [0, 5)
  // Sample 1 = tokens [4, 9), fine; sample 2 = tokens [8, 13) holds the bad token.
  EXPECT_EQ(l.next().samples, std::vector<int64_t>{1});
  for (int attempt = 0; attempt < 2; ++attempt) {  // reported again, never a hang
    testing::expect_input_error([&] { l.next(); }, {p, "token 9"});
  }
  EXPECT_EQ(l.state().position, 2);  // the failed batch was not consumed
}

TEST(TokenLoader, StreamTooShortIsAnInputError) {
  auto stream = counting_stream(4);
  testing::expect_input_error([&] { TokenLoader l(stream, {.seq_len = 4}); },
                              {"has 4 tokens", "needs 5"});
  testing::expect_input_error(
      [&] { TokenLoader l(counting_stream(100), {.seq_len = 4, .rank = 2, .world = 2}); },
      {"rank 2"});
}

TEST(ValidationLoader, EveryWindowOnceInOrderAcrossRanks) {
  auto stream = counting_stream(61);  // seq_len 6: 10 samples
  for (int64_t world : {1, 2, 3}) {
    std::vector<int64_t> seen;
    std::vector<int64_t> batches;
    for (int64_t r = 0; r < world; ++r) {
      ValidationLoader v(stream, 6, 2, r, world);
      int64_t count = 0;
      while (auto b = v.next()) {
        ++count;
        EXPECT_EQ(b->inputs.size(1), 6);
        EXPECT_EQ(b->inputs.size(0), static_cast<int64_t>(b->samples.size()));
        for (size_t i = 0; i < b->samples.size(); ++i) {
          seen.push_back(b->samples[i]);
          EXPECT_EQ(b->inputs.to_int_vector()[i * 6], b->samples[i] * 6);
          EXPECT_EQ(b->targets.to_int_vector()[i * 6 + 5], b->samples[i] * 6 + 6);
        }
      }
      batches.push_back(count);
      EXPECT_EQ(count, v.num_batches());
    }
    std::sort(seen.begin(), seen.end());
    std::vector<int64_t> all(10);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(seen, all) << "world " << world;
    // Same number of batches on every rank (world 3: 2 batches; rank 2's last one is empty).
    EXPECT_EQ(std::count(batches.begin(), batches.end(), batches[0]),
              static_cast<int64_t>(batches.size()));
  }
  ValidationLoader v(stream, 6, 4, 0, 1);
  EXPECT_EQ(v.num_batches(), 3);  // 4 + 4 + 2
  while (v.next()) {
  }
  v.reset();
  EXPECT_EQ(v.next()->samples, (std::vector<int64_t>{0, 1, 2, 3}));
}

}  // namespace
}  // namespace hfrun::data
