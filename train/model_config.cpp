#include "train/model_config.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "data/tokenizer/tokenizer.h"
#include "models/registry.h"
#include "train/task_data.h"

namespace hfrun::train {

std::string pretrained_dir(const TrainConfig& cfg) {
  try {
    return nn::resolve_pretrained(cfg.model.from_pretrained, cfg.model.revision);
  } catch (const Error& e) {
    HF_CHECK_INPUT(false, cfg.source, ": ", e.message());
  }
  return {};
}

std::string tokenizer_to_load(const TrainConfig& cfg) {
  if (cfg.tokenizer.empty() || cfg.model.from_pretrained.empty()) return cfg.tokenizer;
  const bool default_missing = cfg.tokenizer == pretrained_dir(cfg) + "/tokenizer.json" &&
                               !std::filesystem::exists(cfg.tokenizer);
  return default_missing ? "" : cfg.tokenizer;
}

ModelConfig resolve_model_config(const TrainConfig& cfg, const data::Tokenizer* tok) {
  std::string base = "{}";
  std::string source = cfg.source + ": model.config";
  const std::string arch = cfg.model.arch.empty() ? "gpt2" : cfg.model.arch;
  if (!cfg.model.from_pretrained.empty()) {
    const std::string path = pretrained_dir(cfg) + "/config.json";
    std::ifstream in(path);
    HF_CHECK_INPUT(in.good(), path,
                   ": cannot open (model.from_pretrained must be a Hugging Face "
                   "model directory with config.json and model.safetensors)");
    std::stringstream ss;
    ss << in.rdbuf();
    base = ss.str();
    source = path;
  }
  const std::string file_type = nn::model_type_of(base, source, arch);
  HF_CHECK_INPUT(cfg.model.arch.empty() || file_type == arch, cfg.source, ": model.arch is ", arch,
                 " but ", source, " has model_type ", file_type);
  // model.config keys override config.json (dropout for fine-tuning, or the whole shape from
  // scratch). From scratch they are the whole config, checked on their own so that errors name
  // the YAML; over a pretrained config.json the merged result is checked, naming both.
  if (cfg.model.from_pretrained.empty()) {
    nn::check_model_config(cfg.model.config_json, cfg.source + ": model.config", file_type);
  } else if (cfg.model.config_json != "{}") {
    nn::check_model_config_keys(cfg.model.config_json, cfg.source + ": model.config", file_type);
    source = cfg.source + ": model.config over " + source;
  }
  nlohmann::json merged = nlohmann::json::parse(base, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json overrides = nlohmann::json::parse(cfg.model.config_json);
  HF_CHECK_INPUT(!overrides.contains("model_type") || overrides["model_type"] == file_type,
                 cfg.source, ": model.config model_type ", overrides.value("model_type", ""),
                 " does not match the model's ", file_type);
  merged.update(overrides);
  merged["model_type"] = file_type;
  if (cfg.model.from_pretrained.empty() && !overrides.contains("vocab_size")) {
    HF_CHECK_INPUT(tok != nullptr, cfg.source,
                   ": model.config.vocab_size is required without a tokenizer (it defaults to "
                   "the tokenizer's vocabulary size)");
    merged["vocab_size"] = tok->vocab_size();
  }
  return {merged.dump(), source, file_type, model_task(cfg, file_type)};
}

}  // namespace hfrun::train
