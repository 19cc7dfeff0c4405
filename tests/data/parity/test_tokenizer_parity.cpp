// Parity with Hugging Face tokenizers: ids and decoded text for real tokenizer.json files (GPT-2,
// Llama-3) and variants of them, against reference output written by
// tests/data/reference/make_expected.js (HF's Rust tokenizers through its npm package).
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
    for (const auto& c : variant["cases"]) {
      const std::string text = c["text"];
      const std::vector<int32_t> want = c["ids"];
      const std::vector<int32_t> got = tok.encode(text, add_special);
      if (got != want && mismatches++ < 3) {
        std::ostringstream g, w;
        for (auto i : got) g << i << ' ';
        for (auto i : want) w << i << ' ';
        ADD_FAILURE() << name << ": \"" << printable(text) << "\"\n  hfrun: " << g.str()
                      << "\n  HF:    " << w.str();
      }
      EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>())
          << name << ": " << printable(text);
      ++checked;
    }
    EXPECT_EQ(mismatches, 0) << name;
  }
  EXPECT_GT(checked, 200);
}

}  // namespace
}  // namespace hfrun::data
