// The model a TrainConfig describes, resolved without building it: model.from_pretrained's
// directory and config.json with the model.config keys on top, its model_type and task. The
// Trainer builds the model from it; `hfrun estimate-memory` reasons about its shape.
#pragma once

#include <string>

#include "models/model.h"
#include "train/config.h"

namespace hfrun::data {
class Tokenizer;
}

namespace hfrun::train {

// model.from_pretrained as a directory (a hub id resolved in the local HF cache); the error
// names the config file and where the cache was searched.
std::string pretrained_dir(const TrainConfig& cfg);

// The tokenizer file the run loads, or "" for none: cfg.tokenizer, except the default one of a
// model directory when that is absent (token shards need no tokenizer; text, records and the
// end-of-text token between documents do, and make_task_data says so).
std::string tokenizer_to_load(const TrainConfig& cfg);

struct ModelConfig {
  std::string json;        // config.json text as the family reads it
  std::string source;      // what errors about it name
  std::string model_type;  // config.json's (model.arch when it has none; the two must agree)
  nn::Task task = nn::Task::kCausalLM;
};

// config.json of from_pretrained (if any) with model.config's keys on top; from scratch,
// vocab_size defaults to the tokenizer's (`tok`; an invalid-input error without one).
ModelConfig resolve_model_config(const TrainConfig& cfg, const data::Tokenizer* tok);

}  // namespace hfrun::train
