// Hugging Face checkpoint layouts over safetensors: a directory holding model.safetensors, or
// model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map": {tensor: file}})
// next to its shard files model-00001-of-0000N.safetensors.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "tensor/tensor.h"

namespace hfrun::io {

inline constexpr const char* kSafetensorsWeightsName = "model.safetensors";
inline constexpr const char* kSafetensorsIndexName = "model.safetensors.index.json";

class SafetensorsCheckpoint {
 public:
  // `path` is a directory (model.safetensors preferred, as transformers does, else the index),
  // an index .json file, or a single .safetensors file. Every shard is opened and validated,
  // and every weight_map entry must name an existing shard that holds the tensor.
  static SafetensorsCheckpoint open(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names: the header's order for one file, the weight map's order for an index.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return shard_of_.count(name) != 0; }
  // Shape/dtype/location without loading; throws (kInvalidInput) naming the checkpoint.
  const TensorEntry& entry(const std::string& name) const;
  // As SafetensorsFile::tensor: zero-copy over the shard's mapping when aligned.
  Tensor tensor(const std::string& name) const;
  // The path of the shard file that holds `name`.
  const std::string& file_of(const std::string& name) const;
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  // The __metadata__ of the (first) shard; transformers writes the same map to every shard.
  const std::map<std::string, std::string>& metadata() const;
  // "total_size" of the index's metadata, when it has one.
  std::optional<uint64_t> total_size() const { return total_size_; }

 private:
  size_t shard_index(const std::string& name) const;
  std::string path_;
  std::vector<SafetensorsFile> shards_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> shard_of_;
  std::optional<uint64_t> total_size_;
};

// Saves `tensors` under directory `dir` (created if missing) in the Hugging Face layout:
// model.safetensors when everything fits in max_shard_bytes, else shards filled in the given
// order (a shard is closed before a tensor would push it past max_shard_bytes; a tensor larger
// than the limit gets a shard of its own) named model-0000K-of-0000N.safetensors, plus
// model.safetensors.index.json. `metadata` goes into every shard's header. Each file is
// written atomically; files of an earlier save that the new layout does not use (a stale
// model.safetensors, index or shard) are removed afterwards. Returns the paths written.
std::vector<std::string> save_sharded_safetensors(
    const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
    uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

// GPT-2 checkpoints store their weights with or without the "transformer." prefix. Returns the
// name under which `ckpt` holds `name`: `name` itself, `name` without `prefix`, or `prefix` +
// `name`; nullopt when none of them is present.
std::optional<std::string> find_with_optional_prefix(const SafetensorsCheckpoint& ckpt,
                                                     const std::string& name,
                                                     const std::string& prefix = "transformer.");

}  // namespace hfrun::io
