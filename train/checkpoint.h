// Resumable training checkpoints (CONTRACT.md: output_dir/checkpoints/step-00000100/).
//
// Layout of one checkpoint written by N ranks (R = each rank):
//   step-00000100/
//     rank-0000R-of-0000N.model.safetensors      parameters, HF names ("transformer.h.0..."):
//                                                rank 0's, when parameters are replicated
//     rank-0000R-of-0000N.optimizer.safetensors  the optimizer state this rank holds: all of
//                                                it (one copy, from rank 0) when replicated,
//                                                each rank's ZeRO pieces when sharded
//     rank-0000R-of-0000N.rng.json               this rank's random generators (dropout, ...)
//     trainer_state.json                         step, loader position, scheduler step, tokens
//                                                seen and the metrics logging continues from
//     manifest.json                              written last: format version, step, world
//                                                size, config hash, every file's size + XXH3-128
// A tensor is stored whole under its name ("exp_avg.h.0.attn.c_attn.weight") or as 1-D pieces
// of its row-major elements ("exp_avg.h.0.attn.c_attn.weight@1024"), listed in the file's
// "hfrun_parts" metadata (JSON: key -> [name, offset, numel of the whole tensor]). Loading
// assembles whatever range a rank needs from the pieces of every file, so a checkpoint saved
// by N ranks with one sharding resumes on M ranks with another.
// A checkpoint is committed atomically and collectively: every rank writes its files into
// step-00000100.tmp-<pid of rank 0> and fsyncs them; only when every rank succeeded does rank
// 0 write the manifest, rename the directory into place and fsync the parent. A directory
// without a manifest that verifies is never resumed from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/digest.h"
#include "data/loader.h"
#include "distributed/parallel/data_parallel.h"
#include "nn/module.h"
#include "optim/grad_scaler.h"
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
  // Loss scaling's scale and clean-step count, in runs that scale (trainer_state.json's
  // "grad_scaler"; absent otherwise).
  std::optional<optim::GradScalerState> grad_scaler;
};

struct CheckpointOptions {
  int64_t keep = 0;         // > 0: after the commit, delete the oldest beyond the newest `keep`
  std::string config_hash;  // recorded in the manifest (identifies the run's configuration)
};

// Where an optimizer parameter's elements sit in a model parameter (distributed/parallel).
using ParamSlice = dist::ParamSlice;

// The collective side of a save by several ranks (DataParallel implements it).
class CheckpointGroup {
 public:
  virtual ~CheckpointGroup() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // Every rank's `s`, in rank order, on every rank.
  virtual std::vector<std::string> allgather_strings(const std::string& s) = 0;
};

// What one rank contributes to a checkpoint.
struct CheckpointShard {
  const nn::Module* model = nullptr;
  bool write_model = true;  // this rank writes every parameter (rank 0 when replicated)
  // ZeRO-3: instead, this rank's pieces of the parameters (written by every rank).
  std::vector<std::pair<ParamSlice, Tensor>> param_pieces;
  // Tensor parallelism: this rank's part of each split parameter (model->
  // tensor_parallel_split()) is stored as "<name>|tp<rank>of<size>".
  int tp_rank = 0, tp_size = 1;
  const optim::Optimizer* optimizer = nullptr;
  bool write_optimizer = true;
  // Per optimizer parameter (optimizer->params() order) where it sits in the model; empty:
  // each optimizer parameter is the whole model parameter of the same name.
  std::vector<ParamSlice> slices;
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
// The same, collectively: every rank of `group` calls it with its shard (rank 0's `state` is
// written). Returns the committed path on every rank; when any rank fails, nothing is
// committed and every rank throws, naming the failed ranks and their errors.
std::string save_checkpoint(const std::string& checkpoints_root, const CheckpointShard& shard,
                            const TrainerState& state, const CheckpointOptions& options,
                            CheckpointGroup* group);

struct Manifest {
  int version = 0;
  int64_t step = 0;
  int64_t world_size = 0;
  std::string config_hash;
  struct File {
    std::string name;
    uint64_t size = 0;
    DigestKind digest_kind = DigestKind::kXxh3_128;  // "xxh3_128" or (older manifests) "sha256"
    std::string digest;
  };
  std::vector<File> files;
  // The entry of `name`; a file the manifest does not list is a CorruptCheckpoint error.
  const File& file(const std::string& dir, const std::string& name) const;
};

// A checkpoint whose files are not what its manifest says (missing, truncated, another
// digest) or that never committed. Auto-resume passes over it to an older checkpoint; any
// other defect (another format version, another model) is a plain Error.
class CorruptCheckpoint : public Error {
 public:
  using Error::Error;
};

// Reads dir/manifest.json and checks that every file it lists is there with its size: cheap,
// reads no data. Defects are CorruptCheckpoint (kInvalidInput) "corrupt checkpoint DIR: FILE:
// what differs".
Manifest read_manifest(const std::string& dir);
// read_manifest, then the checksum of every file (reads all of them).
Manifest verify_checkpoint(const std::string& dir);
// Throws CorruptCheckpoint unless `digest` (of f.digest_kind) is the manifest's digest of `f`.
void check_digest(const std::string& dir, const Manifest::File& f, const std::string& digest);

// Restores the model's parameters and the optimizer's state (both checked completely before
// either changes) and returns the trainer state; the caller restores the loader
// (TokenLoader::restore) and generators (restore_generator). The manifest is read first; every
// file this process reads is checked against its checksum as it is first read (so each byte is
// read once, and a rank verifies only what it uses), before anything changes: a
// CorruptCheckpoint leaves the model and optimizer as they were. `manifest` (optional)
// receives the manifest.
TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             Manifest* manifest = nullptr);
// The same for one rank of any layout (ZeRO stage, data- and tensor-parallel sizes): whatever
// it holds is assembled from the pieces and tensor-parallel parts of every rank's files.
struct LoadLayout {
  std::vector<ParamSlice> slices;  // per optimizer parameter (as CheckpointShard::slices)
  int rank = 0;                    // picks the rng file (rank 0's when the checkpoint has fewer)
  int tp_rank = 0, tp_size = 1;    // this rank's tensor-parallel part of split parameters
  // ZeRO-3: fill these pieces of the parameters instead of the model's parameters.
  std::vector<std::pair<ParamSlice, Tensor>> param_pieces;
  // False: another rank restores the parameters (ZeRO-1/2 ranks of one node share one copy);
  // this rank neither reads nor writes them.
  bool parameters = true;
};
TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             const LoadLayout& layout, Manifest* manifest = nullptr);

// The newest committed checkpoint under output_dir/checkpoints whose manifest verifies, or
// nullopt. Temporary, incomplete and corrupt directories are skipped with a warning line on
// stderr naming each.
std::optional<std::string> find_latest_checkpoint(const std::string& output_dir);
// The committed checkpoints under checkpoints_root whose manifest reads and whose files have
// their sizes (read_manifest), newest first; the others are skipped with a warning line on
// stderr naming each. Digests are left to load_checkpoint, which checks what it reads.
std::vector<std::string> resumable_checkpoints(const std::string& checkpoints_root);

// Committed checkpoint directories under checkpoints_root (step-NNNNNNNN, no suffix), oldest
// first. Says nothing about whether they verify.
std::vector<std::string> list_checkpoints(const std::string& checkpoints_root);

GeneratorState capture_generator(const std::string& name, const Generator& gen);
// Sets `gen` to the state named `name` in `state`; a missing name is an error naming it.
void restore_generator(const TrainerState& state, const std::string& name, Generator& gen);

}  // namespace hfrun::train
