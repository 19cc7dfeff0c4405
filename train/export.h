// Hugging Face layout export: a directory transformers can load (AutoModelForCausalLM of the
// model's family), written atomically (built under a temporary name, fsynced, then renamed over
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

}  // namespace hfrun::train
