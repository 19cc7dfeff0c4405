// The Accelerator: construction, prepare, backward and the collectives a training loop calls.
// The step is in accelerator_step.cpp, checkpoints and state dicts in accelerator_checkpoint.cpp.
#include "train/accelerator.h"

#include <cstdio>
#include <optional>
#include <sstream>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "common/error.h"
#include "common/stopwatch.h"
#include "distributed/parallel/tensor_parallel.h"
#include "models/model.h"
#include "tensor/allocator.h"
#include "train/accelerator_state.h"
#include "train/distributed_setup.h"

namespace hfrun::train {

namespace {

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
  s.prepared.clear();                           // only needed for this comparison
  if (s.dp) s.dp->adopt_optimizer(*optimizer);  // DDP on one node: the step split (collective)
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
