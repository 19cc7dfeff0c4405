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

void export_hf(const nn::CausalLM& model, const std::string& tokenizer_path,
               const std::string& dir) {
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  {
    std::ofstream cfg(tmp / "config.json");
    cfg << model.config_json();
    HF_CHECK(cfg.good(), tmp.string(), "/config.json: write failed");
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : model.named_parameters()) tensors.emplace_back(name, t);
  io::save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
  fs::copy_file(tokenizer_path, tmp / "tokenizer.json", fs::copy_options::overwrite_existing, ec);
  HF_CHECK_INPUT(!ec, tokenizer_path, ": cannot copy into the export (", ec.message(), ")");
  std::vector<std::string> written = {"config.json", "tokenizer.json"};
  // The files transformers' AutoTokenizer reads beside tokenizer.json (BOS/EOS handling of
  // Llama-family tokenizers lives there).
  for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path src = fs::path(tokenizer_path).parent_path() / f;
    if (!fs::is_regular_file(src)) continue;
    fs::copy_file(src, tmp / f, fs::copy_options::overwrite_existing, ec);
    HF_CHECK_INPUT(!ec, src.string(), ": cannot copy into the export (", ec.message(), ")");
    written.push_back(f);
  }
  for (const std::string& f : written) fsync_path((tmp / f).string());
  fsync_path(tmp.string());
  // Replace the previous export: move it aside, rename the new one in, then delete the old.
  const fs::path old = final_dir.string() + ".old-" + std::to_string(::getpid());
  if (fs::exists(final_dir)) fs::rename(final_dir, old);
  fs::rename(tmp, final_dir);
  fsync_path(final_dir.parent_path().empty() ? std::string(".") : final_dir.parent_path().string());
  fs::remove_all(old, ec);
}

}  // namespace hfrun::train
