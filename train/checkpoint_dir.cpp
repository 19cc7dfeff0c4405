// The checkpoints directory: manifest verification, finding the newest valid checkpoint,
// pruning old ones and removing the leftovers of interrupted saves.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/digest.h"
#include "common/error.h"
#include "common/fault.h"
#include "train/checkpoint.h"
#include "train/checkpoint_format.h"
#include "train/checkpoint_fs.h"

namespace hfrun::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace detail {

void write_synced(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  HF_CHECK(fd >= 0, "cannot create ", path, ": ", std::strerror(errno));
  const char* p = text.data();
  size_t n = text.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = errno;
      ::close(fd);
      HF_CHECK(false, "cannot write ", path, ": ", std::strerror(err));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  fault::point("file.written");
  const bool synced = ::fsync(fd) == 0;
  const int err = errno;
  HF_CHECK(::close(fd) == 0 && synced, "cannot write ", path, ": ", std::strerror(err));
}

int64_t parse_checkpoint_name(const std::string& name) {
  if (name.size() < 13 || !name.starts_with("step-")) return -1;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || step > (INT64_MAX - 9) / 10) return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

namespace {

// The pid of a "step-N.tmp-PID" / "step-N.old-PID" name, or -1.
long temporary_pid(const std::string& name) {
  if (!name.starts_with("step-")) return -1;
  for (const char* tag : {".tmp-", ".old-"}) {
    const size_t at = name.find(tag);
    if (at == std::string::npos) continue;
    const std::string digits = name.substr(at + 5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::stol(digits);
  }
  return -1;
}

bool process_alive(long pid) {
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

}  // namespace

void remove_stale_temporaries(const std::string& root) {
  std::error_code ec;
  std::vector<fs::path> entries;
  for (const auto& entry : fs::directory_iterator(root, ec)) entries.push_back(entry.path());
  for (const fs::path& path : entries) {
    const std::string name = path.filename().string();
    const long pid = temporary_pid(name);
    if (pid < 0 || (pid != ::getpid() && process_alive(pid))) continue;
    // A ".old-" directory is a committed checkpoint moved aside to be replaced; when the
    // process died before its replacement was renamed in, it is put back.
    const fs::path committed = path.parent_path() / name.substr(0, name.find('.'));
    if (name.find(".old-") != std::string::npos && !fs::exists(committed, ec)) {
      fs::rename(path, committed, ec);
      if (!ec) continue;
    }
    fs::remove_all(path, ec);
  }
}

void prune_checkpoints(const std::string& root, int64_t keep, const std::string& protect) {
  if (keep <= 0) return;
  std::vector<std::string> all = list_checkpoints(root);
  const int64_t excess = static_cast<int64_t>(all.size()) - keep;
  std::error_code ec;
  for (int64_t i = 0; i < excess; ++i) {
    if (fs::path(all[i]) == fs::path(protect)) continue;
    fs::remove_all(all[i], ec);
  }
  fsync_path(root);
}

}  // namespace detail

std::vector<std::string> list_checkpoints(const std::string& checkpoints_root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(checkpoints_root, ec)) {
    const int64_t step = detail::parse_checkpoint_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

Manifest read_manifest(const std::string& dir) {
  const fs::path root(dir);
  HF_CHECK_INPUT(fs::is_directory(root), "checkpoint ", dir, ": no such directory");
  const fs::path mp = root / kManifestName;
  HF_CHECK_INTACT(fs::exists(mp), "incomplete checkpoint ", dir, ": no ", kManifestName,
                  " (the save never committed)");
  std::ifstream in(mp);
  std::stringstream ss;
  ss << in.rdbuf();
  Manifest m;
  try {
    const json j = json::parse(ss.str());
    HF_CHECK_INTACT(j.value("format", "") == "hfrun-checkpoint", "corrupt checkpoint ", dir, ": ",
                    kManifestName, " is not an hfrun checkpoint manifest");
    m.version = j.at("format_version").get<int>();
    HF_CHECK_INPUT(m.version == kCheckpointFormatVersion, "checkpoint ", dir, ": format version ",
                   m.version, ", this build reads version ", kCheckpointFormatVersion);
    m.step = j.at("step").get<int64_t>();
    m.world_size = j.at("world_size").get<int64_t>();
    m.config_hash = j.at("config_hash").get<std::string>();
    for (const json& f : j.at("files")) {
      Manifest::File file;
      file.name = f.at("name").get<std::string>();
      file.size = f.at("size").get<uint64_t>();
      // Older manifests have SHA-256 digests.
      file.digest_kind = f.contains(digest_key(DigestKind::kXxh3_128)) ? DigestKind::kXxh3_128
                                                                       : DigestKind::kSha256;
      file.digest = f.at(digest_key(file.digest_kind)).get<std::string>();
      m.files.push_back(std::move(file));
    }
  } catch (const json::exception& e) {
    HF_CHECK_INTACT(false, "corrupt checkpoint ", dir, ": ", kManifestName, ": ", e.what());
  }
  HF_CHECK_INTACT(m.world_size >= 1, "corrupt checkpoint ", dir, ": world_size ", m.world_size);
  for (const Manifest::File& f : m.files) {
    HF_CHECK_INTACT(
        !f.name.empty() && f.name.find('/') == std::string::npos && f.name != "." && f.name != "..",
        "corrupt checkpoint ", dir, ": ", kManifestName, " names file '", f.name, "'");
    std::error_code ec;
    const uintmax_t size = fs::file_size(root / f.name, ec);
    HF_CHECK_INTACT(!ec, "corrupt checkpoint ", dir, ": ", f.name, " is missing");
    HF_CHECK_INTACT(size == f.size, "corrupt checkpoint ", dir, ": ", f.name, " has ", size,
                    " bytes, the manifest says ", f.size);
  }
  return m;
}

const Manifest::File& Manifest::file(const std::string& dir, const std::string& name) const {
  for (const File& f : files) {
    if (f.name == name) return f;
  }
  HF_CHECK_INTACT(false, "corrupt checkpoint ", dir, ": ", kManifestName, " does not list ", name);
  return files.front();
}

void check_digest(const std::string& dir, const Manifest::File& f, const std::string& digest) {
  HF_CHECK_INTACT(digest == f.digest, "corrupt checkpoint ", dir, ": ", f.name, " has checksum ",
                  digest_name(f.digest_kind), " ", digest, ", the manifest says ", f.digest);
}

Manifest verify_checkpoint(const std::string& dir) {
  Manifest m = read_manifest(dir);
  for (const Manifest::File& f : m.files) {
    const FileDigest d = file_digest((fs::path(dir) / f.name).string(), f.digest_kind);
    HF_CHECK_INTACT(d.size == f.size, "corrupt checkpoint ", dir, ": ", f.name, " has ", d.size,
                    " bytes, the manifest says ", f.size);
    check_digest(dir, f, d.hex);
  }
  return m;
}

namespace {

// The committed checkpoints under `root` that pass `check`, newest first, up to `limit`;
// warnings name the temporaries and the ones that fail.
std::vector<std::string> checked_checkpoints(const fs::path& root,
                                             Manifest (*check)(const std::string&), size_t limit) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("step-") && detail::parse_checkpoint_name(name) < 0) {
      std::cerr << "hfrun: warning: ignoring " << entry.path().string()
                << " (not a committed checkpoint: an interrupted or concurrent save)\n";
    }
  }
  std::vector<std::string> all = list_checkpoints(root.string()), out;
  for (auto it = all.rbegin(); it != all.rend() && out.size() < limit; ++it) {
    try {
      check(*it);
      out.push_back(*it);
    } catch (const Error& e) {
      std::cerr << "hfrun: warning: skipping checkpoint " << *it << ": " << e.message() << "\n";
    }
  }
  return out;
}

}  // namespace

std::optional<std::string> find_latest_checkpoint(const std::string& output_dir) {
  std::vector<std::string> found =
      checked_checkpoints(fs::path(output_dir) / "checkpoints", verify_checkpoint, 1);
  if (found.empty()) return std::nullopt;
  return found.front();
}

std::vector<std::string> resumable_checkpoints(const std::string& checkpoints_root) {
  return checked_checkpoints(checkpoints_root, read_manifest, SIZE_MAX);
}

}  // namespace hfrun::train
