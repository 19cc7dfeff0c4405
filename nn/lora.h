// LoRA with PEFT's semantics on any module tree: adapters on the Linear layers that
// target_modules names (module-path suffixes at a dot, as PEFT matches them, or all-linear),
// every other parameter frozen except the modules_to_save, which train whole.
//   y = W x + s * B(A(dropout(x))),  s = alpha / r  (alpha / sqrt(r) with use_rslora)
//   A [r, in] kaiming-uniform (a = sqrt(5)) as nn.Linear's weight, B [out, r] zero
// A Linear in GPT-2's Conv1D layout keeps A and B in nn.Linear layout (PEFT's fan_in_fan_out).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/random.h"

namespace hfrun::nn {

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool use_rslora = false;
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};  // or {"all-linear"}
  // A PEFT adapter's target_modules given as one string other than all-linear: a regular
  // expression the whole module path must match (PEFT's re.fullmatch); replaces the list.
  std::string target_regex;
  std::vector<std::string> modules_to_save;
  double scaling() const;
};

// Whether module `path` is named by `target` as PEFT matches it: equal, or ending in "." + target.
bool lora_target_matches(const std::string& path, const std::string& target);

// The leaf names of every Linear in `model` except the `exclude` ones (the output layer, a
// classification head): what all-linear expands to, as PEFT expands it.
std::vector<std::string> all_linear_names(Module& model, const std::vector<std::string>& exclude);

// Adds an adapter to every Linear that target_modules names (all-linear expanded with
// `exclude`), initialised from `init`; freezes every parameter but the adapters' and the
// modules_to_save's. Returns the adapted module paths. A target or a module to save that
// matches nothing is an invalid-input error naming it and `source`.
std::vector<std::string> apply_lora(Module& model, const LoraOptions& options, Generator& init,
                                    Generator* dropout, const std::string& source,
                                    const std::vector<std::string>& exclude = {});

// The module paths of `model`'s adapters.
std::vector<std::string> lora_modules(Module& model);

// W + s * B A for an adapted layer: the merged weight in the layer's own layout.
Tensor merged_lora_weight(const Tensor& weight, bool in_out_layout, const Tensor& a,
                          const Tensor& b, double scale);

}  // namespace hfrun::nn
