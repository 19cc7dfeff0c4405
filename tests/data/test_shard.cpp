// Token shards: llm.c's layout byte for byte, round trips, and errors that name the file.
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "data/shard.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

using testing::expect_input_error;
using testing::TempDir;

// A shard file built by hand as llm.c's write_datafile does: int32 header[256], then tokens.
template <typename T>
std::string raw_shard(int32_t magic, int32_t version, int32_t count, const std::vector<T>& toks) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::string bytes(reinterpret_cast<const char*>(header.data()), 1024);
  bytes.append(reinterpret_cast<const char*>(toks.data()), toks.size() * sizeof(T));
  return bytes;
}

TEST(Shard, ReadsLlmcLayoutVersion1) {
  TempDir dir;
  std::string p = dir.write("a.bin", raw_shard<uint16_t>(20240520, 1, 4, {50256, 7, 65535, 0}));
  ShardReader r(p);
  EXPECT_EQ(r.version(), 1);
  EXPECT_EQ(r.size(), 4);
  EXPECT_EQ(r.read_all(), (std::vector<int32_t>{50256, 7, 65535, 0}));
  EXPECT_EQ(r.token(2), 65535);
  EXPECT_EQ(r.read(1, 2), (std::vector<int32_t>{7, 65535}));
}

TEST(Shard, RoundTripPicksVersionFromTokens) {
  TempDir dir;
  std::vector<int32_t> small = {0, 1, 65535, 300, 50256};
  std::vector<int32_t> large = {0, 65536, 128000, 5};
  write_shard(dir.file("small.bin"), small);
  write_shard(dir.file("large.bin"), large);
  write_shard(dir.file("forced.bin"), small, 2);
  ShardReader s(dir.file("small.bin")), l(dir.file("large.bin")), f(dir.file("forced.bin"));
  EXPECT_EQ(s.version(), 1);
  EXPECT_EQ(l.version(), 2);
  EXPECT_EQ(f.version(), 2);
  EXPECT_EQ(s.read_all(), small);
  EXPECT_EQ(l.read_all(), large);
  EXPECT_EQ(f.read_all(), small);
  EXPECT_EQ(std::filesystem::file_size(dir.file("small.bin")), 1024u + 2 * small.size());
  EXPECT_EQ(std::filesystem::file_size(dir.file("large.bin")), 1024u + 4 * large.size());
  // Atomic write: the temporary file was renamed, nothing else is left in the directory.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.str())) entries += e.exists();
  EXPECT_EQ(entries, 3);
}

TEST(Shard, VersionForVocab) {
  EXPECT_EQ(shard_version_for_vocab(50257), 1);  // GPT-2
  EXPECT_EQ(shard_version_for_vocab(65536), 1);  // ids 0..65535 fit uint16
  EXPECT_EQ(shard_version_for_vocab(65537), 2);
  EXPECT_EQ(shard_version_for_vocab(128256), 2);  // Llama 3
  EXPECT_THROW(shard_version_for_vocab(0), Error);
}

TEST(Shard, EmptyShardAndOverwrite) {
  TempDir dir;
  std::string p = dir.file("e.bin");
  write_shard(p, std::vector<int32_t>{1, 2, 3});
  write_shard(p, std::vector<int32_t>{});  // replaces the old file
  ShardReader r(p);
  EXPECT_EQ(r.size(), 0);
  EXPECT_TRUE(r.read_all().empty());
  EXPECT_EQ(std::filesystem::file_size(p), 1024u);
}

TEST(Shard, MoveTransfersTheMapping) {
  TempDir dir;
  write_shard(dir.file("m.bin"), std::vector<int32_t>{9, 8, 7});
  ShardReader a(dir.file("m.bin"));
  ShardReader b(std::move(a));
  EXPECT_EQ(b.read_all(), (std::vector<int32_t>{9, 8, 7}));
  ShardReader c(dir.file("m.bin"));
  c = std::move(b);
  EXPECT_EQ(c.token(0), 9);
}

TEST(Shard, MissingFileIsNamed) {
  TempDir dir;
  std::string p = dir.file("nope.bin");
  expect_input_error([&] { ShardReader r(p); }, {p, "cannot open"});
}

TEST(Shard, FileSmallerThanHeader) {
  TempDir dir;
  std::string p = dir.write("short.bin", std::string(100, '\0'));
  expect_input_error([&] { ShardReader r(p); }, {p, "100 bytes", "header"});
  std::string empty = dir.write("empty.bin", "");
  expect_input_error([&] { ShardReader r(empty); }, {empty, "0 bytes"});
}

TEST(Shard, BadMagicAndVersion) {
  TempDir dir;
  std::string p = dir.write("magic.bin", raw_shard<uint16_t>(12345, 1, 1, {1}));
  expect_input_error([&] { ShardReader r(p); }, {p, "magic", "12345", "20240520"});
  std::string v = dir.write("version.bin", raw_shard<uint16_t>(20240520, 3, 1, {1}));
  expect_input_error([&] { ShardReader r(v); }, {v, "version 3"});
}

TEST(Shard, CountAndSizeMustAgree) {
  TempDir dir;
  // Truncated: the header promises 4 tokens, the file holds 3.
  std::string t = dir.write("trunc.bin", raw_shard<uint16_t>(20240520, 1, 4, {1, 2, 3}));
  expect_input_error([&] { ShardReader r(t); }, {t, "4 tokens", "1030 bytes"});
  // Trailing bytes: 2 tokens promised, 3 present.
  std::string x = dir.write("extra.bin", raw_shard<uint32_t>(20240520, 2, 2, {1, 2, 3}));
  expect_input_error([&] { ShardReader r(x); }, {x, "2 tokens", "1036 bytes"});
  std::string n = dir.write("neg.bin", raw_shard<uint16_t>(20240520, 1, -1, {}));
  expect_input_error([&] { ShardReader r(n); }, {n, "negative token count"});
}

TEST(Shard, WriteRejectsTokensOutsideTheVersion) {
  TempDir dir;
  std::string p = dir.file("w.bin");
  expect_input_error(
      [&] {
        write_shard(p, std::vector<int32_t>{1, 70000}, 1);
      },
      {p, "token 1", "70000"});
  expect_input_error([&] { write_shard(p, std::vector<int32_t>{-1}); }, {p, "token 0", "-1"});
  EXPECT_FALSE(std::filesystem::exists(p));
  EXPECT_TRUE(std::filesystem::is_empty(dir.str()));  // no temporary left behind
}

TEST(Shard, Version2TokenAboveInt32IsCorrupt) {
  TempDir dir;
  std::string p = dir.write("big.bin", raw_shard<uint32_t>(20240520, 2, 2, {5, 0xFFFFFFFFu}));
  ShardReader r(p);  // opening only checks the header
  EXPECT_EQ(r.token(0), 5);
  expect_input_error([&] { r.token(1); }, {p, "token 1"});
}

}  // namespace
}  // namespace hfrun::data
