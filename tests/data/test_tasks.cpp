// The token examples of the fine-tuning tasks (data/tasks.h): sft's prompt masking and cut,
// masked-LM's HF collator rule with draws fixed by (seed, sample, position).
#include <gtest/gtest.h>

#include <string>

#include "data/tasks.h"
#include "data_test_util.h"

namespace hfrun::data {
namespace {

using Ids = std::vector<int32_t>;

Tokenizer tiny() {
  return testing::tiny_task_tokenizer();
}

TEST(Tasks, SftCountsOnlyCompletionTargets) {
  const Tokenizer tok = tiny();
  // ids: <s> a b | c d | </s>; the prompt is <s> a b.
  const TokenExample e = sft_example(tok, "ab", "cd", 2, 16);
  EXPECT_EQ(e.inputs, (Ids{1, 3, 4, 5, 6}));
  EXPECT_EQ(e.targets, (Ids{kIgnoreTarget, kIgnoreTarget, 5, 6, 2}));
  // Cut to seq_len + 1 ids: the eos goes first.
  const TokenExample cut = sft_example(tok, "ab", "cde", 2, 4);
  EXPECT_EQ(cut.inputs, (Ids{1, 3, 4, 5}));
  EXPECT_EQ(cut.targets, (Ids{kIgnoreTarget, kIgnoreTarget, 5, 6}));
  // A prompt longer than the window leaves nothing counted.
  const TokenExample none = sft_example(tok, "abcde", "a", 2, 3);
  EXPECT_EQ(none.targets, (Ids{kIgnoreTarget, kIgnoreTarget, kIgnoreTarget}));
}

TEST(Tasks, MaskedLmFollowsTheCollatorRuleAndIsReproducible) {
  const Tokenizer tok = tiny();
  ASSERT_EQ(mask_token_id(tok), 0);
  Ids ids;
  for (int i = 0; i < 20000; ++i) ids.push_back(i % 50 == 0 ? 1 : 3 + i % 5);  // some <s>
  const TokenExample e = mask_tokens(ids, tok, 0, 0.15, 42, 7);
  int chosen = 0, masked = 0, random = 0, kept = 0, specials = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == 1) {
      ++specials;
      EXPECT_EQ(e.targets[i], kIgnoreTarget);  // special tokens are never chosen
      EXPECT_EQ(e.inputs[i], 1);
      continue;
    }
    if (e.targets[i] == kIgnoreTarget) {
      EXPECT_EQ(e.inputs[i], ids[i]);
      continue;
    }
    ++chosen;
    EXPECT_EQ(e.targets[i], ids[i]);
    if (e.inputs[i] == 0) {
      ++masked;
    } else if (e.inputs[i] == ids[i]) {
      ++kept;  // includes random draws that hit the same token (1 in 8)
    } else {
      ++random;
    }
  }
  const double n = static_cast<double>(ids.size() - specials);
  EXPECT_NEAR(chosen / n, 0.15, 0.01);
  EXPECT_NEAR(masked / static_cast<double>(chosen), 0.8, 0.03);
  EXPECT_NEAR(random / static_cast<double>(chosen), 0.1 * 7 / 8, 0.03);
  EXPECT_NEAR(kept / static_cast<double>(chosen), 0.1 + 0.1 / 8, 0.03);
  // The same sample masks the same way wherever it is drawn; another sample differently.
  const TokenExample again = mask_tokens(ids, tok, 0, 0.15, 42, 7);
  EXPECT_EQ(again.inputs, e.inputs);
  EXPECT_EQ(again.targets, e.targets);
  EXPECT_NE(mask_tokens(ids, tok, 0, 0.15, 42, 8).targets, e.targets);
  EXPECT_NE(mask_tokens(ids, tok, 0, 0.15, 43, 7).targets, e.targets);
  // A prefix of a sample masks as the whole sample does (draws are per position).
  const Ids head(ids.begin(), ids.begin() + 100);
  const TokenExample part = mask_tokens(head, tok, 0, 0.15, 42, 7);
  EXPECT_EQ(part.targets, Ids(e.targets.begin(), e.targets.begin() + 100));
}

TEST(Tasks, ExamplesArePaddedOnTheRightToTheLongest) {
  std::vector<TokenExample> examples(3);
  examples[0].inputs = {5, 6, 7};
  examples[0].targets = {kIgnoreTarget, 7, 2};
  examples[1].inputs = {5};
  examples[1].targets = {6};
  examples[2].inputs = {8, 9};
  examples[2].targets = {9, kIgnoreTarget};
  const PaddedBatch b = pad_examples(examples, /*pad_id=*/0);
  EXPECT_EQ(b.inputs.sizes(), (Shape{3, 3}));
  EXPECT_EQ(b.inputs.to_int_vector(), (std::vector<int64_t>{5, 6, 7, 5, 0, 0, 8, 9, 0}));
  EXPECT_EQ(b.attention_mask.to_int_vector(), (std::vector<int64_t>{1, 1, 1, 1, 0, 0, 1, 1, 0}));
  EXPECT_EQ(b.targets.to_int_vector(),
            (std::vector<int64_t>{-100, 7, 2, 6, -100, -100, 9, -100, -100}));
  EXPECT_EQ(b.counted, 4);
  EXPECT_FALSE(b.type_ids.defined());
  // Pairs carry type ids (0 at padding); classification examples have no targets.
  std::vector<TokenExample> pairs(2);
  pairs[0].inputs = {2, 8, 3, 9, 3};
  pairs[0].type_ids = {0, 0, 0, 1, 1};
  pairs[1].inputs = {2, 8, 3};
  pairs[1].type_ids = {0, 0, 0};
  const PaddedBatch p = pad_examples(pairs, 0);
  EXPECT_EQ(p.type_ids.to_int_vector(), (std::vector<int64_t>{0, 0, 0, 1, 1, 0, 0, 0, 0, 0}));
  EXPECT_FALSE(p.targets.defined());
  EXPECT_EQ(p.counted, 0);
}

}  // namespace
}  // namespace hfrun::data
