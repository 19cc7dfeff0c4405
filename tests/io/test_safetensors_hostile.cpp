// Hostile safetensors files: one per rule of the format. Each must be rejected with an
// invalid-input error naming the file and, where there is one, the tensor.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io/io_test_util.h"
#include "io/safetensors.h"

namespace hfrun::io {
namespace {

using hfrun::testing::expect_input_error;
using hfrun::testing::IoTempDir;
using hfrun::testing::raw_entry;
using hfrun::testing::raw_safetensors;

struct Hostile {
  const char* label;
  std::string header;
  size_t data_bytes;
  std::vector<std::string> parts;  // besides the file path
};

TEST(SafetensorsHostile, RejectsBrokenFramesNamingTheFile) {
  IoTempDir dir;
  std::string tiny = dir.write("tiny.safetensors", "\x05\0\0\0");
  expect_input_error([&] { SafetensorsFile::open(tiny); }, {tiny, "fewer than the 8-byte"});

  std::string huge_len = raw_safetensors("{}", "");
  huge_len[0] = 0;
  huge_len[3] = 0x10;  // N = 0x10000000 = 268 MB > 100 MB
  std::string huge = dir.write("huge.safetensors", huge_len);
  expect_input_error([&] { SafetensorsFile::open(huge); }, {huge, "exceeds the limit"});

  std::string past_end = raw_safetensors("{}", "");
  past_end[0] = 100;  // N = 100 but the file has 10 bytes
  std::string short_header = dir.write("short.safetensors", past_end);
  expect_input_error([&] { SafetensorsFile::open(short_header); }, {short_header, "truncated"});

  expect_input_error([&] { SafetensorsFile::open(dir.file("absent.safetensors")); },
                     {dir.file("absent.safetensors"), "cannot open"});
}

TEST(SafetensorsHostile, RejectsBadHeadersNamingFileAndTensor) {
  const std::string f32_4 = raw_entry("t", "F32", "[4]", 0, 16);
  const std::vector<Hostile> cases = {
      {"not json", "{not json", 0, {"not valid JSON"}},
      {"invalid utf-8", "{\"\xff\":1}", 0, {"not valid JSON"}},
      {"not an object", "[1, 2]", 0, {"'{'"}},
      {"leading space", " {}", 0, {"'{'"}},
      {"entry not an object", "{\"t\": 5}", 0, {"'t'", "must be an object"}},
      {"missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, {"'t'", "dtype"}},
      {"unknown dtype", "{" + raw_entry("t", "F33", "[4]", 0, 16) + "}", 16, {"'t'", "F33"}},
      {"unsupported dtype",
       "{" + raw_entry("t", "F64", "[2]", 0, 16) + "}",
       16,
       {"'t'", "F64", "not supported"}},
      {"negative dim", "{" + raw_entry("t", "F32", "[-1]", 0, 0) + "}", 0, {"'t'", "non-negative"}},
      {"float dim", "{" + raw_entry("t", "F32", "[2.0]", 0, 8) + "}", 8, {"'t'", "non-negative"}},
      {"shape not a list", "{" + raw_entry("t", "F32", "4", 0, 16) + "}", 16, {"'t'", "shape"}},
      {"overflowing shape",
       "{" + raw_entry("t", "F32", "[1099511627776,1099511627776]", 0, 16) + "}",
       16,
       {"'t'", "overflow"}},
      {"huge dim",
       "{" + raw_entry("t", "U8", "[18446744073709551615]", 0, 16) + "}",
       16,
       {"'t'", "overflow"}},
      {"bytes mismatch shape",
       "{" + raw_entry("t", "F32", "[3]", 0, 8) + "}",
       8,
       {"'t'", "needs 12 bytes", "[0, 8]"}},
      {"offsets reversed", "{" + raw_entry("t", "F32", "[0]", 8, 4) + "}", 8, {"'t'", "[8, 4]"}},
      {"offsets malformed",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
       4,
       {"'t'", "data_offsets"}},
      {"offsets negative",
       "{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
       4,
       {"'t'", "data_offsets"}},
      {"overlap",
       "{" + raw_entry("a", "F32", "[2]", 0, 8) + "," + raw_entry("b", "F32", "[2]", 4, 12) + "}",
       12,
       {"'b'", "overlaps", "'a'"}},
      {"gap",
       "{" + raw_entry("a", "F32", "[1]", 0, 4) + "," + raw_entry("b", "F32", "[1]", 8, 12) + "}",
       12,
       {"'b'", "gap of 4 bytes"}},
      {"not starting at 0", "{" + raw_entry("t", "F32", "[1]", 4, 8) + "}", 8, {"'t'", "gap"}},
      {"trailing bytes", "{" + f32_4 + "}", 20, {"'t'", "4 trailing bytes"}},
      {"missing bytes", "{" + f32_4 + "}", 12, {"'t'", "truncated"}},
      {"data without tensors", "{}", 4, {"trailing bytes"}},
      {"duplicate tensor", "{" + f32_4 + "," + f32_4 + "}", 16, {"'t'", "more than once"}},
      {"duplicate field",
       "{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}",
       4,
       {"'dtype'", "'t'", "more than once"}},
      {"metadata not strings", "{\"__metadata__\":{\"k\":1}}", 0, {"__metadata__", "'k'"}},
      {"metadata not an object", "{\"__metadata__\":[1]}", 0, {"__metadata__"}},
  };
  IoTempDir dir;
  int i = 0;
  for (const Hostile& c : cases) {
    SCOPED_TRACE(c.label);
    std::string path = dir.write("h" + std::to_string(i++) + ".safetensors",
                                 raw_safetensors(c.header, std::string(c.data_bytes, '\0')));
    std::vector<std::string> parts = c.parts;
    parts.push_back(path);
    expect_input_error([&] { SafetensorsFile::open(path); }, parts);
  }
}

TEST(SafetensorsHostile, AcceptsTheEdgesOfTheRules) {
  IoTempDir dir;
  // Zero-sized tensors may share an offset with the next tensor; unknown fields are ignored
  // (as the reference's serde does); a null __metadata__ means none.
  std::string header = "{\"__metadata__\":null," + raw_entry("e", "F32", "[0,3]", 0, 0) + "," +
                       "\"t\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}   ";
  std::string path = dir.write("ok.safetensors", raw_safetensors(header, std::string(4, '\0')));
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.tensor("e").sizes(), (Shape{0, 3}));
  EXPECT_EQ(f.tensor("t").sizes(), Shape{});
  EXPECT_EQ(f.tensor("t").to_int_vector(), std::vector<int64_t>{0});
}

}  // namespace
}  // namespace hfrun::io
