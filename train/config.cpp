#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "models/registry.h"

namespace hfrun::train {
namespace {

// Walks the YAML tree with a schema: every read names the key path and its line on error, and
// every map's keys are checked against the keys the schema read.
class Reader {
 public:
  // `overrides`: the --set specs by key path; a value from one is reported as the --set, not
  // at a line of the file (its node's line is the spec's own).
  Reader(std::string source, std::map<std::string, std::string> overrides)
      : source_(std::move(source)), overrides_(std::move(overrides)) {}

  std::string where(const YAML::Node& n, const std::string& path) const {
    for (std::string p = path;;) {  // the key itself or a mapping above it
      const auto it = overrides_.find(p);
      if (it != overrides_.end()) return "--set " + it->second + ": " + path;
      const size_t dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p.resize(dot);
    }
    const YAML::Mark m = n.Mark();
    return m.line >= 0 ? source_ + ":" + std::to_string(m.line + 1) + ": " + path
                       : source_ + ": " + path + " (from --set)";
  }

  [[noreturn]] void fail(const YAML::Node& n, const std::string& path,
                         const std::string& what) const {
    HF_CHECK_INPUT(false, where(n, path), ": ", what);
    std::abort();
  }

  // Checks the keys of map `n` against `allowed`.
  void keys(const YAML::Node& n, const std::string& path,
            const std::set<std::string>& allowed) const {
    if (!n || n.IsNull()) return;
    if (!n.IsMap()) fail(n, path.empty() ? "(top level)" : path, "expected a mapping of keys");
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar()) {
        fail(it->first, path.empty() ? "(top level)" : path, "expected a plain key name");
      }
      const std::string k = it->first.as<std::string>();
      if (!seen.insert(k).second) {
        fail(it->first, path.empty() ? k : path + "." + k,
             "duplicate key (YAML keeps only one of them; say it once)");
      }
      if (!allowed.count(k)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail(it->first, path.empty() ? k : path + "." + k,
             "unknown key (expected one of: " + list + ")");
      }
    }
  }

  template <typename T>
  void get(const YAML::Node& parent, const std::string& path, const char* key, T& out,
           const char* expected) const {
    if (!parent || !parent.IsMap() || !parent[key]) return;
    const YAML::Node n = parent[key];
    const std::string p = path.empty() ? key : path + "." + key;
    if (n.IsNull()) return;
    if (!n.IsScalar()) fail(n, p, std::string("expected ") + expected);
    try {
      out = n.as<T>();
    } catch (const YAML::Exception&) {
      fail(n, p, std::string("expected ") + expected + ", got '" + n.Scalar() + "'");
    }
  }

  void get_list(const YAML::Node& parent, const std::string& path, const char* key,
                std::vector<std::string>& out) const {
    if (!parent || !parent.IsMap() || !parent[key]) return;
    const YAML::Node n = parent[key];
    const std::string p = path + "." + key;
    out.clear();
    if (n.IsNull()) return;
    if (n.IsScalar()) {
      out.push_back(n.Scalar());
      return;
    }
    if (!n.IsSequence()) fail(n, p, "expected a path or a list of paths");
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar()) fail(n[i], p + "[" + std::to_string(i) + "]", "expected a path");
      out.push_back(n[i].Scalar());
    }
  }

  void one_of(const YAML::Node& parent, const std::string& path, const char* key,
              const std::string& value, std::initializer_list<const char*> options) const {
    for (const char* o : options) {
      if (value == o) return;
    }
    std::string list;
    for (const char* o : options) list += (list.empty() ? "" : " | ") + std::string(o);
    fail(parent[key], path + "." + key, "'" + value + "' is not one of " + list);
  }

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::map<std::string, std::string> overrides_;
};

// JSON text of a YAML scalar: numbers and booleans as they are, everything else quoted.
std::string scalar_json(const YAML::Node& n) {
  const std::string s = n.Scalar();
  if (s == "true" || s == "false" || s == "null") return s;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  if (!s.empty() && end && *end == '\0') return s;
  std::string q = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

// JSON text of a YAML node: scalars as scalar_json, maps and sequences recursively.
std::string node_json(const YAML::Node& n) {
  if (n.IsMap()) {
    std::string out = "{";
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string key = "\"";
      for (char ch : it->first.Scalar()) {
        if (ch == '"' || ch == '\\') key += '\\';
        key += ch;
      }
      out += (out.size() > 1 ? ", " : "") + key + "\": " + node_json(it->second);
    }
    return out + "}";
  }
  if (n.IsSequence()) {
    std::string out = "[";
    for (size_t i = 0; i < n.size(); ++i) out += (i ? ", " : "") + node_json(n[i]);
    return out + "]";
  }
  if (!n || n.IsNull()) return "null";
  return scalar_json(n);
}

void apply_override(YAML::Node& root, const std::string& spec, const std::string& source) {
  const size_t eq = spec.find('=');
  HF_CHECK_INPUT(eq != std::string::npos && eq > 0, "--set ", spec, ": expected key.path=value");
  const std::string path = spec.substr(0, eq);
  YAML::Node value;
  try {
    value = YAML::Load(spec.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    HF_CHECK_INPUT(false, "--set ", spec, ": the value is not valid YAML: ", e.msg);
  }
  std::vector<std::string> parts;
  for (size_t b = 0; b <= path.size();) {
    size_t e = path.find('.', b);
    if (e == std::string::npos) e = path.size();
    HF_CHECK_INPUT(e > b, "--set ", spec, ": empty key in '", path, "'");
    parts.push_back(path.substr(b, e - b));
    b = e + 1;
  }
  // yaml-cpp nodes are handles: walking with copies still edits the tree.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsMap()) next = YAML::Node(YAML::NodeType::Map);
    chain.back()[parts[i]] = next;
    chain.push_back(chain.back()[parts[i]]);
  }
  chain.back()[parts.back()] = value;
  (void)source;
}

}  // namespace

TrainConfig TrainConfig::parse(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides) {
  // What the checks below do not foresee in yaml-cpp's tree still ends as invalid input naming
  // the file and line, never as a library exception.
  try {
    return parse_checked(text, source, overrides);
  } catch (const YAML::Exception& e) {
    HF_CHECK_INPUT(false, source, ":", e.mark.line + 1, ": ", e.msg);
  }
  return {};
}

TrainConfig TrainConfig::parse_checked(const std::string& text, const std::string& source,
                                       const std::vector<std::string>& overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    HF_CHECK_INPUT(false, source, ":", e.mark.line + 1, ": not valid YAML: ", e.msg);
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  // (Found by fuzz/fuzz_train_yaml: a scalar document with --set threw yaml-cpp's BadSubscript.)
  HF_CHECK_INPUT(root.IsMap(), source, ":", root.Mark().line + 1,
                 ": expected a mapping of keys (output_dir, model, data, train, ...), got ",
                 root.IsSequence() ? "a list" : "a single value");
  for (const std::string& o : overrides) apply_override(root, o, source);

  std::map<std::string, std::string> set_paths;
  for (const std::string& o : overrides) set_paths[o.substr(0, o.find('='))] = o;
  Reader r(source, std::move(set_paths));
  TrainConfig c;
  c.source = source;
  r.keys(root, "",
         {"output_dir", "seed", "task", "model", "tokenizer", "data", "train", "optimizer",
          "scheduler", "distributed", "checkpoint", "peft"});
  r.get(root, "", "output_dir", c.output_dir, "a directory path");
  r.get(root, "", "seed", c.seed, "a non-negative integer");
  r.get(root, "", "tokenizer", c.tokenizer, "a path to tokenizer.json");
  r.get(root, "", "task", c.task, "a task name");
  if (root["task"]) {
    r.one_of(root, "", "task", c.task,
             {"causal_lm", "sft", "sequence_classification", "masked_lm"});
  }

  const YAML::Node model = root["model"];
  r.keys(model, "model", {"arch", "from_pretrained", "revision", "config"});
  r.get(model, "model", "arch", c.model.arch, "a model architecture name");
  if (model && model["arch"]) {
    r.one_of(model, "model", "arch", c.model.arch,
             {"gpt2", "llama", "mistral", "qwen2", "qwen3", "bert"});
  }
  r.get(model, "model", "from_pretrained", c.model.from_pretrained,
        "a model directory or a hub id ORG/NAME");
  r.get(model, "model", "revision", c.model.revision, "a branch, tag or commit of the hub cache");
  if (model && model["config"] && !model["config"].IsNull()) {
    const YAML::Node cfg = model["config"];
    // The keys of model.arch's family, or of any family when the arch comes from config.json
    // (the model's own family checks them again once it is known).
    std::set<std::string> allowed;
    for (const std::string& type : nn::supported_model_types()) {
      if (!c.model.arch.empty() && type != c.model.arch) continue;
      for (const std::string& k : nn::model_config_keys(type)) allowed.insert(k);
    }
    r.keys(cfg, "model.config", allowed);
    std::string json = "{";
    for (auto it = cfg.begin(); it != cfg.end(); ++it) {
      if (!it->second.IsScalar() && !it->second.IsMap() && !it->second.IsSequence())
        r.fail(it->second, "model.config." + it->first.Scalar(), "expected a value");
      json += (json.size() > 1 ? ", " : "") + std::string("\"") + it->first.Scalar() +
              "\": " + node_json(it->second);
    }
    c.model.config_json = json + "}";
  }

  const YAML::Node data = root["data"];
  r.keys(data, "data",
         {"train", "val", "text_field", "seq_len", "shuffle", "text_pair_field", "label_field",
          "prompt_field", "completion_field", "mlm_probability"});
  r.get_list(data, "data", "train", c.data.train);
  r.get_list(data, "data", "val", c.data.val);
  r.get(data, "data", "text_field", c.data.text_field, "a JSON field name");
  r.get(data, "data", "seq_len", c.data.seq_len, "a positive integer");
  r.get(data, "data", "shuffle", c.data.shuffle, "true or false");
  r.get(data, "data", "text_pair_field", c.data.text_pair_field, "a record field name");
  r.get(data, "data", "label_field", c.data.label_field, "a record field name");
  r.get(data, "data", "prompt_field", c.data.prompt_field, "a record field name");
  r.get(data, "data", "completion_field", c.data.completion_field, "a record field name");
  r.get(data, "data", "mlm_probability", c.data.mlm_probability, "a number in (0, 1)");

  const YAML::Node tr = root["train"];
  r.keys(tr, "train",
         {"micro_batch_size", "grad_accum_steps", "max_steps", "mixed_precision", "grad_clip",
          "log_every", "eval_every", "device", "activation_checkpointing", "max_skipped_steps",
          "grad_scaler"});
  r.get(tr, "train", "micro_batch_size", c.train.micro_batch_size, "a positive integer");
  r.get(tr, "train", "grad_accum_steps", c.train.grad_accum_steps, "a positive integer");
  r.get(tr, "train", "max_steps", c.train.max_steps, "a positive integer");
  r.get(tr, "train", "mixed_precision", c.train.mixed_precision, "no, bf16 or fp16");
  if (tr && tr["mixed_precision"])
    r.one_of(tr, "train", "mixed_precision", c.train.mixed_precision, {"no", "bf16", "fp16"});
  r.get(tr, "train", "grad_clip", c.train.grad_clip, "a number (0 = off)");
  r.get(tr, "train", "log_every", c.train.log_every, "a positive integer");
  r.get(tr, "train", "eval_every", c.train.eval_every, "an integer (0 = off)");
  r.get(tr, "train", "device", c.train.device, "auto, cpu or cuda");
  r.get(tr, "train", "activation_checkpointing", c.train.activation_checkpointing, "true or false");
  r.get(tr, "train", "max_skipped_steps", c.train.max_skipped_steps, "an integer >= 0");
  if (tr && tr["device"]) r.one_of(tr, "train", "device", c.train.device, {"auto", "cpu", "cuda"});
  const YAML::Node gs = tr && tr.IsMap() ? tr["grad_scaler"] : YAML::Node();
  GradScalerSection& g = c.train.grad_scaler;
  r.keys(
      gs, "train.grad_scaler",
      {"enabled", "init_scale", "growth_factor", "backoff_factor", "growth_interval", "min_scale"});
  r.get(gs, "train.grad_scaler", "enabled", g.enabled, "auto, true or false");
  if (gs && gs.IsMap() && gs["enabled"])
    r.one_of(gs, "train.grad_scaler", "enabled", g.enabled, {"auto", "true", "false"});
  r.get(gs, "train.grad_scaler", "init_scale", g.init_scale, "a positive number");
  r.get(gs, "train.grad_scaler", "growth_factor", g.growth_factor, "a number > 1");
  r.get(gs, "train.grad_scaler", "backoff_factor", g.backoff_factor, "a number in (0, 1)");
  r.get(gs, "train.grad_scaler", "growth_interval", g.growth_interval, "a positive integer");
  r.get(gs, "train.grad_scaler", "min_scale", g.min_scale, "a number >= 0");

  const YAML::Node opt = root["optimizer"];
  r.keys(opt, "optimizer", {"type", "lr", "betas", "eps", "weight_decay", "momentum"});
  r.get(opt, "optimizer", "type", c.optimizer.type, "adamw or sgd");
  if (opt && opt["type"]) r.one_of(opt, "optimizer", "type", c.optimizer.type, {"adamw", "sgd"});
  r.get(opt, "optimizer", "lr", c.optimizer.lr, "a number");
  r.get(opt, "optimizer", "eps", c.optimizer.eps, "a number");
  r.get(opt, "optimizer", "weight_decay", c.optimizer.weight_decay, "a number");
  r.get(opt, "optimizer", "momentum", c.optimizer.momentum, "a number");
  if (opt && opt["betas"]) {
    const YAML::Node b = opt["betas"];
    if (!b.IsSequence() || b.size() != 2) r.fail(b, "optimizer.betas", "expected [beta1, beta2]");
    try {
      c.optimizer.beta1 = b[0].as<double>();
      c.optimizer.beta2 = b[1].as<double>();
    } catch (const YAML::Exception&) {
      r.fail(b, "optimizer.betas", "expected two numbers");
    }
  }

  const YAML::Node sch = root["scheduler"];
  r.keys(sch, "scheduler", {"type", "warmup_steps"});
  r.get(sch, "scheduler", "type", c.scheduler.type, "constant, linear or cosine");
  if (sch && sch["type"])
    r.one_of(sch, "scheduler", "type", c.scheduler.type, {"constant", "linear", "cosine"});
  r.get(sch, "scheduler", "warmup_steps", c.scheduler.warmup_steps, "a non-negative integer");

  const YAML::Node dist = root["distributed"];
  r.keys(dist, "distributed",
         {"num_processes", "backend", "zero_stage", "tensor_parallel", "bucket_mb", "timeout_s",
          "reduce_dtype", "debug"});
  r.get(dist, "distributed", "num_processes", c.distributed.num_processes, "a positive integer");
  r.get(dist, "distributed", "backend", c.distributed.backend, "auto, mpi or nccl");
  if (dist && dist["backend"])
    r.one_of(dist, "distributed", "backend", c.distributed.backend, {"auto", "mpi", "nccl"});
  r.get(dist, "distributed", "zero_stage", c.distributed.zero_stage, "0, 1, 2 or 3");
  r.get(dist, "distributed", "tensor_parallel", c.distributed.tensor_parallel,
        "a positive integer");
  r.get(dist, "distributed", "bucket_mb", c.distributed.bucket_mb, "a number");
  r.get(dist, "distributed", "timeout_s", c.distributed.timeout_s, "a number");
  r.get(dist, "distributed", "reduce_dtype", c.distributed.reduce_dtype, "f32 or bf16");
  if (dist && dist["reduce_dtype"])
    r.one_of(dist, "distributed", "reduce_dtype", c.distributed.reduce_dtype, {"f32", "bf16"});
  r.get(dist, "distributed", "debug", c.distributed.debug, "true or false");

  const YAML::Node ck = root["checkpoint"];
  r.keys(ck, "checkpoint", {"every", "keep", "resume"});
  r.get(ck, "checkpoint", "every", c.checkpoint.every, "an integer (0 = only at the end)");
  r.get(ck, "checkpoint", "keep", c.checkpoint.keep, "a positive integer");
  r.get(ck, "checkpoint", "resume", c.checkpoint.resume, "auto, never or a path");

  const YAML::Node pe = root["peft"];
  r.keys(pe, "peft",
         {"type", "r", "alpha", "dropout", "target_modules", "modules_to_save", "use_rslora",
          "adapter"});
  r.get(pe, "peft", "type", c.peft.type, "none or lora");
  if (pe && pe["type"]) r.one_of(pe, "peft", "type", c.peft.type, {"none", "lora"});
  r.get(pe, "peft", "r", c.peft.r, "a positive integer");
  r.get(pe, "peft", "alpha", c.peft.alpha, "a number");
  r.get(pe, "peft", "dropout", c.peft.dropout, "a number in [0, 1)");
  r.get_list(pe, "peft", "target_modules", c.peft.target_modules);
  r.get_list(pe, "peft", "modules_to_save", c.peft.modules_to_save);
  r.get(pe, "peft", "use_rslora", c.peft.use_rslora, "true or false");
  r.get(pe, "peft", "adapter", c.peft.adapter, "a PEFT adapter directory");

  // Ranges (the key is named; its line when the file set it).
  auto check = [&](bool ok, const YAML::Node& parent, const char* key, const std::string& path,
                   const std::string& what) {
    if (!ok) {
      const YAML::Node n = parent && parent.IsMap() && parent[key] ? parent[key] : root;
      r.fail(n, path, what);
    }
  };
  check(c.data.seq_len >= 1, data, "seq_len", "data.seq_len", "must be at least 1");
  check(c.peft.r >= 1, pe, "r", "peft.r", "must be at least 1");
  check(c.peft.dropout >= 0 && c.peft.dropout < 1, pe, "dropout", "peft.dropout",
        "must be in [0, 1)");
  check(c.peft.type == "lora" || c.peft.adapter.empty(), pe, "adapter", "peft.adapter",
        "needs peft.type: lora");
  check(c.data.mlm_probability > 0 && c.data.mlm_probability < 1, data, "mlm_probability",
        "data.mlm_probability", "must be in (0, 1)");
  check(!c.data.train.empty(), data, "train", "data.train",
        "at least one training source is required");
  check(c.train.micro_batch_size >= 1, tr, "micro_batch_size", "train.micro_batch_size",
        "must be at least 1");
  check(c.train.grad_accum_steps >= 1, tr, "grad_accum_steps", "train.grad_accum_steps",
        "must be at least 1");
  check(c.train.max_steps >= 1, tr, "max_steps", "train.max_steps", "must be at least 1");
  check(c.train.grad_clip >= 0, tr, "grad_clip", "train.grad_clip", "must be >= 0 (0 = off)");
  check(c.train.log_every >= 1, tr, "log_every", "train.log_every", "must be at least 1");
  check(c.train.eval_every >= 0, tr, "eval_every", "train.eval_every", "must be >= 0");
  check(c.train.max_skipped_steps >= 0, tr, "max_skipped_steps", "train.max_skipped_steps",
        "must be >= 0");
  check(std::isfinite(g.init_scale) && g.init_scale > 0 && g.init_scale <= 3.4e38, gs, "init_scale",
        "train.grad_scaler.init_scale", "must be a positive f32 number");
  check(std::isfinite(g.growth_factor) && g.growth_factor > 1, gs, "growth_factor",
        "train.grad_scaler.growth_factor", "must be > 1");
  check(g.backoff_factor > 0 && g.backoff_factor < 1, gs, "backoff_factor",
        "train.grad_scaler.backoff_factor", "must be in (0, 1)");
  check(g.growth_interval >= 1, gs, "growth_interval", "train.grad_scaler.growth_interval",
        "must be at least 1");
  check(std::isfinite(g.min_scale) && g.min_scale >= 0, gs, "min_scale",
        "train.grad_scaler.min_scale", "must be >= 0");
  check(c.optimizer.lr >= 0, opt, "lr", "optimizer.lr", "must be >= 0");
  check(c.optimizer.eps > 0, opt, "eps", "optimizer.eps", "must be positive");
  check(c.optimizer.beta1 >= 0 && c.optimizer.beta1 < 1 && c.optimizer.beta2 >= 0 &&
            c.optimizer.beta2 < 1,
        opt, "betas", "optimizer.betas", "must be in [0, 1)");
  check(c.optimizer.weight_decay >= 0, opt, "weight_decay", "optimizer.weight_decay",
        "must be >= 0");
  check(c.optimizer.momentum >= 0, opt, "momentum", "optimizer.momentum", "must be >= 0");
  check(c.scheduler.warmup_steps >= 0, sch, "warmup_steps", "scheduler.warmup_steps",
        "must be >= 0");
  check(c.distributed.num_processes >= 1, dist, "num_processes", "distributed.num_processes",
        "must be at least 1");
  check(c.distributed.zero_stage >= 0 && c.distributed.zero_stage <= 3, dist, "zero_stage",
        "distributed.zero_stage", "must be 0, 1, 2 or 3");
  check(c.distributed.tensor_parallel >= 1, dist, "tensor_parallel", "distributed.tensor_parallel",
        "must be at least 1");
  check(c.distributed.timeout_s > 0, dist, "timeout_s", "distributed.timeout_s",
        "must be positive");
  check(c.distributed.backend != "nccl" || c.train.device != "cpu", dist, "backend",
        "distributed.backend",
        "nccl reduces GPU tensors and needs train.device: cuda (or auto on a GPU machine); use "
        "auto (NCCL for CUDA runs, MPI for CPU runs) or mpi with train.device: cpu");
  check(c.checkpoint.every >= 0, ck, "every", "checkpoint.every", "must be >= 0");
  check(c.checkpoint.keep >= 1, ck, "keep", "checkpoint.keep", "must be at least 1");
  check(!c.output_dir.empty(), root, "output_dir", "output_dir", "must not be empty");
  if (c.tokenizer.empty() && !c.model.from_pretrained.empty()) {
    // The model's own tokenizer: in its directory, or in its hub cache snapshot (a model that
    // cannot be found is reported when it is loaded).
    std::string dir = c.model.from_pretrained;
    try {
      dir = nn::resolve_pretrained(c.model.from_pretrained, c.model.revision);
    } catch (const Error&) {
    }
    // (Token shards train without one: the Trainer reads it only when it is there.)
    c.tokenizer = dir + "/tokenizer.json";
  }
  return c;
}

TrainConfig TrainConfig::load(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  HF_CHECK_INPUT(in.good(), path, ": cannot open config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path, overrides);
}

std::string TrainConfig::to_yaml() const {
  YAML::Emitter e;
  auto list = [&](const std::vector<std::string>& v) {
    e << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : v) e << s;
    e << YAML::EndSeq;
  };
  e << YAML::BeginMap;
  e << YAML::Key << "output_dir" << YAML::Value << output_dir;
  e << YAML::Key << "seed" << YAML::Value << seed;
  if (!task.empty()) e << YAML::Key << "task" << YAML::Value << task;
  e << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  if (!model.arch.empty()) e << YAML::Key << "arch" << YAML::Value << model.arch;
  if (!model.from_pretrained.empty()) {
    e << YAML::Key << "from_pretrained" << YAML::Value << model.from_pretrained;
    e << YAML::Key << "revision" << YAML::Value << model.revision;
  }
  e << YAML::Key << "config" << YAML::Value << YAML::Load(model.config_json);
  e << YAML::EndMap;
  e << YAML::Key << "tokenizer" << YAML::Value << tokenizer;
  e << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "train" << YAML::Value;
  list(data.train);
  e << YAML::Key << "val" << YAML::Value;
  list(data.val);
  e << YAML::Key << "text_field" << YAML::Value << data.text_field;
  e << YAML::Key << "seq_len" << YAML::Value << data.seq_len;
  e << YAML::Key << "shuffle" << YAML::Value << data.shuffle;
  e << YAML::Key << "text_pair_field" << YAML::Value << YAML::DoubleQuoted << data.text_pair_field;
  e << YAML::Key << "label_field" << YAML::Value << data.label_field;
  e << YAML::Key << "prompt_field" << YAML::Value << data.prompt_field;
  e << YAML::Key << "completion_field" << YAML::Value << data.completion_field;
  e << YAML::Key << "mlm_probability" << YAML::Value << data.mlm_probability << YAML::EndMap;
  e << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "micro_batch_size" << YAML::Value << train.micro_batch_size;
  e << YAML::Key << "grad_accum_steps" << YAML::Value << train.grad_accum_steps;
  e << YAML::Key << "max_steps" << YAML::Value << train.max_steps;
  e << YAML::Key << "mixed_precision" << YAML::Value << YAML::DoubleQuoted << train.mixed_precision;
  e << YAML::Key << "grad_clip" << YAML::Value << train.grad_clip;
  e << YAML::Key << "log_every" << YAML::Value << train.log_every;
  e << YAML::Key << "eval_every" << YAML::Value << train.eval_every;
  e << YAML::Key << "device" << YAML::Value << train.device;
  e << YAML::Key << "activation_checkpointing" << YAML::Value << train.activation_checkpointing;
  e << YAML::Key << "max_skipped_steps" << YAML::Value << train.max_skipped_steps;
  e << YAML::Key << "grad_scaler" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "enabled" << YAML::Value << train.grad_scaler.enabled;
  e << YAML::Key << "init_scale" << YAML::Value << train.grad_scaler.init_scale;
  e << YAML::Key << "growth_factor" << YAML::Value << train.grad_scaler.growth_factor;
  e << YAML::Key << "backoff_factor" << YAML::Value << train.grad_scaler.backoff_factor;
  e << YAML::Key << "growth_interval" << YAML::Value << train.grad_scaler.growth_interval;
  e << YAML::Key << "min_scale" << YAML::Value << train.grad_scaler.min_scale << YAML::EndMap
    << YAML::EndMap;
  e << YAML::Key << "optimizer" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "type" << YAML::Value << optimizer.type;
  e << YAML::Key << "lr" << YAML::Value << optimizer.lr;
  e << YAML::Key << "betas" << YAML::Value << YAML::Flow << YAML::BeginSeq << optimizer.beta1
    << optimizer.beta2 << YAML::EndSeq;
  e << YAML::Key << "eps" << YAML::Value << optimizer.eps;
  e << YAML::Key << "weight_decay" << YAML::Value << optimizer.weight_decay;
  e << YAML::Key << "momentum" << YAML::Value << optimizer.momentum << YAML::EndMap;
  e << YAML::Key << "scheduler" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "type" << YAML::Value << scheduler.type;
  e << YAML::Key << "warmup_steps" << YAML::Value << scheduler.warmup_steps << YAML::EndMap;
  e << YAML::Key << "distributed" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "num_processes" << YAML::Value << distributed.num_processes;
  e << YAML::Key << "backend" << YAML::Value << distributed.backend;
  e << YAML::Key << "zero_stage" << YAML::Value << distributed.zero_stage;
  e << YAML::Key << "tensor_parallel" << YAML::Value << distributed.tensor_parallel;
  e << YAML::Key << "bucket_mb" << YAML::Value << distributed.bucket_mb;
  e << YAML::Key << "timeout_s" << YAML::Value << distributed.timeout_s;
  e << YAML::Key << "reduce_dtype" << YAML::Value << distributed.reduce_dtype;
  e << YAML::Key << "debug" << YAML::Value << distributed.debug << YAML::EndMap;
  e << YAML::Key << "checkpoint" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "every" << YAML::Value << checkpoint.every;
  e << YAML::Key << "keep" << YAML::Value << checkpoint.keep;
  e << YAML::Key << "resume" << YAML::Value << checkpoint.resume << YAML::EndMap;
  if (peft.type != "none") {
    e << YAML::Key << "peft" << YAML::Value << YAML::BeginMap;
    e << YAML::Key << "type" << YAML::Value << peft.type;
    e << YAML::Key << "r" << YAML::Value << peft.r;
    e << YAML::Key << "alpha" << YAML::Value << peft.alpha;
    e << YAML::Key << "dropout" << YAML::Value << peft.dropout;
    e << YAML::Key << "target_modules" << YAML::Value;
    list(peft.target_modules);
    e << YAML::Key << "modules_to_save" << YAML::Value;
    list(peft.modules_to_save);
    e << YAML::Key << "use_rslora" << YAML::Value << peft.use_rslora;
    e << YAML::Key << "adapter" << YAML::Value << YAML::DoubleQuoted << peft.adapter
      << YAML::EndMap;
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace hfrun::train
