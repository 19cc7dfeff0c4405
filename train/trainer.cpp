#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "common/fault.h"
#include "common/file_util.h"
#include "common/phase.h"
#include "common/stop_signals.h"
#include "common/stopwatch.h"
#include "data/tokenizer/tokenizer.h"
#include "models/peft.h"
#include "models/registry.h"
#include "nn/lora.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "tensor/ops.h"
#include "train/accelerator.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/memory.h"
#include "train/model_config.h"
#include "train/resume.h"
#include "train/run_summary.h"
#include "train/step_report.h"

namespace hfrun::train {

namespace fs = std::filesystem;
using detail::format_metrics;
using detail::nonfinite_fault;
using detail::nonfinite_reason;
using detail::Poison;
using detail::poison_first_gradient;

struct Trainer::State {
  TrainConfig cfg;
  // The engine: parallel layout, gradient synchronisation, optimizer, checkpoints, export.
  std::unique_ptr<Accelerator> acc;
  std::unique_ptr<DirectoryLock> output_lock;  // rank 0: one run per output_dir
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::unique_ptr<nn::Model> model;
  std::unique_ptr<TaskData> task;         // batches, the micro step's loss, evaluation
  optim::Optimizer* optimizer = nullptr;  // owned by acc
  // peft.type lora: the adapters' configuration and target_modules as adapter_config.json
  // records them (all-linear expanded).
  std::optional<nn::LoraOptions> lora;
  std::vector<std::string> lora_targets;
  bool lora_fan_in_fan_out = false;
  optim::ScheduleType schedule = optim::ScheduleType::kConstant;
  int64_t attempts = 0;  // step() calls in this process, skipped steps included
  // Mixed precision's compute-dtype weight copies, carried from one step to the next: the
  // optimizer writes the updated weights' copies in its pass (Accelerator::step(copies)), and
  // frozen weights' copies stay valid, so the forward casts no weight it has cast before.
  std::vector<WeightCopy> weight_copies;
  bool is_rank0() const { return acc->is_main_process(); }
  int64_t world() const { return acc->world(); }
  bool distributed() const { return acc->global_world() > 1; }
};

namespace {

// Whether steps carry mixed precision's weight copies to the next (HFRUN_WEIGHT_COPIES=0: no).
bool carry_weight_copies() {
  const char* e = std::getenv("HFRUN_WEIGHT_COPIES");
  return e == nullptr || std::string(e) != "0";
}

// The model: the resolved config.json, built by its family with the task's head.
// With `pretrained` (model.from_pretrained's directory), its weights: `fresh` names the
// parameters it lacked, which start from their initialisation.
std::unique_ptr<nn::Model> build_model(const TrainConfig& cfg, const data::Tokenizer* tok,
                                       const std::string& pretrained,
                                       std::vector<std::string>& fresh) {
  const ModelConfig m = resolve_model_config(cfg, tok);
  // Before any pretrained weight is read: a bad config fails at once.
  auto check = [&](const nn::Model& model) {
    HF_CHECK_INPUT(tok == nullptr || model.vocab_size() >= tok->vocab_size(), cfg.source,
                   ": model vocab_size ", model.vocab_size(), " is smaller than the tokenizer's ",
                   tok ? tok->vocab_size() : 0, " (", cfg.tokenizer, ")");
    model.check_sequence_length(cfg.data.seq_len, cfg.source + ": data.seq_len");
  };
  if (!pretrained.empty()) {
    return nn::load_model(m.json, m.source, cfg.seed, m.model_type, m.task, pretrained, &fresh,
                          check);
  }
  auto model = nn::create_model(m.json, m.source, cfg.seed, m.model_type, m.task);
  check(*model);
  return model;
}

// peft.type lora: adapters on the targeted Linear layers (a new init, or peft.adapter's values
// and configuration), every other parameter frozen but the modules to save.
void add_adapters(Trainer::State& s) {
  const TrainConfig& c = s.cfg;
  nn::LoraOptions o;
  std::string source = c.source + ": peft";
  if (!c.peft.adapter.empty()) {
    o = nn::read_peft_config_for(*s.model, c.peft.adapter);
    source = c.peft.adapter + "/" + nn::kPeftConfigName;
  } else {
    o.r = c.peft.r;
    o.alpha = c.peft.alpha;
    o.dropout = c.peft.dropout;
    o.use_rslora = c.peft.use_rslora;
    o.target_modules = c.peft.target_modules;
    o.modules_to_save = c.peft.modules_to_save;
    // As PEFT's SEQ_CLS task does: the classification head (new over a base model) trains whole.
    if (s.model->task() == nn::Task::kSequenceClassification) {
      for (const std::string& head : nn::lora_exclusions(*s.model)) {
        const bool listed = std::find(o.modules_to_save.begin(), o.modules_to_save.end(), head) !=
                            o.modules_to_save.end();
        bool exists = false;
        for (const auto& [path, module] : s.model->named_modules()) exists = exists || path == head;
        if (exists && !listed) o.modules_to_save.push_back(head);
      }
    }
  }
  const std::vector<std::string> exclude = nn::lora_exclusions(*s.model);
  const bool all_linear =
      o.target_regex.empty() && o.target_modules.size() == 1 && o.target_modules[0] == "all-linear";
  s.lora_targets = all_linear ? nn::all_linear_names(*s.model, exclude) : o.target_modules;
  Generator init(c.seed ^ 0x10a4a11ull);
  const std::vector<std::string> adapted =
      nn::apply_lora(*s.model, o, init, &s.model->dropout_generator(), source, exclude);
  for (const auto& [path, module] : s.model->named_modules()) {
    const auto* linear = dynamic_cast<const nn::Linear*>(module);
    if (linear != nullptr && linear->lora_A() != nullptr &&
        linear->layout() == nn::WeightLayout::kInOut) {
      s.lora_fan_in_fan_out = true;  // GPT-2's Conv1D
    }
  }
  if (!c.peft.adapter.empty()) nn::load_peft_weights(*s.model, c.peft.adapter);
  s.lora = o;
  if (s.is_rank0()) {
    const double trainable = static_cast<double>(s.model->num_trainable_parameters());
    const double total = static_cast<double>(s.model->num_parameters());
    std::printf(
        "LoRA r %lld on %zu layers: trainable params %.0f || all params %.0f || "
        "trainable %.4f%%\n",
        static_cast<long long>(o.r), adapted.size(), trainable, total, 100.0 * trainable / total);
    std::fflush(stdout);
  }
}

}  // namespace

Trainer::Trainer(TrainConfig config) : s_(std::make_unique<State>()) {
  ScopedPhase phase("setup");
  State& s = *s_;
  s.cfg = std::move(config);
  const TrainConfig& c = s.cfg;
  // Stop signals are handled by run() only: an interrupt while the data is tokenized ends the
  // process at once.
  s.acc = std::make_unique<Accelerator>(c, /*handle_stop_signals=*/false);
  // (The Accelerator checked that every rank has this configuration.)
  if (s.distributed()) s.cfg.distributed.num_processes = s.acc->global_world();
  // One run per output_dir, held by rank 0 for the run's life: a run restarted while the ranks
  // of a killed one still write there is refused instead of sharing its checkpoints.
  std::string lock_error;
  if (s.is_rank0()) {
    try {
      s.output_lock = std::make_unique<DirectoryLock>(c.output_dir, "output_dir");
    } catch (const Error& e) {
      lock_error = e.message();
    }
  }
  if (s.acc->sum_across_ranks(lock_error.empty() ? 0 : 1) > 0) {
    HF_CHECK_INPUT(false, c.source, ": ",
                   lock_error.empty() ? "output_dir is in use by another run (rank 0 says which)"
                                      : lock_error);
  }
  // A model that cannot be found is reported as such (where the hub cache was searched), not as
  // its missing tokenizer.
  const std::string pretrained = c.model.from_pretrained.empty() ? "" : pretrained_dir(c);
  if (const std::string tok = tokenizer_to_load(c); !tok.empty()) {
    s.tokenizer = std::make_unique<data::Tokenizer>(data::Tokenizer::from_file(tok));
  }
  trace_memory("start");
  std::vector<std::string> fresh;
  s.model = build_model(c, s.tokenizer.get(), pretrained, fresh);
  trace_memory("model built");  // with model.from_pretrained's weights
  if (!fresh.empty() && s.is_rank0()) {
    // As transformers warns: a task head over a base model's weights starts new.
    std::string names;
    for (const std::string& n : fresh) names += (names.empty() ? "" : ", ") + n;
    std::printf("%s: newly initialised (not in %s): %s\n", s.model->architecture().c_str(),
                c.model.from_pretrained.c_str(), names.c_str());
    std::fflush(stdout);
  }
  if (c.peft.type == "lora") add_adapters(s);
  if (c.train.activation_checkpointing) {
    for (nn::Module* block : s.model->blocks()) {
      auto* b = dynamic_cast<nn::Block*>(block);
      HF_CHECK(b != nullptr, "activation checkpointing: a block of ", s.model->model_type(),
               " is not an nn::Block");
      b->set_checkpointing(true);
    }
  }
  // Every rank built the whole model from the same seed; prepare() keeps this rank's
  // tensor-parallel part (the family's plan), moves it to the device, starts every rank from
  // rank 0's values, attaches the gradient synchronisation and builds the optimizer over the
  // parameters this rank updates (its ZeRO shard).
  s.optimizer = &s.acc->prepare(
      *s.model, [&c](std::vector<optim::ParamRef> params) -> std::unique_ptr<optim::Optimizer> {
        if (c.optimizer.type == "adamw") {
          optim::AdamWOptions o;
          o.lr = c.optimizer.lr;
          o.betas = {c.optimizer.beta1, c.optimizer.beta2};
          o.eps = c.optimizer.eps;
          o.weight_decay = c.optimizer.weight_decay;
          return std::make_unique<optim::AdamW>(std::move(params), o);
        }
        optim::SGDOptions o;
        o.lr = c.optimizer.lr;
        o.momentum = c.optimizer.momentum;
        o.weight_decay = c.optimizer.weight_decay;
        return std::make_unique<optim::SGD>(std::move(params), o);
      });

  trace_memory("prepared", s.acc->device());
  s.task = make_task_data(c, s.tokenizer.get(), *s.model, *s.acc);
  trace_memory("data ready", s.acc->device());
  s.schedule = optim::parse_schedule_type(c.scheduler.type);
  if (s.distributed() && s.is_rank0()) {
    // What ZeRO saves, in the paper's accounting (f32 parameters, gradients, optimizer state).
    const dist::TrainingMemory m = s.acc->training_memory();
    const double mib = 1024.0 * 1024.0;
    const char* node_shares = " in memory the node's ranks share";
    std::printf(
        "data parallel: %d ranks over %s, zero_stage %d; training state per rank %.2f MiB "
        "(parameters %.2f%s, gradients %.2f, optimizer %.2f MiB%s) for %.2f MiB of f32 "
        "parameters\n",
        s.acc->world(), s.acc->gradient_transport().c_str(), s.acc->options().zero_stage,
        m.total() / mib, m.params / mib, m.params_shared ? node_shares : "", m.grads / mib,
        m.optimizer / mib, m.optimizer_shared ? node_shares : "",
        static_cast<double>(s.model->num_parameters()) * 4 / mib);
    const int zero = s.acc->options().zero_stage;
    const bool one_node = s.acc->gradient_transport() == "node shared memory";
    if (zero <= 2 && one_node && s.acc->device().is_cpu() && s.acc->world() >= 2) {
      // The only ways these ranks end up with private parameters, or DDP's optimizer stepping
      // on rank 0 alone: /dev/shm refused the segment (a container's default is 64 MiB).
      const char* fix = "A larger /dev/shm shares them (docker run --shm-size, or a bigger tmpfs)";
      if (!m.params_shared) {
        std::printf(
            "data parallel: note: /dev/shm has no room for the one copy of the parameters "
            "(%.2f MiB) this node's ranks would share; each rank keeps its own and %s (more "
            "memory, longer steps). %s\n",
            m.params / mib,
            zero == 0 ? "runs the whole optimizer step" : "gathers them after every step", fix);
      } else if (zero == 0 && !m.optimizer_shared) {
        std::printf(
            "data parallel: note: /dev/shm has no room for the optimizer state (%.2f MiB) "
            "this node's ranks would share; rank 0 runs the whole optimizer step alone (longer "
            "steps). %s\n",
            m.optimizer / mib, fix);
      }
    }
    std::fflush(stdout);
  }
}

Trainer::~Trainer() = default;

const TrainConfig& Trainer::config() const {
  return s_->cfg;
}

double Trainer::evaluate() {
  return evaluate_metrics().loss;
}

Evaluation Trainer::evaluate_metrics() {
  ScopedPhase phase("evaluation");
  State& s = *s_;
  HF_CHECK(s.task->has_validation(), "evaluate: no data.val configured");
  autograd::NoGradGuard no_grad;
  s.model->eval();
  const Evaluation e = s.task->evaluate(*s.model, *s.acc);
  s.model->train();
  s.acc->free_gathered_parameters();  // ZeRO-3: what the forwards left gathered
  return e;
}

void Trainer::export_final(const std::string& dir) {
  State& s = *s_;
  if (s.lora) {
    // A PEFT adapter directory: what peft's PeftModel.from_pretrained loads over the base.
    const std::string config = nn::peft_config_json(*s.lora, s.lora_targets, s.lora_fan_in_fan_out,
                                                    s.cfg.model.from_pretrained, s.model->task());
    s.acc->with_state_dict([&](const std::vector<std::pair<std::string, Tensor>>& tensors) {
      write_peft_adapter(dir, config, nn::peft_tensors(tensors, *s.lora));
    });
    return;
  }
  const std::string config_json = s.model->config_json();
  s.acc->with_state_dict([&](const std::vector<std::pair<std::string, Tensor>>& tensors) {
    write_hf_model(dir, config_json, tensors, s.cfg.tokenizer);
  });
}

int64_t Trainer::steps_done() const {
  return s_->acc->step_count();
}

StepMetrics Trainer::step() {
  ScopedPhase phase("training step");
  State& s = *s_;
  const TrainConfig& c = s.cfg;
  Accelerator& acc = *s.acc;
  const auto t0 = std::chrono::steady_clock::now();
  // The schedule advances with the updates made (a step the loss scaler skipped does not move
  // it, as Accelerate's scheduler); without loss scaling that is step_count().
  const double lr =
      c.optimizer.lr * optim::lr_multiplier(s.schedule, acc.scheduler_steps(),
                                            c.scheduler.warmup_steps, c.train.max_steps);
  s.optimizer->set_lr(lr);
  const Device device = acc.device();
  ++s.attempts;
  const Poison poison = nonfinite_fault(acc.global_rank(), s.attempts);
  const bool poisoned = poison == Poison::kLoss;
  const double loss_scale = acc.grad_scaler().enabled() ? acc.loss_scale() : 0.0;
  double loss_sum = 0;
  // The micro-steps of one update read the same weights, so under mixed precision their
  // compute-dtype copies are made once, and carried to the next step (the optimizer writes the
  // new weights' copies in its own pass). Not under ZeRO-3 (gathered parameters reuse
  // buffers), nor with activation checkpointing (holding the copies from the forward to the
  // recompute would raise its peak). HFRUN_WEIGHT_COPIES=0: cast every step, as before the
  // copies were carried (for comparisons).
  std::optional<WeightCastScope> casts;
  const bool carry = carry_weight_copies();
  if ((carry || c.train.grad_accum_steps > 1) && c.train.mixed_precision != "no" &&
      acc.options().zero_stage < 3 && !c.train.activation_checkpointing) {
    casts.emplace(std::move(s.weight_copies));
  }
  s.weight_copies.clear();
  for (int64_t m = 0; m < c.train.grad_accum_steps; ++m) {
    MicroStep micro = s.task->micro_step(*s.model, device);
    if (poisoned) {
      micro.loss = mul_scalar(micro.loss, std::numeric_limits<double>::infinity());
      micro.value = micro.loss.item();
    }
    loss_sum += micro.value;
    // The window's last micro-step (every one with ZeRO-2/3) averages the gradients across
    // ranks while its backward runs.
    acc.backward(micro.loss);
  }
  // Before the update writes the weights.
  std::vector<WeightCopy> copies = casts && carry ? casts->release() : std::vector<WeightCopy>{};
  casts.reset();
  if (poison == Poison::kGrad) poison_first_gradient(acc);
  const double local_loss = loss_sum;
  loss_sum = acc.sum_across_ranks(loss_sum);
  const double max_norm =
      c.train.grad_clip > 0 ? c.train.grad_clip : std::numeric_limits<double>::infinity();
  const double grad_norm = acc.clip_grad_norm_in_step(max_norm);
  StepMetrics m;
  m.loss_scale = loss_scale;
  // Every rank sees the same summed loss and global norm, so all skip together. With loss
  // scaling, gradients that overflowed while the loss is finite are the scaler's: step() makes
  // no update and backs the scale off, unless the scale is already down at min_scale (then
  // scaling is not the cause, and the guard takes the step as without it).
  const bool scaler_handles = loss_scale > c.train.grad_scaler.min_scale;
  if (!std::isfinite(loss_sum) || (!std::isfinite(grad_norm) && !scaler_handles)) {
    m.skipped = true;
    m.skip_reason = nonfinite_reason(acc, local_loss, loss_sum, grad_norm);
    if (loss_scale > 0 && std::isfinite(loss_sum)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, " at loss scale %g", loss_scale);
      m.skip_reason += buf;
    }
    acc.skip_step();                      // no update; the gradients are dropped
    s.weight_copies = std::move(copies);  // the weights did not change
  } else {
    // The update (ZeRO: every rank gets the updated shards), writing the weights' copies.
    s.weight_copies = acc.step(std::move(copies));
    m.update_skipped = acc.optimizer_step_was_skipped();
  }
  synchronize(device);  // the step's time includes its (asynchronous) GPU work
  m.step = acc.step_count() + (m.skipped ? 1 : 0);
  m.loss = loss_sum / static_cast<double>(c.train.grad_accum_steps * s.world());
  m.lr = lr;
  m.grad_norm = grad_norm;
  m.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.tokens = s.task->step_tokens();
  m.tokens_per_s = static_cast<double>(m.tokens) / std::max(m.elapsed_s, 1e-9);
  return m;
}

RunSummary Trainer::run(const std::function<void(const StepMetrics&)>& on_step) {
  ScopedPhase phase("training loop");
  State& s = *s_;
  const TrainConfig& c = s.cfg;
  const bool rank0 = s.is_rank0();
  if (rank0) {
    fs::create_directories(c.output_dir);
    std::ofstream out(fs::path(c.output_dir) / "config.resolved.yaml");
    out << c.to_yaml();
  }
  const bool tty = rank0 && !s.distributed() && isatty(STDOUT_FILENO);  // mpirun gives a pty
  const std::string hash = config_hash(c);
  const std::string checkpoints_root = (fs::path(c.output_dir) / "checkpoints").string();

  // Resume: parameters, optimizer state, data position, dropout stream and the metrics so far.
  s.weight_copies.clear();  // casts of the weights a restore replaces
  TrainerState resumed;
  std::optional<TrainerState> restored;
  std::string resumed_from;
  Manifest manifest;
  const std::string& resume = c.checkpoint.resume;
  if (resume == "auto") {
    // The newest checkpoint that loads; one whose files are damaged is passed over.
    restored =
        s.acc->restore_latest_state(checkpoints_root, &s.task->loader(), &manifest, &resumed_from);
  } else if (resume != "never") {
    HF_CHECK_INPUT(fs::is_directory(resume), c.source, ": checkpoint.resume: ", resume,
                   ": no such checkpoint directory (use auto, never or the path of a "
                   "checkpoints/step-NNNNNNNN directory)");
    restored = s.acc->restore_state(resume, &s.task->loader(), &manifest);
    resumed_from = resume;
  }
  if (restored) {
    resumed = *restored;
    HF_CHECK_INPUT(resumed.step <= c.train.max_steps, c.source, ": checkpoint ", resumed_from,
                   " is at step ", resumed.step, ", past train.max_steps ", c.train.max_steps);
    restore_generator(resumed, "dropout", s.model->dropout_generator());
    if (manifest.config_hash != hash && rank0) {
      std::fprintf(stderr,
                   "hfrun: warning: %s was written with a different configuration; "
                   "continuing with this one\n",
                   resumed_from.c_str());
    }
    if (rank0) {
      std::printf("resuming from %s (step %lld)\n", resumed_from.c_str(),
                  static_cast<long long>(resumed.step));
      std::fflush(stdout);
    }
  }
  // A finished run started again: the same command twice (or a requeue after the end) says so
  // instead of exporting final/ again. Without final/ (the run died exporting it) it exports.
  if (restored && resumed.step == c.train.max_steps) {
    const fs::path final_dir = fs::path(c.output_dir) / "final";
    const bool exported = s.acc->sum_across_ranks(rank0 && fs::is_directory(final_dir) ? 1 : 0) > 0;
    if (exported) {
      if (rank0) {
        std::printf("run already complete: step %lld of %lld (%s); the final model is in %s\n",
                    static_cast<long long>(resumed.step), static_cast<long long>(c.train.max_steps),
                    resumed_from.c_str(), final_dir.c_str());
        std::fflush(stdout);
      }
      RunSummary done;
      done.steps = resumed.step;
      done.first_loss = resumed.first_loss;
      done.last_loss = resumed.last_loss;
      done.final_dir = final_dir.string();
      done.last_checkpoint = resumed_from;
      done.already_complete = true;
      return done;
    }
  }
  const std::string metrics_path = (fs::path(c.output_dir) / "metrics.jsonl").string();
  std::ofstream metrics;
  if (rank0) {
    truncate_metrics(metrics_path, resumed.step);
    metrics.open(metrics_path, std::ios::app);
    HF_CHECK_INPUT(metrics.good(), c.output_dir, "/metrics.jsonl: cannot write");
  }

  const auto t0 = std::chrono::steady_clock::now();
  auto now = [&] {
    return resumed.elapsed_s +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  RunSummary summary;
  const Stopwatch wall;
  const int64_t tokens_at_start = resumed.tokens_seen;
  summary.steps = resumed.step;
  summary.first_loss = resumed.first_loss;
  summary.last_loss = resumed.last_loss;
  s.model->train();
  double window_start = resumed.elapsed_s;
  int64_t window_tokens = 0;
  int64_t tokens_seen = resumed.tokens_seen;

  // Commits the checkpoint of the current optimizer step (collective with several ranks).
  auto save_checkpoint_now = [&] {
    TrainerState st;
    st.generators = {capture_generator("dropout", s.model->dropout_generator())};
    st.tokens_seen = tokens_seen;
    st.first_loss = summary.first_loss;
    st.last_loss = summary.last_loss;
    st.elapsed_s = now();
    ScopedPhase phase("checkpoint save");
    AddTime t(summary.checkpoint_s);
    ++summary.checkpoints_saved;
    return s.acc->save_state(checkpoints_root, &s.task->loader(), st, hash);
  };
  // The summary's totals, every rank's peak memory (collective), and summary.json (rank 0).
  auto finish = [&] {
    summary.output_dir = c.output_dir;
    summary.device = s.acc->device().is_cuda() ? "cuda" : "cpu";
    summary.world = s.acc->global_world();
    summary.tokens = tokens_seen - tokens_at_start;
    summary.flops_per_token = 6 * s.model->matmul_flops_per_token(c.data.seq_len);
    summary.data_s = s.task->data_seconds();
    summary.communication_s = s.acc->communication_seconds();
    summary.peak_mem_mb.clear();
    for (const std::string& v :
         s.acc->allgather_strings(std::to_string(peak_memory_mib(s.acc->device())))) {
      summary.peak_mem_mb.push_back(std::stod(v));
    }
    summary.wall_s = wall.seconds();
    if (rank0) write_run_summary(summary);
  };
  StopSignals stop_signals;
  int64_t skipped_in_a_row = 0;

  for (int64_t step = resumed.step; step < c.train.max_steps; ++step) {
    StepMetrics m;
    {
      AddTime t(summary.steps_s);
      m = this->step();
    }
    if (m.skipped) {
      ++summary.skipped_steps;
    } else {
      ++summary.steps_run;
    }
    if (step < resumed.step + 4) trace_memory("step", s.acc->device());
    window_tokens += m.tokens;
    tokens_seen += m.tokens;
    m.elapsed_s = now();
    m.tokens_per_s =
        static_cast<double>(window_tokens) / std::max(m.elapsed_s - window_start, 1e-9);
    m.peak_mem_mb = peak_memory_mib(s.acc->device());
    if (m.skipped) {
      // Not finite on some rank: no update (every rank agreed); the step is taken again with the
      // next batch. The train.max_skipped_steps-th skip in a row (the first when it is 0) stops.
      ++skipped_in_a_row;
      const int64_t stop_at = std::max<int64_t>(1, c.train.max_skipped_steps);
      if (rank0) {
        metrics << "{\"step\": " << m.step << ", \"skipped\": \"" << m.skip_reason
                << "\", \"elapsed_s\": " << m.elapsed_s << "}\n"
                << std::flush;
        std::printf("%sskipped step %lld: %s (%lld in a row; the run stops at %lld)\n",
                    tty ? "\n" : "", static_cast<long long>(m.step), m.skip_reason.c_str(),
                    static_cast<long long>(skipped_in_a_row), static_cast<long long>(stop_at));
        std::fflush(stdout);
      }
      const int stop = s.acc->stop_requested();
      if (skipped_in_a_row >= stop_at || stop != 0) {
        const int64_t good = s.acc->step_count();
        if (good > 0) summary.last_checkpoint = save_checkpoint_now();
        const std::string kept =
            good > 0 ? "; checkpoint " + summary.last_checkpoint + " holds the last good step" : "";
        if (stop != 0) {  // a stop signal while skipping: as after any step
          summary.stop_signal = stop;
          finish();
          s.acc->barrier();
          return summary;
        }
        HF_CHECK(false, "stopped: ", skipped_in_a_row, " step", skipped_in_a_row > 1 ? "s" : "",
                 " in a row had a non-finite loss or gradient norm (the last: step ", m.step, ", ",
                 m.skip_reason, "); the last good step is ", good, kept,
                 ". Lower optimizer.lr, enable train.grad_clip or check the data; "
                 "train.max_skipped_steps is ",
                 c.train.max_skipped_steps);
      }
      --step;
      continue;
    }
    skipped_in_a_row = 0;
    if (step == 0) summary.first_loss = m.loss;
    summary.last_loss = m.loss;
    summary.steps = m.step;
    const bool last = m.step == c.train.max_steps;
    if (m.update_skipped) {
      ++summary.overflow_steps;
      if (rank0) {
        std::printf(
            "%sstep %lld: gradients overflowed at loss scale %g: no update; the scale is "
            "now %g\n",
            tty ? "\n" : "", static_cast<long long>(m.step), m.loss_scale,
            static_cast<double>(s.acc->loss_scale()));
        std::fflush(stdout);
      }
    }
    if (rank0 && (m.step % c.train.log_every == 0 || last || m.step == 1 || m.update_skipped)) {
      metrics << format_metrics(m) << "\n" << std::flush;
      const double eta = (c.train.max_steps - m.step) * (m.elapsed_s / m.step);
      std::printf("%sstep %lld/%lld  loss %.4f  lr %.3e  grad_norm %.3f  %.0f tok/s  eta %.0fs%s",
                  tty ? "\r" : "", static_cast<long long>(m.step),
                  static_cast<long long>(c.train.max_steps), m.loss, m.lr, m.grad_norm,
                  m.tokens_per_s, eta, tty ? "   " : "\n");
      std::fflush(stdout);
      window_start = m.elapsed_s;
      window_tokens = 0;
      summary.tokens_per_s = m.tokens_per_s;
    }
    fault::point("step");
    if (on_step) on_step(m);
    if (s.task->has_validation() && c.train.eval_every > 0 &&
        (m.step % c.train.eval_every == 0 || last)) {
      StepMetrics v;
      v.step = m.step;
      Evaluation e;
      {
        AddTime t(summary.eval_s);
        e = evaluate_metrics();
      }
      v.val_loss = e.loss;
      v.val_accuracy = e.accuracy;
      v.val_f1 = e.f1;
      v.elapsed_s = now();
      if (rank0) {
        metrics << format_metrics(v) << "\n" << std::flush;
        std::printf("%sstep %lld  val_loss %.4f", tty ? "\n" : "", static_cast<long long>(v.step),
                    v.val_loss);
        if (v.val_accuracy >= 0) std::printf("  val_accuracy %.4f", v.val_accuracy);
        if (v.val_f1 >= 0) std::printf("  val_f1 %.4f", v.val_f1);
        std::printf("\n");
      }
      if (on_step) on_step(v);
    }
    // A stop signal on any rank: every rank stops after this step, with its checkpoint.
    const int stop = s.acc->stop_requested();
    const bool stopping = stop != 0 && !last;
    if ((c.checkpoint.every > 0 && m.step % c.checkpoint.every == 0) || last || stopping) {
      summary.last_checkpoint = save_checkpoint_now();
      trace_memory("checkpoint saved", s.acc->device());
      if (rank0) {
        std::printf("%ssaved checkpoint %s\n", tty ? "\n" : "", summary.last_checkpoint.c_str());
        std::fflush(stdout);
      }
    }
    if (stopping) {
      summary.stop_signal = stop;
      if (rank0) {
        std::printf("stopped after step %lld on %s; the same command resumes from %s\n",
                    static_cast<long long>(m.step), signal_name(stop).c_str(),
                    summary.last_checkpoint.c_str());
        std::fflush(stdout);
      }
      finish();
      s.acc->barrier();
      return summary;
    }
  }
  if (tty) std::printf("\n");
  summary.final_dir = (fs::path(c.output_dir) / "final").string();
  {
    AddTime t(summary.export_s);
    ScopedPhase phase("export");
    export_final(summary.final_dir);
  }
  trace_memory("exported", s.acc->device());
  finish();
  s.acc->barrier();  // final/ is complete before any rank exits
  return summary;
}

}  // namespace hfrun::train

namespace hfrun::train {

Device Trainer::device() const {
  return s_->acc->device();
}

int Trainer::data_parallel_world() const {
  return s_->acc->world();
}

const nn::Model& Trainer::model() const {
  return *s_->model;
}
int64_t Trainer::num_parameters() const {
  return s_->model->num_parameters();
}

}  // namespace hfrun::train
