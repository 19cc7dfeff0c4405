#include "train/accelerator.h"

#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "common/stop_signals.h"
#include "common/stopwatch.h"
#include "distributed/parallel/tensor_parallel.h"
#include "models/model.h"
#include "optim/clip.h"
#include "tensor/allocator.h"
#include "tensor/ops.h"
#include "train/checkpoint.h"
#include "train/distributed_setup.h"
#include "train/export.h"

namespace hfrun::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kGeneratorName = "accelerator";

// Every rank must train the same configuration (a rank started with another file, an edited
// file or other --set overrides would silently diverge): the first differing line is named.
void check_same_config_on_all_ranks(const TrainConfig& cfg, DataParallel& dp) {
  const std::vector<std::string> all = dp.allgather_strings(cfg.to_yaml());
  for (size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    std::istringstream a(all[0]), b(all[r]);
    std::string la, lb;
    int line = 0;
    while (true) {
      ++line;
      const bool more_a = static_cast<bool>(std::getline(a, la));
      const bool more_b = static_cast<bool>(std::getline(b, lb));
      if (!more_a) la = "(end)";
      if (!more_b) lb = "(end)";
      if (la != lb || (!more_a && !more_b)) break;
    }
    HF_CHECK_INPUT(false, cfg.source, ": the configuration differs across ranks: rank ", r,
                   " has '", lb, "' where rank 0 has '", la, "' (resolved config line ", line,
                   "); start every rank with the same file and overrides");
  }
}

optim::GradScalerOptions grad_scaler_options(const TrainConfig& c) {
  const GradScalerSection& g = c.train.grad_scaler;
  optim::GradScalerOptions o;
  o.enabled = c.train.loss_scaling();
  o.init_scale = g.init_scale;
  o.growth_factor = g.growth_factor;
  o.backoff_factor = g.backoff_factor;
  o.growth_interval = g.growth_interval;
  return o;
}

}  // namespace

struct Accelerator::State {
  AcceleratorOptions options;
  std::unique_ptr<DataParallel> dp;  // null on one process
  nn::Module* model = nullptr;
  std::unique_ptr<optim::Optimizer> optimizer;
  std::vector<ParamSlice> slices;  // where each optimizer parameter sits in the model
  std::vector<Tensor> prepared;  // the parameters prepare() hands to make_optimizer (until adopted)
  // The optimizer updates exactly those, whose gradients clip_grad_norm() measures: it may then
  // unscale them in the norm's pass, and an overflow shows as a non-finite norm.
  bool clip_covers_optimizer = false;
  bool model_prepared = false;
  Device device = Device::cpu();
  optim::GradScaler scaler;
  std::optional<StopSignals> stop_signals;
};

Accelerator::Accelerator(AcceleratorOptions options)
    : s_(std::make_unique<State>()), generator_(options.seed) {
  const AcceleratorOptions& o = options;
  HF_CHECK_INPUT(o.zero_stage >= 0 && o.zero_stage <= 3, "AcceleratorOptions.zero_stage ",
                 o.zero_stage, " is not one of 0 (DDP), 1, 2, 3");
  HF_CHECK_INPUT(o.grad_accum_steps >= 1, "AcceleratorOptions.grad_accum_steps ",
                 o.grad_accum_steps, " must be at least 1");
  HF_CHECK_INPUT(o.bucket_mb > 0, "AcceleratorOptions.bucket_mb ", o.bucket_mb,
                 " must be positive");
  HF_CHECK_INPUT(o.reduce_dtype == "f32" || o.reduce_dtype == "bf16",
                 "AcceleratorOptions.reduce_dtype '", o.reduce_dtype, "' is not f32 or bf16");
  HF_CHECK_INPUT(o.timeout_s > 0, "AcceleratorOptions.timeout_s ", o.timeout_s,
                 " must be positive");
  HF_CHECK_INPUT(o.keep_checkpoints >= 0, "AcceleratorOptions.keep_checkpoints ",
                 o.keep_checkpoints, " must be 0 (keep all) or more");
  HF_CHECK_INPUT(
      o.mixed_precision == "no" || o.mixed_precision == "bf16" || o.mixed_precision == "fp16",
      "AcceleratorOptions.mixed_precision '", o.mixed_precision, "' is not one of no, bf16, fp16");
  HF_CHECK_INPUT(o.backend == "auto" || o.backend == "mpi" || o.backend == "nccl",
                 "AcceleratorOptions.backend '", o.backend, "' is not one of auto, mpi, nccl");
  HF_CHECK_INPUT(o.tensor_parallel >= 1, "AcceleratorOptions.tensor_parallel ", o.tensor_parallel,
                 " must be at least 1");
  s_->options = options;
  optim::GradScalerOptions scaling;
  scaling.enabled = o.mixed_precision == "fp16";
  s_->scaler = optim::GradScaler(o.grad_scaler.value_or(scaling));
  if (o.handle_stop_signals) s_->stop_signals.emplace();
  // Device resolution and DataParallel read the train and distributed sections only.
  TrainConfig cfg;
  cfg.source = "AcceleratorOptions";
  cfg.train.device = o.device;
  cfg.distributed.backend = o.backend;
  cfg.distributed.zero_stage = o.zero_stage;
  cfg.distributed.tensor_parallel = o.tensor_parallel;
  cfg.distributed.bucket_mb = o.bucket_mb;
  cfg.distributed.reduce_dtype = o.reduce_dtype;
  cfg.distributed.timeout_s = o.timeout_s;
  init(cfg);
  HF_CHECK_INPUT(s_->dp != nullptr || o.tensor_parallel == 1, "AcceleratorOptions.tensor_parallel ",
                 o.tensor_parallel, " needs that many ranks or a multiple (mpirun -np N)");
}

Accelerator::Accelerator(const TrainConfig& c, bool handle_stop_signals)
    : s_(std::make_unique<State>()), generator_(c.seed) {
  // The values were checked when the config was parsed (train/config.cpp).
  AcceleratorOptions& o = s_->options;
  o.zero_stage = static_cast<int>(c.distributed.zero_stage);
  o.grad_accum_steps = c.train.grad_accum_steps;
  o.bucket_mb = c.distributed.bucket_mb;
  o.reduce_dtype = c.distributed.reduce_dtype;
  o.timeout_s = c.distributed.timeout_s;
  o.seed = c.seed;
  o.keep_checkpoints = c.checkpoint.keep;
  o.handle_stop_signals = handle_stop_signals;
  o.mixed_precision = c.train.mixed_precision;
  o.grad_scaler = grad_scaler_options(c);
  s_->scaler = optim::GradScaler(*o.grad_scaler);
  o.device = c.train.device;
  o.backend = c.distributed.backend;
  o.tensor_parallel = static_cast<int>(c.distributed.tensor_parallel);
  if (handle_stop_signals) s_->stop_signals.emplace();
  init(c);
  if (s_->dp) {
    TrainConfig resolved = c;
    resolved.distributed.num_processes = s_->dp->global_world();
    check_same_config_on_all_ranks(resolved, *s_->dp);
  }
  HF_CHECK_INPUT(s_->dp != nullptr || c.distributed.num_processes == 1, c.source,
                 ": distributed.num_processes ", c.distributed.num_processes,
                 " needs a multi-process launch (hfrun -np N, mpirun or srun)");
  HF_CHECK_INPUT(s_->dp != nullptr || c.distributed.tensor_parallel == 1, c.source,
                 ": distributed.tensor_parallel ", c.distributed.tensor_parallel,
                 " needs that many ranks or a multiple (hfrun -np N)");
}

void Accelerator::init(const TrainConfig& cfg) {
  s_->device = resolve_train_device(cfg);
  s_->dp = make_data_parallel(cfg, s_->device);
}

Accelerator::~Accelerator() = default;

int Accelerator::rank() const {
  return s_->dp ? s_->dp->rank() : 0;
}
int Accelerator::world() const {
  return s_->dp ? s_->dp->world() : 1;
}
std::string Accelerator::gradient_transport() const {
  return s_->dp ? s_->dp->gradient_transport() : "none";
}
int Accelerator::global_rank() const {
  return s_->dp ? s_->dp->global_rank() : 0;
}
int Accelerator::global_world() const {
  return s_->dp ? s_->dp->global_world() : 1;
}
int Accelerator::tensor_parallel_rank() const {
  return s_->dp ? s_->dp->tensor_parallel_rank() : 0;
}
Device Accelerator::device() const {
  return s_->device;
}
const AcceleratorOptions& Accelerator::options() const {
  return s_->options;
}

void Accelerator::check_prepared(const char* method) const {
  HF_CHECK(s_->optimizer != nullptr, "Accelerator::", method,
           ": call prepare(model, make_optimizer) first");
}

optim::Optimizer& Accelerator::optimizer() {
  check_prepared("optimizer");
  return *s_->optimizer;
}
nn::Module& Accelerator::model() {
  check_prepared("model");
  return *s_->model;
}

std::vector<optim::ParamRef> Accelerator::prepare_model(
    nn::Module& model, const std::function<bool(const std::string&, const Tensor&)>& decays) {
  State& s = *s_;
  HF_CHECK(!s.model_prepared, "Accelerator::prepare: called twice (one model per Accelerator)");
  HF_CHECK_INPUT(model.num_parameters() > 0,
                 "Accelerator::prepare: the model has no parameters (register_parameter)");
  if (s.dp && s.dp->tensor_parallel()) {
    HF_CHECK_INPUT(model.flat() == nullptr,
                   "Accelerator::prepare: tensor parallelism splits the model before its "
                   "parameters are flattened; pass a model that was not flattened");
    if (auto* lm = dynamic_cast<nn::Model*>(&model)) {
      lm->check_tensor_parallel(s.dp->tensor_parallel_size());
    }
    dist::apply_tensor_parallel(model, *s.dp->tensor_parallel());
  }
  if (s.options.mixed_precision == "bf16") model.set_compute_dtype(DType::kBF16);
  if (s.options.mixed_precision == "fp16") model.set_compute_dtype(DType::kF16);
  // ZeRO-2 and 3 keep a shard of the gradients only: no whole buffer (4 bytes a parameter).
  const bool gradient_buffer = !s.dp || s.dp->zero_stage() < 2;
  const nn::FlatParameters* flat = model.flat();
  if (flat == nullptr) flat = &model.flatten_parameters(s.device, gradient_buffer);
  HF_CHECK(flat->grads.defined() || !gradient_buffer,
           "Accelerator::prepare: the model's gradient buffer was released; prepare a model "
           "that no other DataParallel is attached to");
  HF_CHECK_INPUT(flat->params.device() == s.device, "Accelerator::prepare: the model's parameters ",
                 "are on ", flat->params.device().str(), " but the Accelerator trains on ",
                 s.device.str(),
                 " (AcceleratorOptions.device); flatten on that device or let "
                 "prepare() do it");
  s.model = &model;
  s.model_prepared = true;
  auto params = optim::param_refs(model.named_trainable_parameters());  // frozen: no state
  if (decays) {
    for (auto& p : params) p.decay = decays(p.name, p.param);
  }
  if (!s.dp) {
    for (const auto& p : params) s.prepared.push_back(p.param);
    return params;
  }
  Tensor values = flat->params;
  // The model as built was copied into the flat buffer: its tensors go back to the system
  // before the strategy allocates its shards (see below).
  allocator_for(s.device).empty_cache();
  s.dp->broadcast(values);  // every rank starts from rank 0's parameters
  s.dp->attach(model);
  auto mine = s.dp->optimizer_params(params, &s.slices);  // ZeRO: this rank's shard only
  for (const auto& p : mine) s.prepared.push_back(p.param);
  values = Tensor();  // ZeRO-3 holds none of the flat buffer now, nor need we
  params.clear();
  // What setup freed (flat buffers ZeRO-3 dropped) goes back to the system rather than waiting
  // in the cache: a cached block serves any request of half its size or more whole, and a
  // shard or the optimizer's state, half a freed buffer under ZeRO, would hold twice its bytes
  // for the whole run.
  allocator_for(s.device).empty_cache();
  gather_for_forward();
  return mine;
}

void Accelerator::adopt_optimizer(std::unique_ptr<optim::Optimizer> optimizer) {
  HF_CHECK(optimizer != nullptr, "Accelerator::prepare: make_optimizer returned no optimizer");
  State& s = *s_;
  const auto& refs = optimizer->params();
  s.clip_covers_optimizer = refs.size() == s.prepared.size();
  for (size_t i = 0; s.clip_covers_optimizer && i < refs.size(); ++i) {
    s.clip_covers_optimizer = refs[i].param.is_same(s.prepared[i]);
  }
  s.prepared.clear();  // only needed for this comparison
  s.optimizer = std::move(optimizer);
}

void Accelerator::gather_for_forward() {
  State& s = *s_;
  if (s.dp && s.dp->zero_stage() == 3 && s.model->blocks().empty()) s.dp->gather_parameters();
}

IndexRange Accelerator::shard(int64_t n) const {
  const int64_t w = world(), r = rank();
  HF_CHECK_INPUT(n >= 0 && n % w == 0, "Accelerator::shard: ", n,
                 " items do not split evenly over ", w,
                 " ranks (make the global batch a multiple of the world size)");
  return IndexRange{r * (n / w), (r + 1) * (n / w)};
}

data::LoaderOptions Accelerator::shard(data::LoaderOptions options) const {
  options.rank = rank();
  options.world = world();
  options.grad_accum = s_->options.grad_accum_steps;
  return options;
}

void Accelerator::backward(const Tensor& loss) {
  check_prepared("backward");
  State& s = *s_;
  HF_CHECK(loss.defined() && loss.numel() == 1, "Accelerator::backward: the loss must be a scalar");
  HF_CHECK(!awaiting_step_,
           "Accelerator::backward: the previous accumulation window ended with synchronised "
           "gradients; call step() (or zero_grad() to drop them) before the next backward()");
  const int64_t accum = s.options.grad_accum_steps;
  const bool last = micro_step_ + 1 == accum;
  if (s.dp) s.dp->before_backward(last);
  // As Accelerate: loss / accum, then times the scale (an f32 multiply, as torch's).
  Tensor scaled = accum == 1 ? loss : mul_scalar(loss, 1.0 / static_cast<double>(accum));
  if (s.scaler.enabled()) scaled = mul_scalar(scaled, static_cast<double>(s.scaler.scale()));
  autograd::backward(scaled);
  {
    AddTime t(communication_s_);
    if (s.dp) s.dp->finish_gradient_sync();
    gather_for_forward();  // ZeRO-3 released the parameters as their gradients were reduced
  }
  micro_step_ = last ? 0 : micro_step_ + 1;
  sync_gradients_ = awaiting_step_ = last;
}

double Accelerator::clip_grad_norm(double max_norm) {
  return clip(max_norm, /*in_step=*/false);
}

double Accelerator::clip_grad_norm_in_step(double max_norm) {
  return clip(max_norm, /*in_step=*/true);
}

double Accelerator::clip(double max_norm, bool in_step) {
  check_prepared("clip_grad_norm");
  HF_CHECK(awaiting_step_,
           "Accelerator::clip_grad_norm: the gradients are not synchronised; call it when "
           "sync_gradients() is true, before step()");
  HF_CHECK_INPUT(max_norm > 0, "Accelerator::clip_grad_norm: max_norm ", max_norm,
                 " must be positive (infinity measures only)");
  State& s = *s_;
  // With loss scaling, the norm's pass unscales the gradients too (no pass of its own), and the
  // norm is finite exactly when this rank's gradients held no inf or NaN. The ranks still agree
  // on it through one small collective: a DDP rank's norm is its own, and a rank whose
  // gradients alone went bad must not step apart from the others. Otherwise unscale first.
  const bool fused = s.scaler.enabled() && !unscaled_ && s.clip_covers_optimizer;
  if (!fused) unscale_gradients();
  const float inv_scale = fused ? s.scaler.inv_scale() : 1.0f;
  // In the step: the norm is only measured here (max_norm infinity scales nothing).
  in_step = in_step && s.clip_covers_optimizer;
  const double measure_to = in_step ? std::numeric_limits<double>::infinity() : max_norm;
  double total = 0;
  if (s.dp) {
    AddTime t(communication_s_);  // the norm's all-reduce (the norm itself is cheap)
    total = s.dp->clip_grad_norm(measure_to, inv_scale);
  } else {
    std::vector<Tensor> trainable;
    for (auto& [name, t] : s.model->named_trainable_parameters()) trainable.push_back(t);
    total = optim::clip_grad_norm(trainable, measure_to, inv_scale);
  }
  // A clip in place replaces one pending for the step: it measured the same gradients.
  clip_in_step_ = in_step ? optim::clip_coefficient(total, max_norm) : 1.0;
  if (fused) {
    const bool mine = !std::isfinite(total);
    found_inf_ = s.dp ? s.dp->max_over_job(mine ? 1 : 0) != 0 : mine;
    unscaled_ = true;
  }
  return total;
}

void Accelerator::unscale_gradients() {
  check_prepared("unscale_gradients");
  HF_CHECK(awaiting_step_,
           "Accelerator::unscale_gradients: the gradients are not synchronised; call it when "
           "sync_gradients() is true, before step()");
  State& s = *s_;
  if (!s.scaler.enabled() || unscaled_) return;
  // The gradients this rank's optimizer reads: the whole model's (DDP, replicated) or its
  // shard's (ZeRO); an overflow anywhere skips the step on every rank.
  std::vector<Tensor> params;
  for (const optim::ParamRef& p : s.optimizer->params()) params.push_back(p.param);
  const bool mine = s.scaler.unscale(params);
  found_inf_ = s.dp ? s.dp->max_over_job(mine ? 1 : 0) != 0 : mine;
  unscaled_ = true;
}

float Accelerator::loss_scale() const {
  return s_->scaler.scale();
}

const optim::GradScaler& Accelerator::grad_scaler() const {
  return s_->scaler;
}

void Accelerator::step() {
  update({});
}

std::vector<bool> Accelerator::update(const std::vector<Tensor>& param_copies) {
  check_prepared("step");
  HF_CHECK(awaiting_step_,
           "Accelerator::step: the gradients are not synchronised; call step() after the "
           "backward() of the window's last micro-step (when sync_gradients() is true)");
  State& s = *s_;
  unscale_gradients();
  step_was_skipped_ = s.scaler.enabled() && found_inf_;
  std::vector<bool> written(s.optimizer->params().size(), false);
  if (!step_was_skipped_) {
    written = s.optimizer->step(clip_in_step_, param_copies);
    {
      AddTime t(communication_s_);
      if (s.dp) s.dp->after_optimizer_step();  // ZeRO: every rank gets the updated shards
    }
    ++scheduler_steps_;
  }
  s.scaler.update(found_inf_);
  ++steps_;
  zero_grad();
  AddTime t(communication_s_);
  gather_for_forward();
  return written;
}

namespace {

// The bytes [first, last) a view reads (non-negative strides; empty for no elements).
std::pair<uintptr_t, uintptr_t> byte_span(const Tensor& t) {
  if (t.numel() == 0) return {0, 0};
  int64_t reach = 0;
  for (int64_t d = 0; d < t.dim(); ++d) reach += (t.sizes()[d] - 1) * t.strides()[d];
  const auto first = reinterpret_cast<uintptr_t>(t.raw_data());
  return {first, first + static_cast<uintptr_t>((reach + 1) * dtype_size(t.dtype()))};
}

// The copy of `c` the optimizer writes for `param` (contiguous f32), in the parameter's index
// order: a view of c.copy's memory, when c.source is exactly the parameter's memory, dense, and
// the copy has the source's layout (ops::to_dtype keeps a transposed weight's layout). Else
// undefined.
Tensor copy_in_param_order(const WeightCopy& c, const Tensor& param) {
  const Tensor& src = c.source;
  const Tensor& copy = c.copy;
  if (!param.is_contiguous() || param.numel() == 0 || src.dtype() != param.dtype() ||
      src.raw_data() != param.raw_data() || src.numel() != param.numel() ||
      src.device() != param.device() || copy.sizes() != src.sizes() ||
      copy.strides() != src.strides() || !ops::is_dense(src)) {
    return Tensor();
  }
  return make_view(copy, param.sizes(), contiguous_strides(param.sizes()), copy.offset());
}

}  // namespace

std::vector<WeightCopy> Accelerator::step(std::vector<WeightCopy> copies) {
  check_prepared("step");
  State& s = *s_;
  const std::vector<optim::ParamRef>& params = s.optimizer->params();
  std::vector<Tensor> param_copies(params.size());
  std::vector<size_t> owner(copies.size(), params.size());  // params.size(): none
  if (s_->options.zero_stage < 3) {
    for (size_t j = 0; j < copies.size(); ++j) {
      for (size_t i = 0; i < params.size(); ++i) {
        if (param_copies[i].defined()) continue;  // one copy per parameter is written
        Tensor view = copy_in_param_order(copies[j], params[i].param);
        if (!view.defined()) continue;
        param_copies[i] = view;
        owner[j] = i;
        break;
      }
    }
  }
  const std::vector<bool> written = update(param_copies);
  if (s_->options.zero_stage == 3) return {};
  if (step_was_skipped_) return copies;  // no parameter changed
  // What the step may have written: the updated parameters, and (ZeRO) the gathered ones.
  std::vector<std::pair<uintptr_t, uintptr_t>> written_spans;
  for (const optim::ParamRef& p : params) written_spans.push_back(byte_span(p.param));
  for (const Tensor& p : s.model->parameters()) {
    if (p.requires_grad()) written_spans.push_back(byte_span(p));
  }
  std::vector<WeightCopy> kept;
  for (size_t j = 0; j < copies.size(); ++j) {
    bool valid = owner[j] < params.size() && written[owner[j]];
    if (!valid) {
      const std::pair<uintptr_t, uintptr_t> mine = byte_span(copies[j].source);
      valid = std::none_of(written_spans.begin(), written_spans.end(), [&](const auto& w) {
        return mine.first < w.second && w.first < mine.second;
      });
    }
    if (valid) kept.push_back(std::move(copies[j]));
  }
  return kept;
}

void Accelerator::skip_step() {
  check_prepared("skip_step");
  zero_grad();
  gather_for_forward();
}

void Accelerator::zero_grad() {
  check_prepared("zero_grad");
  State& s = *s_;
  if (s.dp) {
    s.dp->zero_grad(*s.model);
  } else {
    s.model->zero_grad_lazily();  // the next backward writes over them (nn::Module)
  }
  micro_step_ = 0;
  awaiting_step_ = false;
  clip_in_step_ = 1.0;
  unscaled_ = found_inf_ = false;
}

double Accelerator::sum_across_ranks(double v) {
  return s_->dp ? s_->dp->sum(v) : v;
}

double Accelerator::mean_across_ranks(double v) {
  return sum_across_ranks(v) / static_cast<double>(world());
}

int Accelerator::stop_requested() {
  const int mine = StopSignals::pending();
  return s_->dp ? s_->dp->max_over_job(mine) : mine;
}

void Accelerator::barrier() {
  if (s_->dp) s_->dp->barrier();
}

std::vector<std::string> Accelerator::allgather_strings(const std::string& s) {
  return s_->dp ? s_->dp->allgather_strings(s) : std::vector<std::string>{s};
}

void Accelerator::log(const std::vector<std::pair<std::string, double>>& values) const {
  if (!is_main_process()) return;
  std::string line = "{\"step\": " + std::to_string(steps_);
  for (const auto& [key, value] : values) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.9g", value);
    line += ", \"" + key + "\": " + buf;
  }
  std::printf("%s}\n", line.c_str());
  std::fflush(stdout);
}

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
  if (s.dp) s.dp->release_parameters();  // ZeRO-3: each rank restores its pieces, regathered below
  LoadLayout layout;
  layout.slices = s.slices;
  layout.rank = global_rank();
  if (s.dp) {
    layout.param_pieces = s.dp->parameter_pieces();
    layout.tp_rank = s.dp->tensor_parallel_rank();
    layout.tp_size = s.dp->tensor_parallel_size();
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

void Accelerator::free_gathered_parameters() {
  check_prepared("free_gathered_parameters");
  if (!s_->dp) return;
  s_->dp->release_parameters();
  gather_for_forward();  // a model without blocks() stays gathered between steps
}

dist::TrainingMemory Accelerator::training_memory() const {
  check_prepared("training_memory");
  const State& s = *s_;
  if (s.dp) return s.dp->memory(*s.optimizer);
  dist::TrainingMemory m;
  if (const nn::FlatParameters* flat = s.model->flat()) {
    m.params = static_cast<int64_t>(flat->params.nbytes());
    m.grads = static_cast<int64_t>(flat->grads.nbytes());
  }
  m.optimizer = s.optimizer->state_bytes();
  return m;
}

}  // namespace hfrun::train
