// Resumable training checkpoints (CONTRACT.md: output_dir/checkpoints/step-00000100/).
//
// Layout of one checkpoint, laid out for world_size ranks (one today):
//   step-00000100/
//     rank-00000-of-00001.model.safetensors      parameters, HF names ("transformer.h.0...")
//     rank-00000-of-00001.optimizer.safetensors  Optimizer::state_tensors()
//     rank-00000-of-00001.rng.json               this rank's random generators (dropout, ...)
//     trainer_state.json                         step, loader position, scheduler step, tokens
//                                                seen and the metrics logging continues from
//     manifest.json                              written last: format version, step, world
//                                                size, config hash, every file's size + SHA-256
// A checkpoint is committed atomically: it is written as step-00000100.tmp-<pid>, every file
// fsynced, the manifest last, then the directory is renamed into place and the parent fsynced.
// A directory without a manifest that verifies is never resumed from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "models/module.h"
#include "optim/optimizer.h"
#include "tensor/random.h"

namespace hfrun::train {

inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kTrainerStateName = "trainer_state.json";

// A named random generator's state (Generator seed and offset).
struct GeneratorState {
  std::string name;  // "dropout", ...
  uint64_t seed = 0;
  uint64_t offset = 0;
  bool operator==(const GeneratorState&) const = default;
};

// Everything besides tensors that a run needs to continue exactly.
struct TrainerState {
  int64_t step = 0;            // optimizer steps done
  int64_t scheduler_step = 0;  // steps the LR schedule has advanced
  data::LoaderState loader;
  std::vector<GeneratorState> generators;
  int64_t tokens_seen = 0;
  double first_loss = 0, last_loss = 0;
  double elapsed_s = 0;  // training time before this checkpoint (elapsed_s keeps counting)
};

struct CheckpointOptions {
  int64_t keep = 0;         // > 0: after the commit, delete the oldest beyond the newest `keep`
  std::string config_hash;  // recorded in the manifest (identifies the run's configuration)
  // Prepended to parameter names in the model file ("transformer." gives GPT-2's HF names);
  // recorded in the file's metadata so loading strips it again.
  std::string param_prefix;
};

// "rank-00000-of-00001" for rank 0 of 1.
std::string rank_prefix(int64_t rank, int64_t world);
// "step-00000100".
std::string checkpoint_dir_name(int64_t step);

// Writes checkpoints_root/step-%08lld/ atomically (see above) and returns its path. First
// removes leftover temporary directories of processes that no longer run; an existing
// checkpoint of the same step is replaced. Then prunes by options.keep.
std::string save_checkpoint(const std::string& checkpoints_root, const nn::Module& model,
                            const optim::Optimizer& optimizer, const TrainerState& state,
                            const CheckpointOptions& options = {});

struct Manifest {
  int version = 0;
  int64_t step = 0;
  int64_t world_size = 0;
  std::string config_hash;
  struct File {
    std::string name;
    uint64_t size = 0;
    std::string sha256;
  };
  std::vector<File> files;
};

// Reads dir/manifest.json and checks every file it lists (size, then SHA-256). Any defect is an
// hfrun::Error (kInvalidInput) "corrupt checkpoint DIR: FILE: what differs".
Manifest verify_checkpoint(const std::string& dir);

// Verifies `dir`, then restores the model's parameters and the optimizer's state (both checked
// completely before either changes) and returns the trainer state; the caller restores the
// loader (TokenLoader::restore) and generators (restore_generator). `manifest` (optional)
// receives the verified manifest.
TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             Manifest* manifest = nullptr);

// The newest committed checkpoint under output_dir/checkpoints whose manifest verifies, or
// nullopt. Temporary, incomplete and corrupt directories are skipped with a warning line on
// stderr naming each.
std::optional<std::string> find_latest_checkpoint(const std::string& output_dir);

// Committed checkpoint directories under checkpoints_root (step-NNNNNNNN, no suffix), oldest
// first. Says nothing about whether they verify.
std::vector<std::string> list_checkpoints(const std::string& checkpoints_root);

GeneratorState capture_generator(const std::string& name, const Generator& gen);
// Sets `gen` to the state named `name` in `state`; a missing name is an error naming it.
void restore_generator(const TrainerState& state, const std::string& name, Generator& gen);

}  // namespace hfrun::train
