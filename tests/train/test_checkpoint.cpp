// Checkpoints: SHA-256 against FIPS vectors and XXH3-128 against xxh128sum, bit-exact save/load of
// parameters, optimizer state, loader position and generators, and runs that crash and resume
// logging exactly the losses of an uninterrupted run; pruning, corruption, leftovers and bad resume
// paths.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "autograd/node.h"
#include "common/digest.h"
#include "data/data_test_util.h"
#include "io/safetensors.h"
#include "models/gpt2/gpt2.h"
#include "tensor/ops.h"
#include "train/checkpoint.h"
#include "train/resume.h"
#include "train/trainer.h"

namespace hfrun::train {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string bytes(const Tensor& t) {
  Tensor c = ops::contiguous(t);
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  const std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Fed in uneven pieces, and from a file, it is the same digest.
  Sha256 h;
  for (size_t at = 0, n = 1; at < million.size(); at += n, n = n * 3 % 1000 + 1)
    h.update(million.data() + at, std::min(n, million.size() - at));
  EXPECT_EQ(h.finish_hex(), sha256_hex(million));
  TempDir d;
  uint64_t size = 0;
  EXPECT_EQ(sha256_file_hex(d.write("a.txt", million), &size), sha256_hex(million));
  EXPECT_EQ(size, 1000000u);
}

// XXH3-128 (new manifests) as xxHash's own xxh128sum prints it.
TEST(Digest, Xxh3MatchesXxh128sum) {
  EXPECT_EQ(digest_hex(DigestKind::kXxh3_128, ""), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(digest_hex(DigestKind::kXxh3_128, "abc"), "06b05ab6733a618578af5f94892f3950");
  const std::string million(1000000, 'a');
  EXPECT_EQ(digest_hex(DigestKind::kXxh3_128, million), "a545df8e384a9579b1fd6fae5285c4eb");
  Digester h(DigestKind::kXxh3_128);
  for (size_t at = 0, n = 1; at < million.size(); at += n, n = n * 3 % 1000 + 1)
    h.update(million.data() + at, std::min(n, million.size() - at));
  EXPECT_EQ(h.finish_hex(), "a545df8e384a9579b1fd6fae5285c4eb");
  TempDir d;
  const FileDigest f = file_digest(d.write("a.txt", million), DigestKind::kXxh3_128);
  EXPECT_EQ(f.hex, "a545df8e384a9579b1fd6fae5285c4eb");
  EXPECT_EQ(f.size, 1000000u);
  EXPECT_EQ(digest_hex(DigestKind::kSha256, "abc"), sha256_hex("abc"));
}

struct Parts {
  std::unique_ptr<nn::Gpt2> model;
  std::unique_ptr<optim::AdamW> opt;
  std::unique_ptr<data::TokenLoader> loader;
};

Parts make_parts(uint64_t seed) {
  nn::Gpt2Config mc;
  mc.vocab_size = 50;
  mc.n_positions = 16;
  mc.n_embd = 16;
  mc.n_layer = 1;
  mc.n_head = 2;
  mc.resid_pdrop = 0.1;
  Parts p;
  p.model = std::make_unique<nn::Gpt2>(mc, seed);
  p.model->flatten_parameters();
  p.opt = std::make_unique<optim::AdamW>(optim::param_refs(p.model->named_parameters()));
  std::vector<int32_t> tokens;
  for (int i = 0; i < 500; ++i) tokens.push_back((i * 7 + i / 13) % 50);
  data::LoaderOptions lo;
  lo.seq_len = 8;
  lo.micro_batch = 2;
  lo.grad_accum = 2;
  lo.shuffle = true;
  lo.seed = seed;
  p.loader = std::make_unique<data::TokenLoader>(
      std::make_shared<data::TokenStream>(std::move(tokens)), lo);
  return p;
}

void train_steps(Parts& p, int n) {
  for (int i = 0; i < n; ++i) {
    p.model->zero_grad();
    for (int m = 0; m < 2; ++m) {
      data::Batch b = p.loader->next();
      autograd::backward(p.model->loss(b.inputs, b.targets));
    }
    p.opt->step();
  }
}

// GPT-2 checkpoints written before the module tree stored optimizer state under parameter names
// without "transformer." (the model tensors already had it); they still resume.
TEST(Checkpoint, OlderGpt2OptimizerStateNamesStillLoad) {
  TempDir d;
  Parts a = make_parts(1);
  auto old_refs = optim::param_refs(a.model->named_parameters());
  for (auto& r : old_refs) {
    if (r.name.starts_with("transformer.")) r.name = r.name.substr(12);
  }
  optim::AdamW old_opt(old_refs);
  for (int i = 0; i < 2; ++i) {
    a.model->zero_grad();
    data::Batch b = a.loader->next();
    autograd::backward(a.model->loss(b.inputs, b.targets));
    old_opt.step();
  }
  TrainerState st;
  st.step = st.scheduler_step = 2;
  const std::string dir = save_checkpoint(d.file("ck"), *a.model, old_opt, st);
  EXPECT_TRUE(io::SafetensorsFile::open(dir + "/rank-00000-of-00001.optimizer.safetensors")
                  .contains("exp_avg.h.0.attn.c_attn.weight"));
  Parts b = make_parts(2);
  load_checkpoint(dir, *b.model, *b.opt);
  const auto sa = old_opt.state_tensors(), sb = b.opt->state_tensors();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(bytes(sa[i].second), bytes(sb[i].second)) << sb[i].first;
  }
  EXPECT_EQ(b.opt->step_count(), 2);
}

TEST(Checkpoint, SaveLoadRoundTripIsBitExact) {
  TempDir d;
  Parts a = make_parts(1);
  train_steps(a, 3);
  TrainerState st;
  st.step = st.scheduler_step = 3;
  st.loader = a.loader->state();
  st.generators = {capture_generator("dropout", a.model->dropout_generator())};
  st.tokens_seen = 96;
  st.first_loss = 3.912345678901234;
  st.last_loss = 1.0 / 3.0;
  st.elapsed_s = 12.5;
  CheckpointOptions o;
  o.config_hash = "sha256:test";
  save_checkpoint(d.file("ck"), *a.model, *a.opt, st, o);
  // Saving the same step again replaces it.
  const std::string dir = save_checkpoint(d.file("ck"), *a.model, *a.opt, st, o);
  EXPECT_EQ(dir, d.file("ck/step-00000003"));
  for (const char* f :
       {"manifest.json", "trainer_state.json", "rank-00000-of-00001.rng.json",
        "rank-00000-of-00001.model.safetensors", "rank-00000-of-00001.optimizer.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  }
  EXPECT_EQ(list_checkpoints(d.file("ck")), std::vector<std::string>{dir});
  // The model file holds HF names.
  EXPECT_TRUE(io::SafetensorsFile::open(dir + "/rank-00000-of-00001.model.safetensors")
                  .contains("transformer.h.0.attn.c_attn.weight"));

  Parts b = make_parts(2);  // different init, data order and dropout seed
  Manifest m;
  TrainerState got = load_checkpoint(dir, *b.model, *b.opt, &m);
  EXPECT_EQ(m.step, 3);
  EXPECT_EQ(m.world_size, 1);
  EXPECT_EQ(m.config_hash, "sha256:test");
  EXPECT_EQ(m.files.size(), 4u);
  EXPECT_EQ(got.step, 3);
  EXPECT_EQ(got.scheduler_step, 3);
  EXPECT_EQ(got.loader, st.loader);
  EXPECT_EQ(got.generators, st.generators);
  EXPECT_EQ(got.tokens_seen, 96);
  EXPECT_EQ(got.first_loss, st.first_loss);  // exact, not approximately
  EXPECT_EQ(got.last_loss, st.last_loss);
  EXPECT_EQ(got.elapsed_s, 12.5);
  EXPECT_EQ(bytes(b.model->flat()->params), bytes(a.model->flat()->params));
  const auto sa = a.opt->state_tensors(), sb = b.opt->state_tensors();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_EQ(bytes(sa[i].second), bytes(sb[i].second)) << sa[i].first;
  }
  EXPECT_EQ(b.opt->step_count(), 3);
  // With the loader and generator restored too, the next steps are identical (b's loader was
  // built with another seed, so the shuffle order is re-derived from that: rebuild with seed 1).
  Parts c = make_parts(1);
  load_checkpoint(dir, *c.model, *c.opt);
  c.loader->restore(got.loader);
  restore_generator(got, "dropout", c.model->dropout_generator());
  train_steps(a, 2);
  train_steps(c, 2);
  EXPECT_EQ(bytes(c.model->flat()->params), bytes(a.model->flat()->params));
  EXPECT_EQ(c.model->dropout_generator().offset(), a.model->dropout_generator().offset());
  EXPECT_THROW(restore_generator(got, "data", c.model->dropout_generator()), Error);
}

// Ranks as threads, for collective saves in one process.
class ThreadGroup : public CheckpointGroup {
 public:
  struct Shared {
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::string> slots, result;
    int arrived = 0;
    int64_t round = 0;
  };
  ThreadGroup(Shared* shared, int rank, int world) : sh_(shared), rank_(rank), world_(world) {
    std::lock_guard<std::mutex> lock(sh_->m);  // every rank's thread sizes it (found by TSan)
    sh_->slots.resize(world);
  }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::vector<std::string> allgather_strings(const std::string& s) override {
    std::unique_lock<std::mutex> lock(sh_->m);
    sh_->slots[rank_] = s;
    if (++sh_->arrived == world_) {
      sh_->result = sh_->slots;
      sh_->arrived = 0;
      ++sh_->round;
      sh_->cv.notify_all();
    } else {
      const int64_t round = sh_->round;
      sh_->cv.wait(lock, [&] { return sh_->round != round; });
    }
    return sh_->result;
  }

 private:
  Shared* sh_;
  int rank_, world_;
};

void flip_byte(const std::string& path, uint64_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(at));
  f.put(static_cast<char>(c ^ 0x5a));
}

// Checksums are taken while writing (the manifest says what xxh128sum of each file says), and a
// load checks exactly the files it reads, before it changes anything.
TEST(Checkpoint, ChecksumsAreWrittenWithTheFilesAndCheckedOnlyWhereRead) {
  TempDir d;
  // Two ranks of a data-parallel run: rank 0 writes the parameters and optimizer state, rank 1
  // only its generators.
  Parts a = make_parts(1);
  train_steps(a, 1);
  TrainerState st;
  st.step = 1;
  ThreadGroup::Shared shared;
  std::string dir;
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      ThreadGroup group(&shared, r, 2);
      CheckpointShard shard;
      shard.model = a.model.get();
      shard.optimizer = a.opt.get();
      shard.write_model = shard.write_optimizer = r == 0;
      TrainerState mine = st;
      mine.generators = {GeneratorState{"dropout", 7, static_cast<uint64_t>(100 + r)}};
      const std::string got = save_checkpoint(d.file("ck"), shard, mine, {}, &group);
      if (r == 0) dir = got;
    });
  }
  for (std::thread& t : ranks) t.join();
  const std::string manifest = read_file(dir + "/manifest.json");
  const Manifest m = verify_checkpoint(dir);
  ASSERT_EQ(m.files.size(), 5u);
  for (const Manifest::File& f : m.files) {
    EXPECT_EQ(f.digest_kind, DigestKind::kXxh3_128) << f.name;
    EXPECT_EQ(f.digest, file_digest(dir + "/" + f.name, DigestKind::kXxh3_128).hex) << f.name;
    EXPECT_NE(manifest.find("\"xxh3_128\": \"" + f.digest + "\""), std::string::npos) << manifest;
  }

  // Rank 1's generators are damaged: rank 0 never reads them and loads; rank 1 is refused.
  const std::string rng1 = dir + "/rank-00001-of-00002.rng.json";
  const std::string rng1_text = read_file(rng1);
  std::string damaged = rng1_text;
  damaged[damaged.find("101")] = '9';
  d.write("ck/step-00000001/rank-00001-of-00002.rng.json", damaged);
  EXPECT_THROW(verify_checkpoint(dir), CorruptCheckpoint);
  LoadLayout layout;
  Parts b = make_parts(2);
  EXPECT_EQ(load_checkpoint(dir, *b.model, *b.opt, layout).generators.at(0).offset, 100u);
  EXPECT_EQ(bytes(b.model->flat()->params), bytes(a.model->flat()->params));
  layout.rank = 1;
  Parts c = make_parts(3);
  const std::string before = bytes(c.model->flat()->params);
  try {
    load_checkpoint(dir, *c.model, *c.opt, layout);
    FAIL() << "rank 1 loaded damaged generators";
  } catch (const CorruptCheckpoint& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(e.message().find("rank-00001-of-00002.rng.json has checksum XXH3-128"),
              std::string::npos)
        << e.message();
  }
  EXPECT_EQ(bytes(c.model->flat()->params), before);  // nothing changed
  d.write("ck/step-00000001/rank-00001-of-00002.rng.json", rng1_text);

  // A damaged optimizer file is found before the parameters (read first) change.
  const std::string opt0 = dir + "/rank-00000-of-00002.optimizer.safetensors";
  flip_byte(opt0, fs::file_size(opt0) - 3);
  EXPECT_THROW(load_checkpoint(dir, *c.model, *c.opt, layout), CorruptCheckpoint);
  EXPECT_EQ(bytes(c.model->flat()->params), before);
  EXPECT_EQ(c.opt->step_count(), 0);
  flip_byte(opt0, fs::file_size(opt0) - 3);
  EXPECT_EQ(load_checkpoint(dir, *c.model, *c.opt, layout).generators.at(0).offset, 101u);
  EXPECT_EQ(bytes(c.model->flat()->params), bytes(a.model->flat()->params));

  // A manifest of the earlier format (SHA-256 digests) still verifies and loads, and still
  // catches damage.
  std::string old = manifest;
  for (const Manifest::File& f : m.files) {
    const std::string key = "\"xxh3_128\": \"" + f.digest + "\"";
    old.replace(old.find(key), key.size(),
                "\"sha256\": \"" + sha256_file_hex(dir + "/" + f.name) + "\"");
  }
  d.write("ck/step-00000001/manifest.json", old);
  EXPECT_EQ(verify_checkpoint(dir).files.at(0).digest_kind, DigestKind::kSha256);
  Parts e = make_parts(4);
  EXPECT_NO_THROW(load_checkpoint(dir, *e.model, *e.opt));
  EXPECT_EQ(bytes(e.model->flat()->params), bytes(a.model->flat()->params));
  flip_byte(opt0, fs::file_size(opt0) - 3);
  try {
    load_checkpoint(dir, *e.model, *e.opt);
    FAIL() << "loaded a damaged file under a SHA-256 manifest";
  } catch (const CorruptCheckpoint& err) {
    EXPECT_NE(err.message().find("has checksum SHA-256"), std::string::npos) << err.message();
  }
}

std::string corpus() {
  std::string text;
  for (int i = 0; i < 80; ++i) {
    text += "the boat " + std::to_string(i % 7) + " carries " + std::to_string(i % 5) +
            " apples to the market. ";
  }
  return text;
}

// Dropout and shuffling on, a linear schedule (the LR depends on the step), checkpoints every 4.
TrainConfig run_config(const TempDir& d, const std::string& run) {
  const std::string tok = d.write("tokenizer.json", testing::byte_tokenizer_json());
  const std::string text = d.write("corpus.txt", corpus());
  std::ostringstream y;
  y << "output_dir: " << d.file(run) << "\nseed: 5\ntokenizer: " << tok << "\n"
    << "model: {config: {n_layer: 1, n_head: 2, n_embd: 32, n_positions: 32, resid_pdrop: 0.1,"
    << " embd_pdrop: 0.1}}\n"
    << "data: {train: [" << text << "], seq_len: 16, shuffle: true}\n"
    << "train: {micro_batch_size: 2, grad_accum_steps: 2, max_steps: 12, log_every: 1}\n"
    << "optimizer: {type: adamw, lr: 3.0e-3}\nscheduler: {type: linear, warmup_steps: 2}\n"
    << "checkpoint: {every: 4, keep: 2}\n";
  return TrainConfig::parse(y.str(), d.file(run + ".yaml"));
}

// The "loss" value of each line, as logged (text, so equality is exact).
std::vector<std::string> logged_losses(const std::string& metrics_path) {
  std::ifstream in(metrics_path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find("\"loss\": ");
    EXPECT_NE(at, std::string::npos) << line;
    if (at != std::string::npos) out.push_back(line.substr(at + 8, line.find(',', at) - at - 8));
  }
  return out;
}

struct Crash {};

TEST(Checkpoint, CrashedAndResumedRunLogsTheSameLosses) {
  TempDir d;
  Trainer(run_config(d, "a")).run();
  const auto want = logged_losses(d.file("a/metrics.jsonl"));
  ASSERT_EQ(want.size(), 12u);
  // keep 2: the newest two of step 4, 8, 12.
  EXPECT_EQ(list_checkpoints(d.file("a/checkpoints")),
            (std::vector<std::string>{d.file("a/checkpoints/step-00000008"),
                                      d.file("a/checkpoints/step-00000012")}));

  // Run b dies after logging step 6: its newest checkpoint is step 4.
  {
    Trainer b(run_config(d, "b"));
    EXPECT_THROW(b.run([](const StepMetrics& m) {
      if (m.step == 6) throw Crash{};
    }),
                 Crash);
  }
  EXPECT_EQ(logged_losses(d.file("b/metrics.jsonl")).size(), 6u);
  EXPECT_EQ(find_latest_checkpoint(d.file("b")), d.file("b/checkpoints/step-00000004"));
  RunSummary s = Trainer(run_config(d, "b")).run();  // resume: auto
  EXPECT_EQ(s.steps, 12);
  EXPECT_EQ(logged_losses(d.file("b/metrics.jsonl")), want);
  EXPECT_NEAR(s.first_loss, std::stod(want.front()), 1e-6);  // restored, not re-measured
  // Same final weights, bit for bit.
  EXPECT_EQ(read_file(d.file("b/final/model.safetensors")),
            read_file(d.file("a/final/model.safetensors")));
  // The step of every line is 1..12 in order: nothing repeated.
  std::ifstream in(d.file("b/metrics.jsonl"));
  std::string line;
  for (int step = 1; std::getline(in, line); ++step)
    EXPECT_TRUE(line.starts_with("{\"step\": " + std::to_string(step) + ",")) << line;

  // resume: never starts over (and the log with it).
  TrainConfig fresh = run_config(d, "b");
  fresh.checkpoint.resume = "never";
  Trainer(fresh).run();
  EXPECT_EQ(logged_losses(d.file("b/metrics.jsonl")), want);
}

TEST(Checkpoint, CorruptIncompleteAndTemporaryCheckpointsAreSkipped) {
  TempDir d;
  Trainer(run_config(d, "a")).run();
  const auto want = logged_losses(d.file("a/metrics.jsonl"));
  const std::string ck8 = d.file("a/checkpoints/step-00000008");
  const std::string ck12 = d.file("a/checkpoints/step-00000012");
  const std::string opt_file = ck12 + "/rank-00000-of-00001.optimizer.safetensors";
  flip_byte(opt_file, fs::file_size(opt_file) - 5);
  TrainConfig cfg = run_config(d, "a");
  Trainer t(cfg);
  try {
    Parts p = make_parts(1);
    load_checkpoint(ck12, *p.model, *p.opt);
    FAIL() << "loaded a corrupt checkpoint";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(e.message().find("corrupt checkpoint"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("rank-00000-of-00001.optimizer.safetensors"), std::string::npos)
        << e.message();
    EXPECT_NE(e.message().find("has checksum XXH3-128"), std::string::npos) << e.message();
  }
  // A leftover temporary directory and a directory without a manifest (a save that died) are
  // skipped too, each with a warning naming it.
  fs::create_directories(d.file("a/checkpoints/step-00000016.tmp-999999999"));
  d.write("a/checkpoints/step-00000016.tmp-999999999/manifest.json", "{}");
  fs::create_directories(d.file("a/checkpoints/step-00000020"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(find_latest_checkpoint(d.file("a")), ck8);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("step-00000012"), std::string::npos) << err;
  EXPECT_NE(err.find("step-00000020"), std::string::npos) << err;
  EXPECT_NE(err.find("step-00000016.tmp-999999999"), std::string::npos) << err;
  // A truncated file is caught by its size.
  const std::string model8 = ck8 + "/rank-00000-of-00001.model.safetensors";
  const std::string saved = read_file(model8);
  fs::resize_file(model8, saved.size() - 1);
  EXPECT_THROW(verify_checkpoint(ck8), Error);
  d.write("a/checkpoints/step-00000008/rank-00000-of-00001.model.safetensors", saved);
  // Auto-resume falls back to step 8 and finishes the run exactly as before.
  fs::remove_all(d.file("a/checkpoints/step-00000020"));
  ::testing::internal::CaptureStderr();
  RunSummary s = t.run();
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.steps, 12);
  EXPECT_EQ(logged_losses(d.file("a/metrics.jsonl")), want);
  // The new step-12 checkpoint replaced the corrupt one, and the stale temporary is gone.
  EXPECT_NO_THROW(verify_checkpoint(ck12));
  EXPECT_FALSE(fs::exists(d.file("a/checkpoints/step-00000016.tmp-999999999")));
  // A checkpoint moved aside by a save that died before renaming its replacement in is restored
  // by the next save.
  fs::rename(ck8, ck8 + ".old-999999999");
  Parts p = make_parts(1);
  TrainerState st;
  st.step = 30;
  save_checkpoint(d.file("a/checkpoints"), *p.model, *p.opt, st);
  EXPECT_NO_THROW(verify_checkpoint(ck8));
}

TEST(Checkpoint, ResumeFromPath) {
  TempDir d;
  Trainer(run_config(d, "a")).run();
  TrainConfig cfg = run_config(d, "c");
  cfg.checkpoint.resume = d.file("a/checkpoints/step-00000008");
  RunSummary s = Trainer(cfg).run();
  EXPECT_EQ(s.steps, 12);
  const auto want = logged_losses(d.file("a/metrics.jsonl"));
  EXPECT_EQ(logged_losses(d.file("c/metrics.jsonl")),
            std::vector<std::string>(want.begin() + 8, want.end()));
  cfg.checkpoint.resume = d.file("no/such/checkpoint");
  try {
    Trainer(cfg).run();
    FAIL() << "resumed from a missing directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(e.message().find("no/such/checkpoint"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("checkpoint.resume"), std::string::npos) << e.message();
  }
}

TEST(Checkpoint, TruncateMetricsKeepsStepsUpToTheCheckpoint) {
  TempDir d;
  const std::string p = d.write("m.jsonl",
                                "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"loss\": 1.5}\n"
                                "{\"step\": 2, \"val_loss\": 1.7}\n{\"step\": 3, \"loss\": 1.2}\n"
                                "{\"step\": 4, \"lo");
  truncate_metrics(p, 2);
  EXPECT_EQ(read_file(p),
            "{\"step\": 1, \"loss\": 2.0}\n{\"step\": 2, \"loss\": 1.5}\n"
            "{\"step\": 2, \"val_loss\": 1.7}\n");
  truncate_metrics(d.file("missing.jsonl"), 3);
  EXPECT_FALSE(fs::exists(d.file("missing.jsonl")));
}

}  // namespace
}  // namespace hfrun::train
