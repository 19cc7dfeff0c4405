// Internal to the checkpoint code (checkpoint.cpp, checkpoint_save.cpp, checkpoint_load.cpp):
// the file names of one rank, the stored names of tensor-parallel parts, and JSON reading with
// errors that name the file and key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "nn/module.h"
#include "train/checkpoint.h"

namespace hfrun::train::detail {

namespace fs = std::filesystem;
using nlohmann::json;

// HF_CHECK_INPUT for a checkpoint that is not what its manifest says: throws CorruptCheckpoint.
#define HF_CHECK_INTACT(cond, ...)                                                            \
  do {                                                                                        \
    if (!(cond)) [[unlikely]] {                                                               \
      throw ::hfrun::train::CorruptCheckpoint(::hfrun::detail::concat(__VA_ARGS__), __FILE__, \
                                              __LINE__, ::hfrun::ErrorKind::kInvalidInput);   \
    }                                                                                         \
  } while (0)

// Metadata key of a model file listing the ZeRO pieces it holds.
constexpr const char* kPartsKey = "hfrun_parts";

// `text` parsed, or an error naming `path`.
json parse_json(const std::string& text, const fs::path& path);
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

json trainer_state_json(const TrainerState& s);

std::string model_file_of(int64_t rank, int64_t world);
std::string optimizer_file_of(int64_t rank, int64_t world);
std::string rng_file_of(int64_t rank, int64_t world);
// The stored name of a tensor-parallel part: "<name>|tp<rank>of<size>".
std::string tp_part_name(const std::string& name, int t, int size);
// The name rank `t` of `size` stores parameter `param`'s tensor `name` under.
std::string stored_name(const nn::Module& model, const std::string& param, const std::string& name,
                        int t, int size);

}  // namespace hfrun::train::detail
