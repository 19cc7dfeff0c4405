#include "common/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/file_util.h"

namespace hfrun {
namespace {

std::string lower_hex(const unsigned char* bytes, size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    s += digits[bytes[i] >> 4];
    s += digits[bytes[i] & 15];
  }
  return s;
}

}  // namespace

struct Sha256::Context {
  EVP_MD_CTX* md = nullptr;
  ~Context() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Context>()) {
  ctx_->md = EVP_MD_CTX_new();
  HF_CHECK(ctx_->md != nullptr && EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) == 1,
           "SHA-256: OpenSSL could not start a digest");
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t n) {
  HF_CHECK(EVP_DigestUpdate(ctx_->md, data, n) == 1, "SHA-256: OpenSSL digest update failed");
}

std::array<uint8_t, 32> Sha256::finish() {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  HF_CHECK(EVP_DigestFinal_ex(ctx_->md, out.data(), &len) == 1 && len == out.size(),
           "SHA-256: OpenSSL digest failed");
  return out;
}

std::string Sha256::finish_hex() {
  const std::array<uint8_t, 32> d = finish();
  return lower_hex(d.data(), d.size());
}

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.finish_hex();
}

const char* digest_key(DigestKind kind) {
  return kind == DigestKind::kSha256 ? "sha256" : "xxh3_128";
}

const char* digest_name(DigestKind kind) {
  return kind == DigestKind::kSha256 ? "SHA-256" : "XXH3-128";
}

struct Digester::State {
  std::unique_ptr<Sha256> sha;  // SHA-256, else XXH3-128
  XXH3_state_t* xxh = nullptr;
  ~State() { XXH3_freeState(xxh); }
};

Digester::Digester(DigestKind kind) : s_(std::make_unique<State>()) {
  if (kind == DigestKind::kSha256) {
    s_->sha = std::make_unique<Sha256>();
  } else {
    s_->xxh = XXH3_createState();
    HF_CHECK(s_->xxh != nullptr && XXH3_128bits_reset(s_->xxh) == XXH_OK,
             "XXH3-128: xxHash could not start a digest");
  }
}

Digester::~Digester() = default;

void Digester::update(const void* data, size_t n) {
  if (s_->sha) {
    s_->sha->update(data, n);
  } else {
    HF_CHECK(XXH3_128bits_update(s_->xxh, data, n) == XXH_OK, "XXH3-128: digest update failed");
  }
}

std::string Digester::finish_hex() {
  if (s_->sha) return s_->sha->finish_hex();
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s_->xxh));
  return lower_hex(c.digest, sizeof(c.digest));
}

std::string digest_hex(DigestKind kind, std::string_view data) {
  Digester d(kind);
  d.update(data.data(), data.size());
  return d.finish_hex();
}

FileDigest file_digest(const std::string& path, DigestKind kind) {
  const UniqueFd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  HF_CHECK_INPUT(fd.fd >= 0, path, ": cannot open: ", std::strerror(errno));
  Digester h(kind);
  std::vector<char> buf(size_t{1} << 22);
  uint64_t total = 0;
  for (;;) {
    const ssize_t r = ::read(fd.fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    HF_CHECK_INPUT(r >= 0, path, ": read failed: ", std::strerror(errno));
    if (r == 0) break;
    h.update(buf.data(), static_cast<size_t>(r));
    total += static_cast<uint64_t>(r);
  }
  return FileDigest{total, kind, h.finish_hex()};
}

std::string sha256_file_hex(const std::string& path, uint64_t* size) {
  FileDigest d = file_digest(path, DigestKind::kSha256);
  if (size) *size = d.size;
  return d.hex;
}

}  // namespace hfrun
