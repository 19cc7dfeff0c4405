// Safetensors (Hugging Face's tensor file format): a validating zero-copy reader and an atomic
// writer. Layout: 8-byte little-endian header length N, N bytes of JSON header (an object:
// optional "__metadata__" string->string map, and per tensor {"dtype", "shape",
// "data_offsets": [begin, end]} relative to the data section), then the data section, whose
// tensors are packed back to back with no gaps. Validation follows the reference (Rust)
// implementation; every violation is an hfrun::Error of kind kInvalidInput naming the file and,
// where there is one, the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace hfrun {
struct FileDigest;  // common/digest.h
}

namespace hfrun::io {

// Headers larger than this are rejected (the reference's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// The safetensors name of a dtype ("F32", "BF16", ...); throws for a dtype the format lacks.
const char* safetensors_dtype_name(DType dtype);

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t offset = 0;  // byte offset of the data from the start of the file
  uint64_t nbytes = 0;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates it completely; throws hfrun::Error (kInvalidInput) on any defect.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  // The tensors in the order the header lists them.
  const std::vector<TensorEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // The entry of `name`; throws (kInvalidInput, naming the file) when there is none.
  const TensorEntry& entry(const std::string& name) const;
  // A CPU tensor over the mapped file (no copy) that keeps the mapping alive. The mapping is
  // copy-on-write: writing through the tensor changes this process's view only, never the
  // file. When the data is not aligned to the element size (legal in the format), the result
  // is an aligned copy instead.
  Tensor tensor(const std::string& name) const;
  // True when tensor(name) would be a view of the mapping rather than a copy.
  bool is_zero_copy(const std::string& name) const;
  // The mapped bytes of the whole file.
  const unsigned char* mapped_data() const;
  uint64_t mapped_size() const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::vector<TensorEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any layout: non-contiguous ones are made contiguous, device tensors are
// copied to the host) to `path`. The header lists them in the given order; the data section
// orders them by element size (largest first, stable) so that every tensor is aligned for its
// dtype when the file is mapped. The header is padded with spaces to a multiple of 8 bytes.
// Written atomically: a temporary file in the same directory, fsync, rename; on failure no file
// appears under `path`. Duplicate or reserved names are rejected before anything is written.
// `digest` (optional) receives the file's size and checksum (of digest->kind), computed from the
// bytes as they are written (the file is never read back).
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      FileDigest* digest = nullptr);

}  // namespace hfrun::io
