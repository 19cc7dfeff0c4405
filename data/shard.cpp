#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "common/error.h"
#include "common/file_util.h"

namespace hfrun::data {

namespace {

// Writes all of buf, retrying on short writes and EINTR.

}  // namespace

int64_t shard_token_bytes(int version) {
  HF_CHECK_INPUT(version == 1 || version == 2, "token shard version ", version,
                 " is not supported (expected 1 = uint16 tokens or 2 = uint32 tokens)");
  return version == 1 ? 2 : 4;
}

int shard_version_for_vocab(int64_t vocab_size) {
  HF_CHECK_INPUT(vocab_size > 0, "vocab size must be positive, got ", vocab_size);
  return vocab_size <= 65536 ? 1 : 2;
}

int shard_version_for_tokens(std::span<const int32_t> tokens) {
  for (int32_t t : tokens) {
    if (t >= 65536) return 2;
  }
  return 1;
}

ShardReader::ShardReader(std::string path) : path_(std::move(path)) {
  UniqueFd fd{::open(path_.c_str(), O_RDONLY | O_CLOEXEC)};
  HF_CHECK_INPUT(fd.fd >= 0, "token shard ", path_, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  HF_CHECK_INPUT(::fstat(fd.fd, &st) == 0, "token shard ", path_,
                 ": cannot stat: ", std::strerror(errno));
  HF_CHECK_INPUT(S_ISREG(st.st_mode), "token shard ", path_, ": not a regular file");
  auto file_bytes = static_cast<int64_t>(st.st_size);
  HF_CHECK_INPUT(file_bytes >= kShardHeaderBytes, "token shard ", path_, ": file has ", file_bytes,
                 " bytes, smaller than the ", kShardHeaderBytes, "-byte header");
  void* m = ::mmap(nullptr, static_cast<size_t>(file_bytes), PROT_READ, MAP_SHARED, fd.fd, 0);
  HF_CHECK(m != MAP_FAILED, "token shard ", path_, ": mmap failed: ", std::strerror(errno));
  map_ = static_cast<const unsigned char*>(m);
  map_bytes_ = static_cast<size_t>(file_bytes);
  try {
    int32_t header[3];
    std::memcpy(header, map_, sizeof(header));
    HF_CHECK_INPUT(header[0] == kShardMagic, "token shard ", path_, ": bad magic ", header[0],
                   " (expected ", kShardMagic, "; is this an llm.c .bin token file?)");
    HF_CHECK_INPUT(header[1] == 1 || header[1] == 2, "token shard ", path_,
                   ": unsupported version ", header[1],
                   " (expected 1 = uint16 tokens or 2 = uint32 tokens)");
    HF_CHECK_INPUT(header[2] >= 0, "token shard ", path_, ": negative token count ", header[2]);
    version_ = header[1];
    count_ = header[2];
    int64_t want = kShardHeaderBytes + count_ * shard_token_bytes(version_);
    HF_CHECK_INPUT(file_bytes == want, "token shard ", path_, ": header says ", count_,
                   " tokens of ", shard_token_bytes(version_), " bytes (", want,
                   " bytes with the header) but the file has ", file_bytes, " bytes");
  } catch (...) {
    release();
    throw;
  }
  // Samples are read at random positions; tell the kernel not to read ahead sequentially.
  ::madvise(m, map_bytes_, MADV_RANDOM);
}

ShardReader::~ShardReader() {
  release();
}

ShardReader::ShardReader(ShardReader&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      version_(other.version_),
      count_(std::exchange(other.count_, 0)) {}

ShardReader& ShardReader::operator=(ShardReader&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    version_ = other.version_;
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

void ShardReader::release() noexcept {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
}

int32_t ShardReader::token(int64_t i) const {
  int32_t t;
  copy_to(i, 1, &t);
  return t;
}

void ShardReader::copy_to(int64_t start, int64_t count, int32_t* out) const {
  HF_CHECK(start >= 0 && count >= 0 && start + count <= count_, "token shard ", path_, ": tokens [",
           start, ", ", start + count, ") out of range for ", count_, " tokens");
  const unsigned char* base = map_ + kShardHeaderBytes;
  if (version_ == 1) {
    for (int64_t i = 0; i < count; ++i) {
      uint16_t v;
      std::memcpy(&v, base + (start + i) * 2, 2);
      out[i] = v;
    }
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    uint32_t v;
    std::memcpy(&v, base + (start + i) * 4, 4);
    HF_CHECK_INPUT(v <= static_cast<uint32_t>(std::numeric_limits<int32_t>::max()), "token shard ",
                   path_, ": token ", start + i, " is ", v, ", not a valid token id (>= 2^31)");
    out[i] = static_cast<int32_t>(v);
  }
}

std::vector<int32_t> ShardReader::read(int64_t start, int64_t count) const {
  std::vector<int32_t> out(static_cast<size_t>(count));
  copy_to(start, count, out.data());
  return out;
}

void write_shard(const std::string& path, std::span<const int32_t> tokens,
                 std::optional<int> version) {
  int v = version.value_or(shard_version_for_tokens(tokens));
  int64_t token_bytes = shard_token_bytes(v);
  HF_CHECK_INPUT(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
                 "write_shard ", path, ": ", tokens.size(),
                 " tokens do not fit the int32 count of the header; split them over shards");
  const int64_t max_token = v == 1 ? 65535 : std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < tokens.size(); ++i) {
    HF_CHECK_INPUT(tokens[i] >= 0 && tokens[i] <= max_token, "write_shard ", path, ": token ", i,
                   " is ", tokens[i], ", outside [0, ", max_token, "] for shard version ", v);
  }
  write_file_atomically(path, [&](int fd) {
    int32_t header[kShardHeaderInts] = {};
    header[0] = kShardMagic;
    header[1] = v;
    header[2] = static_cast<int32_t>(tokens.size());
    write_all(fd, header, sizeof(header), path);
    // Narrow to the token type in chunks so a big shard needs no second full-size buffer.
    constexpr size_t kChunk = 1 << 16;
    std::vector<unsigned char> buf(kChunk * static_cast<size_t>(token_bytes));
    for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
      size_t n = std::min(kChunk, tokens.size() - begin);
      for (size_t i = 0; i < n; ++i) {
        if (v == 1) {
          auto t = static_cast<uint16_t>(tokens[begin + i]);
          std::memcpy(buf.data() + i * 2, &t, 2);
        } else {
          auto t = static_cast<uint32_t>(tokens[begin + i]);
          std::memcpy(buf.data() + i * 4, &t, 4);
        }
      }
      write_all(fd, buf.data(), n * static_cast<size_t>(token_bytes), path);
    }
  });
}

}  // namespace hfrun::data
