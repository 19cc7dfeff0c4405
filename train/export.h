// Hugging Face layout export: a directory transformers can load (the model's class), or a PEFT
// adapter directory, written atomically (built under a temporary name, fsynced, then renamed over
// the old one).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun::train {

// dir/config.json (`config_json`; none when empty), dir/model.safetensors (`tensors`: whole
// parameters by HF name, as a module tree names them; a tied lm_head is not among them, as
// transformers saves it) and, when tokenizer_path is not empty, dir/tokenizer.json (a copy)
// plus tokenizer_config.json and special_tokens_map.json when they sit beside it.
void write_hf_model(const std::string& dir, const std::string& config_json,
                    const std::vector<std::pair<std::string, Tensor>>& tensors,
                    const std::string& tokenizer_path);

// A PEFT adapter directory: dir/adapter_config.json and dir/adapter_model.safetensors
// (`tensors` under PEFT's names, models/peft.h), written atomically as above.
void write_peft_adapter(const std::string& dir, const std::string& adapter_config_json,
                        const std::vector<std::pair<std::string, Tensor>>& tensors);

}  // namespace hfrun::train
