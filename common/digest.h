// Checksums of the files hfrun writes and reads back (checkpoint manifests) and SHA-256 (the
// configuration hash). New manifests record XXH3-128 (xxHash, ~13 GB/s per core, so hashing
// never holds a save or load below the disk's speed; integrity against damage, not an
// attacker, who could rewrite the manifest beside the files anyway); SHA-256 entries of older
// manifests are still checked, by OpenSSL's libcrypto.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace hfrun {

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

enum class DigestKind {
  kSha256,   // 64 hex digits, as sha256sum prints
  kXxh3_128  // 32 hex digits, as xxh128sum prints (the canonical big-endian form)
};
// The manifest key of a kind ("sha256", "xxh3_128") and its readable name ("SHA-256",
// "XXH3-128").
const char* digest_key(DigestKind kind);
const char* digest_name(DigestKind kind);

// Incremental hashing of either kind.
class Digester {
 public:
  explicit Digester(DigestKind kind);
  ~Digester();
  Digester(const Digester&) = delete;
  Digester& operator=(const Digester&) = delete;
  void update(const void* data, size_t n);
  // The hex digest of everything fed so far; the object must not be updated afterwards.
  std::string finish_hex();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

std::string digest_hex(DigestKind kind, std::string_view data);

// What a checkpoint manifest records of a file: its size and checksum.
struct FileDigest {
  uint64_t size = 0;
  DigestKind kind = DigestKind::kXxh3_128;
  std::string hex;
};

// The checksum of a file's contents, read in blocks (a multi-gigabyte shard never sits in
// memory); an unreadable file is an error (kInvalidInput) naming it.
FileDigest file_digest(const std::string& path, DigestKind kind);
// file_digest(path, kSha256).hex; `size` (optional) receives the number of bytes hashed.
std::string sha256_file_hex(const std::string& path, uint64_t* size = nullptr);

}  // namespace hfrun
