// Helpers for the data tests: a temporary directory removed on destruction, file writing, and
// the trivial byte-level encoder (byte b -> id b, end-of-text 256) the tests tokenize with.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "data/tokenizer/byte_level.h"

namespace hfrun::testing {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("hfrun_data_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }
  // Writes `bytes` to name (creating parent directories) and returns the full path.
  std::string write(const std::string& name, std::string_view bytes) const {
    std::filesystem::path p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

inline constexpr int32_t kByteEot = 256;

inline std::vector<int32_t> byte_encode(std::string_view text) {
  std::vector<int32_t> ids;
  for (char c : text) ids.push_back(static_cast<unsigned char>(c));
  return ids;
}

// A tokenizer.json that encodes exactly like byte_encode (byte b -> id b, no merges) and has
// <|endoftext|> = kByteEot: a real Tokenizer for tests that compare with joined().
inline std::string byte_tokenizer_json() {
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    std::string c = data::byte_to_char(static_cast<uint8_t>(b));
    if (c == "\"" || c == "\\") c = "\\" + c;
    vocab += "\"" + c + "\": " + std::to_string(b) + ", ";
  }
  vocab += "\"<|endoftext|>\": 256";
  return R"({"added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false,
    "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
    "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
    "use_regex": false}, "post_processor": null, "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {)" +
         vocab + R"(}, "merges": []}})";
}

// byte_encode(a) + eot + byte_encode(b) + ... : the stream CONTRACT.md describes.
inline std::vector<int32_t> joined(const std::vector<std::string>& docs) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i > 0) out.push_back(kByteEot);
    auto ids = byte_encode(docs[i]);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

// Expects an hfrun::Error of kind kInvalidInput whose message contains every part.
template <typename Fn>
void expect_input_error(Fn&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.message();
    for (const auto& p : parts) EXPECT_NE(e.message().find(p), std::string::npos) << e.message();
  }
}

}  // namespace hfrun::testing
