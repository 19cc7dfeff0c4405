// Saving and restoring checkpoints: the files of one checkpoint and their atomic commit.
#include "train/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/safetensors.h"
#include "train/checkpoint_fs.h"
#include "train/sha256.h"

namespace hfrun::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kParamPrefixKey = "hfrun_param_prefix";

std::string model_file(int64_t world) {
  return rank_prefix(0, world) + ".model.safetensors";
}
std::string optimizer_file(int64_t world) {
  return rank_prefix(0, world) + ".optimizer.safetensors";
}
std::string rng_file(int64_t world) {
  return rank_prefix(0, world) + ".rng.json";
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  HF_CHECK_INPUT(in.good(), "checkpoint: cannot open ", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    HF_CHECK_INPUT(false, "checkpoint: ", path.string(), ": invalid JSON (", e.what(), ")");
  }
  return {};
}

// A field of a checkpoint JSON file, with an error naming the file and key.
template <typename T>
T field(const json& j, const char* key, const fs::path& path) {
  HF_CHECK_INPUT(j.is_object() && j.contains(key), "checkpoint: ", path.string(), ": missing \"",
                 key, "\"");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    HF_CHECK_INPUT(false, "checkpoint: ", path.string(), ": \"", key, "\" has the wrong type");
  }
  return T{};
}

json trainer_state_json(const TrainerState& s) {
  return json{{"format_version", kCheckpointFormatVersion},
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
}

}  // namespace

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

std::string save_checkpoint(const std::string& checkpoints_root, const nn::Module& model,
                            const optim::Optimizer& optimizer, const TrainerState& state,
                            const CheckpointOptions& options) {
  const int64_t world = 1;
  fs::create_directories(checkpoints_root);
  detail::remove_stale_temporaries(checkpoints_root);
  const fs::path final_dir = fs::path(checkpoints_root) / checkpoint_dir_name(state.step);
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = final_dir.string() + ".tmp-" + pid;
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    std::vector<std::pair<std::string, Tensor>> params;
    for (const auto& [name, t] : model.named_parameters())
      params.emplace_back(options.param_prefix + name, t);
    io::save_safetensors((tmp / model_file(world)).string(), params,
                         {{"format", "pt"}, {kParamPrefixKey, options.param_prefix}});
    io::save_safetensors((tmp / optimizer_file(world)).string(), optimizer.state_tensors());
    json gens = json::array();
    for (const GeneratorState& g : state.generators)
      gens.push_back({{"name", g.name}, {"seed", g.seed}, {"offset", g.offset}});
    detail::write_synced((tmp / rng_file(world)).string(),
                         json{{"generators", gens}}.dump(2) + "\n");
    detail::write_synced((tmp / kTrainerStateName).string(),
                         trainer_state_json(state).dump(2) + "\n");

    json files = json::array();
    for (const std::string& name : {model_file(world), optimizer_file(world), rng_file(world),
                                    std::string(kTrainerStateName)}) {
      uint64_t size = 0;
      const std::string digest = sha256_file_hex((tmp / name).string(), &size);
      files.push_back({{"name", name}, {"size", size}, {"sha256", digest}});
    }
    const json manifest{{"format", "hfrun-checkpoint"},
                        {"format_version", kCheckpointFormatVersion},
                        {"step", state.step},
                        {"world_size", world},
                        {"config_hash", options.config_hash},
                        {"files", files}};
    detail::write_synced((tmp / kManifestName).string(), manifest.dump(2) + "\n");
    detail::fsync_path(tmp.string());
    // Commit: an existing checkpoint of this step is moved aside first (rename cannot replace a
    // non-empty directory), so some complete checkpoint of this step exists at every moment.
    const fs::path old = final_dir.string() + ".old-" + pid;
    if (fs::exists(final_dir)) fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    detail::fsync_path(checkpoints_root);
    fs::remove_all(old, ec);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  detail::prune_checkpoints(checkpoints_root, options.keep, final_dir.string());
  return final_dir.string();
}

TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             Manifest* manifest_out) {
  const Manifest manifest = verify_checkpoint(dir);
  HF_CHECK_INPUT(manifest.world_size == 1, "checkpoint ", dir, " was written by ",
                 manifest.world_size, " processes; this build resumes single-process checkpoints");
  const fs::path root(dir);
  const int64_t world = manifest.world_size;

  // Validate the model file fully before changing any parameter.
  const io::SafetensorsFile mf = io::SafetensorsFile::open((root / model_file(world)).string());
  const auto meta = mf.metadata().find(kParamPrefixKey);
  const std::string prefix = meta == mf.metadata().end() ? "" : meta->second;
  const auto named = model.named_parameters();
  HF_CHECK_INPUT(mf.entries().size() == named.size(), "checkpoint ", mf.path(), " holds ",
                 mf.entries().size(), " tensors but the model has ", named.size(),
                 " parameters (a different model configuration?)");
  for (const auto& [name, param] : named) {
    HF_CHECK_INPUT(mf.contains(prefix + name), "checkpoint ", mf.path(), ": no tensor '",
                   prefix + name, "'");
    const io::TensorEntry& e = mf.entry(prefix + name);
    HF_CHECK_INPUT(e.shape == param.sizes(), "checkpoint ", mf.path(), ": tensor '", prefix + name,
                   "' has shape ", shape_str(e.shape), " but the model's is ",
                   shape_str(param.sizes()));
  }
  const io::SafetensorsFile of = io::SafetensorsFile::open((root / optimizer_file(world)).string());
  optim::NamedTensors opt_state;
  for (const io::TensorEntry& e : of.entries()) opt_state.emplace_back(e.name, of.tensor(e.name));
  optimizer.load_state_tensors(opt_state);
  for (const auto& [name, param] : named) model.load_parameter(name, mf.tensor(prefix + name));

  TrainerState s;
  const fs::path sp = root / kTrainerStateName;
  const json j = read_json(sp);
  s.step = field<int64_t>(j, "step", sp);
  HF_CHECK_INPUT(s.step == manifest.step, "corrupt checkpoint ", dir, ": ", kTrainerStateName,
                 " says step ", s.step, ", the manifest ", manifest.step);
  s.scheduler_step = field<int64_t>(j, "scheduler_step", sp);
  const json loader = field<json>(j, "loader", sp);
  s.loader.position = field<int64_t>(loader, "position", sp);
  s.loader.step = field<int64_t>(loader, "step", sp);
  s.loader.micro_step = field<int64_t>(loader, "micro_step", sp);
  s.tokens_seen = field<int64_t>(j, "tokens_seen", sp);
  s.first_loss = field<double>(j, "first_loss", sp);
  s.last_loss = field<double>(j, "last_loss", sp);
  s.elapsed_s = field<double>(j, "elapsed_s", sp);
  const fs::path rp = root / rng_file(world);
  const json rng = read_json(rp);
  for (const json& g : field<json>(rng, "generators", rp)) {
    s.generators.push_back(GeneratorState{field<std::string>(g, "name", rp),
                                          field<uint64_t>(g, "seed", rp),
                                          field<uint64_t>(g, "offset", rp)});
  }
  if (manifest_out) *manifest_out = manifest;
  return s;
}

}  // namespace hfrun::train
