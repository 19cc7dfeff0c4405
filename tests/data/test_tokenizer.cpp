// The tokenizer pipeline on small hand-written tokenizer.json files whose ids can be worked out
// by hand. Parity with Hugging Face tokenizers on real files is in test_tokenizer_parity.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "common/error.h"
#include "data/tokenizer/byte_level.h"
#include "data/tokenizer/tokenizer.h"
#include "data/tokenizer/utf8.h"
#include "test_util.h"

namespace hfrun::data {
namespace {

using Ids = std::vector<int32_t>;

// A byte-level BPE whose vocab is the 256 byte characters (ids 0..255) plus `extra` tokens
// (ids 256..), merges as given, and the other sections as given JSON fragments.
std::string byte_level_json(const std::vector<std::string>& extra,
                            const std::vector<std::string>& merges,
                            const std::string& pre_tokenizer = R"({"type": "ByteLevel",
                              "add_prefix_space": false, "use_regex": true})",
                            const std::string& added = "[]", const std::string& normalizer = "null",
                            const std::string& post = "null", const std::string& model_extra = "") {
  auto quote = [](const std::string& s) {
    std::string o = "\"";
    for (char c : s) {
      if (c == '"' || c == '\\') o += '\\';
      o += c;
    }
    return o + "\"";
  };
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    vocab +=
        (b ? ", " : "") + quote(byte_to_char(static_cast<uint8_t>(b))) + ": " + std::to_string(b);
  }
  for (size_t i = 0; i < extra.size(); ++i)
    vocab += ", " + quote(extra[i]) + ": " + std::to_string(256 + i);
  std::string m;
  for (size_t i = 0; i < merges.size(); ++i) m += (i ? ", " : "") + quote(merges[i]);
  return R"({"version": "1.0", "truncation": null, "padding": null, "added_tokens": )" + added +
         R"(, "normalizer": )" + normalizer + R"(, "pre_tokenizer": )" + pre_tokenizer +
         R"(, "post_processor": )" + post + R"(, "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "dropout": null, "unk_token": null)" +
         model_extra + R"(, "vocab": {)" + vocab + R"(}, "merges": [)" + m + "]}}";
}

int32_t b(char c) {
  return static_cast<unsigned char>(c);
}

TEST(Tokenizer, MergesApplyInRankOrder) {
  // "Ġ" is the byte-level character of ' '.
  auto tok = Tokenizer::from_json(byte_level_json({"he", "ll", "hell", "hello", "Ġw"},
                                                  {"h e", "l l", "he ll", "hell o", "Ġ w"}),
                                  "test.json");
  EXPECT_EQ(tok.encode("hello"), (Ids{256 + 3}));
  EXPECT_EQ(tok.encode("hello world"), (Ids{259, 260, b('o'), b('r'), b('l'), b('d')}));
  EXPECT_EQ(tok.encode("lhe"), (Ids{b('l'), 256}));
  EXPECT_EQ(tok.encode(""), Ids{});
  EXPECT_EQ(tok.decode(tok.encode("hello world")), "hello world");
  EXPECT_EQ(tok.vocab_size(), 261);
}

TEST(Tokenizer, LowerRankWinsOverLeftmost) {
  // "abc": pairs (a b) rank 1 and (b c) rank 0 -> b c merges first.
  auto tok = Tokenizer::from_json(byte_level_json({"bc", "ab"}, {"b c", "a b"}), "t.json");
  EXPECT_EQ(tok.encode("abc"), (Ids{b('a'), 256}));
}

TEST(Tokenizer, ByteLevelEncodesEveryByteAndRoundTrips) {
  auto tok = Tokenizer::from_json(byte_level_json({}, {}), "t.json");
  std::string text = "caf\xc3\xa9 \xf0\x9f\x98\x80\t\r\n  x";
  Ids ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], static_cast<unsigned char>(text[i]));
  EXPECT_EQ(tok.decode(ids), text);
  // A partial UTF-8 sequence decodes to U+FFFD, as HF does.
  EXPECT_EQ(tok.decode(Ids{0xf0, 0x9f, b('a')}),
            "\xef\xbf\xbd"
            "a");
}

TEST(Tokenizer, InvalidUtf8InputIsRejectedWithOffset) {
  auto tok = Tokenizer::from_json(byte_level_json({}, {}), "t.json");
  try {
    tok.encode("ok\xff");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(e.message().find("byte 2"), std::string::npos) << e.message();
  }
  EXPECT_THROW(tok.encode("\xed\xa0\x80"), Error);  // a surrogate
  EXPECT_THROW(tok.encode("\xc0\xaf"), Error);      // overlong
  EXPECT_THROW(tok.decode(Ids{999}), Error);
}

TEST(Tokenizer, AddedTokensAreMatchedBeforePreTokenization) {
  std::string added = R"([{"id": 256, "content": "<|endoftext|>", "single_word": false,
      "lstrip": false, "rstrip": false, "normalized": false, "special": true},
      {"id": 257, "content": "<|end", "single_word": false, "lstrip": false, "rstrip": false,
       "normalized": false, "special": false}])";
  auto tok = Tokenizer::from_json(
      byte_level_json({"<|endoftext|>", "<|end"}, {},
                      R"({"type": "ByteLevel", "add_prefix_space": false})", added),
      "t.json");
  // Leftmost-longest: the full special token wins over its prefix.
  EXPECT_EQ(tok.encode("a<|endoftext|>b"), (Ids{b('a'), 256, b('b')}));
  EXPECT_EQ(tok.encode("<|end"), (Ids{257}));
  EXPECT_EQ(tok.eot_id(), 256);
  EXPECT_EQ(tok.decode(Ids{b('a'), 256}), "a<|endoftext|>");
  EXPECT_EQ(tok.decode(Ids{b('a'), 256}, /*skip_special_tokens=*/true), "a");
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 256);
}

TEST(Tokenizer, AddedTokenStripAndSingleWord) {
  std::string added = R"([{"id": 256, "content": "[M]", "single_word": false, "lstrip": true,
      "rstrip": true, "normalized": false, "special": true},
      {"id": 257, "content": "cat", "single_word": true, "lstrip": false, "rstrip": false,
       "normalized": false, "special": false}])";
  auto tok = Tokenizer::from_json(
      byte_level_json({"[M]", "cat"}, {}, R"({"type": "ByteLevel", "add_prefix_space": false})",
                      added),
      "t.json");
  // lstrip/rstrip swallow the spaces around the token.
  EXPECT_EQ(tok.encode("a  [M]  b"), (Ids{b('a'), 256, b('b')}));
  // single_word: only a whole word matches.
  EXPECT_EQ(tok.encode("cat"), (Ids{257}));
  EXPECT_EQ(tok.encode("a cat."), (Ids{b('a'), b(' '), 257, b('.')}));
  EXPECT_EQ(tok.encode("cats"), (Ids{b('c'), b('a'), b('t'), b('s')}));
}

TEST(Tokenizer, SplitBehaviours) {
  auto ids_for = [](const std::string& behavior, bool invert) {
    std::string pre =
        R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern":
        {"String": "-"}, "behavior": ")" +
        behavior + R"(", "invert": )" + (invert ? "true" : "false") +
        R"(}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
    // "a-" and "-b" and "--" exist as tokens, so the pieces show up in the ids.
    auto tok = Tokenizer::from_json(
        byte_level_json({"a-", "-b", "--", "a--"}, {"a -", "- b", "- -", "a- -"}, pre), "t.json");
    return tok.encode("a--b");
  };
  EXPECT_EQ(ids_for("Isolated", false), (Ids{b('a'), b('-'), b('-'), b('b')}));
  EXPECT_EQ(ids_for("Removed", false), (Ids{b('a'), b('b')}));
  EXPECT_EQ(ids_for("MergedWithPrevious", false), (Ids{256, b('-'), b('b')}));
  EXPECT_EQ(ids_for("MergedWithNext", false), (Ids{b('a'), b('-'), 257}));
  EXPECT_EQ(ids_for("Contiguous", false), (Ids{b('a'), 258, b('b')}));
  EXPECT_EQ(ids_for("Removed", true), (Ids{b('-'), b('-')}));
}

TEST(Tokenizer, DigitsPreTokenizer) {
  std::string pre = R"({"type": "Sequence", "pretokenizers": [{"type": "Digits",
      "individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
  auto tok = Tokenizer::from_json(byte_level_json({"12", "x1"}, {"1 2", "x 1"}, pre), "t.json");
  EXPECT_EQ(tok.encode("x12"), (Ids{b('x'), b('1'), b('2')}));
}

TEST(Tokenizer, NormalizersNfkcLowercaseReplacePrepend) {
  std::string norm =
      R"({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "_"}, {"type": "Prepend", "prepend": "^"}]})";
  auto tok = Tokenizer::from_json(
      byte_level_json({}, {},
                      R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})",
                      "[]", norm),
      "t.json");
  // NFKC folds the ligature "ﬁ" to "fi" and fullwidth "Ａ" to "A"; then lowercase.
  std::string text = "\xef\xac\x81 \xef\xbc\xa1";
  EXPECT_EQ(tok.decode(tok.encode(text)), "^fi_a");
  std::string nfc = R"({"type": "NFC"})";
  auto nfc_tok = Tokenizer::from_json(
      byte_level_json({}, {},
                      R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false})",
                      "[]", nfc),
      "t.json");
  // e + COMBINING ACUTE -> U+00E9 (2 bytes).
  EXPECT_EQ(nfc_tok.encode("e\xcc\x81").size(), 2u);
}

TEST(Tokenizer, TemplatePostProcessorAddsSpecialTokensOnRequest) {
  std::string added = R"([{"id": 256, "content": "<s>", "single_word": false, "lstrip": false,
      "rstrip": false, "normalized": false, "special": true}])";
  std::string post = R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>",
      "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [], "special_tokens":
      {"<s>": {"id": "<s>", "ids": [256], "tokens": ["<s>"]}}})";
  auto tok = Tokenizer::from_json(
      byte_level_json({"<s>"}, {}, R"({"type": "ByteLevel"})", added, "null", post), "t.json");
  EXPECT_EQ(tok.encode("a", true), (Ids{256, b(' '), b('a')}));  // add_prefix_space default
  EXPECT_EQ(tok.encode("a", false), (Ids{b(' '), b('a')}));
}

TEST(Tokenizer, UnknownAndByteFallback) {
  // A non-byte-level BPE over characters: unknown chars become unk (fused when asked) or,
  // with byte_fallback, <0xXX> tokens.
  auto make = [](const std::string& opts) {
    return Tokenizer::from_json(
        R"({"added_tokens": [], "normalizer": null, "pre_tokenizer": null, "post_processor": null,
           "decoder": null, "model": {"type": "BPE", "unk_token": "<unk>")" +
            opts +
            R"(, "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<0xC3>": 4, "<0xA9>": 5},
           "merges": ["a b"]}})",
        "t.json");
  };
  EXPECT_EQ(make("").encode("abxyb"), (Ids{3, 0, 0, 2}));
  EXPECT_EQ(make(R"(, "fuse_unk": true)").encode("abxyb"), (Ids{3, 0, 2}));
  EXPECT_EQ(make(R"(, "byte_fallback": true)").encode("a\xc3\xa9"), (Ids{1, 4, 5}));
  EXPECT_EQ(make("").decode(Ids{3, 2}), "ab b");  // no decoder: tokens joined with spaces
}

TEST(Tokenizer, IgnoreMergesTakesWholeWordsFromTheVocab) {
  // With ignore_merges a word in the vocab is one token even if merges could not build it.
  auto tok =
      Tokenizer::from_json(byte_level_json({"abc"}, {}, R"({"type": "ByteLevel",
      "add_prefix_space": false, "use_regex": false})",
                                           "[]", "null", "null", R"(, "ignore_merges": true)"),
                           "t.json");
  EXPECT_EQ(tok.encode("abc"), (Ids{256}));
  EXPECT_EQ(tok.encode("abcd"), (Ids{b('a'), b('b'), b('c'), b('d')}));
}

}  // namespace
// A BERT-style tokenizer over a small vocabulary: WordPiece's greedy longest match, its unknown
// word rules, the BERT normalizer and pre-tokenizer, pairs with type ids, and the decoder.
Tokenizer tiny_bert(const std::string& post, int max_chars = 100) {
  return Tokenizer::from_json(
      R"({"added_tokens": [{"id": 2, "content": "[CLS]", "special": true},
                           {"id": 3, "content": "[SEP]", "special": true}],
          "normalizer": {"type": "BertNormalizer", "lowercase": true},
          "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": )" +
          post + R"(, "decoder": {"type": "WordPiece"},
          "model": {"type": "WordPiece", "unk_token": "[UNK]", "max_input_chars_per_word": )" +
          std::to_string(max_chars) + R"(, "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2,
            "[SEP]": 3, "un": 4, "##aff": 5, "##able": 6, "!": 7, "a": 8, "##a": 9, "cafe": 10,
            "x": 11, "##x": 12}}})",
      "bert.json");
}

TEST(Tokenizer, WordPieceBertPipelineAndPairs) {
  const Tokenizer tok = tiny_bert(R"({"type": "BertProcessing", "sep": ["[SEP]", 3],
                                      "cls": ["[CLS]", 2]})");
  // Lowercased, accents stripped, punctuation isolated, greedy longest pieces.
  EXPECT_EQ(tok.encode("UnAffable! Café"), (Ids{4, 5, 6, 7, 10}));
  // A position with no piece makes the whole word unknown (not a partial match).
  EXPECT_EQ(tok.encode("unaffablez a"), (Ids{1, 8}));
  const Encoding e = tok.encode_pair("a", "aa!", /*add_special_tokens=*/true);
  EXPECT_EQ(e.ids, (Ids{2, 8, 3, 8, 9, 7, 3}));
  EXPECT_EQ(e.type_ids, (Ids{0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(e.special_tokens_mask, (std::vector<uint8_t>{1, 0, 1, 0, 0, 0, 1}));
  const Encoding plain = tok.encode_pair("a", "a", false);
  EXPECT_EQ(plain.ids, (Ids{8, 8}));
  EXPECT_EQ(plain.type_ids, (Ids{0, 1}));
  // The WordPiece decoder glues continuations and cleans up spaces before punctuation.
  EXPECT_EQ(tok.decode(Ids{2, 4, 5, 6, 7, 3}), "[CLS] unaffable! [SEP]");
  EXPECT_EQ(tok.decode(Ids{2, 4, 5, 6, 7, 3}, /*skip_special_tokens=*/true), "unaffable!");
  // Words longer than max_input_chars_per_word characters are unknown.
  EXPECT_EQ(tiny_bert("null", 4).encode("xxxx xxxxx"), (Ids{11, 12, 12, 12, 1}));
}

TEST(Tokenizer, SentencePieceDecodersAndMetaspace) {
  auto make = [](const std::string& pre, const std::string& dec) {
    return Tokenizer::from_json(
        R"({"added_tokens": [{"id": 0, "content": "<s>", "special": true}],
            "normalizer": null, "pre_tokenizer": )" +
            pre + R"(, "post_processor": null, "decoder": )" + dec + R"(,
            "model": {"type": "BPE", "byte_fallback": true, "vocab": {"<s>": 0, "▁": 1,
              "a": 2, "▁a": 3, "<0x61>": 4, "<0xC3>": 5, "<0xA9>": 6, "<0xE5>": 7},
              "merges": [["▁", "a"]]}})",
        "sp.json");
  };
  const std::string sp_decoder = R"({"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})";
  const Tokenizer first = make(
      R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false})",
      sp_decoder);
  // "first": only the text at the very start gets the prepended U+2581, not text after <s>.
  EXPECT_EQ(first.encode("a"), (Ids{3}));
  EXPECT_EQ(first.encode("<s>a"), (Ids{0, 2}));
  EXPECT_EQ(first.encode("a<s>a"), (Ids{3, 0, 2}));
  // Each sequence of a pair starts at its own origin.
  EXPECT_EQ(first.encode_pair("a", "a").ids, (Ids{3, 3}));
  // Byte runs decode as a whole: valid UTF-8 -> text, invalid -> one U+FFFD per byte.
  EXPECT_EQ(first.decode(Ids{3, 5, 6}), "a\xc3\xa9");
  EXPECT_EQ(first.decode(Ids{2, 4, 7}), "a\xef\xbf\xbd\xef\xbf\xbd");
  const Tokenizer always =
      make(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})",
           R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"})");
  EXPECT_EQ(always.encode("<s>a"), (Ids{0, 3}));
  // The Metaspace decoder drops every U+2581 of the first token, later ones become spaces.
  EXPECT_EQ(always.decode(Ids{3, 3}), "a a");
  EXPECT_EQ(always.decode(Ids{0, 3}), "<s> a");
}

TEST(Tokenizer, TokenizerConfigBesideTheFileSetsEosAndLlamaSpecialTokens) {
  testing::TempDir dir;
  const std::string json = R"({"added_tokens": [{"id": 0, "content": "<s>", "special": true},
      {"id": 1, "content": "<|im_end|>", "special": true}],
      "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
      "model": {"type": "BPE", "vocab": {"<s>": 0, "<|im_end|>": 1, "a": 2}, "merges": []}})";
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.file(name)) << text;
  };
  write("tokenizer.json", json);
  // No config: no end-of-text token by name, no special tokens added.
  EXPECT_FALSE(Tokenizer::from_file(dir.file("tokenizer.json")).eot_id().has_value());
  write("tokenizer_config.json", R"({"tokenizer_class": "LlamaTokenizerFast",
      "bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "<|im_end|>",
      "pad_token": null, "add_bos_token": true, "add_eos_token": true})");
  const Tokenizer tok = Tokenizer::from_file(dir.file("tokenizer.json"));
  EXPECT_EQ(tok.eot_id(), 1);
  EXPECT_EQ(tok.special_tokens().bos, 0);
  EXPECT_FALSE(tok.special_tokens().pad.has_value());
  EXPECT_EQ(tok.encode("a", true), (Ids{0, 2, 1}));
  const Encoding pair = tok.encode_pair("a", "a", true);
  EXPECT_EQ(pair.ids, (Ids{0, 2, 1, 0, 2, 1}));
  EXPECT_EQ(pair.type_ids, (Ids{0, 0, 0, 1, 1, 1}));
  // Other tokenizer classes keep tokenizer.json's post-processor.
  write("tokenizer_config.json", R"({"tokenizer_class": "PreTrainedTokenizerFast",
      "eos_token": "<|im_end|>", "add_bos_token": true})");
  EXPECT_EQ(Tokenizer::from_file(dir.file("tokenizer.json")).encode("a", true), (Ids{2}));
  write("tokenizer_config.json", R"({"add_bos_token": "yes"})");
  try {
    Tokenizer::from_file(dir.file("tokenizer.json"));
    ADD_FAILURE() << "accepted a bad tokenizer_config.json";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("tokenizer_config.json: add_bos_token"), std::string::npos)
        << e.message();
  }
}

}  // namespace hfrun::data
