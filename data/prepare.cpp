#include "data/prepare.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "data/documents.h"
#include "data/shard.h"

namespace hfrun::data {
namespace {

namespace fs = std::filesystem;

std::string shard_path(const PrepareOptions& o, int64_t index) {
  char name[64];
  std::snprintf(name, sizeof(name), "_%06lld.bin", static_cast<long long>(index));
  return (fs::path(o.output_dir) / (o.prefix + name)).string();
}

// Existing output shards would silently join the dataset (a directory source reads every .bin
// in it), so they are an error unless the caller asked to replace them.
void clear_output_dir(const PrepareOptions& o) {
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  HF_CHECK_INPUT(!ec && fs::is_directory(o.output_dir), o.output_dir,
                 ": cannot create the output directory (", ec.message(), ")");
  std::vector<fs::path> existing;
  for (const auto& e : fs::directory_iterator(o.output_dir)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".bin" && name.rfind(o.prefix + "_", 0) == 0)
      existing.push_back(e.path());
  }
  if (existing.empty()) return;
  HF_CHECK_INPUT(o.overwrite, o.output_dir, " already holds ", existing.size(), " shard(s) like ",
                 existing.front().filename().string(), "; pass --overwrite to replace them");
  for (const auto& p : existing) fs::remove(p);
}

// Tokenizes docs[i] into out[i] on `threads` threads (work handed out one document at a time,
// so a few long documents do not leave threads idle).
void encode_parallel(const Tokenizer& tok, const std::vector<Document>& docs,
                     std::vector<std::vector<int32_t>>& out, int threads) {
  out.assign(docs.size(), {});
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto work = [&] {
    try {
      for (size_t i = next++; i < docs.size() && !failed; i = next++) {
        try {
          tok.encode_into(docs[i].text, out[i]);
        } catch (const Error& e) {
          HF_CHECK_INPUT(false, docs[i].origin, ": ", e.message());
        }
      }
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace

PrepareStats prepare_shards(const std::vector<std::string>& sources, const Tokenizer& tok,
                            const PrepareOptions& o, const PrepareProgress& progress) {
  HF_CHECK_INPUT(!o.output_dir.empty(), "prepare: an output directory is required");
  HF_CHECK_INPUT(o.shard_tokens >= 1, "prepare: shard size must be at least 1 token, got ",
                 o.shard_tokens);
  HF_CHECK_INPUT(!sources.empty(), "prepare: no input files");
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<SourceFile> files = expand_sources(sources);
  for (const SourceFile& f : files) {
    HF_CHECK_INPUT(f.kind != SourceKind::kShard, f.path,
                   ": is already a token shard; prepare "
                   "reads .txt and .jsonl files");
  }
  clear_output_dir(o);
  const int threads = o.num_threads > 0
                          ? o.num_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::optional<int32_t> eot = tok.eot_id();

  PrepareStats stats;
  stats.shard_version = shard_version_for_vocab(tok.vocab_size());
  std::vector<int32_t> shard;  // tokens of the shard being filled
  shard.reserve(static_cast<size_t>(std::min<int64_t>(o.shard_tokens, 1 << 26)));
  auto emit = [&](const std::vector<int32_t>& ids) {
    for (size_t i = 0; i < ids.size();) {
      const size_t take = std::min<size_t>(ids.size() - i, o.shard_tokens - shard.size());
      shard.insert(shard.end(), ids.begin() + i, ids.begin() + i + take);
      i += take;
      if (static_cast<int64_t>(shard.size()) == o.shard_tokens) {
        stats.shard_paths.push_back(shard_path(o, stats.shards++));
        write_shard(stats.shard_paths.back(), shard, stats.shard_version);
        shard.clear();
      }
    }
  };
  const std::vector<int32_t> separator = eot ? std::vector<int32_t>{*eot} : std::vector<int32_t>{};

  std::vector<Document> batch;
  int64_t batch_bytes = 0;
  std::vector<std::vector<int32_t>> encoded;
  auto flush = [&] {
    encode_parallel(tok, batch, encoded, threads);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (stats.documents > 0) emit(separator);  // between documents, never after the last
      emit(encoded[i]);
      stats.tokens += static_cast<int64_t>(encoded[i].size()) +
                      (stats.documents > 0 ? static_cast<int64_t>(separator.size()) : 0);
      stats.text_bytes += static_cast<int64_t>(batch[i].text.size());
      ++stats.documents;
    }
    batch.clear();
    batch_bytes = 0;
    stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (progress) progress(stats);
  };
  for (const SourceFile& f : files) {
    for (Document& d : read_documents(f, o.text_field)) {
      batch_bytes += static_cast<int64_t>(d.text.size());
      batch.push_back(std::move(d));
      if (batch_bytes >= o.batch_bytes) flush();
    }
  }
  flush();
  if (!shard.empty() || stats.shards == 0) {
    stats.shard_paths.push_back(shard_path(o, stats.shards++));
    write_shard(stats.shard_paths.back(), shard, stats.shard_version);
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return stats;
}

}  // namespace hfrun::data
