// Loading checkpoints: any range of any tensor assembled from whatever pieces the files hold
// (ZeRO pieces, tensor-parallel parts, whole tensors), which is what makes resharding across
// rank counts, ZeRO stages and tensor-parallel sizes work.
#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/digest.h"
#include "common/error.h"
#include "common/progress.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "nn/tensor_parallel.h"
#include "tensor/ops.h"
#include "train/checkpoint_format.h"
#include "train/checkpoint_fs.h"

namespace hfrun::train {

namespace fs = std::filesystem;
using namespace detail;

namespace {

// Every tensor of a checkpoint's files of one kind (".model" / ".optimizer"), whole or in
// pieces, readable by element range. Opening reads the headers only; a file's data is checked
// against the manifest's checksum when it is first read from, so each byte is read once.
class PartIndex {
 public:
  PartIndex(const fs::path& root, const Manifest& manifest, const std::string& suffix)
      : dir_(root.string()) {
    for (const Manifest::File& f : manifest.files) {
      if (!f.name.ends_with(suffix)) continue;
      files_.push_back(io::SafetensorsFile::open((root / f.name).string()));
      entries_.push_back(&f);
      verified_.push_back(false);
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
  // Whether `name` is stored at all: whole, in pieces or as tensor-parallel parts.
  bool knows(const std::string& name) const {
    if (contains(name)) return true;
    const std::string stem = name + "|";
    const auto it = parts_.lower_bound(stem);
    return it != parts_.end() && it->first.starts_with(stem);
  }

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
    // Pieces of the same range (older checkpoints: each tensor-parallel rank wrote its copy of
    // a parameter that is not split) count once.
    if (parts.empty()) {
      for (const Part& p : it->second) {
        const auto same = [&](const Part& q) { return q.offset == p.offset && q.numel == p.numel; };
        if (std::none_of(parts.begin(), parts.end(), same)) parts.push_back(p);
      }
    }
    for (const Part& p : parts) {
      const int64_t lo = std::max(offset, p.offset), hi = std::min(offset + n, p.offset + p.numel);
      if (hi <= lo) continue;
      Tensor src = ops::reshape(data(p.file).tensor(p.key), {p.numel});
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
      if (p.numel == p.full) return data(p.file).tensor(p.key);
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
  // File i, its digest checked (hashed from the mapping, which also pages it in for the copies
  // that follow) on first use.
  const io::SafetensorsFile& data(size_t i) const {
    if (!verified_[i]) {
      const io::SafetensorsFile& f = files_[i];
      Digester d(entries_[i]->digest_kind);
      // In pieces, for the progress of a large file (and the checksum pages the mapping in for
      // the copies that follow).
      constexpr size_t kPiece = size_t{256} << 20;
      const auto* bytes = static_cast<const uint8_t*>(f.mapped_data());
      Progress progress("checking " + f.path(), static_cast<int64_t>(f.mapped_size()));
      for (size_t at = 0; at < f.mapped_size(); at += kPiece) {
        const size_t n = std::min(kPiece, f.mapped_size() - at);
        d.update(bytes + at, n);
        progress.advance(static_cast<int64_t>(n));
      }
      check_digest(dir_, *entries_[i], d.finish_hex());
      verified_[i] = true;
    }
    return files_[i];
  }

  std::string dir_;
  std::vector<io::SafetensorsFile> files_;
  std::vector<const Manifest::File*> entries_;
  mutable std::vector<bool> verified_;
  std::map<std::string, std::vector<Part>> parts_;
};

// A JSON file of the checkpoint, its digest checked.
json read_verified_json(const std::string& dir, const Manifest& manifest, const std::string& name) {
  const fs::path path = fs::path(dir) / name;
  std::ifstream in(path, std::ios::binary);
  HF_CHECK_INPUT(in.good(), "checkpoint: cannot open ", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const Manifest::File& f = manifest.file(dir, name);
  check_digest(dir, f, digest_hex(f.digest_kind, text));
  return parse_json(text, path);
}

TrainerState load_checked(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                          const LoadLayout& layout, Manifest* manifest_out) {
  const Manifest manifest = read_manifest(dir);
  const fs::path root(dir);
  const int64_t world = manifest.world_size;
  const int rank = layout.rank, tp_rank = layout.tp_rank, tp_size = layout.tp_size;
  const json j = read_verified_json(dir, manifest, kTrainerStateName);
  const std::string rng_name = rng_file_of(rank < world ? rank : 0, world);
  const fs::path rp = root / rng_name;
  const json rng = read_verified_json(dir, manifest, rng_name);
  // How each parameter splits (also at tensor_parallel 1, to read another layout's parts).
  auto split_of = [&](const std::string& param) { return model.tensor_parallel_split(param); };

  // Parameters (whole, this rank's ZeRO-3 pieces, or none where another rank restores them): read
  // completely before any changes.
  const PartIndex models(root, manifest, ".model.safetensors");
  const auto named = model.named_parameters();
  std::vector<Tensor> values;
  const bool pieces = !layout.param_pieces.empty();
  if (layout.parameters && pieces) {
    for (const auto& [slice, t] : layout.param_pieces) {
      values.push_back(models.read_part(dir, slice.name, split_of(slice.name), tp_rank, tp_size,
                                        shape_numel(slice.full_shape), slice.offset, t.numel()));
    }
  } else if (layout.parameters) {
    for (const auto& [name, param] : named) {
      // A frozen parameter is not stored (the run rebuilt it as it was); an older checkpoint may
      // hold it all the same.
      if (!model.is_trainable(name) && !models.knows(name)) {
        values.emplace_back();
        continue;
      }
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
  // The name a state tensor is stored under: "<kind>.<parameter>", or with an older name of the
  // parameter (GPT-2 checkpoints from before the module tree lack "transformer.").
  const auto* lm = dynamic_cast<const nn::Model*>(&model);
  auto stored_name = [&](const std::string& kind, const std::string& param) {
    const std::string name = kind + "." + param;
    if (opt.knows(name) || lm == nullptr) return name;
    for (const std::string& alias : lm->checkpoint_aliases(param)) {
      if (opt.knows(kind + "." + alias)) return kind + "." + alias;
    }
    return name;  // not stored at all: the read names it
  };
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
    const std::string name = stored_name(kind, s.name);
    if (kind == "step") {
      state.emplace_back(key, opt.whole(dir, name));
    } else {
      state.emplace_back(key,
                         ops::reshape(opt.read_part(dir, name, split_of(s.name), tp_rank, tp_size,
                                                    shape_numel(s.full_shape), s.offset, t.numel()),
                                      t.sizes()));
    }
  }
  // Everything is read and checked: only now does anything change.
  TrainerState s;
  const fs::path sp = root / kTrainerStateName;
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
  if (j.contains("grad_scaler")) {
    const json g = field<json>(j, "grad_scaler", sp);
    const double scale = field<double>(g, "scale", sp);
    const int64_t tracker = field<int64_t>(g, "growth_tracker", sp);
    HF_CHECK_INPUT(
        std::isfinite(scale) && scale >= 0 && scale <= 3.4028234663852886e38 && tracker >= 0,
        "corrupt checkpoint ", dir, ": ", kTrainerStateName, " grad_scaler (scale ", scale,
        ", growth_tracker ", tracker, ") is not an f32 scale >= 0 and a count >= 0");
    s.grad_scaler = optim::GradScalerState{static_cast<float>(scale), tracker};
  }
  for (const json& g : field<json>(rng, "generators", rp)) {
    s.generators.push_back(GeneratorState{field<std::string>(g, "name", rp),
                                          field<uint64_t>(g, "seed", rp),
                                          field<uint64_t>(g, "offset", rp)});
  }
  optimizer.load_state_tensors(state);
  if (pieces) {
    for (size_t i = 0; i < values.size(); ++i) {
      Tensor dst = layout.param_pieces[i].second;
      ops::copy_(dst, values[i]);
    }
  } else {
    for (size_t i = 0; i < values.size(); ++i) {  // (none when another rank restores them)
      if (values[i].defined()) model.load_parameter(named[i].first, values[i]);
    }
  }

  if (manifest_out) *manifest_out = manifest;
  return s;
}

}  // namespace

TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             Manifest* manifest_out) {
  return load_checkpoint(dir, model, optimizer, LoadLayout{}, manifest_out);
}

TrainerState load_checkpoint(const std::string& dir, nn::Module& model, optim::Optimizer& optimizer,
                             const LoadLayout& layout, Manifest* manifest_out) {
  try {
    return load_checked(dir, model, optimizer, layout, manifest_out);
  } catch (const CorruptCheckpoint&) {
    throw;
  } catch (const Error&) {
    // A damaged file explains a failure better than what it made look wrong (a header that does
    // not parse, a tensor of another size), even one this rank has not read yet: name it.
    verify_checkpoint(dir);
    throw;
  }
}

}  // namespace hfrun::train
