#include "train/export.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file_util.h"
#include "io/safetensors.h"

namespace hfrun::train {

namespace fs = std::filesystem;

void export_hf(const nn::Gpt2& model, const std::string& tokenizer_path, const std::string& dir) {
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  {
    std::ofstream cfg(tmp / "config.json");
    cfg << model.config().to_json();
    HF_CHECK(cfg.good(), tmp.string(), "/config.json: write failed");
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : model.named_parameters())
    tensors.emplace_back("transformer." + name, t);
  io::save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  fs::copy_file(tokenizer_path, tmp / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
  HF_CHECK_INPUT(!ec, tokenizer_path, ": cannot copy into the export (", ec.message(), ")");
  for (const char* f : {"config.json", "tokenizer.json"}) fsync_path((tmp / f).string());
  fsync_path(tmp.string());
  // Replace the previous export: move it aside, rename the new one in, then delete the old.
  const fs::path old = final_dir.string() + ".old-" + std::to_string(::getpid());
  if (fs::exists(final_dir)) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  fsync_path(final_dir.parent_path().empty() ? std::string(".") : final_dir.parent_path().string());
  fs::remove_all(old, ec);
}

}  // namespace hfrun::train
