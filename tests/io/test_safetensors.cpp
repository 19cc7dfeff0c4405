// Safetensors reader and writer: round trips, files from an independent encoder, zero-copy
// views over the mapping, unaligned data and atomic writes.
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io/io_test_util.h"
#include "test_util.h"

namespace hfrun::io {
namespace {

using hfrun::testing::bytes_of;
using hfrun::testing::expect_input_error;
using hfrun::testing::IoTempDir;
using hfrun::testing::raw_entry;
using hfrun::testing::raw_safetensors;

bool points_into(const SafetensorsFile& f, const Tensor& t) {
  auto* p = static_cast<const unsigned char*>(t.raw_data());
  return p >= f.mapped_data() && p + t.nbytes() <= f.mapped_data() + f.mapped_size();
}

TEST(Safetensors, RoundTripsEveryDtypeLayoutAndMetadata) {
  IoTempDir dir;
  Tensor wide = hfrun::testing::randn({3, 5}, 1);
  std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", hfrun::testing::randn({3, 4}, 2)},
      {"bf16", ops::to_dtype(hfrun::testing::randn({5}, 3), DType::kBF16)},
      {"f16", ops::to_dtype(hfrun::testing::randn({2, 3}, 4), DType::kF16)},
      {"i64", ops::from_ints({-3, 0, 7, int64_t{1} << 40}, {4})},
      {"transposed", ops::transpose(wide, 0, 1)},
      {"u8", ops::from_ints({1, 2, 255}, {3}, DType::kU8)},
      {"i32", ops::from_ints({-1, 5}, {2}, DType::kI32)},
      {"bool", ops::from_ints({1, 0, 1}, {3}, DType::kBool)},
      {"scalar", ops::scalar(2.5)},
      {"empty", ops::zeros({0, 4})},
  };
  ASSERT_FALSE(tensors[4].second.is_contiguous());
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "12"}};
  std::string path = dir.file("t.safetensors");
  save_safetensors(path, tensors, meta);

  std::string bytes = hfrun::testing::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header is padded to a multiple of 8";

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.entries().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, want] = tensors[i];
    EXPECT_EQ(f.entries()[i].name, name) << "entries keep the given order";
    Tensor got = f.tensor(name);
    EXPECT_EQ(got.dtype(), want.dtype()) << name;
    EXPECT_EQ(got.sizes(), want.sizes()) << name;
    EXPECT_EQ(f.entry(name).nbytes, want.nbytes()) << name;
    if (want.dtype() == DType::kI64) {
      EXPECT_EQ(got.to_int_vector(), want.to_int_vector());
    } else {
      EXPECT_TRUE(hfrun::testing::tensor_near(got, want.to_vector(), 0, 0)) << name;
    }
    // The writer lays the data out so that every tensor is aligned: no copies on load.
    if (want.numel() > 0) {
      EXPECT_TRUE(f.is_zero_copy(name)) << name;
    }
  }
  EXPECT_TRUE(f.contains("i64"));
  EXPECT_FALSE(f.contains("nope"));
  expect_input_error([&] { f.tensor("nope"); }, {path, "nope"});
}

TEST(Safetensors, ReadsAFileFromAnIndependentEncoder) {
  IoTempDir dir;
  // As the reference writes it: metadata first, header padded with spaces, an I64 after a
  // 3-byte U8 tensor (legal, but unaligned: the reader must copy that one).
  std::vector<float> w = {1.5f, -2.0f, 3.25f, 0.0f};
  std::vector<uint16_t> b = {0x3f80, 0xc000, 0x4040};  // bf16 1, -2, 3
  std::vector<uint8_t> u = {7, 8, 9};
  std::vector<int64_t> ids = {42, -1};
  std::string header =
      "{\"__metadata__\":{\"format\":\"pt\"}," + raw_entry("w", "F32", "[2,2]", 0, 16) + "," +
      raw_entry("b", "BF16", "[3]", 16, 22) + "," + raw_entry("u", "U8", "[3]", 22, 25) + "," +
      raw_entry("ids", "I64", "[2]", 25, 41) + "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string path =
      dir.write("x.safetensors",
                raw_safetensors(header, bytes_of(w) + bytes_of(b) + bytes_of(u) + bytes_of(ids)));
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_TRUE(hfrun::testing::tensor_near(f.tensor("w"), w, 0, 0));
  EXPECT_EQ(f.tensor("w").sizes(), (Shape{2, 2}));
  EXPECT_TRUE(hfrun::testing::tensor_near(f.tensor("b"), {1, -2, 3}, 0, 0));
  EXPECT_TRUE(hfrun::testing::tensor_near(f.tensor("u"), {7, 8, 9}, 0, 0));
  EXPECT_EQ(f.tensor("ids").to_int_vector(), ids);
  EXPECT_EQ(f.entry("ids").offset, 8 + header.size() + 25);
  EXPECT_FALSE(f.is_zero_copy("ids"));
  Tensor copied = f.tensor("ids");
  EXPECT_FALSE(points_into(f, copied));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(copied.raw_data()) % 8, 0u);
}

TEST(Safetensors, ReadsUnpaddedHeadersAndEmptyFiles) {
  IoTempDir dir;
  // Header of 5 bytes ("{}" plus spaces is fine; so is no tensor at all).
  SafetensorsFile empty =
      SafetensorsFile::open(dir.write("e.safetensors", raw_safetensors("{}", "")));
  EXPECT_TRUE(empty.entries().empty());
  std::vector<float> v = {1, 2, 3};
  std::string header = "{" + raw_entry("v", "F32", "[3]", 0, 12) + "}";  // 8 + N unaligned
  ASSERT_NE(header.size() % 4, 0u);
  SafetensorsFile f =
      SafetensorsFile::open(dir.write("u.safetensors", raw_safetensors(header, bytes_of(v))));
  EXPECT_FALSE(f.is_zero_copy("v"));
  EXPECT_TRUE(hfrun::testing::tensor_near(f.tensor("v"), v, 0, 0));
}

TEST(Safetensors, TensorsAreZeroCopyViewsThatKeepTheMappingAlive) {
  IoTempDir dir;
  Tensor src = hfrun::testing::randn({64, 32}, 5);
  std::string path = dir.file("z.safetensors");
  save_safetensors(path, {{"a", ops::to_dtype(src, DType::kBF16)}, {"w", src}});
  Tensor w;
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    w = f.tensor("w");
    EXPECT_TRUE(f.is_zero_copy("w"));
    EXPECT_TRUE(points_into(f, w)) << "tensor data lies inside the mapping";
    EXPECT_EQ(static_cast<const unsigned char*>(w.raw_data()),
              f.mapped_data() + f.entry("w").offset);
    EXPECT_TRUE(points_into(f, f.tensor("a")));
  }
  // The file object is gone; the tensor still owns the mapping.
  EXPECT_TRUE(hfrun::testing::tensors_near(w, src, 0, 0));
  // Writes are copy-on-write: they never reach the file.
  Tensor w2 = w;
  ops::fill_(w2, 7.0);
  EXPECT_FLOAT_EQ(w.to_vector()[0], 7.0f);
  SafetensorsFile again = SafetensorsFile::open(path);
  EXPECT_TRUE(hfrun::testing::tensors_near(again.tensor("w"), src, 0, 0));
}

TEST(Safetensors, WritesAtomicallyAndValidatesBeforeWriting) {
  IoTempDir dir;
  std::string path = dir.file("m.safetensors");
  Tensor t = ops::ones({2});
  expect_input_error([&] { save_safetensors(path, {{"x", t}, {"x", t}}); }, {path, "'x'", "twice"});
  expect_input_error(
      [&] {
        save_safetensors(path, {{"__metadata__", t}});
      },
      {path, "__metadata__"});
  expect_input_error(
      [&] {
        save_safetensors(path, {{"u", Tensor()}});
      },
      {path, "'u'", "undefined"});
  EXPECT_TRUE(dir.listing().empty()) << "nothing written, no temporary file left";
  std::string missing_dir = dir.file("no/such/dir/m.safetensors");
  EXPECT_THROW(save_safetensors(missing_dir, {{"x", t}}), Error);
  EXPECT_FALSE(std::filesystem::exists(missing_dir));

  save_safetensors(path, {{"x", t}});
  save_safetensors(path, {{"y", ops::zeros({3})}});  // replaces the old file whole
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.contains("x"));
  EXPECT_TRUE(hfrun::testing::tensor_near(f.tensor("y"), {0, 0, 0}, 0, 0));
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"m.safetensors"});
}

TEST(Safetensors, DtypeNames) {
  EXPECT_STREQ(safetensors_dtype_name(DType::kF32), "F32");
  EXPECT_STREQ(safetensors_dtype_name(DType::kBF16), "BF16");
  EXPECT_STREQ(safetensors_dtype_name(DType::kF16), "F16");
  EXPECT_STREQ(safetensors_dtype_name(DType::kI64), "I64");
  EXPECT_STREQ(safetensors_dtype_name(DType::kBool), "BOOL");
}

}  // namespace
}  // namespace hfrun::io
