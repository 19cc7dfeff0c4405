// Hugging Face layout export: a directory transformers can load (GPT2LMHeadModel), written
// atomically (built under a temporary name, fsynced, then renamed over the old one).
#pragma once

#include <string>

#include "models/gpt2.h"

namespace hfrun::train {

// dir/config.json, dir/model.safetensors (HF names, "transformer." prefix; the tied lm_head is
// not stored, as transformers saves it) and dir/tokenizer.json (a copy of tokenizer_path).
void export_hf(const nn::Gpt2& model, const std::string& tokenizer_path, const std::string& dir);

}  // namespace hfrun::train
