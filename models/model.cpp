#include "models/model.h"

#include "autograd/functions.h"
#include "common/error.h"
#include "tensor/ops.h"

namespace hfrun::nn {

const char* task_name(Task task) {
  switch (task) {
    case Task::kCausalLM:
      return "causal_lm";
    case Task::kMaskedLM:
      return "masked_lm";
    case Task::kSequenceClassification:
      return "sequence_classification";
  }
  return "?";
}

int64_t Model::check_inputs(const ModelInputs& in) const {
  HF_CHECK(in.ids.defined() && in.ids.dim() == 2, model_type(), ": ids must be [B, T], got ",
           in.ids.defined() ? in.ids.str() : std::string("undefined"));
  HF_CHECK(!in.type_ids.defined() || in.type_ids.sizes() == in.ids.sizes(), model_type(),
           ": type_ids ", in.type_ids.str(), " must match ids ", in.ids.str());
  HF_CHECK(!in.lengths.defined() || (in.lengths.dim() == 1 && in.lengths.size(0) == in.ids.size(0)),
           model_type(), ": lengths ", in.lengths.str(), " must be [B] for ids ", in.ids.str());
  return in.ids.size(1);
}

Tensor Model::loss(const ModelInputs& in, const Tensor& targets) {
  if (task() == Task::kSequenceClassification) {
    HF_CHECK(targets.dim() == 1 && targets.size(0) == in.ids.size(0), model_type(), ": labels ",
             targets.str(), " must be [B] for ids ", in.ids.str());
    Tensor logits = forward(in);  // [B, num_labels]
    const LabelConfig* l = labels();
    HF_CHECK(l != nullptr, model_type(), ": a sequence classifier without labels");
    if (l->regression()) {
      HF_CHECK(is_floating(targets.dtype()), model_type(),
               ": a regression model (num_labels 1) needs floating labels, got ", targets.str());
      Tensor diff = sub(reshape(logits, {logits.size(0)}), to_dtype(targets, logits.dtype()));
      return mean(mul(diff, diff));
    }
    HF_CHECK(!is_floating(targets.dtype()), model_type(), ": classification labels must be ",
             "class ids, got ", targets.str());
    return cross_entropy(logits, targets);
  }
  HF_CHECK(targets.sizes() == in.ids.sizes(), model_type(), ": targets ", targets.str(),
           " must match ids ", in.ids.str());
  if (has_token_loss()) return hooked([&] { return token_loss(in, targets); });
  return logits_loss(forward(in), targets, output_layer());
}

Tensor logits_loss(const Tensor& logits, const Tensor& targets, const ParallelLayer* head) {
  if (head != nullptr && head->is_parallel()) {
    return vocab_parallel_cross_entropy(logits, targets, head->vocab_begin(),
                                        *head->parallel_group());
  }
  return cross_entropy(logits, targets);
}

Tensor Model::token_loss(const ModelInputs&, const Tensor&) {
  HF_THROW(model_type(), ": the model does not fuse its token loss");
}

std::unique_ptr<Linear> normal_linear(int64_t in, int64_t out, bool bias, Generator& gen,
                                      double std) {
  Tensor w = ops::randn({out, in}, gen, DType::kF32, 0.0, std);
  return std::make_unique<Linear>(std::move(w), bias ? ops::zeros({out}) : Tensor());
}

Tensor positions(int64_t start, int64_t T, Device device) {
  std::vector<int64_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = start + i;
  return ops::to_device(ops::from_ints(pos, {T}), device);
}

CountedRows counted_rows(const Tensor& x, const Tensor& targets) {
  const int64_t C = x.size(-1);
  HF_CHECK(targets.numel() * C == x.numel(), "counted_rows: targets ", targets.str(),
           " do not match hidden states ", x.str());
  const std::vector<int64_t> all = targets.to_int_vector();
  std::vector<int64_t> rows, kept;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] == -100) continue;
    rows.push_back(static_cast<int64_t>(i));
    kept.push_back(all[i]);
  }
  const Tensor flat = reshape(x, {-1, C});
  const Device dev = x.device();
  if (rows.size() == all.size()) {
    return {flat, ops::to_device(ops::to_dtype(ops::reshape(targets, {-1}), DType::kI64), dev)};
  }
  if (rows.empty()) {
    rows.push_back(0);
    kept.push_back(-100);
  }
  const int64_t M = static_cast<int64_t>(rows.size());
  // embedding() of the flattened rows: a gather whose backward adds each row's gradient back.
  return {embedding(flat, ops::to_device(ops::from_ints(rows, {M}), dev)),
          ops::to_device(ops::from_ints(kept, {M}), dev)};
}

}  // namespace hfrun::nn
