#include "data/tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstdio>

#include "common/error.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {
namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Symbol {
  int32_t id;
  int32_t prev, next;  // -1 at the ends
  bool removed;
};

// A candidate merge; the heap pops the lowest rank, then the leftmost position.
struct Candidate {
  int32_t rank, pos, new_id;
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

// Per-thread cache of word -> ids, keyed by model instance. Bounded like HF's (which stops
// inserting at 10,000 entries); real text has a Zipfian word distribution, so a bounded cache
// catches most words.
constexpr size_t kCacheCapacity = 100'000;
constexpr size_t kMaxCachedWordBytes = 256;

StringMap<std::vector<int32_t>>& word_cache(uint64_t instance) {
  thread_local uint64_t owner = 0;
  thread_local StringMap<std::vector<int32_t>> cache;
  if (owner != instance) {
    cache.clear();
    owner = instance;
  }
  return cache;
}

std::atomic<uint64_t> g_next_instance{1};

}  // namespace

Bpe::Bpe(StringMap<int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
         BpeOptions options, int32_t max_id)
    : vocab_(std::move(vocab)), options_(std::move(options)), instance_id_(g_next_instance++) {
  for (const auto& [token, id] : vocab_) {
    HF_CHECK_INPUT(id >= 0 && id < max_id, "BPE vocab: token '", token, "' has id ", id,
                   ", outside [0, ", max_id, ")");
  }
  if (options_.unk_token) {
    auto it = vocab_.find(*options_.unk_token);
    HF_CHECK_INPUT(it != vocab_.end(), "BPE: unk_token '", *options_.unk_token,
                   "' is not in the vocab");
    unk_id_ = it->second;
  }
  const size_t prefix_len =
      options_.continuing_subword_prefix ? options_.continuing_subword_prefix->size() : 0;
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a), ib = vocab_.find(b);
    HF_CHECK_INPUT(ia != vocab_.end() && ib != vocab_.end(), "BPE merges[", rank, "] ('", a, "' '",
                   b, "'): token '", ia == vocab_.end() ? a : b, "' is not in the vocab");
    std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : std::string());
    auto im = vocab_.find(merged);
    HF_CHECK_INPUT(im != vocab_.end(), "BPE merges[", rank, "] ('", a, "' '", b,
                   "'): the merged token '", merged, "' is not in the vocab");
    // Like HF (a HashMap built from the list), a repeated pair keeps its last rank.
    merges_[pair_key(ia->second, ib->second)] = {static_cast<int32_t>(rank), im->second};
  }
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  auto& cache = word_cache(instance_id_);
  if (auto it = cache.find(word); it != cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t mark = out.size();
  merge_word(word, out);
  if (word.size() <= kMaxCachedWordBytes && cache.size() < kCacheCapacity) {
    cache.emplace(std::string(word), std::vector<int32_t>(out.begin() + mark, out.end()));
  }
}

void Bpe::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  // 1. Characters -> initial symbols (HF BPE::merge_word).
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add = [&](int32_t id) {
    const int32_t n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, false});
  };
  int32_t pending_unk = -1;  // an unknown run not yet emitted (-1: none)
  std::string piece;
  for (size_t i = 0; i < w.size();) {
    const size_t len = std::min(utf8_length(static_cast<unsigned char>(w[i])), w.size() - i);
    const bool first = i == 0, last = i + len == w.size();
    piece.assign(w.substr(i, len));
    if (!first && options_.continuing_subword_prefix)
      piece.insert(0, *options_.continuing_subword_prefix);
    if (last && options_.end_of_word_suffix) piece += *options_.end_of_word_suffix;
    i += len;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      std::vector<int32_t> bytes;
      for (unsigned char c : piece) {
        char code[8];
        std::snprintf(code, sizeof(code), "<0x%02X>", c);
        auto it = vocab_.find(std::string_view(code));
        if (it == vocab_.end()) break;
        bytes.push_back(it->second);
      }
      if (bytes.size() == piece.size()) {
        // HF adds the byte tokens without flushing a pending unk first; mirror its order.
        for (int32_t b : bytes) add(b);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = *unk_id_;
    }
    // No unk token: HF drops the character; so do we (parity).
  }
  if (pending_unk >= 0) add(pending_unk);

  // 2. Merge the lowest-ranked adjacent pair until none is left (HF Word::merge_all).
  thread_local std::vector<Candidate> heap;
  heap.clear();
  auto push = [&](int32_t pos, int32_t left, int32_t right) {
    auto it = merges_.find(pair_key(left, right));
    if (it == merges_.end()) return;
    heap.push_back({it->second.first, pos, it->second.second});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) {
    push(i, symbols[i].id, symbols[i + 1].id);
  }
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = symbols[top.pos];
    if (cur.removed || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    auto it = merges_.find(pair_key(cur.id, right.id));
    if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    right.removed = true;
    cur.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) push(cur.prev, symbols[cur.prev].id, cur.id);
    if (cur.next >= 0) push(top.pos, cur.id, symbols[cur.next].id);
  }
  for (const Symbol& s : symbols) {
    if (!s.removed) out.push_back(s.id);
  }
}

}  // namespace hfrun::data
