#include "models/gpt2_pretrained.h"

#include <filesystem>

#include "common/error.h"
#include "io/checkpoint.h"

namespace hfrun::nn {

void load_gpt2_weights(Gpt2& model, const std::string& path) {
  io::SafetensorsCheckpoint ckpt = io::SafetensorsCheckpoint::open(path);
  for (const auto& [name, param] : model.named_parameters()) {
    auto found = io::find_with_optional_prefix(ckpt, name, "transformer.");
    HF_CHECK_INPUT(found.has_value(), path, ": no tensor 'transformer.", name,
                   "' (or without the prefix) in the checkpoint");
    Tensor t = ckpt.tensor(*found);
    HF_CHECK_INPUT(t.sizes() == param.sizes(), ckpt.file_of(*found), ": tensor '", *found,
                   "' has shape ", shape_str(t.sizes()), " but config.json implies ",
                   shape_str(param.sizes()));
    model.load_parameter(name, t);
  }
}

std::unique_ptr<Gpt2> load_gpt2(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  HF_CHECK_INPUT(fs::is_directory(root), dir, ": no such model directory");
  const fs::path config = root / "config.json";
  HF_CHECK_INPUT(fs::is_regular_file(config), config.string(),
                 ": missing (a Hugging Face GPT-2 directory has config.json and "
                 "model.safetensors)");
  HF_CHECK_INPUT(fs::is_regular_file(root / io::kSafetensorsWeightsName) ||
                     fs::is_regular_file(root / io::kSafetensorsIndexName),
                 (root / io::kSafetensorsWeightsName).string(), ": missing (and no ",
                 io::kSafetensorsIndexName, " either)");
  auto model = std::make_unique<Gpt2>(Gpt2Config::from_file(config.string()));
  load_gpt2_weights(*model, dir);
  model->eval();
  return model;
}

}  // namespace hfrun::nn
