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
#include "test_util.h"

namespace hfrun::testing {

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

}  // namespace hfrun::testing
