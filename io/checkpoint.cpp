// Sharded safetensors checkpoints (the Hugging Face layout): loading through the index and
// saving in shards.
#include "io/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/file_util.h"
#include "io/io_util.h"

namespace hfrun::io {

namespace fs = std::filesystem;

namespace {

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  HF_CHECK_INPUT(in.good(), what, " ", path, ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  HF_CHECK_INPUT(!in.bad(), what, " ", path, ": read failed");
  return ss.str();
}

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

// Removes files of an earlier save in `dir` that the new layout does not use.
void remove_stale(const fs::path& dir, const std::set<std::string>& keep) {
  static const std::regex kShard(R"(model-\d{5}-of-\d{5}\.safetensors)");
  std::error_code ec;
  for (const auto& de : fs::directory_iterator(dir, ec)) {
    std::string name = de.path().filename().string();
    bool ours = name == kSafetensorsWeightsName || name == kSafetensorsIndexName ||
                std::regex_match(name, kShard);
    if (ours && keep.count(name) == 0) fs::remove(de.path(), ec);
  }
}

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  SafetensorsCheckpoint c;
  c.path_ = path;
  std::error_code ec;
  HF_CHECK_INPUT(fs::exists(path, ec), "checkpoint ", path, ": no such file or directory");
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    fs::path single = fs::path(path) / kSafetensorsWeightsName;
    fs::path index = fs::path(path) / kSafetensorsIndexName;
    HF_CHECK_INPUT(fs::exists(single, ec) || fs::exists(index, ec), "checkpoint ", path,
                   ": the directory has neither ", kSafetensorsWeightsName, " nor ",
                   kSafetensorsIndexName);
    file = fs::exists(single, ec) ? single.string() : index.string();
  }

  if (fs::path(file).extension() != ".json") {
    c.shards_.push_back(SafetensorsFile::open(file));
    for (const TensorEntry& e : c.shards_[0].entries()) {
      c.names_.push_back(e.name);
      c.shard_of_.emplace(e.name, 0);
    }
    return c;
  }

  const std::string where = "checkpoint index " + file;
  std::string text = read_text_file(file, "checkpoint index");
  nlohmann::ordered_json index;
  std::optional<detail::DuplicateKey> dup;
  try {
    index = detail::parse_json_checked(text, dup);
  } catch (const nlohmann::ordered_json::exception& e) {
    HF_CHECK_INPUT(false, where, ": not valid JSON: ", e.what());
  }
  HF_CHECK_INPUT(index.is_object(), where, ": expected a JSON object, got ", index.type_name());
  HF_CHECK_INPUT(!dup, where, ": key '", dup ? dup->key : "", "' appears more than once",
                 dup && !dup->parent.empty() ? " in \"" + dup->parent + "\"" : "");
  if (index.contains("metadata")) {
    const auto& meta = index["metadata"];
    HF_CHECK_INPUT(meta.is_object() || meta.is_null(), where, ": \"metadata\" must be an object");
    if (meta.is_object() && meta.contains("total_size")) {
      HF_CHECK_INPUT(meta["total_size"].is_number_unsigned(), where,
                     ": metadata.total_size must be a non-negative integer, got ",
                     meta["total_size"].dump());
      c.total_size_ = meta["total_size"].get<uint64_t>();
    }
  }
  HF_CHECK_INPUT(index.contains("weight_map") && index["weight_map"].is_object(), where,
                 ": missing \"weight_map\" (expected an object mapping tensor names to files)");
  const fs::path dir = fs::path(file).parent_path();
  std::map<std::string, size_t> shard_by_file;
  for (const auto& [name, target] : index["weight_map"].items()) {
    HF_CHECK_INPUT(target.is_string(), where, ": weight_map entry of tensor '", name,
                   "' must be a file name, got ", target.dump());
    const std::string shard = target.get<std::string>();
    HF_CHECK_INPUT(
        !shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
        where, ": tensor '", name, "' maps to \"", shard,
        "\", expected a file name in the index's directory");
    auto [it, inserted] = shard_by_file.emplace(shard, c.shards_.size());
    if (inserted) {
      fs::path shard_path = dir / shard;
      HF_CHECK_INPUT(fs::is_regular_file(shard_path, ec), where, ": tensor '", name,
                     "' maps to shard ", shard_path.string(), ", which does not exist");
      c.shards_.push_back(SafetensorsFile::open(shard_path.string()));
    }
    HF_CHECK_INPUT(c.shards_[it->second].contains(name), where, ": tensor '", name,
                   "' maps to shard ", c.shards_[it->second].path(),
                   ", which has no tensor of that name");
    c.names_.push_back(name);
    c.shard_of_.emplace(name, it->second);
  }
  return c;
}

size_t SafetensorsCheckpoint::shard_index(const std::string& name) const {
  auto it = shard_of_.find(name);
  HF_CHECK_INPUT(it != shard_of_.end(), "checkpoint ", path_, ": no tensor named '", name, "'");
  return it->second;
}

const TensorEntry& SafetensorsCheckpoint::entry(const std::string& name) const {
  return shards_[shard_index(name)].entry(name);
}

Tensor SafetensorsCheckpoint::tensor(const std::string& name) const {
  return shards_[shard_index(name)].tensor(name);
}

const std::string& SafetensorsCheckpoint::file_of(const std::string& name) const {
  return shards_[shard_index(name)].path();
}

const std::map<std::string, std::string>& SafetensorsCheckpoint::metadata() const {
  static const std::map<std::string, std::string> kEmpty;
  return shards_.empty() ? kEmpty : shards_[0].metadata();
}

std::vector<std::string> save_sharded_safetensors(
    const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
    uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  const std::string where = "save_sharded_safetensors " + dir;
  HF_CHECK_INPUT(max_shard_bytes > 0, where, ": max_shard_bytes must be positive");
  // Validate everything before the first file is written.
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    HF_CHECK_INPUT(seen.insert(name).second, where, ": tensor '", name, "' is given twice");
    HF_CHECK_INPUT(name != "__metadata__", where, ": \"__metadata__\" cannot name a tensor");
    HF_CHECK_INPUT(t.defined(), where, ": tensor '", name, "' is undefined");
    safetensors_dtype_name(t.dtype());
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  HF_CHECK_INPUT(fs::is_directory(dir, ec), where, ": cannot create the directory: ", ec.message());

  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  uint64_t shard_bytes = 0, total = 0;
  for (const auto& nt : tensors) {
    uint64_t nbytes = nt.second.nbytes();
    if (!shards.back().empty() && shard_bytes + nbytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(nt);
    shard_bytes += nbytes;
    total += nbytes;
  }

  std::vector<std::string> written;
  if (shards.size() == 1) {
    written.push_back((fs::path(dir) / kSafetensorsWeightsName).string());
    save_safetensors(written[0], shards[0], metadata);
    remove_stale(dir, {kSafetensorsWeightsName});
    return written;
  }
  nlohmann::json weight_map = nlohmann::json::object();  // sorted keys, as transformers writes
  std::set<std::string> keep{kSafetensorsIndexName};
  for (size_t k = 0; k < shards.size(); ++k) {
    std::string name = shard_name(k + 1, shards.size());
    written.push_back((fs::path(dir) / name).string());
    save_safetensors(written.back(), shards[k], metadata);
    for (const auto& nt : shards[k]) weight_map[nt.first] = name;
    keep.insert(name);
  }
  nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string text = index.dump(2) + "\n";
  written.push_back((fs::path(dir) / kSafetensorsIndexName).string());
  write_file_atomically(written.back(),
                        [&](int fd) { write_all(fd, text.data(), text.size(), written.back()); });
  remove_stale(dir, keep);
  return written;
}

std::optional<std::string> find_with_optional_prefix(const SafetensorsCheckpoint& ckpt,
                                                     const std::string& name,
                                                     const std::string& prefix) {
  if (ckpt.contains(name)) return name;
  if (!prefix.empty() && name.starts_with(prefix)) {
    std::string bare = name.substr(prefix.size());
    if (ckpt.contains(bare)) return bare;
  } else if (ckpt.contains(prefix + name)) {
    return prefix + name;
  }
  return std::nullopt;
}

}  // namespace hfrun::io
