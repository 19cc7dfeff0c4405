// Loading GPT-2 from a Hugging Face model directory: config.json plus model.safetensors (or a
// sharded model.safetensors.index.json), weights named with or without "transformer.".
#pragma once

#include <memory>
#include <string>

#include "models/gpt2.h"

namespace hfrun::nn {

// Copies every parameter of `model` from the safetensors checkpoint at `path` (a directory,
// an index .json or a .safetensors file). A missing tensor or a shape that differs from the
// model's is an invalid-input error naming the file and the tensor.
void load_gpt2_weights(Gpt2& model, const std::string& path);

// A GPT-2 built from `dir`/config.json with the weights of `dir`; errors name the missing
// file (config.json, model.safetensors / model.safetensors.index.json).
std::unique_ptr<Gpt2> load_gpt2(const std::string& dir);

}  // namespace hfrun::nn
