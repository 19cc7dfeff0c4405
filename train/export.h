// Hugging Face layout export: a directory transformers can load (AutoModelForCausalLM of the
// model's family), written atomically (built under a temporary name, fsynced, then renamed over
// the old one).
#pragma once

#include <string>

#include "models/causal_lm.h"

namespace hfrun::train {

// dir/config.json (the model's), dir/model.safetensors (HF names from the module tree; a tied
// lm_head is not stored, as transformers saves it) and dir/tokenizer.json (a copy of
// tokenizer_path) plus tokenizer_config.json and special_tokens_map.json when they sit beside
// it.
void export_hf(const nn::CausalLM& model, const std::string& tokenizer_path,
               const std::string& dir);

}  // namespace hfrun::train
