// The fine-tuning tasks' batches (data/task_loader.h): the global batch does not depend on the
// world size (nor do masked-LM's masks), each batch knows its step's counted targets and tokens,
// a restored loader continues exactly, validation covers every record once, and bad records
// are named by file:line.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include "common/error.h"
#include "data/task_loader.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

Tokenizer tiny() {
  return testing::tiny_task_tokenizer();
}

std::string write(testing::TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// 11 records of different lengths.
std::string sft_records(testing::TempDir& dir) {
  std::string text;
  const char* prompts[] = {"a", "ab", "abc", "abcd", "b", "bc", "bcd", "c", "cd", "d", "abcde"};
  const char* completions[] = {"e", "de", "cde", "bcde", "a", "ee", "e", "dd", "abc", "e", "ab"};
  for (int i = 0; i < 11; ++i) {
    text += std::string("{\"prompt\": \"") + prompts[i] + "\", \"completion\": \"" +
            completions[i] + "\"}\n";
  }
  return write(dir, "sft.jsonl", text);
}

std::vector<int64_t> ints(const Tensor& t) {
  std::vector<int64_t> out;
  for (float x : t.to_vector()) out.push_back(static_cast<int64_t>(x));
  return out;
}

std::vector<int32_t> row(const Tensor& t, int64_t r) {
  std::vector<int32_t> out;
  const std::vector<int64_t> v = ints(t);
  for (int64_t j = 0; j < t.size(1); ++j) out.push_back(static_cast<int32_t>(v[r * t.size(1) + j]));
  return out;
}

// Every row the ranks train on at each micro step, keyed by flat position, as (inputs, targets)
// without padding.
using Rows = std::map<int64_t, std::pair<std::vector<int32_t>, std::vector<int32_t>>>;
Rows global_rows(const std::shared_ptr<const TaskDataset>& data, int64_t world, int64_t micro,
                 int64_t accum, int64_t steps, std::vector<int64_t>* counted = nullptr) {
  Rows rows;
  for (int64_t r = 0; r < world; ++r) {
    LoaderOptions o;
    o.micro_batch = micro;
    o.grad_accum = accum;
    o.world = world;
    o.rank = r;
    o.shuffle = true;
    o.seed = 5;
    RecordLoader loader(data, o);
    for (int64_t k = 0; k < steps * accum; ++k) {
      const TaskBatch b = loader.next();
      const std::vector<int64_t> len = ints(b.lengths);
      if (counted != nullptr && r == 0 && b.micro_step == 0) counted->push_back(b.step_counted);
      for (size_t i = 0; i < b.samples.size(); ++i) {
        const int64_t pos = BatchLayout{micro, accum, world}.position(b.step, b.micro_step, r) +
                            static_cast<int64_t>(i);
        std::vector<int32_t> in = row(b.batch.inputs, static_cast<int64_t>(i));
        std::vector<int32_t> tg = row(b.batch.targets, static_cast<int64_t>(i));
        in.resize(static_cast<size_t>(len[i]));
        tg.resize(static_cast<size_t>(len[i]));
        rows[pos] = {in, tg};
      }
    }
  }
  return rows;
}

TEST(TaskLoader, GlobalBatchesAndCountsDoNotDependOnTheWorldSize) {
  testing::TempDir dir;
  const Tokenizer tok = tiny();
  for (RecordTask task : {RecordTask::kSft, RecordTask::kMaskedLM}) {
    RecordTaskOptions o;
    o.task = task;
    o.seq_len = 6;
    o.text_field = "prompt";
    o.mlm_probability = 0.5;
    o.seed = 9;
    auto data = std::make_shared<TaskDataset>(Records::read({sft_records(dir)}), tok, o);
    ASSERT_EQ(data->size(), 11);
    std::vector<int64_t> counted1, counted2, counted4;
    // G = 4: world 1 x micro 2 x accum 2 = world 2 x micro 2 = world 4 x micro 1.
    const Rows one = global_rows(data, 1, 2, 2, 6, &counted1);
    EXPECT_EQ(global_rows(data, 2, 2, 1, 6, &counted2), one);
    EXPECT_EQ(global_rows(data, 4, 1, 1, 6, &counted4), one);
    EXPECT_EQ(counted2, counted1);
    EXPECT_EQ(counted4, counted1);
    // step_counted is the step's counted targets over every rank and micro step.
    for (int64_t s = 0; s < 6; ++s) {
      int64_t n = 0;
      for (int64_t k = s * 4; k < (s + 1) * 4; ++k) {
        for (int32_t t : one.at(k).second) n += t != kIgnoreTarget;
      }
      EXPECT_EQ(counted1[static_cast<size_t>(s)], n) << "step " << s;
    }
  }
}

TEST(TaskLoader, RestoreContinuesExactlyAndPaddingIsMasked) {
  testing::TempDir dir;
  const Tokenizer tok = tiny();
  RecordTaskOptions o;
  o.seq_len = 8;
  auto data = std::make_shared<TaskDataset>(Records::read({sft_records(dir)}), tok, o);
  LoaderOptions lo;
  lo.micro_batch = 3;
  lo.grad_accum = 2;
  lo.shuffle = true;
  lo.seed = 1;
  RecordLoader a(data, lo);
  for (int i = 0; i < 5; ++i) a.next();
  const LoaderState st = a.state();
  const TaskBatch want = a.next();
  RecordLoader b(data, lo);
  b.restore(st);
  const TaskBatch got = b.next();
  EXPECT_EQ(got.samples, want.samples);
  EXPECT_EQ(ints(got.batch.inputs), ints(want.batch.inputs));
  // Rows are padded to the longest: padding has mask 0 and is never counted.
  const std::vector<int64_t> len = ints(got.lengths);
  const std::vector<int64_t> mask = ints(got.batch.attention_mask);
  const std::vector<int64_t> tg = ints(got.batch.targets);
  const int64_t T = got.batch.inputs.size(1);
  EXPECT_EQ(T, *std::max_element(len.begin(), len.end()));
  for (size_t r = 0; r < len.size(); ++r) {
    for (int64_t j = len[r]; j < T; ++j) {
      EXPECT_EQ(mask[r * static_cast<size_t>(T) + static_cast<size_t>(j)], 0);
      EXPECT_EQ(tg[r * static_cast<size_t>(T) + static_cast<size_t>(j)], kIgnoreTarget);
    }
  }
  // A state of another global batch is refused.
  LoaderOptions other = lo;
  other.micro_batch = 2;
  RecordLoader c(data, other);
  EXPECT_THROW(c.restore(st), Error);
}

TEST(TaskLoader, ValidationCoversEveryRecordOnceOverTheRanks) {
  testing::TempDir dir;
  const Tokenizer tok = tiny();
  RecordTaskOptions o;
  o.seq_len = 8;
  auto data = std::make_shared<TaskDataset>(Records::read({sft_records(dir)}), tok, o);
  std::multiset<int64_t> seen;
  int64_t batches = -1;
  for (int64_t r = 0; r < 3; ++r) {
    RecordValidationLoader val(data, 2, r, 3);
    if (batches < 0) batches = val.num_batches();
    EXPECT_EQ(val.num_batches(), batches);
    int64_t n = 0;
    while (auto b = val.next()) {
      seen.insert(b->samples.begin(), b->samples.end());
      ++n;
    }
    EXPECT_EQ(n, batches);  // the same number on every rank (some of them empty)
  }
  EXPECT_EQ(seen.size(), 11u);
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 11u);
}

TEST(TaskLoader, ClassificationLabelsAndErrorsNameTheRecord) {
  testing::TempDir dir;
  const Tokenizer tok = tiny();
  RecordTaskOptions o;
  o.task = RecordTask::kSequenceClassification;
  o.seq_len = 4;
  o.text_pair_field = "b";
  o.text_field = "a";
  o.label2id = {{"no", 0}, {"yes", 1}};
  const std::string good = write(dir, "pairs.tsv", "a\tb\tlabel\nabc\tde\tyes\nab\tcdeab\t0\n");
  TaskDataset data(Records::read({good}), tok, o);
  EXPECT_EQ(data.class_id(0), 1);
  EXPECT_EQ(data.class_id(1), 0);
  // longest_first truncation to seq_len with the specials: <s> and 3 tokens, shared as HF does
  // (half each, the remainder to the second text): <s> a, c d.
  const TokenExample e = data.example(1, 1);
  EXPECT_EQ(e.inputs, (std::vector<int32_t>{1, 3, 5, 6}));
  EXPECT_EQ(e.type_ids, (std::vector<int32_t>{0, 0, 1, 1}));
  const TaskBatch b = make_task_batch(data, {0, 1}, {0, 1});
  EXPECT_EQ(ints(b.labels), (std::vector<int64_t>{1, 0}));

  auto error_of = [&](const std::string& text) {
    try {
      TaskDataset(Records::read({write(dir, "bad.tsv", text)}), tok, o);
    } catch (const Error& err) {
      return err.message();
    }
    return std::string("(no error)");
  };
  std::string msg = error_of("a\tb\tlabel\nab\tc\tyes\nab\tc\tmaybe\n");
  EXPECT_NE(msg.find("bad.tsv:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("maybe"), std::string::npos) << msg;
  msg = error_of("a\tlabel\nab\tyes\n");
  EXPECT_NE(msg.find("bad.tsv:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b"), std::string::npos) << msg;
  // masked_lm needs a mask token.
  RecordTaskOptions m;
  m.task = RecordTask::kMaskedLM;
  const Tokenizer no_mask = Tokenizer::from_json(
      R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})", "nomask.json");
  try {
    TaskDataset(Records::read({good}), no_mask, m);
    ADD_FAILURE() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(err.message().find("mask"), std::string::npos) << err.message();
  }
}

}  // namespace
}  // namespace hfrun::data
