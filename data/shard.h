// Token shards in llm.c's .bin layout (CONTRACT.md "Data formats"), so shards written by llm.c's
// scripts load here and ours load there:
//
//   int32 header[256]: header[0] = 20240520 (magic), header[1] = version, header[2] = token count
//   then count tokens: uint16 for version 1, uint32 for version 2 (little-endian, as written).
//
// Readers map the file read-only instead of reading it, so a dataset of many GB costs page
// cache, not heap, and tokens are converted to int32 only when a window is copied out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hfrun::data {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int64_t kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;

// Bytes per token of a shard version (1 -> 2, 2 -> 4); throws kInvalidInput for others.
int64_t shard_token_bytes(int version);
// Version 1 when every id of a vocabulary of `vocab_size` fits in uint16 (ids < 65536).
int shard_version_for_vocab(int64_t vocab_size);
// Version 1 when every token is < 65536, else 2.
int shard_version_for_tokens(std::span<const int32_t> tokens);

// A read-only view of one shard file. Movable, not copyable; unmaps on destruction.
class ShardReader {
 public:
  // Maps `path` and validates the header: the file must hold the whole header, the magic and
  // version must be known, the count must be >= 0 and the file size must be exactly
  // header + count * token bytes. Errors are kInvalidInput and name the file.
  explicit ShardReader(std::string path);
  ~ShardReader();
  ShardReader(ShardReader&& other) noexcept;
  ShardReader& operator=(ShardReader&& other) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const { return path_; }
  int version() const { return version_; }
  int64_t size() const { return count_; }  // number of tokens
  int32_t token(int64_t i) const;          // bounds-checked
  // Copies tokens [start, start + count) to out as int32. A version-2 token >= 2^31 cannot be
  // an int32 id and is reported as a corrupt file.
  void copy_to(int64_t start, int64_t count, int32_t* out) const;
  std::vector<int32_t> read(int64_t start, int64_t count) const;
  std::vector<int32_t> read_all() const { return read(0, count_); }

 private:
  void release() noexcept;
  std::string path_;
  const unsigned char* map_ = nullptr;  // whole file, PROT_READ
  size_t map_bytes_ = 0;
  int version_ = 1;
  int64_t count_ = 0;
};

// Writes `tokens` as a shard at `path` atomically: the bytes go to a temporary file in the same
// directory, which is fsynced and renamed over `path`, so a crash never leaves a half-written
// shard under the final name. `version` defaults to shard_version_for_tokens(tokens); tokens
// must be >= 0 and fit the version's token type.
void write_shard(const std::string& path, std::span<const int32_t> tokens,
                 std::optional<int> version = std::nullopt);

}  // namespace hfrun::data
