// Checkpoint I/O against the disk: writing a safetensors file (atomically, fsynced) next to
// `dd conv=fdatasync` of the same size in the same directory, SHA-256 of it by OpenSSL's
// libcrypto (what manifests use) next to the portable implementation hfrun had before, and
// reading it back (mmap, each tensor copied out as a load does) next to `dd` reading it. Reads come
// from the page cache unless it was dropped.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/bench.h"
#include "bench/sha256_reference.h"
#include "common/error.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "train/sha256.h"

namespace hfrun::bench {

namespace {

namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// MB/s (10^6 bytes, as dd reports) of a dd command line; 0 when it did not run.
double dd_mb_per_s(const std::string& command, uint64_t bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = ::popen((command + " 2>/dev/null").c_str(), "r");
  if (p == nullptr) return 0;
  char buf[256];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) {
  }
  const int rc = ::pclose(p);
  const double s = seconds_since(t0);
  return rc == 0 && s > 0 ? static_cast<double>(bytes) / s / 1e6 : 0;
}

double reference_sha256_mb_per_s(const std::string& path, uint64_t bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  ReferenceSha256 h;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  h.finish();
  return static_cast<double>(bytes) / seconds_since(t0) / 1e6;
}

}  // namespace

std::string run_checkpoint_bench(const CheckpointBenchOptions& opts) {
  HF_CHECK_INPUT(opts.mb >= 1, "bench checkpoint: --mb must be at least 1");
  const fs::path dir =
      opts.dir.empty()
          ? fs::temp_directory_path() / ("hfrun_bench_checkpoint_" + std::to_string(::getpid()))
          : fs::path(opts.dir);
  fs::create_directories(dir);
  const std::string path = (dir / "bench.safetensors").string();
  // 8 tensors of f32 filling opts.mb MB.
  const int64_t total = opts.mb * 1000 * 1000 / 4, n = 8;
  Generator gen(1);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (int64_t i = 0; i < n; ++i) {
    tensors.emplace_back("layer." + std::to_string(i) + ".weight",
                         ops::rand({total / n}, gen, DType::kF32, -1, 1));
  }
  const uint64_t bytes = static_cast<uint64_t>(total / n * n) * 4;

  auto t0 = std::chrono::steady_clock::now();
  io::save_safetensors(path, tensors, {{"format", "pt"}});
  const double save = static_cast<double>(bytes) / seconds_since(t0) / 1e6;
  const double dd_write =
      dd_mb_per_s("dd if=/dev/zero of=" + (dir / "dd.bin").string() +
                      " bs=1M count=" + std::to_string(bytes / (1 << 20)) + " conv=fdatasync",
                  bytes / (1 << 20) * (1 << 20));
  t0 = std::chrono::steady_clock::now();
  train::sha256_file_hex(path);
  const double sha = static_cast<double>(bytes) / seconds_since(t0) / 1e6;
  const double sha_ref = reference_sha256_mb_per_s(path, bytes);
  t0 = std::chrono::steady_clock::now();
  double touched = 0;
  {
    io::SafetensorsFile file = io::SafetensorsFile::open(path);
    for (const auto& [name, t] : tensors) {
      // As a checkpoint load does: the file's tensor copied into the model's storage.
      const Tensor v = ops::clone(file.tensor(name));
      touched += static_cast<const float*>(v.raw_data())[0];
    }
  }
  const double load = static_cast<double>(bytes) / seconds_since(t0) / 1e6;
  volatile double sink = touched;  // the reads are not optimised away
  (void)sink;
  const double dd_read = dd_mb_per_s("dd if=" + path + " of=/dev/null bs=1M", bytes);
  std::error_code ec;
  if (opts.dir.empty()) {
    fs::remove_all(dir, ec);
  } else {
    fs::remove(path, ec);
    fs::remove(dir / "dd.bin", ec);
  }
  nlohmann::json j = {{"bench", "checkpoint"},
                      {"mb", static_cast<double>(bytes) / 1e6},
                      {"save_mb_s", save},
                      {"dd_write_mb_s", dd_write},
                      {"save_vs_dd", dd_write > 0 ? save / dd_write : 0.0},
                      {"sha256_mb_s", sha},
                      {"sha256_reference_mb_s", sha_ref},
                      {"sha256_speedup", sha / sha_ref},
                      {"load_mb_s", load},
                      {"dd_read_mb_s", dd_read},
                      {"load_vs_dd", dd_read > 0 ? load / dd_read : 0.0}};
  return j.dump();
}

}  // namespace hfrun::bench
