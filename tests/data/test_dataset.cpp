// The token stream: documents joined with eot, shards appended as they are, sample windows.
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

using testing::byte_encode;
using testing::expect_input_error;
using testing::joined;
using testing::kByteEot;
using testing::TempDir;

std::vector<int32_t> all_tokens(const TokenStream& s) {
  return s.read(0, s.size());
}

TEST(TokenStream, EotBetweenDocumentsAndFilesNotAfter) {
  TempDir dir;
  std::string a = dir.write("a.txt", "hi\n");
  std::string b = dir.write("b.jsonl", "{\"text\": \"x\"}\n{\"text\": \"yz\"}\n");
  TokenStream s({a, b}, byte_encode, kByteEot);
  EXPECT_EQ(all_tokens(s), joined({"hi\n", "x", "yz"}));
  EXPECT_EQ(s.size(), 3 + 1 + 1 + 1 + 2);
}

TEST(TokenStream, NoSeparatorWhenTokenizerHasNoEot) {
  TempDir dir;
  std::string a = dir.write("a.txt", "ab");
  std::string b = dir.write("b.txt", "cd");
  TokenStream s({a, b}, byte_encode, std::nullopt);
  EXPECT_EQ(all_tokens(s), byte_encode("abcd"));
}

TEST(TokenStream, ShardTokensAppendedAsTheyAre) {
  TempDir dir;
  std::string a = dir.write("a.txt", "ab");
  std::string b = dir.write("b.txt", "cd");
  std::string s1 = dir.file("s1.bin");
  write_shard(s1, std::vector<int32_t>{kByteEot, 1000, 1001});
  // [a, shard, b]: no eot is added on either side of the shard.
  TokenStream s({a, s1, b}, byte_encode, kByteEot);
  EXPECT_EQ(all_tokens(s), (std::vector<int32_t>{'a', 'b', kByteEot, 1000, 1001, 'c', 'd'}));
  // Two shards in a row are simply concatenated.
  std::string s2 = dir.file("s2.bin");
  write_shard(s2, std::vector<int32_t>{70000, 7}, 2);
  TokenStream t({s1, s2}, byte_encode, kByteEot);
  EXPECT_EQ(all_tokens(t), (std::vector<int32_t>{kByteEot, 1000, 1001, 70000, 7}));
}

TEST(TokenStream, ReadsAcrossSegmentBoundaries) {
  TempDir dir;
  std::string a = dir.write("a.txt", "abc");
  std::string sh = dir.file("s.bin");
  write_shard(sh, std::vector<int32_t>{500, 501, 502, 503});
  std::string empty = dir.file("e.bin");
  write_shard(empty, std::vector<int32_t>{});
  std::string b = dir.write("b.txt", "de");
  TokenStream s({a, empty, sh, empty, b}, byte_encode, kByteEot);
  std::vector<int32_t> want = {'a', 'b', 'c', 500, 501, 502, 503, 'd', 'e'};
  ASSERT_EQ(s.size(), static_cast<int64_t>(want.size()));
  for (int64_t i = 0; i < s.size(); ++i) EXPECT_EQ(s.token(i), want[static_cast<size_t>(i)]);
  // Every window of every length equals the same slice of the flat vector.
  for (int64_t start = 0; start < s.size(); ++start) {
    for (int64_t len = 0; start + len <= s.size(); ++len) {
      EXPECT_EQ(s.read(start, len),
                std::vector<int32_t>(want.begin() + start, want.begin() + start + len));
    }
  }
}

TEST(TokenStream, SampleWindowsOverlapByOneToken) {
  std::vector<int32_t> toks(11);
  std::iota(toks.begin(), toks.end(), 0);
  TokenStream s(toks);
  // floor((11 - 1) / 3) = 3 windows of 4 tokens: [0,4) [3,7) [6,10); token 10 is unused.
  ASSERT_EQ(s.num_samples(3), 3);
  std::vector<int32_t> w(4);
  for (int64_t i = 0; i < 3; ++i) {
    s.sample(i, 3, w.data());
    EXPECT_EQ(w, (std::vector<int32_t>{static_cast<int32_t>(3 * i), static_cast<int32_t>(3 * i + 1),
                                       static_cast<int32_t>(3 * i + 2),
                                       static_cast<int32_t>(3 * i + 3)}));
  }
  EXPECT_THROW(s.sample(3, 3, w.data()), Error);
  EXPECT_EQ(s.num_samples(10), 1);  // exactly seq_len + 1 tokens
  EXPECT_EQ(s.num_samples(11), 0);
  EXPECT_EQ(TokenStream(std::vector<int32_t>{}).num_samples(4), 0);
}

TEST(TokenStream, TooShortSaysHowManyTokens) {
  TempDir dir;
  std::string a = dir.write("tiny.txt", "abcde");
  TokenStream s({a}, byte_encode, kByteEot);
  expect_input_error([&] { s.require_samples(8); }, {a, "has 5 tokens", "needs 9"});
  EXPECT_EQ(s.require_samples(4), 1);
}

TEST(TokenStream, ParallelTokenizationIsDeterministic) {
  TempDir dir;
  std::vector<std::string> docs;
  std::string jsonl;
  for (int i = 0; i < 200; ++i) {
    docs.push_back("document " + std::to_string(i) + std::string(static_cast<size_t>(i % 17), '*'));
    jsonl += "{\"text\": \"" + docs.back() + "\"}\n";
  }
  std::string p = dir.write("many.jsonl", jsonl);
  std::string q = dir.write("last.txt", "tail");
  docs.push_back("tail");
  for (int threads : {1, 2, 7}) {
    TokenStream s({p, q}, byte_encode, kByteEot, {.text_field = "text", .num_threads = threads});
    EXPECT_EQ(all_tokens(s), joined(docs)) << threads << " threads";
  }
}

TEST(TokenStream, EncoderErrorPropagatesFirstFailingDocument) {
  TempDir dir;
  std::string p =
      dir.write("d.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"BAD1\"}\n{\"text\": \"BAD2\"}\n");
  auto encode = [](std::string_view t) -> std::vector<int32_t> {
    if (t.starts_with("BAD")) throw std::runtime_error(std::string(t));
    return byte_encode(t);
  };
  for (int threads : {1, 3}) {
    try {
      TokenStream s({p}, encode, kByteEot, {.text_field = "text", .num_threads = threads});
      ADD_FAILURE() << "no error";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "BAD1");  // what a serial loop reports, whatever the thread count
    }
  }
}

}  // namespace
}  // namespace hfrun::data
