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
#include "data/tokenizer/tokenizer.h"
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

// Characters a..e are ids 3..7; [MASK] is 0, </s> 2, and <s> (1) starts every text (and pair)
// encoded with special tokens: the tokenizer of the fine-tuning task tests.
inline data::Tokenizer tiny_task_tokenizer() {
  return data::Tokenizer::from_json(
      R"({"added_tokens": [{"id": 0, "content": "[MASK]", "special": true},
                           {"id": 1, "content": "<s>", "special": true},
                           {"id": 2, "content": "</s>", "special": true}],
          "normalizer": null, "pre_tokenizer": null, "decoder": null,
          "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "model": {"type": "BPE", "vocab": {"[MASK]": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4,
                    "c": 5, "d": 6, "e": 7}, "merges": []}})",
      "tiny.json");
}

}  // namespace hfrun::testing
