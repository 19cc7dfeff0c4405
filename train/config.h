// train.yaml (CONTRACT.md): the resolved, type-checked configuration of a training run.
// Unknown keys are errors naming the key and its line; --set key.path=value overrides apply
// before validation.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hfrun::train {

struct ModelSection {
  // gpt2 | llama | mistral | qwen2 | qwen3 | bert; empty: config.json's model_type decides (gpt2
  // from scratch without one).
  std::string arch;
  // An HF model directory (config.json, model.safetensors), or a hub id ORG/NAME looked up in
  // the local Hugging Face cache at `revision`.
  std::string from_pretrained;
  std::string revision = "main";
  // HF config.json keys given under model.config, as a JSON object ("{}" when none): used to
  // build a model from scratch, or to override a pretrained model's dropout and the like.
  std::string config_json = "{}";
};

struct DataSection {
  std::vector<std::string> train;
  std::vector<std::string> val;
  std::string text_field = "text";
  int64_t seq_len = 128;
  bool shuffle = true;
  // Record fields of the fine-tuning tasks (CONTRACT.md "Model families, tasks and adapters").
  std::string text_pair_field;  // sequence_classification: the optional second text
  std::string label_field = "label";
  std::string prompt_field = "prompt";
  std::string completion_field = "completion";
  double mlm_probability = 0.15;  // masked_lm
};

// train.grad_scaler: dynamic loss scaling with torch.cuda.amp.GradScaler's arguments
// (Accelerate's GradScalerKwargs); optim/grad_scaler.h.
struct GradScalerSection {
  std::string enabled = "auto";  // auto (on with mixed_precision fp16) | true | false
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  // A step that overflows when the scale is already at or below this is not loss scaling's to
  // fix: the non-finite guard takes it (max_skipped_steps), as DeepSpeed's min_loss_scale.
  double min_scale = 1.0;
};

struct TrainSection {
  int64_t micro_batch_size = 4;
  int64_t grad_accum_steps = 1;
  int64_t max_steps = 100;
  std::string mixed_precision = "no";  // no | bf16 | fp16
  double grad_clip = 1.0;
  int64_t log_every = 10;
  int64_t eval_every = 0;
  // Where the model trains: cpu, cuda (cuda:LOCAL_RANK; an error without a device) or auto
  // (cuda when a CUDA device is present, else cpu).
  std::string device = "cpu";
  // Recompute each block's activations in the backward instead of keeping them.
  bool activation_checkpointing = false;
  // A step whose loss or global gradient norm is not finite (on any rank) is skipped by every
  // rank (no update; the data moves on). After this many consecutive skips (0: at the first)
  // the run stops with exit 1 and a checkpoint of the last good step.
  int64_t max_skipped_steps = 10;
  GradScalerSection grad_scaler;
  // Whether the run scales its loss (grad_scaler.enabled resolved against mixed_precision).
  bool loss_scaling() const {
    return grad_scaler.enabled == "true" ||
           (grad_scaler.enabled == "auto" && mixed_precision == "fp16");
  }
};

struct OptimizerSection {
  std::string type = "adamw";  // adamw | sgd
  double lr = 6e-4;
  double beta1 = 0.9, beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double momentum = 0.0;
};

struct SchedulerSection {
  std::string type = "constant";  // constant | linear | cosine
  int64_t warmup_steps = 0;
};

struct DistributedSection {
  int64_t num_processes = 1;
  std::string backend = "auto";  // auto | mpi | nccl
  int64_t zero_stage = 0;
  int64_t tensor_parallel = 1;
  double bucket_mb = 25;
  double timeout_s = 300;
  // Gradients on the wire: f32, or bf16 (half the bytes; divided by the world size, summed in
  // bf16 and widened back, as PyTorch DDP's bf16_compress_hook).
  std::string reduce_dtype = "f32";
  // Check before every collective that all ranks call the same op on the same sizes, and fail
  // at once naming the call sites that differ (slower: for finding a hang, not for training).
  bool debug = false;
};

struct CheckpointSection {
  int64_t every = 0;
  int64_t keep = 2;
  std::string resume = "auto";  // auto | never | PATH
};

// LoRA in PEFT's format (CONTRACT.md "Model families, tasks and adapters").
struct PeftSection {
  std::string type = "none";  // none | lora
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};  // suffixes, or all-linear
  std::vector<std::string> modules_to_save;
  bool use_rslora = false;
  std::string adapter;  // an existing adapter directory to start from (its configuration too)
};

struct TrainConfig {
  std::string source;  // the file it came from, for messages
  std::string output_dir = "runs/hfrun";
  uint64_t seed = 1234;
  // causal_lm | sft | sequence_classification | masked_lm; empty: the model's default
  // (masked_lm for bert, causal_lm otherwise), resolved when the model type is known.
  std::string task;
  ModelSection model;
  std::string tokenizer;  // default: <from_pretrained>/tokenizer.json
  DataSection data;
  TrainSection train;
  OptimizerSection optimizer;
  SchedulerSection scheduler;
  DistributedSection distributed;
  CheckpointSection checkpoint;
  PeftSection peft;

  // Parses YAML text; `overrides` are "a.b=value" strings (value in YAML syntax).
  static TrainConfig parse(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides = {});
  static TrainConfig load(const std::string& path, const std::vector<std::string>& overrides = {});

 private:
  static TrainConfig parse_checked(const std::string& yaml_text, const std::string& source,
                                   const std::vector<std::string>& overrides);

 public:
  // The resolved configuration as YAML (config.resolved.yaml).
  std::string to_yaml() const;
};

}  // namespace hfrun::train
