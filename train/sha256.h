// SHA-256 for checkpoint manifests, by OpenSSL's libcrypto (which uses the CPU's SHA
// extensions where it has them): incremental hashing, hex digests of strings and of files
// (read in blocks, so a multi-gigabyte shard never sits in memory twice).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace hfrun::train {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest of everything fed so far; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();
  // finish() as 64 lowercase hex digits.
  std::string finish_hex();

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

std::string sha256_hex(std::string_view data);
// The digest of the file's contents; an unreadable file is an error (kInvalidInput) naming it.
// `size` (optional) receives the number of bytes hashed.
std::string sha256_file_hex(const std::string& path, uint64_t* size = nullptr);

}  // namespace hfrun::train
