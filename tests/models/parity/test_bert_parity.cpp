// BERT against a float64 PyTorch reference of Hugging Face's modeling code
// (tests/models/reference/bert_reference.py): masked LM with padding, a pad id inside a row and
// the tied decoder; sentence-pair classification with token types; regression (num_labels 1).
// Logits, loss and every parameter gradient; for classification a few AdamW steps with
// clipping (per-step losses, final weights).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/node.h"
#include "models/registry.h"
#include "optim/clip.h"
#include "optim/optimizer.h"
#include "parity_util.h"
#include "tensor/ops.h"

namespace hfrun::nn {
namespace {

using testing::ints;
using testing::rel_err;

// The key projection's bias adds q . b_k to every score of a row, which softmax cancels: its
// gradient is zero up to rounding (in PyTorch too), so only its size is checked.
bool zero_gradient(const std::string& name) {
  const std::string suffix = "attention.self.key.bias";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

double norm(const Tensor& t) {
  double s = 0;
  for (float x : t.to_vector()) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

Task task_of(const nlohmann::json& c) {
  return c["task"] == "masked_lm" ? Task::kMaskedLM : Task::kSequenceClassification;
}

std::unique_ptr<Model> model_of(const nlohmann::json& c, const nlohmann::json& params) {
  auto model =
      create_model(c["config"].dump(), c["name"].get<std::string>(), 0, "bert", task_of(c));
  model->flatten_parameters();
  EXPECT_EQ(model->named_parameters().size(), params.size()) << c["name"];
  for (const auto& [name, p] : params.items()) {
    const nlohmann::json& d = p.is_object() ? p["data"] : p;
    const Shape shape = model->parameter(name).sizes();
    model->load_parameter(name, ops::from_vector(d.get<std::vector<float>>(), shape));
  }
  return model;
}

ModelInputs inputs_of(const nlohmann::json& b) {
  return {ints(b["ids"]), ints(b["type_ids"]),
          ops::from_ints(b["lengths"].get<std::vector<int64_t>>(),
                         {static_cast<int64_t>(b["lengths"].size())})};
}

Tensor targets_of(const nlohmann::json& c, const nlohmann::json& b) {
  if (c["task"] == "masked_lm") return ints(b["targets"]);
  const nlohmann::json& t = b["targets"];
  if (t[0].is_number_float()) {
    return ops::from_vector(t.get<std::vector<float>>(), {static_cast<int64_t>(t.size())});
  }
  return ops::from_ints(t.get<std::vector<int64_t>>(), {static_cast<int64_t>(t.size())});
}

class BertParity : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    ref_ = testing::load_reference("HFRUN_BERT_REFERENCE");
    ASSERT_FALSE(ref_.is_null()) << "HFRUN_BERT_REFERENCE is not set";
    case_ = ref_["cases"][GetParam()];
  }
  nlohmann::json ref_, case_;
};

TEST_P(BertParity, LogitsLossAndGradientsMatchPyTorch) {
  auto model = model_of(case_, case_["params"]);
  std::vector<std::string> want_names, names;
  for (const auto& [name, p] : case_["params"].items()) want_names.push_back(name);
  for (const auto& [name, t] : model->named_parameters()) names.push_back(name);
  std::sort(want_names.begin(), want_names.end());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, want_names);

  const ModelInputs in = inputs_of(case_["batch"]);
  {
    autograd::NoGradGuard no_grad;
    Tensor logits = model->forward(in);
    EXPECT_LT(rel_err(logits.to_vector(), case_["logits"].get<std::vector<double>>()), 1e-5);
  }
  model->zero_grad();
  Tensor loss = model->loss(in, targets_of(case_, case_["batch"]));
  const double want_loss = case_["loss"].get<double>();
  EXPECT_NEAR(loss.item(), want_loss, 1e-5 * std::fabs(want_loss));
  autograd::backward(loss);
  for (const auto& [name, t] : model->named_parameters()) {
    const double err =
        rel_err(t.grad().to_vector(), case_["grads"][name].get<std::vector<double>>());
    if (zero_gradient(name)) {
      EXPECT_LT(norm(t.grad()), 1e-6) << name << ": softmax cancels it";
    } else {
      EXPECT_LT(err, 1e-4) << name;
    }
  }
}

TEST_P(BertParity, AdamWTrainingMatchesPyTorch) {
  if (!case_.contains("train_steps")) GTEST_SKIP() << "forward and backward only";
  auto model = model_of(case_, case_["params"]);
  const nlohmann::json& a = case_["adamw"];
  optim::AdamWOptions o;
  o.lr = a["lr"].get<double>();
  o.betas = {a["betas"][0].get<double>(), a["betas"][1].get<double>()};
  o.eps = a["eps"].get<double>();
  o.weight_decay = a["weight_decay"].get<double>();
  optim::AdamW opt(optim::param_refs(model->named_parameters()), o);
  for (const auto& s : case_["train_steps"]) {
    model->zero_grad();
    Tensor loss = model->loss(inputs_of(s), targets_of(case_, s));
    const double want = s["loss"].get<double>();
    EXPECT_NEAR(loss.item(), want, 1e-5 * std::fabs(want) + 1e-7);
    autograd::backward(loss);
    const double norm = optim::clip_grad_norm(model->parameters(), a["max_norm"].get<double>());
    EXPECT_NEAR(norm, s["grad_norm"].get<double>(), 1e-4 * s["grad_norm"].get<double>());
    opt.step();
  }
  // Adam normalises each element's gradient, so where the gradient is tiny its float rounding
  // moves the weight by up to lr per step: tolerances are looser than the gradients' here.
  for (const auto& [name, t] : model->named_parameters()) {
    if (zero_gradient(name)) continue;
    EXPECT_LT(rel_err(t.to_vector(), case_["final_params"][name].get<std::vector<double>>()), 1e-3)
        << name;
  }
}

std::string case_name(const ::testing::TestParamInfo<int>& info) {
  static const std::vector<std::string> names = {"mlm_gelu", "pairs_cls", "regression"};
  return names[static_cast<size_t>(info.param)];
}

INSTANTIATE_TEST_SUITE_P(Cases, BertParity, ::testing::Values(0, 1, 2), case_name);

}  // namespace
}  // namespace hfrun::nn
