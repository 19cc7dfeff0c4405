// Hugging Face checkpoint layouts: sharded save/load through the index, index errors, and the
// GPT-2 optional-prefix name lookup.
#include "io/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/io_test_util.h"
#include "test_util.h"

namespace hfrun::io {
namespace {

using hfrun::testing::expect_input_error;
using hfrun::testing::IoTempDir;

std::vector<std::pair<std::string, Tensor>> five_tensors() {
  std::vector<std::pair<std::string, Tensor>> out;
  for (int i = 0; i < 5; ++i) {
    out.emplace_back("layer." + std::to_string(i) + ".weight",
                     hfrun::testing::randn({4, 4}, 10 + i));  // 64 bytes each
  }
  return out;
}

TEST(Checkpoint, ShardedRoundTripWritesTheHfLayout) {
  IoTempDir dir;
  auto tensors = five_tensors();
  tensors.emplace_back("big", hfrun::testing::randn({100}, 3));  // 400 bytes > the limit
  tensors.emplace_back("tail", ops::from_ints({1, 2}, {2}));
  auto written = save_sharded_safetensors(dir.str(), tensors, 150, {{"format", "pt"}});
  // [l0 l1] [l2 l3] [l4] [big] [tail]: a shard closes before a tensor would overflow it.
  std::vector<std::string> want_files = {
      "model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors",
      "model-00003-of-00005.safetensors", "model-00004-of-00005.safetensors",
      "model-00005-of-00005.safetensors", "model.safetensors.index.json"};
  EXPECT_EQ(dir.listing(), want_files);
  EXPECT_EQ(written.size(), 6u);

  auto index = nlohmann::json::parse(hfrun::testing::read_file(dir.file(kSafetensorsIndexName)));
  EXPECT_EQ(index["metadata"]["total_size"], 5 * 64 + 400 + 16);
  EXPECT_EQ(index["weight_map"]["layer.1.weight"], "model-00001-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.2.weight"], "model-00002-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["big"], "model-00004-of-00005.safetensors");

  for (const std::string& path : {dir.str(), dir.file(kSafetensorsIndexName)}) {
    SafetensorsCheckpoint c = SafetensorsCheckpoint::open(path);
    EXPECT_EQ(c.shards().size(), 5u);
    EXPECT_EQ(c.names().size(), tensors.size());
    EXPECT_EQ(c.total_size(), 5 * 64 + 400 + 16);
    EXPECT_EQ(c.metadata().at("format"), "pt");
    for (const auto& [name, t] : tensors) {
      ASSERT_TRUE(c.contains(name)) << name;
      EXPECT_TRUE(hfrun::testing::tensors_near(c.tensor(name), t, 0, 0)) << name;
      EXPECT_EQ(c.entry(name).shape, t.sizes());
    }
    EXPECT_EQ(std::filesystem::path(c.file_of("tail")).filename(),
              "model-00005-of-00005.safetensors");
    expect_input_error([&] { c.tensor("missing"); }, {path, "'missing'"});
  }
}

TEST(Checkpoint, SingleFileWhenItFitsAndStaleFilesAreRemoved) {
  IoTempDir dir;
  auto tensors = five_tensors();
  save_sharded_safetensors(dir.str(), tensors, 130);
  ASSERT_EQ(dir.listing().size(), 4u);  // 3 shards + index
  save_sharded_safetensors(dir.str(), tensors, 1 << 20);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"model.safetensors"});
  SafetensorsCheckpoint c = SafetensorsCheckpoint::open(dir.str());
  EXPECT_EQ(c.shards().size(), 1u);
  EXPECT_FALSE(c.total_size().has_value());
  ASSERT_EQ(c.names().size(), 5u);
  EXPECT_EQ(c.names()[0], "layer.0.weight");
  EXPECT_TRUE(hfrun::testing::tensors_near(c.tensor("layer.3.weight"), tensors[3].second, 0, 0));
  // Opening the file directly works too; resharding removes the single file again.
  EXPECT_TRUE(
      SafetensorsCheckpoint::open(dir.file("model.safetensors")).contains("layer.0.weight"));
  save_sharded_safetensors(dir.str(), tensors, 200);
  EXPECT_FALSE(std::filesystem::exists(dir.file("model.safetensors")));
  EXPECT_EQ(SafetensorsCheckpoint::open(dir.str()).shards().size(), 2u);
  // Bad arguments fail before anything is written.
  IoTempDir fresh;
  expect_input_error(
      [&] {
        save_sharded_safetensors(fresh.str(), {{"a", tensors[0].second}, {"a", tensors[1].second}},
                                 100);
      },
      {fresh.str(), "'a'", "twice"});
  EXPECT_TRUE(fresh.listing().empty());
}

TEST(Checkpoint, IndexErrorsNameTheIndexAndTheTensor) {
  IoTempDir dir;
  save_safetensors(dir.file("part-a.safetensors"), {{"a", ops::ones({2})}});
  std::string index = dir.file(kSafetensorsIndexName);
  auto open_with = [&](const std::string& text) {
    dir.write(kSafetensorsIndexName, text);
    return SafetensorsCheckpoint::open(dir.str());
  };
  EXPECT_TRUE(open_with(R"({"weight_map": {"a": "part-a.safetensors"}})").contains("a"));
  expect_input_error([&] { open_with(R"({"weight_map": {"b": "gone.safetensors"}})"); },
                     {index, "'b'", "gone.safetensors", "does not exist"});
  expect_input_error([&] { open_with(R"({"weight_map": {"z": "part-a.safetensors"}})"); },
                     {index, "'z'", "part-a.safetensors", "no tensor of that name"});
  expect_input_error([&] { open_with(R"({"metadata": {"total_size": 8}})"); },
                     {index, "weight_map"});
  expect_input_error([&] { open_with(R"({"weight_map": {"a": 3}})"); },
                     {index, "'a'", "file name"});
  expect_input_error([&] { open_with(R"({"weight_map": {"a": "../part-a.safetensors"}})"); },
                     {index, "'a'", "../part-a.safetensors"});
  expect_input_error(
      [&] {
        open_with(R"({"weight_map": {"a": "part-a.safetensors",
                                                    "a": "part-a.safetensors"}})");
      },
      {index, "'a'", "more than once"});
  expect_input_error([&] { open_with(R"({"metadata": {"total_size": -1}, "weight_map": {}})"); },
                     {index, "total_size"});
  expect_input_error([&] { open_with("{\"weight_map\": "); }, {index, "not valid JSON"});
  expect_input_error([&] { open_with("[]"); }, {index, "object"});
  // A broken shard is reported as such.
  dir.write("bad.safetensors", "xx");
  expect_input_error([&] { open_with(R"({"weight_map": {"a": "bad.safetensors"}})"); },
                     {dir.file("bad.safetensors")});

  IoTempDir empty;
  expect_input_error([&] { SafetensorsCheckpoint::open(empty.str()); },
                     {empty.str(), "model.safetensors"});
  expect_input_error([&] { SafetensorsCheckpoint::open(empty.file("nope")); },
                     {empty.file("nope")});
}

TEST(Checkpoint, FindsGpt2NamesWithOrWithoutThePrefix) {
  IoTempDir dir;
  Tensor t = ops::ones({1});
  save_safetensors(dir.file("model.safetensors"),
                   {{"h.0.attn.c_attn.weight", t}, {"transformer.wte.weight", t}, {"lm_head", t}});
  SafetensorsCheckpoint c = SafetensorsCheckpoint::open(dir.str());
  EXPECT_EQ(find_with_optional_prefix(c, "transformer.h.0.attn.c_attn.weight"),
            "h.0.attn.c_attn.weight");
  EXPECT_EQ(find_with_optional_prefix(c, "h.0.attn.c_attn.weight"), "h.0.attn.c_attn.weight");
  EXPECT_EQ(find_with_optional_prefix(c, "wte.weight"), "transformer.wte.weight");
  EXPECT_EQ(find_with_optional_prefix(c, "transformer.wte.weight"), "transformer.wte.weight");
  EXPECT_EQ(find_with_optional_prefix(c, "lm_head"), "lm_head");
  EXPECT_EQ(find_with_optional_prefix(c, "transformer.h.1.mlp.c_fc.bias"), std::nullopt);
  EXPECT_EQ(find_with_optional_prefix(c, "x", "model."), std::nullopt);
}

}  // namespace
}  // namespace hfrun::io
