// The portable SHA-256 (FIPS 180-4 written out) hfrun used before OpenSSL's: the baseline of
// `hfrun bench checkpoint`.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace hfrun::bench {

class ReferenceSha256 {
 public:
  ReferenceSha256();
  void update(const void* data, size_t n);
  void update(std::string_view s) { update(s.data(), s.size()); }
  // The digest of everything fed so far; the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

}  // namespace hfrun::bench
