#include "nn/lora.h"

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>

#include "common/error.h"
#include "nn/layers.h"
#include "tensor/ops.h"

namespace hfrun::nn {

double LoraOptions::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

bool lora_target_matches(const std::string& path, const std::string& target) {
  if (path == target) return true;
  return path.size() > target.size() &&
         path.compare(path.size() - target.size(), target.size(), target) == 0 &&
         path[path.size() - target.size() - 1] == '.';
}

std::vector<std::string> all_linear_names(Module& model, const std::vector<std::string>& exclude) {
  std::set<std::string> names;
  for (const auto& [path, m] : model.named_modules()) {
    if (dynamic_cast<Linear*>(m) == nullptr || path.empty()) continue;
    if (path.find(".lora_") != std::string::npos) continue;
    if (std::find(exclude.begin(), exclude.end(), path) != exclude.end()) continue;
    names.insert(path.substr(path.rfind('.') + 1));
  }
  return {names.begin(), names.end()};
}

std::vector<std::string> apply_lora(Module& model, const LoraOptions& o, Generator& init,
                                    Generator* dropout, const std::string& source,
                                    const std::vector<std::string>& exclude) {
  HF_CHECK_INPUT(o.r >= 1, source, ": peft.r must be at least 1, got ", o.r);
  HF_CHECK_INPUT(o.dropout >= 0 && o.dropout < 1, source, ": peft.dropout must be in [0, 1), got ",
                 o.dropout);
  std::vector<std::string> targets = o.target_modules;
  const bool regex = !o.target_regex.empty();
  const bool all_linear = !regex && targets.size() == 1 && targets[0] == "all-linear";
  if (all_linear) targets = all_linear_names(model, exclude);
  std::regex pattern;
  if (regex) {
    try {
      pattern = std::regex(o.target_regex);
    } catch (const std::regex_error& e) {
      HF_CHECK_INPUT(false, source, ": target_modules '", o.target_regex,
                     "' is not a regular expression (", e.what(), ")");
    }
  }
  HF_CHECK_INPUT(regex || !targets.empty(), source, ": peft.target_modules names no module");
  // The modules saved whole, and the Linear layers that get adapters (not those).
  std::vector<std::string> saved;
  for (const std::string& name : o.modules_to_save) {
    bool found = false;
    for (const auto& [path, m] : model.named_modules()) {
      if (!path.empty() && lora_target_matches(path, name)) {
        saved.push_back(path);
        found = true;
      }
    }
    HF_CHECK_INPUT(found, source, ": peft.modules_to_save '", name, "' matches no module of the ",
                   "model");
  }
  auto is_saved = [&](const std::string& path) {
    for (const std::string& s : saved) {
      if (path == s || path.rfind(s + ".", 0) == 0) return true;
    }
    return false;
  };
  std::vector<std::pair<std::string, Linear*>> layers;
  std::vector<bool> used(targets.size(), false);
  for (const auto& [path, m] : model.named_modules()) {
    auto* linear = dynamic_cast<Linear*>(m);
    if (linear == nullptr || path.empty() || is_saved(path)) continue;
    if (all_linear && std::find(exclude.begin(), exclude.end(), path) != exclude.end()) continue;
    bool hit = regex && std::regex_match(path, pattern);
    for (size_t t = 0; t < targets.size() && !regex; ++t) {
      if (lora_target_matches(path, targets[t])) used[t] = hit = true;
    }
    if (hit) layers.emplace_back(path, linear);
  }
  for (size_t t = 0; t < targets.size() && !all_linear && !regex; ++t) {
    HF_CHECK_INPUT(used[t], source, ": peft.target_modules '", targets[t],
                   "' matches no Linear layer of the model");
  }
  HF_CHECK_INPUT(!layers.empty(), source, ": peft.target_modules matches no Linear layer");
  std::vector<std::string> adapted;
  for (auto& [path, linear] : layers) {
    const int64_t in = linear->in_features(), out = linear->out_features();
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));  // kaiming_uniform_(a=sqrt(5))
    Tensor a = ops::rand({o.r, in}, init, DType::kF32, -bound, bound);
    linear->add_lora(std::move(a), ops::zeros({out, o.r}), o.scaling(), o.dropout, dropout);
    adapted.push_back(path);
  }
  model.set_trainable([&](const std::string& name) {
    if (name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos) {
      return true;
    }
    const std::string owner = name.substr(0, name.rfind('.'));
    return is_saved(owner);
  });
  return adapted;
}

std::vector<std::string> lora_modules(Module& model) {
  std::vector<std::string> out;
  for (const auto& [path, m] : model.named_modules()) {
    auto* linear = dynamic_cast<Linear*>(m);
    if (linear != nullptr && linear->lora_A() != nullptr) out.push_back(path);
  }
  return out;
}

Tensor merged_lora_weight(const Tensor& weight, bool in_out_layout, const Tensor& a,
                          const Tensor& b, double scale) {
  Tensor delta = ops::mul_scalar(ops::matmul(b, a), scale);  // [out, in]
  if (in_out_layout) delta = ops::contiguous(ops::transpose(delta, 0, 1));
  return ops::add(weight, delta);
}

}  // namespace hfrun::nn
