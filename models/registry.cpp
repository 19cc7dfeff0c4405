#include "models/registry.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "common/error.h"
#include "common/progress.h"
#include "io/checkpoint.h"
#include "models/bert/bert.h"
#include "models/gpt2/gpt2.h"
#include "models/llama/llama.h"
#include "tensor/ops.h"

namespace hfrun::nn {

namespace fs = std::filesystem;

std::vector<std::string> supported_model_types() {
  std::vector<std::string> types = {"gpt2"};
  for (const std::string& t : llama_model_types()) types.push_back(t);
  types.push_back("bert");
  return types;
}

std::string model_type_of(const std::string& config_json, const std::string& source,
                          const std::string& default_type) {
  const nlohmann::json j = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  HF_CHECK_INPUT(j.is_object(), source, ": not valid JSON (or not a JSON object)");
  if (!j.contains("model_type")) return default_type;
  HF_CHECK_INPUT(j["model_type"].is_string(), source, ": model_type must be a string, got ",
                 j["model_type"].dump());
  return j["model_type"].get<std::string>();
}

const std::vector<std::string>& model_config_keys(const std::string& model_type) {
  static const std::vector<std::string> none;
  if (model_type == "gpt2") return Gpt2Config::keys();
  if (model_type == "bert") return BertConfig::keys();
  for (const std::string& t : llama_model_types()) {
    if (t == model_type) return LlamaConfig::keys();
  }
  return none;
}

void check_model_config_keys(const std::string& config_json, const std::string& source,
                             const std::string& model_type) {
  const nlohmann::json j = nlohmann::json::parse(config_json, nullptr, /*allow_exceptions=*/false);
  HF_CHECK_INPUT(j.is_object(), source, ": not valid JSON (or not a JSON object)");
  const std::vector<std::string>& keys = model_config_keys(model_type);
  HF_CHECK_INPUT(!keys.empty(), source, ": model_type '", model_type, "' is not supported");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (std::find(keys.begin(), keys.end(), it.key()) != keys.end()) continue;
    std::string list;
    for (const std::string& k : keys) list += (list.empty() ? "" : ", ") + k;
    HF_CHECK_INPUT(false, source, ".", it.key(), ": not a ", model_type, " config key (", list,
                   ")");
  }
}

void check_model_config(const std::string& config_json, const std::string& source,
                        const std::string& model_type) {
  check_model_config_keys(config_json, source, model_type);
  if (model_type == "gpt2") {
    Gpt2Config::from_json(config_json, source);
  } else if (model_type == "bert") {
    BertConfig::from_json(config_json, source);
  } else {
    LlamaConfig::from_json(config_json, source, model_type);
  }
}

Task default_task(const std::string& model_type) {
  return model_type == "bert" ? Task::kMaskedLM : Task::kCausalLM;
}

std::unique_ptr<Model> create_model(const std::string& config_json, const std::string& source,
                                    uint64_t seed, const std::string& default_type, Task task) {
  const std::string type = model_type_of(config_json, source, default_type);
  auto refuse = [&](const char* tasks) {
    HF_CHECK_INPUT(false, source, ": task ", task_name(task), " is not available for model_type ",
                   type, " (", tasks, ")");
  };
  if (type == "bert") {
    if (task != Task::kMaskedLM && task != Task::kSequenceClassification) {
      refuse("masked_lm, sequence_classification");
    }
    return std::make_unique<Bert>(BertConfig::from_json(config_json, source), task, seed);
  }
  const bool llama = std::find(llama_model_types().begin(), llama_model_types().end(), type) !=
                     llama_model_types().end();
  if (type == "gpt2") {
    if (task != Task::kCausalLM) refuse("causal_lm, sft");
    return std::make_unique<Gpt2>(Gpt2Config::from_json(config_json, source), seed);
  }
  if (llama) {
    const LlamaConfig config = LlamaConfig::from_json(config_json, source, type);
    if (task == Task::kSequenceClassification) {
      return std::make_unique<LlamaForSequenceClassification>(config, seed);
    }
    if (task != Task::kCausalLM) refuse("causal_lm, sft, sequence_classification");
    return std::make_unique<Llama>(config, seed);
  }
  std::string known;
  for (const std::string& t : supported_model_types()) known += (known.empty() ? "" : ", ") + t;
  HF_CHECK_INPUT(false, source, ": model_type '", type, "' is not supported (", known, ")");
  return nullptr;
}

namespace {

// Refuses config.json text whose family is not a causal language model.
void check_causal_lm(const std::string& config_json, const std::string& source,
                     const std::string& default_type) {
  const std::string type = model_type_of(config_json, source, default_type);
  HF_CHECK_INPUT(default_task(type) == Task::kCausalLM, source, ": model_type ", type,
                 " is not a causal language model");
}

std::unique_ptr<CausalLM> as_causal_lm(std::unique_ptr<Model> model) {
  return std::unique_ptr<CausalLM>(static_cast<CausalLM*>(model.release()));
}

}  // namespace

std::unique_ptr<CausalLM> create_causal_lm(const std::string& config_json,
                                           const std::string& source, uint64_t seed,
                                           const std::string& default_type) {
  check_causal_lm(config_json, source, default_type);
  return as_causal_lm(create_model(config_json, source, seed, default_type, Task::kCausalLM));
}

std::vector<std::string> load_weights(Model& model, const std::string& path) {
  io::SafetensorsCheckpoint ckpt = io::SafetensorsCheckpoint::open(path);
  std::vector<std::string> missing;
  const auto named = model.named_parameters();
  int64_t total = 0;
  for (const auto& [name, param] : named) total += static_cast<int64_t>(param.nbytes());
  Progress progress("loading weights " + path, total);
  for (const auto& [name, param] : named) {
    progress.advance(static_cast<int64_t>(param.nbytes()));
    std::string found = name;
    if (!ckpt.contains(found)) {
      for (const std::string& alias : model.checkpoint_aliases(name)) {
        if (ckpt.contains(alias)) {
          found = alias;
          break;
        }
      }
    }
    if (!ckpt.contains(found) && model.may_be_newly_initialized(name)) {
      missing.push_back(name);
      continue;
    }
    HF_CHECK_INPUT(ckpt.contains(found), path, ": no tensor '", name,
                   "' in the checkpoint, which config.json's ", model.model_type(), " model needs");
    const io::TensorEntry& e = ckpt.entry(found);
    HF_CHECK_INPUT(e.shape == param.sizes(), ckpt.file_of(found), ": tensor '", found,
                   "' has shape ", shape_str(e.shape), " but config.json implies ",
                   shape_str(param.sizes()));
    model.load_parameter(name, ckpt.tensor(found));
  }
  return missing;
}

std::unique_ptr<Model> load_model(const std::string& config_json, const std::string& source,
                                  uint64_t seed, const std::string& default_type, Task task,
                                  const std::string& weights, std::vector<std::string>* fresh,
                                  const std::function<void(const Model&)>& check) {
  ops::DeferredRandom deferred;
  std::unique_ptr<Model> model = create_model(config_json, source, seed, default_type, task);
  deferred.stop();
  if (check) check(*model);
  const std::vector<std::string> missing = load_weights(*model, weights);
  for (auto& [name, param] : model->named_parameters()) {
    if (std::find(missing.begin(), missing.end(), name) == missing.end()) continue;
    // A parameter randn/rand did not make (a zero bias) already holds its initial values.
    deferred.fill(param);
  }
  if (fresh != nullptr) *fresh = missing;
  return model;
}

std::unique_ptr<CausalLM> load_pretrained(const std::string& dir) {
  const fs::path root(dir);
  HF_CHECK_INPUT(fs::is_directory(root), dir, ": no such model directory");
  const fs::path config = root / "config.json";
  HF_CHECK_INPUT(fs::is_regular_file(config), config.string(),
                 ": missing (a Hugging Face model directory has config.json and "
                 "model.safetensors)");
  HF_CHECK_INPUT(fs::is_regular_file(root / io::kSafetensorsWeightsName) ||
                     fs::is_regular_file(root / io::kSafetensorsIndexName),
                 (root / io::kSafetensorsWeightsName).string(), ": missing (and no ",
                 io::kSafetensorsIndexName, " either)");
  std::ifstream in(config);
  HF_CHECK_INPUT(in.good(), config.string(), ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  check_causal_lm(ss.str(), config.string(), "gpt2");
  std::unique_ptr<Model> model =
      load_model(ss.str(), config.string(), 0, "gpt2", Task::kCausalLM, dir);
  model->eval();
  return as_causal_lm(std::move(model));
}

namespace {

std::string hub_cache_root() {
  if (const char* c = std::getenv("HF_HUB_CACHE"); c != nullptr && *c) return c;
  if (const char* h = std::getenv("HF_HOME"); h != nullptr && *h) {
    return (fs::path(h) / "hub").string();
  }
  const char* home = std::getenv("HOME");
  return (fs::path(home != nullptr ? home : "") / ".cache" / "huggingface" / "hub").string();
}

}  // namespace

std::string resolve_pretrained(const std::string& spec, const std::string& revision) {
  HF_CHECK_INPUT(!spec.empty(), "model.from_pretrained is empty");
  if (fs::is_directory(spec)) return spec;
  // A hub id: NAME or ORG/NAME, no other path syntax.
  const size_t slash = spec.find('/');
  const bool hub_id =
      spec.front() != '/' && spec.front() != '.' && spec.find("//") == std::string::npos &&
      spec.back() != '/' &&
      (slash == std::string::npos || spec.find('/', slash + 1) == std::string::npos);
  HF_CHECK_INPUT(hub_id, "model.from_pretrained: ", spec,
                 ": no such directory (and not a hub id ORG/NAME to look up in the Hugging Face "
                 "cache)");
  std::string folder = "models--" + spec;
  for (size_t p = folder.find('/'); p != std::string::npos; p = folder.find('/', p)) {
    folder.replace(p, 1, "--");
  }
  const fs::path repo = fs::path(hub_cache_root()) / folder;
  std::string snapshot = revision;
  const fs::path ref = repo / "refs" / revision;
  if (fs::is_regular_file(ref)) {
    std::ifstream in(ref);
    std::getline(in, snapshot);
    while (!snapshot.empty() && std::isspace(static_cast<unsigned char>(snapshot.back()))) {
      snapshot.pop_back();
    }
  }
  const fs::path dir = repo / "snapshots" / snapshot;
  HF_CHECK_INPUT(!snapshot.empty() && fs::is_directory(dir), "model.from_pretrained: ", spec,
                 " is not a directory and not in the Hugging Face hub cache: looked for ",
                 dir.string(), " (",
                 fs::is_directory(repo) ? "revision '" + revision + "' not found"
                                        : repo.string() + " does not exist",
                 "; the cache is $HF_HUB_CACHE, else $HF_HOME/hub, else "
                 "~/.cache/huggingface/hub; nothing is downloaded)");
  return dir.string();
}

}  // namespace hfrun::nn
