// The safetensors writer: header in the caller's order, data ordered for alignment, atomic.
#include <algorithm>
#include <numeric>
#include <set>

#include "common/error.h"
#include "common/file_util.h"
#include "io/io_util.h"
#include "io/safetensors.h"
#include "tensor/ops.h"

namespace hfrun::io {

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
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

  write_file_atomically(path, [&](int fd) {
    unsigned char len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    write_all(fd, len, sizeof(len), path);
    write_all(fd, text.data(), text.size(), path);
    for (size_t i : order) {
      if (data[i].nbytes() > 0) write_all(fd, data[i].raw_data(), data[i].nbytes(), path);
    }
  });
}

}  // namespace hfrun::io
