// Accelerator: data-parallel (and tensor-parallel, for models with a plan) training of any
// nn::Module from a program that embeds hfrun, in the shape of Hugging Face Accelerate, on the
// CPU or a GPU, in f32, bf16 or fp16 mixed precision (fp16 with dynamic loss scaling). The same
// process runs alone (plain local training, no MPI) or as one of N ranks started by mpirun/srun
// (rank and world from the launch environment); the gradient synchronisation is DataParallel's
// (train/distributed_setup.h: DDP for zero_stage 0, ZeRO stages 1-3), and checkpoints are
// train/checkpoint.h's (atomic, sharded, reshardable). It is hfrun's one training engine: `hfrun
// train`'s Trainer drives it too.
//
//   hfrun::Accelerator acc({.zero_stage = 1, .grad_accum_steps = 2});
//   MyModel model(cfg);                                     // any nn::Module
//   auto& opt = acc.prepare(model, [](std::vector<hfrun::optim::ParamRef> p) {
//     return std::make_unique<hfrun::optim::AdamW>(std::move(p), hfrun::optim::AdamWOptions{});
//   });
//   for (...) {                                             // each micro-step (a loop that
//                                                           // also ends on acc.stop_requested()):
//     Tensor loss = model.loss(x, y);                       // this rank's micro batch
//     acc.backward(loss);
//     if (acc.sync_gradients()) {                           // last micro-step of the window
//       acc.clip_grad_norm(1.0);
//       acc.step();                                         // update, ZeRO all-gather, zero_grad
//     }
//   }
//   acc.save_state("ckpt");                                 // ckpt/step-00000100/
//   acc.save_model("final");                                // whole tensors, HF names
//
// The optimizer is created by prepare(), from the parameters this rank updates: with ZeRO those
// are 1-D pieces of the flat parameter buffer (its shard), known only after the model is
// attached, and an Optimizer sizes its state buffers for its parameters when it is built. So
// prepare() takes a factory rather than a finished optimizer, and owns what it returns.
//
// Every method that communicates (prepare, backward, clip_grad_norm, step, mean_across_ranks,
// stop_requested, save_state, load_state, latest_state, barrier) is collective: every rank calls
// it, in the same order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "autograd/functions.h"   // WeightCopy
#include "common/stop_signals.h"  // kExitStopped, for programs that stop on stop_requested()
#include "data/loader.h"
#include "distributed/parallel/data_parallel.h"
#include "nn/module.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace hfrun::train {

struct AcceleratorOptions {
  // 0: DDP (replicated); 1, 2, 3: ZeRO (train.yaml distributed.zero_stage). One process trains
  // plainly whatever the stage: nothing to replicate or shard.
  int zero_stage = 0;
  int64_t grad_accum_steps = 1;      // micro-steps (backward calls) per optimizer step
  double bucket_mb = 25;             // communication unit size
  std::string reduce_dtype = "f32";  // gradients on the wire: f32 or bf16
  double timeout_s = 300;            // every collective fails after this long instead of hanging
  uint64_t seed = 1234;              // of generator(): the same stream on every rank
  int64_t keep_checkpoints = 0;      // save_state keeps the newest this many (0: all)
  // While the Accelerator lives, SIGTERM/SIGUSR1/SIGINT are recorded instead of killing the
  // process (common/stop_signals.h); stop_requested() reports them. False: the program's own
  // handlers stay.
  bool handle_stop_signals = true;
  // "no", "bf16" or "fp16": the model's GEMMs run on bf16 (f16) copies with f32 accumulation;
  // parameters, gradients and optimizer state stay f32 (train.yaml train.mixed_precision).
  std::string mixed_precision = "no";
  // Dynamic loss scaling (torch.cuda.amp.GradScaler; optim/grad_scaler.h): backward() scales
  // the loss, clip_grad_norm() / unscale_gradients() unscale, and step() makes no update when
  // the gradients overflowed, backing the scale off (train.yaml train.grad_scaler). Unset: on
  // with torch's defaults for fp16, off otherwise (as Accelerate).
  std::optional<optim::GradScalerOptions> grad_scaler = std::nullopt;
  // cpu, cuda (cuda:LOCAL_RANK) or auto (train.device): prepare() moves the model there; the
  // program moves its batches to device().
  std::string device = "cpu";
  // auto (NCCL for CUDA tensors, MPI for CPU), mpi (GPU tensors through host memory) or nccl.
  std::string backend = "auto";
  // Ranks per tensor-parallel group: prepare() splits the model by its tensor_parallel_plan()
  // (every family in models/ has one); rank()/world() are then the data-parallel ones.
  int tensor_parallel = 1;
};

struct TrainConfig;   // train/config.h
struct TrainerState;  // train/checkpoint.h
struct Manifest;      // train/checkpoint.h

// Elements [begin, end) of a range.
struct IndexRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class Accelerator {
 public:
  // Reads rank and world from the launch environment (OMPI_COMM_WORLD_*, PMIX_RANK, SLURM_*);
  // with more than one rank, initialises MPI (once per process). Checks the options (an
  // hfrun::Error of kind invalid input names the bad one).
  explicit Accelerator(AcceleratorOptions options = {});
  // From a train.yaml (its seed and train, distributed and checkpoint sections: zero_stage,
  // grad_accum_steps, bucket_mb, timeout_s, keep, mixed_precision, device, backend,
  // tensor_parallel): errors name config.source and the YAML key. hfrun's Trainer is built on
  // this; it handles stop signals only while it runs (handle_stop_signals false).
  explicit Accelerator(const TrainConfig& config, bool handle_stop_signals = true);
  ~Accelerator();
  Accelerator(const Accelerator&) = delete;
  Accelerator& operator=(const Accelerator&) = delete;

  // This rank's place among the ranks that train on different data (the data-parallel group):
  // shard() and the loader split batches by it. Ranks of one tensor-parallel group share it.
  int rank() const;
  int world() const;
  // How gradients travel between data-parallel ranks ("node shared memory", "Open MPI", "NCCL",
  // see dist::Topology::transport()); "none" in a single process.
  std::string gradient_transport() const;
  // The whole job (tensor-parallel ranks included) and this rank's place in its
  // tensor-parallel group.
  int global_rank() const;
  int global_world() const;
  int tensor_parallel_rank() const;
  // Global rank 0: the one that logs and decides which checkpoint to resume.
  bool is_main_process() const { return global_rank() == 0; }
  // Where the model trains (options().device resolved).
  Device device() const;
  const AcceleratorOptions& options() const;

  // With tensor_parallel > 1, first keeps this rank's part of the model by its plan; with bf16,
  // sets the model's compute dtype. Flattens the model's parameters onto device() (unless done
  // already, then they must be there), gives every rank rank 0's values,
  // attaches the gradient synchronisation, then calls make_optimizer with the parameters this
  // rank updates (the whole model for zero_stage 0; with ZeRO, this rank's 1-D pieces, named
  // "<name>@<offset>") and keeps the optimizer it returns (a std::unique_ptr<T>, T an
  // optim::Optimizer). Returns it, for set_lr and the like. Weight decay applies to parameters
  // with ndim >= 2 unless `decays(name, parameter)` says otherwise. Once per Accelerator; the
  // model must outlive it.
  template <typename MakeOptimizer>
  auto& prepare(nn::Module& model, MakeOptimizer&& make_optimizer,
                const std::function<bool(const std::string&, const Tensor&)>& decays = {}) {
    auto optimizer = std::forward<MakeOptimizer>(make_optimizer)(prepare_model(model, decays));
    using T = typename decltype(optimizer)::element_type;
    static_assert(std::is_base_of_v<optim::Optimizer, T>,
                  "prepare: make_optimizer must return std::unique_ptr<an optim::Optimizer>");
    T& ref = *optimizer;
    adopt_optimizer(std::move(optimizer));
    return ref;
  }

  // This rank's part of `n` items (a global batch of samples): the r-th of world equal,
  // contiguous slices. n must be a multiple of world(), so that the mean of the ranks' mean
  // losses is the global batch's mean loss.
  IndexRange shard(int64_t n) const;
  // `options` with rank, world and grad_accum set for this process (data::TokenLoader reads
  // its rank's rows of each global batch); micro_batch stays rows per rank per micro-step.
  data::LoaderOptions shard(data::LoaderOptions options) const;

  // One micro-step's backward of `loss` (a scalar, this rank's mean over its micro batch),
  // scaled by 1/grad_accum_steps (and then by loss_scale() with a grad scaler). On the last
  // micro-step of the window (every micro-step's for ZeRO-2/3) the gradients are averaged across
  // ranks while backward runs, and are complete when it returns.
  void backward(const Tensor& loss);
  // Whether the last backward() completed an accumulation window: the gradients are
  // synchronised and clip_grad_norm() / step() may run.
  bool sync_gradients() const { return sync_gradients_; }
  // Global L2 norm of the synchronised gradients (over every rank's shard) and clipping to
  // max_norm as torch.nn.utils.clip_grad_norm_ (infinity: measure only). Returns the norm.
  // With a grad scaler the gradients are unscaled first, as unscale_gradients() does; when the
  // optimizer updates the parameters prepare() gave it, in the norm's own pass (an overflow is
  // a non-finite norm; no separate pass over the gradients). An unscaled gradient that
  // overflows f32 (only possible with a loss scale below 1) then counts as an overflow too.
  double clip_grad_norm(double max_norm);
  // As clip_grad_norm(), but the clipping itself happens in step(): the optimizer reads each
  // gradient times the clip coefficient in its update pass (the same f32 multiply, so the same
  // parameters), and no pass of its own scales the gradients. Until step() they read unclipped.
  // Where the optimizer does not update exactly the parameters prepare() gave it, this is
  // clip_grad_norm(). The trainer's clip-then-step uses it.
  double clip_grad_norm_in_step(double max_norm);
  // With a grad scaler: divides the synchronised gradients by loss_scale() (once per window)
  // and learns whether any rank's held an inf or NaN (collective). A no-op otherwise.
  void unscale_gradients();
  // The optimizer step on this rank's parameters, then (ZeRO) every rank receives the updated
  // parameters, and the gradients are zeroed for the next window. With a grad scaler the
  // gradients are unscaled if they were not yet; when they overflowed (on any rank) no update
  // is made (optimizer_step_was_skipped(): the learning-rate schedule does not advance either,
  // as with Accelerate), and the scale is updated. step_count() advances either way.
  void step();
  // step() for a loop that keeps mixed precision's 16-bit weight copies across steps (its
  // WeightCastScope's entries, carried into the next window's scope): returns those of `copies`
  // that still equal their source's cast after the step. The optimizer writes the new value of
  // each parameter it updates into the copy made from exactly that parameter's memory (the
  // parameter or a transposed view of it), in the update's own pass, instead of every forward
  // casting the weights anew. Other copies of memory the step may write (any trainable
  // parameter: the update, ZeRO's gathers) are dropped; copies of frozen weights are kept. A
  // step the grad scaler skips writes nothing and keeps them all. Under ZeRO-3 (gathered
  // parameters reuse their buffers) none are kept.
  std::vector<WeightCopy> step(std::vector<WeightCopy> copies);
  // Whether the last step() made no update because the gradients overflowed (Accelerate's
  // accelerator.optimizer_step_was_skipped).
  bool optimizer_step_was_skipped() const { return step_was_skipped_; }
  // The loss scale backward() applies now (1 without a grad scaler).
  float loss_scale() const;
  const optim::GradScaler& grad_scaler() const;
  // Drops the gradients accumulated so far and starts a new window (e.g. to skip a step).
  // Lazily (nn::Module::zero_grad_lazily): the next backward writes each gradient instead of
  // adding it to zeros; grad() reads zeros meanwhile.
  void zero_grad();
  // Ends the window without an update (a non-finite gradient): zero_grad(), and the
  // parameters ready for the next forward (ZeRO-3). step_count() stays.
  void skip_step();
  // Optimizer steps taken (step() calls, continued by load_state).
  int64_t step_count() const { return steps_; }
  // Steps the learning-rate schedule has advanced: step() calls that made an update (equal to
  // step_count() unless a grad scaler skipped some). Continued by load_state.
  int64_t scheduler_steps() const { return scheduler_steps_; }
  // Seconds this rank spent in gradient synchronisation and parameter gathering beyond its own
  // backward (waiting for the other ranks included): the communication share of the time split.
  double communication_seconds() const { return communication_s_; }

  optim::Optimizer& optimizer();
  nn::Module& model();
  // Seeded with options().seed on every rank; saved and restored with the state. Draws made
  // with Generator::advance() resume exactly.
  Generator& generator() { return generator_; }

  // The mean (sum) of `v` over the ranks, the same double on every rank (added in rank order).
  double mean_across_ranks(double v);
  double mean_across_ranks(const Tensor& scalar) { return mean_across_ranks(scalar.item()); }
  double sum_across_ranks(double v);
  void barrier();
  // The stop signal (SIGTERM, SIGUSR1, SIGINT) any rank received, 0 when none: the same on
  // every rank. Call it at step boundaries; when non-zero, save_state() and exit (hfrun's own
  // runs exit with kExitStopped = 3), as Slurm preemption and time limits expect.
  int stop_requested();
  // Every rank's `s` (the whole job), in global rank order, on every rank.
  std::vector<std::string> allgather_strings(const std::string& s);
  // The main process prints one JSON line: {"step": step_count(), "<key>": value, ...}.
  void log(const std::vector<std::pair<std::string, double>>& values) const;

  // Saves parameters, optimizer state, step_count(), the generator and (optionally) the
  // loader's position as checkpoints_root/step-<step_count(), 8 digits>/, committed atomically
  // (all ranks' files or none), keeping options().keep_checkpoints. Returns the path.
  std::string save_state(const std::string& checkpoints_root,
                         const data::ResumableLoader* loader = nullptr);
  // The newest committed checkpoint under checkpoints_root whose files verify, as rank 0 sees
  // it (corrupt or incomplete ones are skipped with a warning), or nullopt.
  std::optional<std::string> latest_state(const std::string& checkpoints_root);
  // The same for a driver that keeps more state than the Accelerator (hfrun's Trainer): besides
  // the step, the generator and the loader, `extra`'s tokens_seen, losses, elapsed_s and
  // generators are saved, and `config_hash` goes into the manifest.
  std::string save_state(const std::string& checkpoints_root, const data::ResumableLoader* loader,
                         const TrainerState& extra, const std::string& config_hash);
  // Restores a checkpoint directory written by save_state (by any number of ranks and any
  // zero_stage): parameters, optimizer state, step_count(), the generator and the loader's
  // position (when `loader` is given). Starts a new accumulation window. Returns the step.
  int64_t load_state(const std::string& checkpoint_dir, data::ResumableLoader* loader = nullptr);
  // load_state returning everything the checkpoint holds besides tensors (the driver's state
  // of save_state's second form) and, optionally, its manifest. A checkpoint that fails to load
  // on any rank throws the same error on every rank (CorruptCheckpoint when its files are not
  // what its manifest says), with nothing changed. Unlike load_state it
  // accepts a checkpoint without the Accelerator's generator (one hfrun train wrote before it
  // ran on the Accelerator); generator() then keeps its seed.
  TrainerState restore_state(const std::string& checkpoint_dir, data::ResumableLoader* loader,
                             Manifest* manifest = nullptr);
  // Resumes from the newest checkpoint under checkpoints_root that loads, and returns its step,
  // or nullopt (nothing changed) when there is none. Each rank reads and verifies only the
  // files it needs, once; a checkpoint whose files are not what its manifest says (on any rank)
  // is skipped, with a warning, for the next older one. Cheaper than latest_state + load_state,
  // which verify every file on rank 0 first.
  std::optional<int64_t> load_latest_state(const std::string& checkpoints_root,
                                           data::ResumableLoader* loader = nullptr);
  // load_latest_state for a driver with state of its own (restore_state's form); `checkpoint_dir`
  // (optional) receives the directory it resumed from.
  std::optional<TrainerState> restore_latest_state(const std::string& checkpoints_root,
                                                   data::ResumableLoader* loader,
                                                   Manifest* manifest = nullptr,
                                                   std::string* checkpoint_dir = nullptr);

  // Calls `use` on the main process with the whole model's parameters by name (accelerate's
  // get_state_dict): ZeRO-3's shards gathered, tensor-parallel parts assembled into whole
  // tensors. The tensors may be the live parameters: valid during the call only. Collective.
  void with_state_dict(
      const std::function<void(const std::vector<std::pair<std::string, Tensor>>&)>& use);
  // Writes the whole model into `dir` as Hugging Face does (model.safetensors; config.json too
  // for the models of models/), atomically, from the main process. Collective.
  void save_model(const std::string& dir);
  // ZeRO-3: frees the parameters that forwards without a backward (evaluation) left gathered;
  // the next forward gathers them again. Nothing otherwise. Collective-free.
  void free_gathered_parameters();
  // Bytes this rank holds for parameters, gradients and optimizer state (the ZeRO paper's
  // accounting; live tensors, not the allocator's cache).
  dist::TrainingMemory training_memory() const;

  struct State;

 private:
  double clip(double max_norm, bool in_step);
  std::vector<optim::ParamRef> prepare_model(
      nn::Module& model, const std::function<bool(const std::string&, const Tensor&)>& decays);
  void adopt_optimizer(std::unique_ptr<optim::Optimizer> optimizer);
  void init(const TrainConfig& config);
  void check_prepared(const char* method) const;
  // ZeRO-3 on a model without blocks(): nothing gathers its parameters around forward (no
  // forward hooks run), so they are gathered between steps.
  void gather_for_forward();
  // step()'s work, the optimizer also writing `param_copies` (one per optimizer parameter, or
  // none), or the shared copies where there are (shared_weight_copies(), completed by every
  // rank before the ranks meet); returns which it wrote (none when the grad scaler skipped the
  // update).
  std::vector<bool> update(const std::vector<Tensor>& param_copies);
  // DataParallel::shared_weight_copies() where this Accelerator's optimizer updates exactly
  // the prepared parameters; empty otherwise.
  std::vector<Tensor> shared_weight_copies() const;

  std::unique_ptr<State> s_;
  Generator generator_;
  int64_t steps_ = 0;
  int64_t scheduler_steps_ = 0;
  double communication_s_ = 0;
  bool unscaled_ = false;          // this window's gradients were unscaled
  bool found_inf_ = false;         // ... and some rank's held an inf or NaN
  bool step_was_skipped_ = false;  // the last step() made no update (overflow)
  double clip_in_step_ = 1.0;      // clip_grad_norm_in_step()'s coefficient for step()
  int64_t micro_step_ = 0;         // within the current window
  bool sync_gradients_ = false;    // the last backward() ended a window
  bool awaiting_step_ = false;     // synchronised gradients not yet stepped on or zeroed
};

}  // namespace hfrun::train

namespace hfrun {
using train::Accelerator;
using train::AcceleratorOptions;
using train::IndexRange;
}  // namespace hfrun
