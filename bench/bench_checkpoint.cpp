// Checkpoint I/O against the disk, as checkpoints do it: writing a safetensors file (atomically,
// fsynced) with its XXH3-128 checksum taken while writing, next to `dd conv=fdatasync` of the
// same size in the same directory and to the earlier way (write, then read back for SHA-256);
// the checksums' speeds (XXH3-128; SHA-256 by OpenSSL's libcrypto and by the portable code hfrun
// had first); and loading it (mmap, hash the mapping, each tensor copied out) next to `dd`
// reading it, to a plain read() of it into memory and to the earlier way (SHA-256 by reading,
// then load). Every read starts with the file dropped from the page cache
// (posix_fadvise DONTNEED after fsync), so reads come from the disk, as after a restart.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/bench.h"
#include "bench/sha256_reference.h"
#include "common/digest.h"
#include "common/error.h"
#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tensor/random.h"

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

// Evicts the file's pages from the page cache (they are clean once fsynced), so the next read
// comes from the disk; no root needed.
void drop_cached(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// A checkpoint load of `path`: mapped, optionally hashed from the mapping, each tensor copied
// out into new storage.
void load_copy(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
               bool hash) {
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  if (hash) {
    Digester d(DigestKind::kXxh3_128);
    d.update(file.mapped_data(), file.mapped_size());
    d.finish_hex();
  }
  double touched = 0;
  for (const auto& [name, t] : tensors) {
    const Tensor v = ops::clone(file.tensor(name));
    touched += static_cast<const float*>(v.raw_data())[0];
  }
  volatile double sink = touched;  // the reads are not optimised away
  (void)sink;
}

// The bound of any load: the file read (4 MiB at a time) into fresh memory of its size, no
// checksum. dd reads into one small buffer that stays in cache; a load must write every byte
// to memory, which on some machines is slower than the disk.
double read_into_memory_mb_per_s(const std::string& path, uint64_t bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  HF_CHECK(fd >= 0, "bench checkpoint: cannot open ", path);
  // Memory from the tensor allocator, as a load's tensors get.
  Tensor storage = ops::empty({static_cast<int64_t>(bytes)}, DType::kU8);
  auto* buf = static_cast<char*>(storage.raw_data());
  uint64_t at = 0;
  while (at < bytes) {
    const ssize_t r = ::read(fd, buf + at, std::min<uint64_t>(uint64_t{4} << 20, bytes - at));
    if (r <= 0) break;
    at += static_cast<uint64_t>(r);
  }
  ::close(fd);
  volatile char sink = buf[bytes / 2];
  (void)sink;
  return static_cast<double>(at) / seconds_since(t0) / 1e6;
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

  auto rate = [&](std::chrono::steady_clock::time_point t0) {
    return static_cast<double>(bytes) / seconds_since(t0) / 1e6;
  };
  // The earlier save: write, then read the file back to hash it.
  auto t0 = std::chrono::steady_clock::now();
  io::save_safetensors(path, tensors, {{"format", "pt"}});
  sha256_file_hex(path);
  const double save_then_hash = rate(t0);
  fs::remove(path);
  // Today's: hashed while written.
  t0 = std::chrono::steady_clock::now();
  FileDigest digest;
  io::save_safetensors(path, tensors, {{"format", "pt"}}, &digest);
  const double save = rate(t0);
  const double dd_write =
      dd_mb_per_s("dd if=/dev/zero of=" + (dir / "dd.bin").string() +
                      " bs=1M count=" + std::to_string(bytes / (1 << 20)) + " conv=fdatasync",
                  bytes / (1 << 20) * (1 << 20));
  // The checksums alone, from the page cache.
  sha256_file_hex(path);
  t0 = std::chrono::steady_clock::now();
  HF_CHECK(file_digest(path, digest.kind).hex == digest.hex, "bench checkpoint: digests differ");
  const double xxh = rate(t0);
  t0 = std::chrono::steady_clock::now();
  sha256_file_hex(path);
  const double sha = rate(t0);
  const double sha_ref = reference_sha256_mb_per_s(path, bytes);
  // Loads from the disk: the earlier one (read to hash, then map and copy), today's (map, hash
  // the mapping, copy) and dd.
  drop_cached(path);
  t0 = std::chrono::steady_clock::now();
  sha256_file_hex(path);
  load_copy(path, tensors, false);
  const double load_after_hash = rate(t0);
  drop_cached(path);
  t0 = std::chrono::steady_clock::now();
  load_copy(path, tensors, true);
  const double load = rate(t0);
  drop_cached(path);
  const double dd_read = dd_mb_per_s("dd if=" + path + " of=/dev/null bs=1M", bytes);
  drop_cached(path);
  const double read_into_memory = read_into_memory_mb_per_s(path, bytes);
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
                      {"save_then_hash_mb_s", save_then_hash},
                      {"xxh3_mb_s", xxh},
                      {"sha256_mb_s", sha},
                      {"sha256_reference_mb_s", sha_ref},
                      {"sha256_speedup", sha / sha_ref},
                      {"load_mb_s", load},
                      {"hash_then_load_mb_s", load_after_hash},
                      {"dd_read_mb_s", dd_read},
                      {"load_vs_dd", dd_read > 0 ? load / dd_read : 0.0},
                      {"read_into_memory_mb_s", read_into_memory},
                      {"load_vs_read_into_memory", load / read_into_memory}};
  return j.dump();
}

}  // namespace hfrun::bench
