// Records for fine-tuning tasks (data/records.h): .jsonl objects and .csv/.tsv rows with a header,
// quoting as RFC 4180 (separators, newlines and doubled quotes inside quotes), CRLF, a BOM, blank
// lines; every error names file:line.
#include <gtest/gtest.h>

#include <fstream>

#include "common/error.h"
#include "data/records.h"
#include "test_util.h"

namespace hfrun::data {
namespace {

std::string write(testing::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::string error_of(const std::vector<std::string>& files) {
  try {
    Records::read(files);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    return e.message();
  }
  return "(no error)";
}

TEST(Records, JsonlFieldsAndTheirText) {
  testing::TempDir dir;
  const std::string f = write(dir, "r.jsonl",
                              "{\"text\": \"a b\", \"label\": 1, \"ok\": true, \"pair\": null}\n"
                              "\n"
                              "{\"text\": \"c\", \"label\": \"positive\", \"x\": [1]}\r\n");
  const Records r = Records::read({f});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.require(0, "text"), "a b");
  EXPECT_EQ(r.require(0, "label"), "1");
  EXPECT_EQ(r.require(0, "ok"), "true");
  EXPECT_FALSE(r.get(0, "pair").has_value());  // null: missing
  EXPECT_EQ(r.require(1, "label"), "positive");
  EXPECT_EQ(r.origin(1), f + ":3");
  const std::string missing = [&] {
    try {
      r.require(1, "pair");
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("(no error)");
  }();
  EXPECT_NE(missing.find(f + ":3: the record has no field 'pair'"), std::string::npos) << missing;
  EXPECT_THROW(r.get(1, "x"), Error);  // an array is not a field value
  EXPECT_NE(error_of({write(dir, "bad.jsonl", "{\"a\": 1}\n{\"a\": \n")}).find("bad.jsonl:2"),
            std::string::npos);
  EXPECT_NE(
      error_of({write(dir, "arr.jsonl", "[1, 2]\n")}).find("arr.jsonl:1: expected a JSON object"),
      std::string::npos);
}

TEST(Records, CsvQuotingLineEndsAndOrigins) {
  testing::TempDir dir;
  const std::string f = write(dir, "r.csv",
                              "\xEF\xBB\xBFsentence1,sentence2,label\r\n"
                              "plain,\"with, comma\",1\r\n"
                              "\r\n"
                              "\"two\nlines\",\"say \"\"hi\"\"\",0\n"
                              "\"\",last,1");
  const Records r = Records::read({f});
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r.require(0, "sentence1"), "plain");  // the BOM is not part of the first name
  EXPECT_EQ(r.require(0, "sentence2"), "with, comma");
  EXPECT_EQ(r.require(1, "sentence1"), "two\nlines");
  EXPECT_EQ(r.require(1, "sentence2"), "say \"hi\"");
  EXPECT_EQ(r.origin(1), f + ":4");
  EXPECT_EQ(r.require(2, "sentence1"), "");
  EXPECT_EQ(r.require(2, "label"), "1");
  EXPECT_EQ(r.origin(2), f + ":6");  // after the two-line record
  EXPECT_EQ(r.fields(), (std::vector<std::string>{"sentence1", "sentence2", "label"}));
}

TEST(Records, TsvHoldsTabsInQuotes) {
  testing::TempDir dir;
  const std::string f = write(dir, "r.tsv", "a\tb\nx,y\t\"tab\there\"\n");
  const Records r = Records::read({f});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r.require(0, "a"), "x,y");
  EXPECT_EQ(r.require(0, "b"), "tab\there");
}

TEST(Records, BadRowsAreNamedByFileAndLine) {
  testing::TempDir dir;
  EXPECT_NE(error_of({write(dir, "n.csv", "a,b\n1,2\n1,2,3\n")})
                .find("n.csv:3: 3 fields, but the header row has 2"),
            std::string::npos);
  EXPECT_NE(error_of({write(dir, "q.csv", "a,b\n1,2\n\"open,2\n3,4\n")})
                .find("q.csv:3: a quoted field is not closed"),
            std::string::npos);
  EXPECT_NE(error_of({write(dir, "t.csv", "a,b\n\"x\"y,2\n")})
                .find("t.csv:2: text after the closing quote"),
            std::string::npos);
  EXPECT_NE(error_of({write(dir, "e.csv", "")}).find("e.csv: no header row"), std::string::npos);
  EXPECT_NE(
      error_of({write(dir, "d.csv", "a,a\n1,2\n")}).find("d.csv:1: the header row names 'a' twice"),
      std::string::npos);
  EXPECT_NE(error_of({write(dir, "u.csv", "a\n\xff\n")}).find("u.csv:2: not valid UTF-8"),
            std::string::npos);
  EXPECT_NE(error_of({write(dir, "x.txt", "a\n")}).find("x.txt: records come from"),
            std::string::npos);
}

TEST(Records, LabelsAreIdsOrNamesThroughLabel2id) {
  testing::TempDir dir;
  const Records r = Records::read({write(dir, "l.tsv",
                                         "text\tlabel\tscore\n"
                                         "a\t1\t0.5\n"
                                         "b\tpositive\t-2\n"
                                         "c\t7\tnan\n"
                                         "d\tmaybe\t1e3\n")});
  const std::vector<std::pair<std::string, int64_t>> label2id = {{"negative", 0}, {"positive", 1}};
  EXPECT_EQ(class_label(r, 0, "label", label2id, 2), 1);
  EXPECT_EQ(class_label(r, 1, "label", label2id, 2), 1);
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("(no error)");
  };
  EXPECT_NE(message([&] { class_label(r, 2, "label", label2id, 2); }).find("l.tsv:4: label 7"),
            std::string::npos);
  const std::string unknown = message([&] { class_label(r, 3, "label", label2id, 2); });
  EXPECT_NE(unknown.find("l.tsv:5: label 'maybe'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("negative, positive"), std::string::npos) << unknown;
  EXPECT_EQ(regression_target(r, 0, "score"), 0.5);
  EXPECT_EQ(regression_target(r, 3, "score"), 1000.0);
  EXPECT_NE(message([&] { regression_target(r, 2, "score"); }).find("not a finite number"),
            std::string::npos);
}

}  // namespace
}  // namespace hfrun::data
