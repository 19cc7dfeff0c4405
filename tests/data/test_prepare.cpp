// hfrun prepare: text -> shards that hold exactly the training token stream.
#include "data/dataset.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

using testing::byte_tokenizer_json;
using testing::expect_input_error;
using testing::joined;
using testing::TempDir;

std::vector<int32_t> read_dir(const std::string& dir) {
  TokenStream s(
      {dir}, [](std::string_view) { return std::vector<int32_t>{}; }, std::nullopt);
  return s.read(0, s.size());
}

TEST(Prepare, ShardsHoldTheStreamWithEotBetweenDocuments) {
  TempDir d;
  auto tok = Tokenizer::from_json(byte_tokenizer_json(), "bytes.json");
  ASSERT_EQ(tok.eot_id(), testing::kByteEot);
  std::string a = d.write("a.txt", "first doc\nwith two lines");
  std::string j = d.write("b.jsonl", "{\"text\": \"second\"}\n\n{\"text\": \"third \\u00e9\"}\n");
  PrepareOptions o;
  o.output_dir = d.file("out");
  o.shard_tokens = 7;  // forces many shards, cut mid-document
  o.num_threads = 3;
  PrepareStats s = prepare_shards({a, j}, tok, o);
  const auto want = joined({"first doc\nwith two lines", "second", "third \xc3\xa9"});
  EXPECT_EQ(s.documents, 3);
  EXPECT_EQ(s.tokens, static_cast<int64_t>(want.size()));
  EXPECT_EQ(s.shards, static_cast<int64_t>((want.size() + 6) / 7));
  EXPECT_EQ(s.shard_version, 1);
  EXPECT_EQ(read_dir(o.output_dir), want);
  // The same stream as training on the text itself.
  TokenStream direct(
      {a, j}, [&](std::string_view t) { return tok.encode(t); }, tok.eot_id());
  EXPECT_EQ(direct.read(0, direct.size()), want);
}

TEST(Prepare, OutputDoesNotDependOnThreadsOrBatching) {
  TempDir d;
  auto tok = Tokenizer::from_json(byte_tokenizer_json(), "bytes.json");
  std::string lines;
  for (int i = 0; i < 500; ++i)
    lines += "{\"text\": \"document number " + std::to_string(i) + "\"}\n";
  std::string j = d.write("docs.jsonl", lines);
  std::vector<std::vector<int32_t>> outs;
  for (int threads : {1, 2, 5}) {
    PrepareOptions o;
    o.output_dir = d.file("out" + std::to_string(threads));
    o.num_threads = threads;
    o.batch_bytes = threads * 300;  // several batches
    o.shard_tokens = 1000;
    prepare_shards({j}, tok, o);
    outs.push_back(read_dir(o.output_dir));
  }
  EXPECT_EQ(outs[0], outs[1]);
  EXPECT_EQ(outs[0], outs[2]);
}

TEST(Prepare, ExistingShardsNeedOverwrite) {
  TempDir d;
  auto tok = Tokenizer::from_json(byte_tokenizer_json(), "bytes.json");
  std::string a = d.write("a.txt", "hello");
  PrepareOptions o;
  o.output_dir = d.file("out");
  o.shard_tokens = 2;
  prepare_shards({a}, tok, o);  // 3 shards
  o.shard_tokens = 100;
  expect_input_error([&] { prepare_shards({a}, tok, o); }, {"already holds", "--overwrite"});
  o.overwrite = true;
  PrepareStats s = prepare_shards({a}, tok, o);
  EXPECT_EQ(s.shards, 1);
  EXPECT_EQ(read_dir(o.output_dir), joined({"hello"}));  // no stale shards left behind
}

TEST(Prepare, BadInputsAreNamed) {
  TempDir d;
  auto tok = Tokenizer::from_json(byte_tokenizer_json(), "bytes.json");
  std::string bad = d.write("bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"oops\"}\n");
  PrepareOptions o;
  o.output_dir = d.file("out");
  expect_input_error([&] { prepare_shards({bad}, tok, o); }, {"bad.jsonl:2"});
  std::string shard = d.file("s.bin");
  write_shard(shard, std::vector<int32_t>{1, 2});
  expect_input_error([&] { prepare_shards({shard}, tok, o); }, {"s.bin", "already a token shard"});
  expect_input_error([&] { prepare_shards({d.file("missing.txt")}, tok, o); }, {"missing.txt"});
  std::string invalid = d.write("bad.txt", "ok \xff");
  expect_input_error([&] { prepare_shards({invalid}, tok, o); }, {"bad.txt"});
}

}  // namespace
}  // namespace hfrun::data
