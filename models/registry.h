// The model registry: config.json's model_type picks the family (gpt2; llama, mistral, qwen2,
// qwen3; bert) and the task its head (models/model.h), and everything above models/ (trainer,
// export, generate, benchmarks) gets a Model, or a CausalLM for generation. Also where pretrained
// weights are loaded by HF name and where `ORG/NAME` resolves in the local Hugging Face hub cache
// (never the network).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/causal_lm.h"

namespace hfrun::nn {

// Every model_type the registry builds.
std::vector<std::string> supported_model_types();

// The model_type of config.json text: its "model_type", else `default_type` (an error naming
// `source` when the text is not a JSON object).
std::string model_type_of(const std::string& config_json, const std::string& source,
                          const std::string& default_type = "gpt2");

// The config.json keys train.yaml's model.config may set for a model_type.
const std::vector<std::string>& model_config_keys(const std::string& model_type);

// Checks that every key of config.json text is one model_type's family takes (an
// invalid-input error naming `source`.key and listing them otherwise).
void check_model_config_keys(const std::string& config_json, const std::string& source,
                             const std::string& model_type);

// Checks config.json text as model_type's family reads it, without building a model: keys it
// does not take (model_config_keys) and invalid values are invalid-input errors naming
// `source` and the key.
void check_model_config(const std::string& config_json, const std::string& source,
                        const std::string& model_type);

// The task a family trains by default (CONTRACT.md): masked_lm for bert, causal_lm otherwise.
Task default_task(const std::string& model_type);

// A model of the family config.json's model_type names (default_type when it names none) with
// the task's head, initialised from `seed`. Unknown model types, a task the family does not
// have and keys that change the architecture beyond what the family implements are
// invalid-input errors naming `source` and the key.
std::unique_ptr<Model> create_model(const std::string& config_json, const std::string& source,
                                    uint64_t seed, const std::string& default_type, Task task);
// create_model for a family's causal LM.
std::unique_ptr<CausalLM> create_causal_lm(const std::string& config_json,
                                           const std::string& source, uint64_t seed = 0,
                                           const std::string& default_type = "gpt2");

// Copies every parameter of `model` from the safetensors checkpoint at `path` (a directory
// with model.safetensors or model.safetensors.index.json, an index .json or a .safetensors
// file; F32, BF16 or F16 on disk), under its name or one of model.checkpoint_aliases(). A
// missing tensor (unless the model may newly initialise it: a task head over a base model's
// weights) or a shape that differs from the model's is an invalid-input error naming the file
// and the tensor. Returns the parameters the checkpoint lacked, which keep their
// initialisation (transformers warns of the same ones).
std::vector<std::string> load_weights(Model& model, const std::string& path);

// create_model + load_weights(weights) without drawing the initial values the checkpoint
// overwrites (ops::DeferredRandom): only the parameters it lacks are initialised, with the values
// create_model gives them (the families make those, task heads, straight from randn or zeros).
// Their names are returned in `fresh` when it is given. `check`, when given, runs on the built
// model before any weight is read (a caller's checks of its config against the model).
std::unique_ptr<Model> load_model(const std::string& config_json, const std::string& source,
                                  uint64_t seed, const std::string& default_type, Task task,
                                  const std::string& weights,
                                  std::vector<std::string>* fresh = nullptr,
                                  const std::function<void(const Model&)>& check = {});

// The model of `dir` (config.json + weights), in eval mode.
std::unique_ptr<CausalLM> load_pretrained(const std::string& dir);

// model.from_pretrained: an existing directory as given, else ORG/NAME resolved in the HF hub
// cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub):
// models--ORG--NAME/snapshots/<refs/REVISION's commit, or REVISION itself>/. The error says
// where it looked.
std::string resolve_pretrained(const std::string& spec, const std::string& revision = "main");

}  // namespace hfrun::nn
