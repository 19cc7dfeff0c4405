// Saving and restoring checkpoints: the files of one checkpoint and their atomic commit.
#include "train/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/safetensors.h"
#include "nn/tensor_parallel.h"
#include "tensor/ops.h"
#include "train/checkpoint_fs.h"
#include "train/sha256.h"

namespace hfrun::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

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

namespace {

constexpr const char* kPartsKey = "hfrun_parts";

std::string model_file_of(int64_t rank, int64_t world) {
  return rank_prefix(rank, world) + ".model.safetensors";
}
std::string optimizer_file_of(int64_t rank, int64_t world) {
  return rank_prefix(rank, world) + ".optimizer.safetensors";
}
std::string rng_file_of(int64_t rank, int64_t world) {
  return rank_prefix(rank, world) + ".rng.json";
}

// The stored name of a tensor-parallel part: "<name>|tp<rank>of<size>".
std::string tp_part_name(const std::string& name, int t, int size) {
  return name + "|tp" + std::to_string(t) + "of" + std::to_string(size);
}

// The name rank `t` of `size` stores parameter `param`'s tensor `name` under.
std::string stored_name(const nn::Module& model, const std::string& param, const std::string& name,
                        int t, int size) {
  if (size > 1 && model.tensor_parallel_split(param).split()) return tp_part_name(name, t, size);
  return name;
}

// The optimizer file of one rank: "step", then per parameter its step count (written by the
// holder of the parameter's first element) and its state, whole or as a piece.
void write_optimizer_file(const std::string& path, const CheckpointShard& shard) {
  const optim::Optimizer& opt = *shard.optimizer;
  const std::vector<ParamSlice>& slices = shard.slices;
  const optim::NamedTensors state = opt.state_tensors();
  const auto& refs = opt.params();
  HF_CHECK(slices.empty() || slices.size() == refs.size(), "save_checkpoint: ", slices.size(),
           " slices for ", refs.size(), " optimizer parameters");
  std::map<std::string, size_t> ref_index;
  for (size_t i = 0; i < refs.size(); ++i) ref_index.emplace(refs[i].name, i);
  optim::NamedTensors out;
  json parts = json::object();
  for (const auto& [key, t] : state) {
    if (key == "step") {
      out.emplace_back(key, t);
      continue;
    }
    // "<kind>.<ref name>"; ref names may contain dots, kinds do not.
    const size_t dot = key.find('.');
    const std::string kind = key.substr(0, dot), ref = key.substr(dot + 1);
    const size_t i = ref_index.at(ref);
    const ParamSlice slice = slices.empty() ? ParamSlice{ref, 0, refs[i].param.sizes()} : slices[i];
    const int64_t full = shape_numel(slice.full_shape);
    const std::string name = kind == "step"
                                 ? kind + "." + slice.name
                                 : stored_name(*shard.model, slice.name, kind + "." + slice.name,
                                               shard.tp_rank, shard.tp_size);
    if (kind == "step") {
      if (slice.offset == 0) out.emplace_back(name, t);
    } else if (slice.offset == 0 && t.numel() == full) {
      out.emplace_back(name, ops::reshape(t, slice.full_shape));
    } else {
      const std::string piece = name + "@" + std::to_string(slice.offset);
      out.emplace_back(piece, ops::reshape(t, {t.numel()}));
      parts[piece] = json::array({name, slice.offset, full});
    }
  }
  std::map<std::string, std::string> meta{{"format", "pt"}};
  if (!parts.empty()) meta[kPartsKey] = parts.dump();
  io::save_safetensors(path, out, meta);
}

// "error: ..." or the JSON list of a rank's files for the manifest.
std::string write_rank_files(const fs::path& tmp, const CheckpointShard& shard,
                             const TrainerState& state, const CheckpointOptions& options,
                             int64_t rank, int64_t world) {
  try {
    // Test hook (the failure tests): HFRUN_FAULT_CHECKPOINT_RANK=R makes rank R's write fail,
    // as a full disk would, after it wrote part of its files.
    const char* fault = std::getenv("HFRUN_FAULT_CHECKPOINT_RANK");
    const bool inject = fault != nullptr && std::atoll(fault) == rank;
    std::vector<std::string> names;
    if (!shard.param_pieces.empty()) {
      std::vector<std::pair<std::string, Tensor>> params;
      json parts = json::object();
      for (const auto& [slice, t] : shard.param_pieces) {
        const std::string name =
            stored_name(*shard.model, slice.name, slice.name, shard.tp_rank, shard.tp_size);
        const std::string key = name + "@" + std::to_string(slice.offset);
        params.emplace_back(key, t);
        parts[key] = json::array({name, slice.offset, shape_numel(slice.full_shape)});
      }
      names.push_back(model_file_of(rank, world));
      io::save_safetensors((tmp / names.back()).string(), params,
                           {{"format", "pt"}, {kPartsKey, parts.dump()}});
    } else if (shard.write_model) {
      std::vector<std::pair<std::string, Tensor>> params;
      for (const auto& [name, t] : shard.model->named_parameters()) {
        params.emplace_back(stored_name(*shard.model, name, name, shard.tp_rank, shard.tp_size), t);
      }
      names.push_back(model_file_of(rank, world));
      io::save_safetensors((tmp / names.back()).string(), params, {{"format", "pt"}});
    }
    if (shard.write_optimizer) {
      names.push_back(optimizer_file_of(rank, world));
      write_optimizer_file((tmp / names.back()).string(), shard);
    }
    HF_CHECK(!inject, "cannot write ", (tmp / rng_file_of(rank, world)).string(),
             ": injected fault (HFRUN_FAULT_CHECKPOINT_RANK)");
    json gens = json::array();
    for (const GeneratorState& g : state.generators)
      gens.push_back({{"name", g.name}, {"seed", g.seed}, {"offset", g.offset}});
    names.push_back(rng_file_of(rank, world));
    detail::write_synced((tmp / names.back()).string(), json{{"generators", gens}}.dump(2) + "\n");
    if (rank == 0) {
      names.push_back(kTrainerStateName);
      detail::write_synced((tmp / kTrainerStateName).string(),
                           trainer_state_json(state).dump(2) + "\n");
    }
    json files = json::array();
    for (const std::string& name : names) {
      uint64_t size = 0;
      const std::string digest = sha256_file_hex((tmp / name).string(), &size);
      files.push_back({{"name", name}, {"size", size}, {"sha256", digest}});
    }
    return files.dump();
  } catch (const std::exception& e) {
    return std::string("error: ") + e.what();
  }
}

// A one-rank group for single-process saves.
class SoloGroup : public CheckpointGroup {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  std::vector<std::string> allgather_strings(const std::string& s) override { return {s}; }
};

}  // namespace

std::string save_checkpoint(const std::string& checkpoints_root, const nn::Module& model,
                            const optim::Optimizer& optimizer, const TrainerState& state,
                            const CheckpointOptions& options) {
  CheckpointShard shard;
  shard.model = &model;
  shard.optimizer = &optimizer;
  SoloGroup solo;
  return save_checkpoint(checkpoints_root, shard, state, options, &solo);
}

std::string save_checkpoint(const std::string& checkpoints_root, const CheckpointShard& shard,
                            const TrainerState& state, const CheckpointOptions& options,
                            CheckpointGroup* group) {
  const int64_t rank = group->rank(), world = group->world();
  const fs::path final_dir = fs::path(checkpoints_root) / checkpoint_dir_name(state.step);
  // Rank 0 prepares the temporary directory; its name reaches the others with the first
  // collective (which also tells them whether preparing it failed).
  std::string prepared;
  std::error_code ec;
  if (rank == 0) {
    try {
      fs::create_directories(checkpoints_root);
      detail::remove_stale_temporaries(checkpoints_root);
      const fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
      fs::remove_all(tmp, ec);
      fs::create_directories(tmp);
      prepared = tmp.string();
    } catch (const std::exception& e) {
      prepared = std::string("error: ") + e.what();
    }
  }
  prepared = group->allgather_strings(prepared)[0];
  HF_CHECK(!prepared.starts_with("error: "), "checkpoint step ", state.step,
           " not saved: rank 0 could not prepare ", final_dir.string(), ": ", prepared.substr(7));
  const fs::path tmp = prepared;

  const std::vector<std::string> results =
      group->allgather_strings(write_rank_files(tmp, shard, state, options, rank, world));
  std::string failures;
  for (size_t r = 0; r < results.size(); ++r) {
    if (results[r].starts_with("error: "))
      failures += " rank " + std::to_string(r) + ": " + results[r].substr(7) + ";";
  }
  // Rank 0 commits only when every rank wrote its files; the outcome is shared once more, so
  // no rank reports a checkpoint that is not there.
  std::string outcome = failures.empty() ? "" : "error: files not written:" + failures;
  if (rank == 0) {
    if (failures.empty()) {
      try {
        json files = json::array();
        for (const std::string& r : results) {
          for (const json& f : json::parse(r)) files.push_back(f);
        }
        const json manifest{{"format", "hfrun-checkpoint"},
                            {"format_version", kCheckpointFormatVersion},
                            {"step", state.step},
                            {"world_size", world},
                            {"config_hash", options.config_hash},
                            {"files", files}};
        detail::write_synced((tmp / kManifestName).string(), manifest.dump(2) + "\n");
        detail::fsync_path(tmp.string());
        // Commit: an existing checkpoint of this step is moved aside first (rename cannot
        // replace a non-empty directory), so some complete checkpoint of this step exists at
        // every moment.
        const fs::path old = final_dir.string() + ".old-" + std::to_string(::getpid());
        if (fs::exists(final_dir)) fs::rename(final_dir, old);
        fs::rename(tmp, final_dir);
        detail::fsync_path(checkpoints_root);
        fs::remove_all(old, ec);
        detail::prune_checkpoints(checkpoints_root, options.keep, final_dir.string());
      } catch (const std::exception& e) {
        outcome = std::string("error: commit failed: ") + e.what();
      }
    }
    if (!outcome.empty()) fs::remove_all(tmp, ec);
  }
  if (world > 1) outcome = group->allgather_strings(outcome)[0];
  HF_CHECK(outcome.empty(), "checkpoint step ", state.step, " not committed (", outcome.substr(7),
           ")");
  return final_dir.string();
}

namespace {

// Every tensor of a checkpoint's files of one kind (".model" / ".optimizer"), whole or in
// pieces, readable by element range.
class PartIndex {
 public:
  PartIndex(const fs::path& root, const Manifest& manifest, const std::string& suffix) {
    for (const Manifest::File& f : manifest.files) {
      if (!f.name.ends_with(suffix)) continue;
      files_.push_back(io::SafetensorsFile::open((root / f.name).string()));
      const io::SafetensorsFile& file = files_.back();
      json parts = json::object();
      const auto it = file.metadata().find(kPartsKey);
      if (it != file.metadata().end()) {
        parts = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
        HF_CHECK_INPUT(parts.is_object(), "checkpoint ", file.path(), ": invalid ", kPartsKey,
                       " metadata");
      }
      for (const io::TensorEntry& e : file.entries()) {
        Part p{files_.size() - 1, e.name, 0, shape_numel(e.shape), shape_numel(e.shape)};
        std::string name = e.name;
        if (parts.contains(e.name)) {
          const json& d = parts[e.name];
          HF_CHECK_INPUT(d.is_array() && d.size() == 3 && d[0].is_string() &&
                             d[1].is_number_integer() && d[2].is_number_integer(),
                         "checkpoint ", file.path(), ": bad ", kPartsKey, " entry for ", e.name);
          name = d[0].get<std::string>();
          p.offset = d[1].get<int64_t>();
          p.full = d[2].get<int64_t>();
          HF_CHECK_INPUT(p.offset >= 0 && p.offset + p.numel <= p.full, "checkpoint ", file.path(),
                         ": piece ", e.name, " lies outside its tensor");
        }
        parts_[name].push_back(p);
      }
    }
  }

  bool contains(const std::string& name) const { return parts_.count(name) > 0; }

  int64_t numel(const std::string& name) const { return parts_.at(name).front().full; }

  // Elements [offset, offset + n) of `name` as an f32 1-D tensor, from whichever pieces hold
  // them; a range no file covers is an error naming it.
  Tensor read(const std::string& dir, const std::string& name, int64_t offset, int64_t n) const {
    const auto it = parts_.find(name);
    HF_CHECK_INPUT(it != parts_.end(), "checkpoint ", dir, ": no tensor '", name, "'");
    Tensor out = ops::empty({n});
    int64_t covered = 0;
    std::vector<Part> parts;
    for (const Part& p : it->second) {
      if (p.numel == p.full) parts = {p};  // a whole copy (ranks may each hold one): take it
    }
    if (parts.empty()) parts = it->second;
    for (const Part& p : parts) {
      const int64_t lo = std::max(offset, p.offset), hi = std::min(offset + n, p.offset + p.numel);
      if (hi <= lo) continue;
      Tensor src = ops::reshape(files_[p.file].tensor(p.key), {p.numel});
      Tensor dst = ops::narrow(out, 0, lo - offset, hi - lo);
      ops::copy_(dst, ops::narrow(src, 0, lo - p.offset, hi - lo));
      covered += hi - lo;
    }
    HF_CHECK_INPUT(covered == n, "checkpoint ", dir, ": tensor '", name, "' elements [", offset,
                   ", ", offset + n, ") are ", covered < n ? "not all" : "more than once",
                   " in its files (", covered, " of ", n, ")");
    return out;
  }
  // Elements [offset, offset + n) of this rank's tensor-parallel part (t of size) of `name`,
  // whose full tensor is split as `split`: read directly when the checkpoint has the same
  // layout, else the full tensor is assembled from whatever parts it has and re-split.
  // `local_numel`: the elements of the whole local tensor, checked against the file's.
  Tensor read_part(const std::string& dir, const std::string& name,
                   const nn::TensorParallelSplit& split, int t, int size, int64_t local_numel,
                   int64_t offset, int64_t n) const {
    auto checked = [&](const std::string& key, int64_t expected) {
      HF_CHECK_INPUT(contains(key), "checkpoint ", dir, ": no tensor '", key,
                     "' (a different model configuration?)");
      HF_CHECK_INPUT(numel(key) == expected, "checkpoint ", dir, ": tensor '", key, "' has ",
                     numel(key), " elements but the model's has ", expected,
                     " (a different model configuration?)");
      return key;
    };
    if (!split.split() || (size == 1 && contains(name))) {
      return read(dir, checked(name, local_numel), offset, n);
    }
    if (size > 1 && contains(tp_part_name(name, t, size))) {
      return read(dir, checked(tp_part_name(name, t, size), local_numel), offset, n);
    }
    Tensor full;
    if (contains(name)) {
      checked(name, shape_numel(split.full_shape));
      full = ops::reshape(read(dir, name, 0, shape_numel(split.full_shape)), split.full_shape);
    } else {
      int stored = 0;  // the tensor-parallel size the checkpoint was written with
      const std::string prefix = tp_part_name(name, 0, 1);
      const std::string stem = prefix.substr(0, prefix.size() - 1);  // "<name>|tp0of"
      for (auto it = parts_.lower_bound(stem); it != parts_.end() && it->first.starts_with(stem);
           ++it) {
        stored = std::atoi(it->first.c_str() + stem.size());
      }
      HF_CHECK_INPUT(stored > 0, "checkpoint ", dir, ": no tensor '", name,
                     "' (a different model configuration?)");
      std::vector<Tensor> parts;
      for (int r = 0; r < stored; ++r) {
        const Shape shape = nn::tensor_parallel_local_shape(split, r, stored);
        checked(tp_part_name(name, r, stored), shape_numel(shape));
        parts.push_back(
            ops::reshape(read(dir, tp_part_name(name, r, stored), 0, shape_numel(shape)), shape));
      }
      full = nn::tensor_parallel_assemble(parts, split);
    }
    Tensor local = nn::tensor_parallel_slice(full, split, t, size);
    return ops::contiguous(ops::narrow(ops::reshape(local, {local.numel()}), 0, offset, n));
  }

  // A tensor stored whole (a scalar step count), as stored.
  Tensor whole(const std::string& dir, const std::string& name) const {
    const auto it = parts_.find(name);
    HF_CHECK_INPUT(it != parts_.end(), "checkpoint ", dir, ": no tensor '", name, "'");
    for (const Part& p : it->second) {
      if (p.numel == p.full) return files_[p.file].tensor(p.key);
    }
    HF_CHECK_INPUT(false, "checkpoint ", dir, ": tensor '", name, "' is stored in pieces only");
    return {};
  }

 private:
  struct Part {
    size_t file;
    std::string key;
    int64_t offset, numel, full;
  };
  std::vector<io::SafetensorsFile> files_;
  std::map<std::string, std::vector<Part>> parts_;
};

}  // namespace

TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             Manifest* manifest_out) {
  return load_checkpoint(dir, model, optimizer, LoadLayout{}, manifest_out);
}

TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             const LoadLayout& layout, Manifest* manifest_out) {
  const Manifest manifest = verify_checkpoint(dir);
  const fs::path root(dir);
  const int64_t world = manifest.world_size;
  const int rank = layout.rank, tp_rank = layout.tp_rank, tp_size = layout.tp_size;
  // How each parameter splits (also at tensor_parallel 1, to read another layout's parts).
  auto split_of = [&](const std::string& param) { return model.tensor_parallel_split(param); };

  // Parameters (whole, or this rank's ZeRO-3 pieces): read completely before any changes.
  const PartIndex models(root, manifest, ".model.safetensors");
  const auto named = model.named_parameters();
  std::vector<Tensor> values;
  const bool pieces = !layout.param_pieces.empty();
  if (pieces) {
    for (const auto& [slice, t] : layout.param_pieces) {
      values.push_back(models.read_part(dir, slice.name, split_of(slice.name), tp_rank, tp_size,
                                        shape_numel(slice.full_shape), slice.offset, t.numel()));
    }
  } else {
    for (const auto& [name, param] : named) {
      values.push_back(ops::reshape(models.read_part(dir, name, split_of(name), tp_rank, tp_size,
                                                     param.numel(), 0, param.numel()),
                                    param.sizes()));
    }
  }

  // Optimizer state for this rank's slices, named as its state_tensors().
  const auto& refs = optimizer.params();
  std::vector<ParamSlice> slices = layout.slices;
  if (slices.empty()) {
    for (const auto& r : refs) slices.push_back(ParamSlice{r.name, 0, r.param.sizes()});
  }
  HF_CHECK(slices.size() == refs.size(), "load_checkpoint: ", slices.size(), " slices for ",
           refs.size(), " optimizer parameters");
  std::map<std::string, size_t> ref_index;
  for (size_t i = 0; i < refs.size(); ++i) ref_index.emplace(refs[i].name, i);
  const PartIndex opt(root, manifest, ".optimizer.safetensors");
  optim::NamedTensors state;
  for (const auto& [key, t] : optimizer.state_tensors()) {
    if (key == "step") {
      state.emplace_back(key, opt.whole(dir, "step"));
      continue;
    }
    const size_t dot = key.find('.');
    const std::string kind = key.substr(0, dot), ref = key.substr(dot + 1);
    const auto it = ref_index.find(ref);
    HF_CHECK(it != ref_index.end(), "load_checkpoint: no optimizer parameter ", ref);
    const ParamSlice& s = slices[it->second];
    const std::string name = kind + "." + s.name;
    if (kind == "step") {
      state.emplace_back(key, opt.whole(dir, name));
    } else {
      state.emplace_back(key,
                         ops::reshape(opt.read_part(dir, name, split_of(s.name), tp_rank, tp_size,
                                                    shape_numel(s.full_shape), s.offset, t.numel()),
                                      t.sizes()));
    }
  }
  optimizer.load_state_tensors(state);
  if (pieces) {
    for (size_t i = 0; i < values.size(); ++i) {
      Tensor dst = layout.param_pieces[i].second;
      ops::copy_(dst, values[i]);
    }
  } else {
    for (size_t i = 0; i < named.size(); ++i) model.load_parameter(named[i].first, values[i]);
  }

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
  fs::path rp = root / rng_file_of(rank, world);
  if (rank >= world) rp = root / rng_file_of(0, world);
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
