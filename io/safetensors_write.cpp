// The safetensors writer: header in the caller's order, data ordered for alignment, atomic.
#include <algorithm>
#include <numeric>
#include <optional>
#include <set>

#include "common/digest.h"
#include "common/error.h"
#include "common/fault.h"
#include "common/file_util.h"
#include "common/progress.h"
#include "io/io_util.h"
#include "io/safetensors.h"
#include "tensor/ops.h"

namespace hfrun::io {

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata, FileDigest* digest) {
  const std::string where = "save_safetensors " + path;
  std::set<std::string> seen;
  std::vector<Tensor> data;
  data.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    HF_CHECK_INPUT(name != "__metadata__", where,
                   ": \"__metadata__\" is reserved and cannot name a tensor");
    HF_CHECK_INPUT(seen.insert(name).second, where, ": tensor '", name, "' is given twice");
    HF_CHECK_INPUT(t.defined(), where, ": tensor '", name, "' is undefined");
    safetensors_dtype_name(t.dtype());  // throws for a dtype the format lacks
    // A device tensor (a GPU run's parameters) is copied to the host here, one at a time.
    data.push_back(t.device().is_cpu() ? ops::contiguous(t) : ops::to_device(t, Device::cpu()));
  }

  // Largest elements first (stable), so every tensor starts at a multiple of its element size:
  // the data section starts at a multiple of 8 and each size is a multiple of its alignment.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return data[a].element_size() > data[b].element_size();
  });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t cursor = 0;
  for (size_t i : order) {
    begin[i] = cursor;
    cursor += data[i].nbytes();
  }

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    nlohmann::ordered_json info = nlohmann::ordered_json::object();
    info["dtype"] = safetensors_dtype_name(data[i].dtype());
    info["shape"] = data[i].sizes();
    info["data_offsets"] = {begin[i], begin[i] + data[i].nbytes()};
    header[tensors[i].first] = std::move(info);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    // dump() rejects invalid UTF-8 in names and metadata.
    HF_CHECK_INPUT(false, where, ": cannot encode the header: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  HF_CHECK_INPUT(text.size() <= kMaxSafetensorsHeaderBytes, where, ": header of ", text.size(),
                 " bytes exceeds the format's limit of ", kMaxSafetensorsHeaderBytes);

  std::optional<Digester> sha;
  if (digest != nullptr) sha.emplace(digest->kind);
  uint64_t written = 0;
  // A large export or checkpoint file says how far it is (after 2 s; common/progress.h).
  Progress progress("writing " + path, static_cast<int64_t>(8 + text.size() + cursor));
  // Each chunk is hashed just before it is written, while it is in cache; the kernel writes
  // earlier chunks back meanwhile.
  auto put = [&](int fd, const void* p, size_t n) {
    constexpr size_t kChunk = size_t{4} << 20;
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t at = 0; at < n; at += kChunk) {
      const size_t len = std::min(kChunk, n - at);
      if (sha) sha->update(b + at, len);
      write_all(fd, b + at, len, path);
      progress.advance(static_cast<int64_t>(len));
      fault::point("safetensors.chunk");
    }
    written += n;
  };
  write_file_atomically(path, [&](int fd) {
    unsigned char len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    put(fd, len, sizeof(len));
    put(fd, text.data(), text.size());
    for (size_t i : order) {
      if (data[i].nbytes() > 0) put(fd, data[i].raw_data(), data[i].nbytes());
    }
  });
  if (digest != nullptr) *digest = FileDigest{written, digest->kind, sha->finish_hex()};
}

}  // namespace hfrun::io
