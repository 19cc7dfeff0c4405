// Hostile and malformed tokenizer.json files: each is rejected (or bounded) with an error that
// names the file and the part that is wrong, never a crash, a hang or a huge allocation.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "common/error.h"
#include "data/tokenizer/tokenizer.h"

namespace hfrun::data {
namespace {

// A tiny character-level BPE with the given vocab / merges / extra sections.
std::string tiny(const std::string& vocab = R"({"a": 0, "b": 1, "ab": 2})",
                 const std::string& merges = R"(["a b"])", const std::string& extra = "",
                 const std::string& model_extra = "") {
  return R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": null,
             "post_processor": null, "decoder": null)" +
         extra + R"(, "model": {"type": "BPE",
             "vocab": )" +
         vocab + R"(, "merges": )" + merges + model_extra + "}}";
}

void expect_rejected(const std::string& json, const std::vector<std::string>& parts) {
  try {
    Tokenizer::from_json(json, "hostile.json");
    ADD_FAILURE() << "accepted: " << json.substr(0, 200);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.message();
    EXPECT_NE(e.message().find("hostile.json"), std::string::npos) << e.message();
    for (const auto& p : parts) EXPECT_NE(e.message().find(p), std::string::npos) << e.message();
  }
}

TEST(TokenizerHostile, TinyTokenizerIsFine) {
  auto tok = Tokenizer::from_json(tiny(), "ok.json");
  EXPECT_EQ(tok.encode("abba"), (std::vector<int32_t>{2, 1, 0}));
}

TEST(TokenizerHostile, IdPastTheVocabIsRejectedWithoutAllocatingForIt) {
  // An id of 2^31-1 must not size any table.
  expect_rejected(tiny(R"({"a": 0, "b": 2147483647, "ab": 2})"),
                  {"model.vocab", "2147483647", "past"});
  expect_rejected(tiny(R"({"a": 0, "b": -1, "ab": 2})"), {"model.vocab", "out of range"});
  expect_rejected(tiny(R"({"a": 0, "b": 1.5, "ab": 2})"), {"model.vocab", "integer"});
}

// Unused ids (gaps, as GPT-4o's vocabulary has) load, within a slack of the number of tokens:
// a three-token file cannot size tables (or a model's embedding) by an id in the millions.
TEST(TokenizerHostile, IdGapsLoadWithinASlackOfTheTokenCount) {
  auto tok = Tokenizer::from_json(tiny(R"({"a": 0, "b": 1, "ab": 60000})"), "gaps.json");
  EXPECT_EQ(tok.encode("abba"), (std::vector<int32_t>{60000, 1, 0}));
  EXPECT_EQ(tok.vocab_size(), 60001);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{60000, 1}), "ab b");  // no decoder: spaces
  EXPECT_FALSE(tok.id_to_token(5).has_value());
  try {
    tok.decode(std::vector<int32_t>{5});
    ADD_FAILURE() << "decoded an unused id";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("id 5 is not in the vocabulary"), std::string::npos) << e.message();
  }
  expect_rejected(tiny(R"({"a": 0, "b": 1, "ab": 70000})"), {"model.vocab", "70000", "past"});
  expect_rejected(tiny(R"({"a": 0, "b": 1, "ab": 8388607})"), {"model.vocab", "8388607", "past"});
}

TEST(TokenizerHostile, DuplicateIdsAreRejected) {
  expect_rejected(tiny(R"({"a": 0, "b": 0, "ab": 2})"), {"model.vocab", "used by two tokens"});
}

TEST(TokenizerHostile, MergesMustReferToTheVocab) {
  expect_rejected(tiny(R"({"a": 0, "b": 1, "ab": 2})", R"(["a c"])"), {"merges[0]", "'c'"});
  expect_rejected(tiny(R"({"a": 0, "b": 1})", R"(["a b"])"), {"merges[0]", "'ab'"});
  expect_rejected(tiny(R"({"a": 0, "b": 1, "ab": 2})", R"(["a b c"])"), {"merges[0]"});
  expect_rejected(tiny(R"({"a": 0, "b": 1, "ab": 2})", R"([42])"), {"merges[0]"});
}

TEST(TokenizerHostile, ByteLevelTokenizerMissingByteTokensIsRejected) {
  std::string extra = R"(, "pre_tokenizer": {"type": "ByteLevel"})";
  // Overrides the null pre_tokenizer above (the last key wins in the parser).
  expect_rejected(tiny(R"({"a": 0, "b": 1, "ab": 2})", R"(["a b"])", extra),
                  {"byte-level", "bytes 0, 1, 2"});
}

TEST(TokenizerHostile, UnsupportedComponentsAreNamed) {
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "normalizer": {"type": "Nmt"})"),
                  {"normalizer", "Nmt"});
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "pre_tokenizer": {"type": "UnicodeScripts"})"),
                  {"pre_tokenizer", "UnicodeScripts"});
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "decoder": {"type": "CTC"})"), {"decoder", "CTC"});
  expect_rejected(R"({"model": {"type": "WordLevel", "vocab": {}}})", {"model.type", "WordLevel"});
  expect_rejected(tiny(R"({"a": 0})", "[]", "", R"(, "dropout": 0.1)"), {"dropout"});
  expect_rejected(tiny(R"({"a": 0})", "[]", "", R"(, "unk_token": "<unk>")"),
                  {"unk_token", "<unk>"});
}

TEST(TokenizerHostile, SentencePieceAndBertComponentsAreCheckedAtLoad) {
  // Metaspace and Strip take exactly one character.
  expect_rejected(
      tiny(R"({"a": 0})", "[]", R"(, "pre_tokenizer": {"type": "Metaspace", "replacement": "__"})"),
      {"pre_tokenizer.replacement", "one character"});
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "decoder": {"type": "Metaspace"})"),
                  {"decoder", "replacement"});
  expect_rejected(tiny(R"({"a": 0})", "[]",
                       R"(, "decoder": {"type": "Strip", "content": "ab", "start": 1, "stop": 0})"),
                  {"decoder.content", "one character"});
  expect_rejected(tiny(R"({"a": 0})", "[]",
                       R"(, "decoder": {"type": "Strip", "content": " ", "start": -1, "stop": 0})"),
                  {"decoder.start"});
  expect_rejected(tiny(R"({"a": 0})", "[]",
                       R"(, "pre_tokenizer": {"type": "Metaspace", "replacement": "_",
                             "prepend_scheme": "sometimes"})"),
                  {"prepend_scheme", "sometimes"});
  // An invalid regex in a decoder is found at load, not at the first decode.
  expect_rejected(tiny(R"({"a": 0})", "[]",
                       R"(, "decoder": {"type": "Sequence", "decoders": [{"type": "Replace",
                             "pattern": {"Regex": "(unclosed"}, "content": " "}]})"),
                  {"decoder", "unclosed"});
  // WordPiece needs its unknown token; tokens are not empty.
  expect_rejected(R"({"model": {"type": "WordPiece", "unk_token": "[UNK]",
                      "vocab": {"a": 0, "##b": 1}}})",
                  {"model", "[UNK]"});
  expect_rejected(R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "": 1}}})",
                  {"model.vocab", "empty token"});
  expect_rejected(R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0},
                      "max_input_chars_per_word": 0}})",
                  {"max_input_chars_per_word"});
  // A template names special tokens it defines, and a pair template uses both sequences.
  const std::string vocab = R"({"[UNK]": 0, "[CLS]": 1, "a": 2})";
  auto wordpiece = [&](const std::string& post) {
    return R"({"model": {"type": "WordPiece", "vocab": )" + vocab + R"(}, "post_processor": )" +
           post + "}";
  };
  expect_rejected(wordpiece(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
      "special_tokens": {}})"),
                  {"post_processor.single", "[CLS]"});
  expect_rejected(wordpiece(R"({"type": "TemplateProcessing",
      "single": [{"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [{"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}})"),
                  {"post_processor.pair", "$B"});
  expect_rejected(wordpiece(R"({"type": "BertProcessing", "cls": ["[CLS]", 1], "sep": ["[SEP]"]})"),
                  {"post_processor.sep"});
  // Special token ids must be in the vocabulary (an embedding lookup past it would be garbage).
  expect_rejected(
      wordpiece(R"({"type": "BertProcessing", "cls": ["[CLS]", 999999], "sep": ["[CLS]", 1]})"),
      {"post_processor", "999999", "not in the vocabulary"});
}

TEST(TokenizerHostile, UnigramAndPrecompiledAreCheckedAtLoad) {
  auto unigram = [](const std::string& model) {
    return R"({"model": {"type": "Unigram", )" + model + "}}";
  };
  // A score too large for a double is refused by the JSON reader itself.
  expect_rejected(unigram(R"("vocab": [["a", -1.0], ["b", 1e400]])"), {"not valid JSON", "1e400"});
  expect_rejected(unigram(R"("unk_id": 2, "vocab": [["a", -1.0], ["b", -2.0]])"), {"model.unk_id"});
  expect_rejected(unigram(R"("unk_id": 0, "vocab": [["a", -1.0], ["", -2.0]])"),
                  {"vocab[1]", "empty piece"});
  expect_rejected(unigram(R"("vocab": [["a", -1.0], ["b"]])"),
                  {"model.vocab[1]", "[piece, score]"});
  expect_rejected(unigram(R"("vocab": [])"), {"model", "empty"});
  // Without unk_id, text that pieces cover encodes; an uncovered character is named.
  const Tokenizer nounk = Tokenizer::from_json(
      unigram(R"("unk_id": null, "vocab": [["a", -1.0], ["ab", -1.0]])"), "u.json");
  EXPECT_EQ(nounk.encode("ab"), (std::vector<int32_t>{1}));
  try {
    nounk.encode("abz");
    ADD_FAILURE() << "encoded an uncovered character without unk_id";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("'z'"), std::string::npos) << e.message();
  }
  // Charsmaps (SentencePiece's layout, built by hand): not base64, truncated, a replacement
  // offset outside the strings, a leaf outside the trie.
  auto precompiled = [](const std::string& map) {
    return tiny(
        R"({"a": 0})", "[]",
        R"(, "normalizer": {"type": "Precompiled", "precompiled_charsmap": ")" + map + R"("})");
  };
  expect_rejected(precompiled("not base64!"), {"precompiled_charsmap", "base64"});
  expect_rejected(precompiled("6AMAAAAAAAA="), {"normalizer", "trie size 1000"});
  expect_rejected(precompiled("DAAAAAAAAAABDQAA/wMAAGEA"), {"normalizer", "outside the 2-byte"});
  expect_rejected(precompiled("CAAAAAAAAAABHQAAYQA="), {"normalizer", "outside the trie"});
  // A replacement offset inside a character (blob "\xc3\xa9\0", offset 1).
  expect_rejected(precompiled("DAAAAAAAAAABDQAAAQAAAMOpAA=="), {"normalizer", "inside a UTF-8"});
  // A sound one: byte 0x01 maps to "a".
  const auto tok = Tokenizer::from_json(precompiled("DAAAAAAAAAABDQAAAAAAAGEA"), "t.json");
  EXPECT_EQ(tok.encode("\x01"
                       "a"),
            (std::vector<int32_t>{0, 0}));
}

TEST(TokenizerHostile, TruncationAndPaddingSectionsAreIgnored) {
  const auto tok = Tokenizer::from_json(
      tiny(R"({"a": 0})", "[]", R"(, "truncation": {"max_length": 1}, "padding": {"pad_id": 0})"),
      "t.json");
  EXPECT_EQ(tok.encode("aaa").size(), 3u);  // not truncated to 1
}

TEST(TokenizerHostile, MalformedJsonAndStructure) {
  expect_rejected("{\"model\": ", {"not valid JSON"});
  expect_rejected("[1, 2]", {"expected a JSON object"});
  expect_rejected(R"({"added_tokens": []})", {"missing key 'model'"});
  expect_rejected(tiny(R"(["a"])"), {"model.vocab"});
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "added_tokens": [{"content": "", "id": 1}])"),
                  {"added_tokens[0].content", "empty"});
}

TEST(TokenizerHostile, DeepNestingIsRejectedBeforeParsing) {
  std::string deep = "{\"model\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  expect_rejected(deep, {"nested deeper"});
}

TEST(TokenizerHostile, InvalidRegexIsRejected) {
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "pre_tokenizer": {"type": "Split", "pattern":
      {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": false})"),
                  {"invalid regex", "(unclosed"});
  expect_rejected(tiny(R"({"a": 0})", "[]", R"(, "pre_tokenizer": {"type": "Split", "pattern":
      {"Regex": "a"}, "behavior": "Sideways", "invert": false})"),
                  {"behavior", "Sideways"});
}

TEST(TokenizerHostile, CatastrophicRegexIsBoundedNotHung) {
  // (a|aa)*b backtracks exponentially on a long run of a's without a b.
  auto tok = Tokenizer::from_json(
      tiny(R"({"a": 0, "b": 1, "ab": 2})", R"(["a b"])", R"(, "pre_tokenizer": {"type": "Split",
          "pattern": {"Regex": "(a|aa)*b"}, "behavior": "Isolated", "invert": false})"),
      "regex.json");
  auto t0 = std::chrono::steady_clock::now();
  try {
    tok.encode(std::string(5000, 'a'));
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("backtracking"), std::string::npos) << e.message();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 60.0);  // bounded: an unbounded engine would run for longer than the universe
}

TEST(TokenizerHostile, MissingFileAndOversizedFile) {
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("/nonexistent/tokenizer.json"), std::string::npos);
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  }
}

}  // namespace
}  // namespace hfrun::data
