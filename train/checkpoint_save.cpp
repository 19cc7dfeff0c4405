// Saving checkpoints: every rank writes what it holds under a temporary name, and the commit
// (manifest, rename) happens only once every rank wrote.
#include "train/checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/digest.h"
#include "common/error.h"
#include "common/fault.h"
#include "io/safetensors.h"
#include "nn/tensor_parallel.h"
#include "tensor/ops.h"
#include "train/checkpoint_format.h"
#include "train/checkpoint_fs.h"

namespace hfrun::train {

namespace fs = std::filesystem;
using namespace detail;

namespace {

// Under tensor parallelism a parameter that is not split is the same on every tensor-parallel
// rank (so are its optimizer state and its data-parallel pieces): the ranks of part 0 write it,
// and the others' copies would only double-cover it.
bool left_to_part_zero(const CheckpointShard& shard, const std::string& param) {
  return shard.tp_rank > 0 && !shard.model->tensor_parallel_split(param).split();
}

// The optimizer file of one rank: "step", then per parameter its step count (written by the
// holder of the parameter's first element) and its state, whole or as a piece.
FileDigest write_optimizer_file(const std::string& path, const CheckpointShard& shard) {
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
    if (left_to_part_zero(shard, slice.name)) continue;
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
  FileDigest digest;
  io::save_safetensors(path, out, meta, &digest);
  return digest;
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
    // Each file's size and digest are taken from the bytes as they are written.
    json files = json::array();
    auto written = [&](const std::string& name, const FileDigest& d) {
      files.push_back({{"name", name}, {"size", d.size}, {digest_key(d.kind), d.hex}});
    };
    auto write_text = [&](const std::string& name, const std::string& text) {
      detail::write_synced((tmp / name).string(), text);
      const DigestKind kind = DigestKind::kXxh3_128;
      written(name, FileDigest{text.size(), kind, digest_hex(kind, text)});
    };
    if (!shard.param_pieces.empty()) {
      std::vector<std::pair<std::string, Tensor>> params;
      json parts = json::object();
      for (const auto& [slice, t] : shard.param_pieces) {
        if (left_to_part_zero(shard, slice.name)) continue;
        const std::string name =
            stored_name(*shard.model, slice.name, slice.name, shard.tp_rank, shard.tp_size);
        const std::string key = name + "@" + std::to_string(slice.offset);
        params.emplace_back(key, t);
        parts[key] = json::array({name, slice.offset, shape_numel(slice.full_shape)});
      }
      const std::string name = model_file_of(rank, world);
      FileDigest d;
      io::save_safetensors((tmp / name).string(), params,
                           {{"format", "pt"}, {kPartsKey, parts.dump()}}, &d);
      written(name, d);
    } else if (shard.write_model) {
      // What trains: a frozen base (LoRA) comes back from where it came from on resume.
      std::vector<std::pair<std::string, Tensor>> params;
      for (const auto& [name, t] : shard.model->named_trainable_parameters()) {
        params.emplace_back(stored_name(*shard.model, name, name, shard.tp_rank, shard.tp_size), t);
      }
      const std::string name = model_file_of(rank, world);
      FileDigest d;
      io::save_safetensors((tmp / name).string(), params, {{"format", "pt"}}, &d);
      written(name, d);
    }
    if (shard.write_optimizer) {
      const std::string name = optimizer_file_of(rank, world);
      written(name, write_optimizer_file((tmp / name).string(), shard));
    }
    HF_CHECK(!inject, "cannot write ", (tmp / rng_file_of(rank, world)).string(),
             ": injected fault (HFRUN_FAULT_CHECKPOINT_RANK)");
    json gens = json::array();
    for (const GeneratorState& g : state.generators)
      gens.push_back({{"name", g.name}, {"seed", g.seed}, {"offset", g.offset}});
    write_text(rng_file_of(rank, world), json{{"generators", gens}}.dump(2) + "\n");
    if (rank == 0) write_text(kTrainerStateName, trainer_state_json(state).dump(2) + "\n");
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
  fault::point("checkpoint.prepared");

  const std::vector<std::string> results =
      group->allgather_strings(write_rank_files(tmp, shard, state, options, rank, world));
  fault::point("checkpoint.files_written");
  std::string failures;
  for (size_t r = 0; r < results.size(); ++r) {
    if (results[r].starts_with("error: "))
      failures += (failures.empty() ? " rank " : "; rank ") + std::to_string(r) + ": " +
                  results[r].substr(7);
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
        fault::point("checkpoint.manifest");
        // Commit: an existing checkpoint of this step is moved aside first (rename cannot
        // replace a non-empty directory), so some complete checkpoint of this step exists at
        // every moment.
        const fs::path old = final_dir.string() + ".old-" + std::to_string(::getpid());
        if (fs::exists(final_dir)) fs::rename(final_dir, old);
        fault::point("checkpoint.commit");
        fs::rename(tmp, final_dir);
        detail::fsync_path(checkpoints_root);
        fault::point("checkpoint.committed");
        fs::remove_all(old, ec);
        detail::prune_checkpoints(checkpoints_root, options.keep, final_dir.string());
        fault::point("checkpoint.pruned");
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

}  // namespace hfrun::train
