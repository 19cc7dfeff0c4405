#include "data/dataset.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "data/documents.h"

namespace hfrun::data {

namespace {

// Runs fn(i) for i in [0, n) on up to `threads` threads. Items are claimed from a shared counter,
// and each writes only its own output slot, so results do not depend on the thread count. When
// items fail, the error of the lowest failing index is rethrown (the same one a serial loop would
// report first), after every thread has joined.
template <typename Fn>
void parallel_for(size_t n, int threads, Fn fn) {
  size_t workers = std::min(n, static_cast<size_t>(std::max(threads, 1)));
  if (workers <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  size_t error_index = std::numeric_limits<size_t>::max();
  std::exception_ptr error;
  auto work = [&] {
    // Check before claiming: every claimed index runs, so the claimed indices are a prefix of
    // [0, n) and the lowest failing one in it is the lowest failing one overall.
    while (!failed) {
      size_t i = next++;
      if (i >= n) break;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (i < error_index) {
          error_index = i;
          error = std::current_exception();
        }
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (size_t t = 0; t + 1 < workers; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

std::string describe(const std::vector<std::string>& sources) {
  std::string s;
  for (size_t i = 0; i < sources.size() && i < 3; ++i) s += (i ? ", " : "") + sources[i];
  if (sources.size() > 3) s += ", ... (" + std::to_string(sources.size()) + " sources)";
  return s.empty() ? "no sources" : s;
}

}  // namespace

TokenStream::TokenStream(const std::vector<std::string>& sources, const TextEncoder& encode,
                         std::optional<int32_t> eot_id, const TokenStreamOptions& options)
    : name_(describe(sources)) {
  HF_CHECK(static_cast<bool>(encode), "TokenStream: no text encoder given");
  int threads = options.num_threads > 0 ? options.num_threads
                                        : static_cast<int>(std::thread::hardware_concurrency());
  std::vector<SourceFile> files = expand_sources(sources);
  // Text files between two shards form one run: its documents are read and tokenized together
  // (so many small files still use every thread) and joined with eot into one segment.
  auto flush_text_run = [&](size_t first, size_t last) {
    if (first == last) return;
    std::vector<std::vector<Document>> per_file(last - first);
    parallel_for(per_file.size(), threads, [&](size_t i) {
      per_file[i] = read_documents(files[first + i], options.text_field);
    });
    std::vector<const Document*> docs;
    for (const auto& f : per_file) {
      for (const auto& d : f) docs.push_back(&d);
    }
    std::vector<std::vector<int32_t>> ids(docs.size());
    parallel_for(docs.size(), threads, [&](size_t i) { ids[i] = encode(docs[i]->text); });
    size_t total = 0;
    for (const auto& v : ids) total += v.size() + (eot_id ? 1 : 0);
    Segment seg;
    seg.tokens.reserve(total);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0 && eot_id) seg.tokens.push_back(*eot_id);  // between documents, not after
      seg.tokens.insert(seg.tokens.end(), ids[i].begin(), ids[i].end());
      std::vector<int32_t>().swap(ids[i]);  // free as we go: peak stays near one copy
    }
    append(std::move(seg));
  };
  size_t run_start = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (files[i].kind != SourceKind::kShard) continue;
    flush_text_run(run_start, i);
    Segment seg;
    seg.shard = std::make_shared<const ShardReader>(files[i].path);
    append(std::move(seg));
    run_start = i + 1;
  }
  flush_text_run(run_start, files.size());
}

TokenStream::TokenStream(std::vector<int32_t> tokens, std::string name) : name_(std::move(name)) {
  Segment seg;
  seg.tokens = std::move(tokens);
  append(std::move(seg));
}

void TokenStream::append(Segment segment) {
  segment.size =
      segment.shard ? segment.shard->size() : static_cast<int64_t>(segment.tokens.size());
  if (segment.size == 0) return;
  segment.begin = size_;
  size_ += segment.size;
  begins_.push_back(segment.begin);
  segments_.push_back(std::move(segment));
}

int32_t TokenStream::token(int64_t i) const {
  int32_t t;
  copy_to(i, 1, &t);
  return t;
}

void TokenStream::copy_to(int64_t start, int64_t count, int32_t* out) const {
  HF_CHECK(start >= 0 && count >= 0 && start + count <= size_, "token stream ", name_, ": tokens [",
           start, ", ", start + count, ") out of range for ", size_, " tokens");
  if (count == 0) return;
  // The segment holding `start` is the last one that begins at or before it (there is one:
  // begins_[0] == 0 <= start < size_).
  auto k = static_cast<size_t>(std::upper_bound(begins_.begin(), begins_.end(), start) -
                               begins_.begin()) -
           1;
  while (count > 0) {
    const Segment& seg = segments_[k++];
    int64_t local = start - seg.begin;
    int64_t n = std::min(count, seg.size - local);
    if (seg.shard) {
      seg.shard->copy_to(local, n, out);
    } else {
      std::copy_n(seg.tokens.data() + local, n, out);
    }
    out += n;
    start += n;
    count -= n;
  }
}

std::vector<int32_t> TokenStream::read(int64_t start, int64_t count) const {
  std::vector<int32_t> out(static_cast<size_t>(std::max<int64_t>(count, 0)));
  copy_to(start, count, out.data());
  return out;
}

int64_t TokenStream::num_samples(int64_t seq_len) const {
  HF_CHECK_INPUT(seq_len > 0, "seq_len must be positive, got ", seq_len);
  return size_ > 0 ? (size_ - 1) / seq_len : 0;
}

int64_t TokenStream::require_samples(int64_t seq_len) const {
  int64_t n = num_samples(seq_len);
  HF_CHECK_INPUT(n > 0, "token stream ", name_, " has ", size_, " tokens; one sample of seq_len ",
                 seq_len, " needs ", seq_len + 1, " tokens (add data or lower data.seq_len)");
  return n;
}

void TokenStream::sample(int64_t i, int64_t seq_len, int32_t* window) const {
  int64_t n = num_samples(seq_len);
  HF_CHECK(i >= 0 && i < n, "token stream ", name_, ": sample ", i, " out of range for ", n,
           " samples of seq_len ", seq_len);
  copy_to(i * seq_len, seq_len + 1, window);
}

}  // namespace hfrun::data
