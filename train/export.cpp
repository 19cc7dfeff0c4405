#include "train/export.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "common/error.h"
#include "common/fault.h"
#include "common/file_util.h"
#include "io/safetensors.h"

namespace hfrun::train {

namespace fs = std::filesystem;

namespace {

// Builds `dir` under a temporary name with fill(tmp) (which returns the files it wrote),
// fsyncs them, then renames it over the old directory. What an export killed midway left beside
// `dir` (DIR.tmp-PID, DIR.old-PID of a process that is gone) goes first.
void write_directory(const std::string& dir,
                     const std::function<std::vector<std::string>(const fs::path&)>& fill) {
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  const fs::path parent = final_dir.parent_path().empty() ? fs::path(".") : final_dir.parent_path();
  const std::string base = final_dir.filename().string();
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(base + ".tmp-") && !name.starts_with(base + ".old-")) continue;
    const pid_t pid = static_cast<pid_t>(std::atoll(name.c_str() + base.size() + 5));
    if (pid == ::getpid() || pid <= 0 || (::kill(pid, 0) != 0 && errno == ESRCH))
      fs::remove_all(e.path(), ec);
  }
  fs::create_directories(tmp);
  try {
    const std::vector<std::string> written = fill(tmp);
    for (const std::string& f : written) fsync_path((tmp / f).string());
    fsync_path(tmp.string());
  } catch (...) {
    fs::remove_all(tmp, ec);  // a failed export (a full disk) leaves nothing half-written
    throw;
  }
  // Replace the previous export: move it aside, rename the new one in, then delete the old.
  fault::point("export.written");
  const fs::path old = final_dir.string() + ".old-" + std::to_string(::getpid());
  if (fs::exists(final_dir)) fs::rename(final_dir, old);
  fault::point("export.commit");
  fs::rename(tmp, final_dir);
  fsync_path(parent.string());
  fs::remove_all(old, ec);
}

void write_text(const fs::path& path, const std::string& text) {
  write_new_file(path.string(), text.data(), text.size());
}

}  // namespace

void write_hf_model(const std::string& dir, const std::string& config_json,
                    const std::vector<std::pair<std::string, Tensor>>& tensors,
                    const std::string& tokenizer_path) {
  write_directory(dir, [&](const fs::path& tmp) {
    std::vector<std::string> written = {"model.safetensors"};
    if (!config_json.empty()) {
      write_text(tmp / "config.json", config_json);
      written.push_back("config.json");
    }
    io::save_safetensors((tmp / "model.safetensors").string(), tensors, {{"format", "pt"}});
    if (!tokenizer_path.empty()) {
      copy_into_new_file(tokenizer_path, (tmp / "tokenizer.json").string());
      written.push_back("tokenizer.json");
    }
    // The files transformers' AutoTokenizer reads beside tokenizer.json (BOS/EOS handling of
    // Llama-family tokenizers lives there).
    for (const char* f : {"tokenizer_config.json", "special_tokens_map.json"}) {
      if (tokenizer_path.empty()) break;
      const fs::path src = fs::path(tokenizer_path).parent_path() / f;
      if (!fs::is_regular_file(src)) continue;
      copy_into_new_file(src.string(), (tmp / f).string());
      written.push_back(f);
    }
    return written;
  });
}

void write_peft_adapter(const std::string& dir, const std::string& adapter_config_json,
                        const std::vector<std::pair<std::string, Tensor>>& tensors) {
  write_directory(dir, [&](const fs::path& tmp) {
    write_text(tmp / "adapter_config.json", adapter_config_json);
    io::save_safetensors((tmp / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
    return std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"};
  });
}

}  // namespace hfrun::train
