#include "distributed/parallel/tensor_parallel.h"

#include <vector>

#include "common/error.h"
#include "nn/layers.h"

namespace hfrun::dist {

int apply_tensor_parallel(nn::Module& model, nn::TensorParallelGroup& group) {
  HF_CHECK(model.flat() == nullptr,
           "apply_tensor_parallel: apply the plan before flatten_parameters()");
  const nn::TensorParallelPlan plan = model.tensor_parallel_plan();
  HF_CHECK_INPUT(!plan.empty(), "distributed.tensor_parallel ", group.size(),
                 ": this model declares no tensor-parallel plan");
  const auto modules = model.named_modules();
  std::vector<bool> used(plan.size(), false);
  int count = 0;
  for (const auto& [path, module] : modules) {
    for (size_t r = 0; r < plan.size(); ++r) {
      const nn::TensorParallelRule& rule = plan[r];
      if (!nn::matches_plan_pattern(rule.pattern, path)) continue;
      auto* layer = dynamic_cast<nn::ParallelLayer*>(module);
      HF_CHECK(layer != nullptr, "tensor parallel plan: '", rule.pattern, "' matches ", path,
               ", which is not a Linear, Embedding or norm");
      layer->parallelize(rule.style, rule.groups, &group, path);
      used[r] = true;
      ++count;
      break;  // the first matching rule decides, as in HF's plans
    }
  }
  for (size_t r = 0; r < plan.size(); ++r) {
    HF_CHECK(used[r], "tensor parallel plan: '", plan[r].pattern, "' matches no module");
  }
  return count;
}

}  // namespace hfrun::dist
