// Parity with Hugging Face tokenizers: ids, type ids and special-tokens masks of texts and text
// pairs, and decoded text with and without special tokens, for real tokenizer.json files (GPT-2,
// Llama-3, Llama-2-style SentencePiece BPE, Gemma), variants of them and WordPiece (BERT)
// tokenizers, against reference output written by tests/data/reference/make_expected.js (HF's
// Rust tokenizers through its npm package).
// The ctest fixture `tokenizer_reference` produces it; HFRUN_TOKENIZER_REFERENCE names the
// directory.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/tokenizer/tokenizer.h"

namespace hfrun::data {
namespace {

nlohmann::json load_expected() {
  const char* dir = std::getenv("HFRUN_TOKENIZER_REFERENCE");
  if (!dir) return nullptr;
  std::ifstream in(std::string(dir) + "/expected.json");
  if (!in) return nullptr;
  return nlohmann::json::parse(in);
}

std::string printable(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '\n')
      o += "\\n";
    else if (c == '\t')
      o += "\\t";
    else if (c == '\r')
      o += "\\r";
    else
      o += static_cast<char>(c);
  }
  return o;
}

TEST(TokenizerParity, IdsAndDecodingMatchHuggingFace) {
  nlohmann::json expected = load_expected();
  ASSERT_FALSE(expected.is_null())
      << "reference output missing: run through ctest (fixture tokenizer_reference) or set "
         "HFRUN_TOKENIZER_REFERENCE to the directory make_expected.js wrote";
  int checked = 0;
  for (const auto& variant : expected) {
    const std::string name = variant["name"];
    SCOPED_TRACE(name);
    Tokenizer tok = Tokenizer::from_file(variant["tokenizer"]);
    const bool add_special = variant["add_special"];
    int mismatches = 0;
    auto str = [](const std::vector<int32_t>& v) {
      std::ostringstream o;
      for (auto i : v) o << i << ' ';
      return o.str();
    };
    for (const auto& c : variant["cases"]) {
      const std::string text = c["text"];
      const bool is_pair = c.contains("pair");
      const std::string label =
          "\"" + printable(text) + (is_pair ? "\" + \"" + printable(c["pair"]) : "") + "\"";
      const std::vector<int32_t> want = c["ids"];
      const std::vector<int32_t> want_types = c["type_ids"];
      const std::vector<int32_t> want_mask = c["special_mask"];
      const Encoding e = tok.encode_pair(
          text, is_pair ? std::optional<std::string>(c["pair"]) : std::nullopt, add_special);
      const std::vector<int32_t> mask(e.special_tokens_mask.begin(), e.special_tokens_mask.end());
      if ((e.ids != want || e.type_ids != want_types || mask != want_mask) && mismatches++ < 3) {
        ADD_FAILURE() << name << ": " << label << "\n  hfrun: " << str(e.ids)
                      << "\n  HF:    " << str(want) << "\n  hfrun types: " << str(e.type_ids)
                      << "\n  HF types:    " << str(want_types) << "\n  hfrun mask: " << str(mask)
                      << "\n  HF mask:    " << str(want_mask);
      }
      if (!is_pair) {  // the single-sequence fast path agrees with encode_pair
        EXPECT_EQ(tok.encode(text, add_special), e.ids) << name << ": " << label;
      }
      EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>()) << name << ": " << label;
      EXPECT_EQ(tok.decode(want, /*skip_special_tokens=*/true),
                c["decoded_skip"].get<std::string>())
          << name << ": " << label;
      ++checked;
    }
    EXPECT_EQ(mismatches, 0) << name;
  }
  EXPECT_GT(checked, 600);
}

}  // namespace
}  // namespace hfrun::data
