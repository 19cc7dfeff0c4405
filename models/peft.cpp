#include "models/peft.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "io/safetensors.h"
#include "models/config_reader.h"
#include "models/registry.h"
#include "nn/layers.h"

namespace hfrun::nn {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool is_adapter_tensor(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

const char* peft_task_type(Task task) {
  switch (task) {
    case Task::kCausalLM:
      return "CAUSAL_LM";
    case Task::kSequenceClassification:
      return "SEQ_CLS";
    case Task::kMaskedLM:
      return "FEATURE_EXTRACTION";
  }
  return "CAUSAL_LM";
}

}  // namespace

std::string peft_config_json(const LoraOptions& o, const std::vector<std::string>& targets,
                             bool fan_in_fan_out, const std::string& base_model, Task task) {
  json j = {
      {"peft_type", "LORA"},
      {"task_type", peft_task_type(task)},
      {"base_model_name_or_path", base_model},
      {"revision", nullptr},
      {"inference_mode", true},
      {"r", o.r},
      {"lora_alpha", o.alpha},
      {"lora_dropout", o.dropout},
      {"target_modules", o.target_regex.empty() ? json(targets) : json(o.target_regex)},
      {"modules_to_save", o.modules_to_save.empty() ? json(nullptr) : json(o.modules_to_save)},
      {"fan_in_fan_out", fan_in_fan_out},
      {"bias", "none"},
      {"use_rslora", o.use_rslora},
      {"use_dora", false},
      {"init_lora_weights", true},
      {"layers_to_transform", nullptr},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()}};
  return j.dump(2) + "\n";
}

LoraOptions read_peft_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / kPeftConfigName).string();
  std::ifstream in(path);
  HF_CHECK_INPUT(in.good(), path, ": cannot open (a PEFT adapter directory has ", kPeftConfigName,
                 " and ", kPeftWeightsName, ")");
  std::stringstream ss;
  ss << in.rdbuf();
  const json j = parse_config_object(ss.str(), path);
  const ConfigReader r{j, path};
  std::string type;
  r.get("peft_type", type);
  HF_CHECK_INPUT(type == "LORA", path, ": peft_type '", type, "' is not supported (LORA only)");
  LoraOptions o;
  HF_CHECK_INPUT(r.has("r"), path, ": r is missing");
  r.get("r", o.r);
  r.get("lora_alpha", o.alpha);
  r.get("lora_dropout", o.dropout);
  r.get("use_rslora", o.use_rslora);
  HF_CHECK_INPUT(r.has("target_modules"), path, ": target_modules is missing");
  const json& t = j["target_modules"];
  if (t.is_string()) {
    const std::string s = t.get<std::string>();
    if (s == "all-linear") {
      o.target_modules = {s};
    } else {
      o.target_modules.clear();
      o.target_regex = s;
    }
  } else {
    HF_CHECK_INPUT(t.is_array(), path, ": target_modules must be a list or a string");
    o.target_modules.clear();
    for (const json& x : t) {
      HF_CHECK_INPUT(x.is_string(), path, ": target_modules entries must be strings");
      o.target_modules.push_back(x.get<std::string>());
    }
  }
  if (r.has("modules_to_save")) {
    HF_CHECK_INPUT(j["modules_to_save"].is_array(), path, ": modules_to_save must be a list");
    for (const json& x : j["modules_to_save"]) o.modules_to_save.push_back(x.get<std::string>());
  }
  std::string bias = "none";
  r.get("bias", bias);
  HF_CHECK_INPUT(bias == "none", path, ": bias '", bias, "' is not supported (none only)");
  bool dora = false;
  r.get("use_dora", dora);
  HF_CHECK_INPUT(!dora, path, ": use_dora is not supported");
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    HF_CHECK_INPUT(!r.has(key) || j[key].empty(), path, ": ", key, " is not supported");
  }
  HF_CHECK_INPUT(!r.has("layers_to_transform"), path, ": layers_to_transform is not supported");
  return o;
}

LoraOptions read_peft_config_for(Model& model, const std::string& dir) {
  LoraOptions o = read_peft_config(dir);
  std::vector<std::string> kept;
  for (const std::string& m : o.modules_to_save) {
    for (const auto& [path, module] : model.named_modules()) {
      if (!path.empty() && lora_target_matches(path, m)) {
        kept.push_back(m);
        break;
      }
    }
  }
  o.modules_to_save = kept;
  return o;
}

Task peft_task(const std::string& dir, const std::string& model_type) {
  const std::string path = (fs::path(dir) / kPeftConfigName).string();
  std::ifstream in(path);
  HF_CHECK_INPUT(in.good(), path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  const json j = parse_config_object(ss.str(), path);
  const std::string type = j.value("task_type", json(nullptr)).is_string()
                               ? j["task_type"].get<std::string>()
                               : std::string();
  if (type == "SEQ_CLS") return Task::kSequenceClassification;
  if (type == "CAUSAL_LM") return Task::kCausalLM;
  return default_task(model_type);
}

std::vector<std::string> lora_exclusions(const Model& model) {
  if (model.task() == Task::kSequenceClassification) return {"classifier", "score"};
  return {"lm_head"};
}

LoraOptions apply_peft_adapter(Model& model, const std::string& dir) {
  const LoraOptions o = read_peft_config_for(model, dir);
  Generator init(0);  // the file's values replace the initialisation
  apply_lora(model, o, init, &model.dropout_generator(), (fs::path(dir) / kPeftConfigName).string(),
             lora_exclusions(model));
  load_peft_weights(model, dir);
  return o;
}

std::vector<std::pair<std::string, Tensor>> merged_state(Model& model) {
  std::vector<std::pair<std::string, Tensor>> out;
  std::map<std::string, Tensor> merged;
  for (const auto& [path, module] : model.named_modules()) {
    const auto* linear = dynamic_cast<const Linear*>(module);
    if (linear == nullptr || linear->lora_A() == nullptr) continue;
    merged[path + ".weight"] = merged_lora_weight(
        linear->weight(), linear->layout() == WeightLayout::kInOut, linear->lora_A()->weight(),
        linear->lora_B()->weight(), linear->lora_scale());
  }
  for (const auto& [name, t] : model.named_parameters()) {
    if (is_adapter_tensor(name)) continue;
    auto it = merged.find(name);
    out.emplace_back(name, it == merged.end() ? t : it->second);
  }
  return out;
}

void load_peft_weights(Model& model, const std::string& dir) {
  const std::string path = (fs::path(dir) / kPeftWeightsName).string();
  HF_CHECK_INPUT(fs::is_regular_file(path), path, ": missing");
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  std::set<std::string> used;
  for (const auto& [name, param] : model.named_trainable_parameters()) {
    const std::string stored = kPeftPrefix + name;
    HF_CHECK_INPUT(file.contains(stored), path, ": no tensor '", stored,
                   "' (the adapter does not match the model: its base differs, or its "
                   "target_modules / modules_to_save)");
    const io::TensorEntry& e = file.entry(stored);
    HF_CHECK_INPUT(e.shape == param.sizes(), path, ": tensor '", stored, "' has shape ",
                   shape_str(e.shape), " but the model's ", name, " is ", shape_str(param.sizes()),
                   " (the adapter was made for another base model)");
    model.load_parameter(name, file.tensor(stored));
    used.insert(stored);
  }
  for (const io::TensorEntry& e : file.entries()) {
    HF_CHECK_INPUT(used.count(e.name) != 0 || !is_adapter_tensor(e.name), path, ": tensor '",
                   e.name, "' has no place in the model (no such adapted module)");
  }
}

std::vector<std::pair<std::string, Tensor>> peft_tensors(
    const std::vector<std::pair<std::string, Tensor>>& state, const LoraOptions& o) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : state) {
    bool keep = is_adapter_tensor(name);
    // A module to save keeps every parameter below it (its own and its children's).
    for (std::string owner = name; !keep && owner.rfind('.') != std::string::npos;) {
      owner = owner.substr(0, owner.rfind('.'));
      for (const std::string& m : o.modules_to_save) keep = keep || lora_target_matches(owner, m);
    }
    if (keep) out.emplace_back(kPeftPrefix + name, t);
  }
  return out;
}

}  // namespace hfrun::nn
