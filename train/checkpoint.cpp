// Checkpoints: names of directories and files, generator states, and the helpers the save and
// load halves share (checkpoint_format.h). Saving: checkpoint_save.cpp; loading and
// resharding: checkpoint_load.cpp.
#include "train/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/digest.h"
#include "common/error.h"
#include "io/safetensors.h"
#include "nn/tensor_parallel.h"
#include "tensor/ops.h"
#include "train/checkpoint_format.h"
#include "train/checkpoint_fs.h"

namespace hfrun::train {

namespace detail {

json parse_json(const std::string& text, const fs::path& path) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    HF_CHECK_INPUT(false, "checkpoint: ", path.string(), ": invalid JSON (", e.what(), ")");
  }
  return {};
}

json trainer_state_json(const TrainerState& s) {
  json j{{"format_version", kCheckpointFormatVersion},
         {"step", s.step},
         {"scheduler_step", s.scheduler_step},
         {"loader",
          {{"position", s.loader.position},
           {"step", s.loader.step},
           {"micro_step", s.loader.micro_step}}},
         {"tokens_seen", s.tokens_seen},
         {"first_loss", s.first_loss},
         {"last_loss", s.last_loss},
         {"elapsed_s", s.elapsed_s}};
  // The f32 scale as a double: exact, and read back to the same f32.
  if (s.grad_scaler)
    j["grad_scaler"] = {{"scale", static_cast<double>(s.grad_scaler->scale)},
                        {"growth_tracker", s.grad_scaler->growth_tracker}};
  return j;
}

std::string model_file_of(int64_t rank, int64_t world) {
  return rank_prefix(rank, world) + ".model.safetensors";
}
std::string optimizer_file_of(int64_t rank, int64_t world) {
  return rank_prefix(rank, world) + ".optimizer.safetensors";
}
std::string rng_file_of(int64_t rank, int64_t world) {
  return rank_prefix(rank, world) + ".rng.json";
}

std::string tp_part_name(const std::string& name, int t, int size) {
  return name + "|tp" + std::to_string(t) + "of" + std::to_string(size);
}

std::string stored_name(const nn::Module& model, const std::string& param, const std::string& name,
                        int t, int size) {
  if (size > 1 && model.tensor_parallel_split(param).split()) return tp_part_name(name, t, size);
  return name;
}

}  // namespace detail

std::string rank_prefix(int64_t rank, int64_t world) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "rank-%05lld-of-%05lld", static_cast<long long>(rank),
                static_cast<long long>(world));
  return buf;
}

std::string checkpoint_dir_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

GeneratorState capture_generator(const std::string& name, const Generator& gen) {
  return GeneratorState{name, gen.seed(), gen.offset()};
}

void restore_generator(const TrainerState& state, const std::string& name, Generator& gen) {
  for (const GeneratorState& g : state.generators) {
    if (g.name == name) {
      gen.set_state(g.seed, g.offset);
      return;
    }
  }
  HF_CHECK_INPUT(false, "checkpoint: no state for the '", name, "' random generator");
}

}  // namespace hfrun::train
