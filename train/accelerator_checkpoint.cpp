// The Accelerator's checkpoints and state dicts: save_state / restore_state (every rank its own
// part, the outcome agreed), the newest valid checkpoint, and whole parameters for export.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "distributed/parallel/tensor_parallel.h"
#include "models/model.h"
#include "tensor/ops.h"
#include "train/accelerator.h"
#include "train/accelerator_state.h"
#include "train/checkpoint.h"
#include "train/export.h"

namespace hfrun::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kGeneratorName = "accelerator";

}  // namespace

std::string Accelerator::save_state(const std::string& checkpoints_root,
                                    const data::ResumableLoader* loader) {
  return save_state(checkpoints_root, loader, TrainerState{}, "");
}

std::string Accelerator::save_state(const std::string& checkpoints_root,
                                    const data::ResumableLoader* loader, const TrainerState& extra,
                                    const std::string& config_hash) {
  check_prepared("save_state");
  State& s = *s_;
  TrainerState st = extra;
  st.step = steps_;
  st.scheduler_step = scheduler_steps_;
  if (s.scaler.enabled()) st.grad_scaler = s.scaler.state();
  if (loader) st.loader = loader->state();
  std::erase_if(st.generators, [](const GeneratorState& g) { return g.name == kGeneratorName; });
  st.generators.push_back(capture_generator(kGeneratorName, generator_));
  CheckpointOptions options;
  options.keep = s.options.keep_checkpoints;
  options.config_hash = config_hash;
  if (!s.dp) return save_checkpoint(checkpoints_root, *s.model, *s.optimizer, st, options);
  // Replicated parameters (stages 0-2) once from the first data-parallel rank of each
  // tensor-parallel group (its part), ZeRO-3's pieces and ZeRO optimizer state from every rank.
  CheckpointShard shard;
  shard.model = s.model;
  const bool first = s.dp->rank() == 0;
  shard.write_model = first;
  shard.param_pieces = s.dp->parameter_pieces();
  shard.optimizer = s.optimizer.get();
  shard.write_optimizer = first || s.dp->zero_stage() > 0;
  shard.slices = s.slices;
  shard.tp_rank = s.dp->tensor_parallel_rank();
  shard.tp_size = s.dp->tensor_parallel_size();
  JobCheckpointGroup group(*s.dp);
  return save_checkpoint(checkpoints_root, shard, st, options, &group);
}

std::optional<std::string> Accelerator::latest_state(const std::string& checkpoints_root) {
  std::string found;
  if (is_main_process()) {
    const std::vector<std::string> dirs = fs::is_directory(checkpoints_root)
                                              ? list_checkpoints(checkpoints_root)
                                              : std::vector<std::string>{};
    for (auto it = dirs.rbegin(); it != dirs.rend() && found.empty(); ++it) {
      try {
        verify_checkpoint(*it);
        found = *it;
      } catch (const Error& e) {
        std::fprintf(stderr, "hfrun: warning: skipping checkpoint %s: %s\n", it->c_str(), e.what());
      }
    }
  }
  // Rank 0's answer on every rank, so that all of them load the same checkpoint (or none).
  if (s_->dp) found = s_->dp->allgather_strings(found)[0];
  if (found.empty()) return std::nullopt;
  return found;
}

std::optional<TrainerState> Accelerator::restore_latest_state(const std::string& checkpoints_root,
                                                              data::ResumableLoader* loader,
                                                              Manifest* manifest,
                                                              std::string* checkpoint_dir) {
  check_prepared("load_latest_state");
  // Rank 0's list (manifests and file sizes only) on every rank, newest first.
  std::string listed;
  if (is_main_process()) {
    for (const std::string& dir : resumable_checkpoints(checkpoints_root)) listed += dir + "\n";
  }
  if (s_->dp) listed = s_->dp->allgather_strings(listed)[0];
  std::istringstream lines(listed);
  for (std::string dir; std::getline(lines, dir);) {
    try {
      TrainerState st = restore_state(dir, loader, manifest);
      if (checkpoint_dir) *checkpoint_dir = dir;
      return st;
    } catch (const CorruptCheckpoint& e) {
      if (is_main_process())
        std::fprintf(stderr, "hfrun: warning: skipping checkpoint %s: %s\n", dir.c_str(),
                     e.message().c_str());
    }
  }
  return std::nullopt;
}

std::optional<int64_t> Accelerator::load_latest_state(const std::string& checkpoints_root,
                                                      data::ResumableLoader* loader) {
  const std::optional<TrainerState> st = restore_latest_state(checkpoints_root, loader);
  if (!st) return std::nullopt;
  restore_generator(*st, kGeneratorName, generator_);  // required here: errors name it
  return st->step;
}

int64_t Accelerator::load_state(const std::string& checkpoint_dir, data::ResumableLoader* loader) {
  const TrainerState st = restore_state(checkpoint_dir, loader);
  restore_generator(st, kGeneratorName, generator_);  // required here: errors name it
  return st.step;
}

TrainerState Accelerator::restore_state(const std::string& checkpoint_dir,
                                        data::ResumableLoader* loader, Manifest* manifest) {
  check_prepared("load_state");
  State& s = *s_;
  HF_CHECK_INPUT(fs::is_directory(checkpoint_dir), "Accelerator::load_state: ", checkpoint_dir,
                 ": no such checkpoint directory (a step-NNNNNNNN directory written by "
                 "save_state; latest_state(root) finds the newest)");
  if (s.dp) {
    // Parameters the node's ranks share: none is written while another rank may still read them
    // (a driver's evaluation before the restore), and the first data-parallel rank restores
    // them alone (the barrier at the end orders its writes before every rank's reads).
    barrier();
    s.dp->release_parameters();  // ZeRO-3: each rank restores its pieces, regathered below
  }
  LoadLayout layout;
  layout.slices = s.slices;
  layout.rank = global_rank();
  if (s.dp) {
    layout.param_pieces = s.dp->parameter_pieces();
    layout.tp_rank = s.dp->tensor_parallel_rank();
    layout.tp_size = s.dp->tensor_parallel_size();
    layout.parameters = s.dp->rank() == 0 || !s.dp->memory(*s.optimizer).params_shared;
  }
  // Each rank reads (and verifies) only what it holds; the ranks agree on the outcome, so a
  // checkpoint one rank finds corrupt fails on all of them (nothing changed on any) instead of
  // leaving the others waiting in the next collective.
  TrainerState st;
  std::string failure;
  try {
    st = load_checkpoint(checkpoint_dir, *s.model, *s.optimizer, layout, manifest);
  } catch (const CorruptCheckpoint& e) {
    failure = "C" + e.message();
  } catch (const Error& e) {
    if (!s.dp) throw;
    failure = (e.kind() == ErrorKind::kInvalidInput ? "I" : "R") + e.message();
  }
  if (s.dp) {
    const std::vector<std::string> all = s.dp->allgather_strings(failure);
    for (size_t r = 0; r < all.size() && failure.empty(); ++r) {
      if (!all[r].empty())
        failure = all[r].substr(0, 1) + "rank " + std::to_string(r) + ": " + all[r].substr(1);
    }
  }
  if (!failure.empty()) {
    gather_for_forward();  // ZeRO-3: the pieces are as they were; whole parameters again
    const std::string what = failure.substr(1);
    if (failure[0] == 'C')
      throw CorruptCheckpoint(what, __FILE__, __LINE__, ErrorKind::kInvalidInput);
    throw Error(what, __FILE__, __LINE__,
                failure[0] == 'I' ? ErrorKind::kInvalidInput : ErrorKind::kRuntime);
  }
  if (loader) loader->restore(st.loader);
  // Checkpoints of hfrun train before the Trainer ran on the Accelerator have no such stream.
  for (const GeneratorState& g : st.generators) {
    if (g.name == kGeneratorName) restore_generator(st, kGeneratorName, generator_);
  }
  steps_ = st.step;
  scheduler_steps_ = st.scheduler_step;
  // A checkpoint of a run without loss scaling starts the scale afresh (init_scale).
  if (s.scaler.enabled() && st.grad_scaler) s.scaler.load(*st.grad_scaler);
  sync_gradients_ = false;
  zero_grad();
  gather_for_forward();
  barrier();  // every rank has read the checkpoint before any rank writes the next one
  return st;
}

void Accelerator::with_state_dict(
    const std::function<void(const std::vector<std::pair<std::string, Tensor>>&)>& use) {
  check_prepared("with_state_dict");
  State& s = *s_;
  if (!s.dp) {
    use(s.model->named_parameters());
    return;
  }
  s.dp->gather_parameters();  // ZeRO-3: whole parameters on every rank until released
  std::vector<std::pair<std::string, Tensor>> whole;
  const bool main = is_main_process();
  const bool tp = s.dp->tensor_parallel_size() > 1;
  std::exception_ptr error;
  try {
    for (const auto& [name, local] : s.model->named_parameters()) {
      const nn::TensorParallelSplit split = s.model->tensor_parallel_split(name);
      if (!tp || !split.split()) {
        if (main) whole.emplace_back(name, local);
        continue;
      }
      // Every tensor-parallel rank joins the gather of each split parameter.
      std::vector<Tensor> parts = s.dp->gather_tensor_parallel(local);
      if (!main) continue;
      for (size_t t = 0; t < parts.size(); ++t) {
        parts[t] = ops::reshape(
            parts[t], nn::tensor_parallel_local_shape(split, static_cast<int>(t), parts.size()));
      }
      Tensor assembled = nn::tensor_parallel_assemble(parts, split);
      HF_CHECK(assembled.sizes() == split.full_shape, "with_state_dict: ", name, " assembled as ",
               assembled.str(), ", the whole parameter is ", shape_str(split.full_shape));
      whole.emplace_back(name, std::move(assembled));
    }
    if (main) use(whole);
  } catch (...) {
    error = std::current_exception();
  }
  whole.clear();
  s.dp->release_parameters();
  gather_for_forward();
  if (error) std::rethrow_exception(error);
}

void Accelerator::save_model(const std::string& dir) {
  check_prepared("save_model");
  const auto* lm = dynamic_cast<const nn::Model*>(s_->model);
  with_state_dict([&](const std::vector<std::pair<std::string, Tensor>>& tensors) {
    write_hf_model(dir, lm ? lm->config_json() : std::string(), tensors, "");
  });
  barrier();  // the directory is complete before any rank goes on
}

}  // namespace hfrun::train
