// SHA-256 (FIPS 180-4), for checkpoint manifests: incremental hashing, hex digests of strings
// and of files (read in blocks, so a multi-gigabyte shard never sits in memory twice).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hfrun::train {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest of everything fed so far; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();
  // finish() as 64 lowercase hex digits.
  std::string finish_hex();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string sha256_hex(std::string_view data);
// The digest of the file's contents; an unreadable file is an error (kInvalidInput) naming it.
// `size` (optional) receives the number of bytes hashed.
std::string sha256_file_hex(const std::string& path, uint64_t* size = nullptr);

}  // namespace hfrun::train
