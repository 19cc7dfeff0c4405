// PEFT's LoRA adapter directories (adapter_config.json + adapter_model.safetensors), as
// peft's PeftModel.from_pretrained / save_pretrained read and write them. Tensor names in the
// file are "base_model.model." + the model's own: <module path>.lora_A.weight [r, in],
// <module path>.lora_B.weight [out, r], and a modules_to_save module's trained copy under its
// own path (<module path>.weight).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "models/model.h"
#include "nn/lora.h"

namespace hfrun::nn {

inline constexpr const char* kPeftConfigName = "adapter_config.json";
inline constexpr const char* kPeftWeightsName = "adapter_model.safetensors";
inline constexpr const char* kPeftPrefix = "base_model.model.";

// adapter_config.json text. target_modules: `targets` (all-linear expanded by the caller, as
// PEFT stores it), or options.target_regex when set; fan_in_fan_out for GPT-2's Conv1D layers.
std::string peft_config_json(const LoraOptions& options, const std::vector<std::string>& targets,
                             bool fan_in_fan_out, const std::string& base_model, Task task);

// An adapter directory's configuration: r, lora_alpha, lora_dropout, target_modules (a list, or
// a regular expression string), modules_to_save, use_rslora. What hfrun does not implement
// (DoRA, bias training, rank or alpha patterns, layers_to_transform) is an invalid-input error
// naming the file and the key.
LoraOptions read_peft_config(const std::string& dir);

// read_peft_config for `model`: a modules_to_save name that matches no module of it is dropped,
// as PEFT ignores it (PEFT lists every classification head it knows, "classifier" and "score").
LoraOptions read_peft_config_for(Model& model, const std::string& dir);

// The task of the model an adapter was made for: its task_type (SEQ_CLS: sequence
// classification, CAUSAL_LM: causal LM), else model_type's default.
Task peft_task(const std::string& dir, const std::string& model_type);

// What all-linear leaves out for `model`, as PEFT does: the output layer (lm_head), or a
// sequence classifier's head (classifier, score).
std::vector<std::string> lora_exclusions(const Model& model);

// The adapter in `dir` on `model`: its configuration applied (apply_lora) and its values loaded.
// Returns the options it applied.
LoraOptions apply_peft_adapter(Model& model, const std::string& dir);

// The model's parameters with every adapter folded into its layer's weight (W + s B A, in the
// layer's own layout) and the adapters' own tensors left out: a plain model of its class, the
// modules_to_save copies in their place.
std::vector<std::pair<std::string, Tensor>> merged_state(Model& model);

// The adapter's values (and modules_to_save copies) into `model`, which apply_lora prepared
// with the adapter's configuration. A tensor of the model missing from the file, a file tensor
// the model has no place for, or a shape that differs is an invalid-input error naming the
// tensor (and both shapes).
void load_peft_weights(Model& model, const std::string& dir);

// The tensors of an adapter directory to write from a model's whole state: the adapters' and
// the modules_to_save's, under PEFT's names.
std::vector<std::pair<std::string, Tensor>> peft_tensors(
    const std::vector<std::pair<std::string, Tensor>>& state, const LoraOptions& options);

}  // namespace hfrun::nn
