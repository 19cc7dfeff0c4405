// Sources -> documents: .txt whole file, .jsonl one per non-empty line, directory expansion,
// and errors that name file:line.
#include <string>
#include <vector>

#include "data/documents.h"
#include "data/shard.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

using testing::expect_input_error;
using testing::TempDir;

std::vector<std::string> texts(const std::vector<Document>& docs) {
  std::vector<std::string> out;
  for (const auto& d : docs) out.push_back(d.text);
  return out;
}

TEST(Documents, TxtFileIsOneDocument) {
  TempDir dir;
  std::string p = dir.write("a.txt", "line one\n\nline two\n");
  auto docs = read_documents({p, SourceKind::kText});
  ASSERT_EQ(docs.size(), 1u);
  EXPECT_EQ(docs[0].text, "line one\n\nline two\n");  // byte for byte, newlines kept
  EXPECT_EQ(docs[0].origin, p);
}

TEST(Documents, JsonlOneDocumentPerNonEmptyLine) {
  TempDir dir;
  std::string p = dir.write("a.jsonl",
                            "{\"text\": \"first\", \"id\": 1}\n"
                            "\n"
                            "   \n"
                            "{\"text\": \"second\\nline\"}\r\n"
                            "{\"text\": \"\\u00e9t\\u00e9\"}");  // no final newline
  auto docs = read_documents({p, SourceKind::kJsonl});
  EXPECT_EQ(texts(docs), (std::vector<std::string>{"first", "second\nline", "\xc3\xa9t\xc3\xa9"}));
  EXPECT_EQ(docs[1].origin, p + ":4");  // line numbers count the skipped blank lines
}

TEST(Documents, JsonlCustomTextField) {
  TempDir dir;
  std::string p = dir.write("c.jsonl", "{\"content\": \"x\", \"text\": 3}\n");
  EXPECT_EQ(texts(read_documents({p, SourceKind::kJsonl}, "content")),
            (std::vector<std::string>{"x"}));
}

TEST(Documents, JsonlBadLinesNameFileAndLine) {
  TempDir dir;
  std::string ok = "{\"text\": \"fine\"}\n";
  std::string bad_json = dir.write("j.jsonl", ok + ok + "{\"text\": \"unterminated}\n");
  expect_input_error(
      [&] {
        read_documents({bad_json, SourceKind::kJsonl});
      },
      {bad_json + ":3", "malformed JSON"});
  std::string missing = dir.write("m.jsonl", ok + "{\"body\": \"x\"}\n");
  expect_input_error(
      [&] {
        read_documents({missing, SourceKind::kJsonl});
      },
      {missing + ":2", "missing field \"text\""});
  std::string not_string = dir.write("n.jsonl", "{\"text\": [1, 2]}\n");
  expect_input_error(
      [&] {
        read_documents({not_string, SourceKind::kJsonl});
      },
      {not_string + ":1", "\"text\" must be a string", "array"});
  std::string not_object = dir.write("o.jsonl", ok + "\n\"just a string\"\n");
  expect_input_error(
      [&] {
        read_documents({not_object, SourceKind::kJsonl});
      },
      {not_object + ":3", "JSON object"});
}

TEST(Documents, InvalidUtf8NamesFileAndLine) {
  TempDir dir;
  std::string txt = dir.write("bad.txt", "ok\nstill ok\nbad \xff here\n");
  expect_input_error(
      [&] {
        read_documents({txt, SourceKind::kText});
      },
      {txt + ":3", "byte 5 of the line", "invalid UTF-8"});
  std::string jl = dir.write("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"\xc3\"}\n");
  expect_input_error(
      [&] {
        read_documents({jl, SourceKind::kJsonl});
      },
      {jl + ":2", "invalid UTF-8"});
}

TEST(Documents, Utf8Validation) {
  EXPECT_EQ(first_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("ab\xc0\xaf"), 2u);        // overlong '/'
  EXPECT_EQ(first_invalid_utf8("\xe0\x80\xaf"), 0u);      // overlong 3-byte
  EXPECT_EQ(first_invalid_utf8("x\xed\xa0\x80"), 1u);     // UTF-16 surrogate D800
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("abc\xe2\x82"), 3u);       // truncated at the end
  EXPECT_EQ(first_invalid_utf8("\x80"), 0u);              // lone continuation byte
  EXPECT_EQ(first_invalid_utf8("\xe2\x28\xa1"), 0u);      // bad continuation byte
  EXPECT_EQ(first_invalid_utf8("\xf4\x8f\xbf\xbf"), std::string_view::npos);  // U+10FFFF
}

TEST(Documents, DirectoryExpandsToSortedDataFiles) {
  TempDir dir;
  dir.write("d/b.txt", "b");
  dir.write("d/a.jsonl", "{\"text\": \"a\"}\n");
  dir.write("d/README.md", "not data");
  dir.write("d/sub/z.txt", "not recursed into");
  write_shard(dir.file("d/c.bin"), std::vector<int32_t>{1});
  std::string single = dir.write("x.txt", "x");
  auto files = expand_sources({single, dir.file("d")});
  ASSERT_EQ(files.size(), 4u);
  EXPECT_EQ(files[0].path, single);
  EXPECT_EQ(files[1].path, dir.file("d/a.jsonl"));
  EXPECT_EQ(files[1].kind, SourceKind::kJsonl);
  EXPECT_EQ(files[2].path, dir.file("d/b.txt"));
  EXPECT_EQ(files[2].kind, SourceKind::kText);
  EXPECT_EQ(files[3].path, dir.file("d/c.bin"));
  EXPECT_EQ(files[3].kind, SourceKind::kShard);
}

TEST(Documents, BadSourcesAreNamed) {
  TempDir dir;
  std::string csv = dir.write("t.csv", "a,b");
  expect_input_error([&] { expand_sources({csv}); }, {csv, ".csv", ".txt, .jsonl or .bin"});
  std::string missing = dir.file("missing.txt");
  expect_input_error([&] { expand_sources({missing}); }, {missing, "does not exist"});
  dir.write("empty/notes.md", "");
  expect_input_error([&] { expand_sources({dir.file("empty")}); },
                     {dir.file("empty"), "no .txt, .jsonl or .bin"});
}

}  // namespace
}  // namespace hfrun::data
