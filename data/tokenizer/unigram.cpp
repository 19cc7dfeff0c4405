#include "data/tokenizer/unigram.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {

namespace {
constexpr double kUnkPenalty = 10.0;  // SentencePiece's kUnkPenalty
}  // namespace

Unigram::Unigram(std::vector<std::pair<std::string, double>> vocab, UnigramOptions options)
    : options_(options) {
  HF_CHECK_INPUT(!vocab.empty(), "Unigram: the vocab is empty");
  const auto n = static_cast<int32_t>(vocab.size());
  HF_CHECK_INPUT(!options_.unk_id || (*options_.unk_id >= 0 && *options_.unk_id < n),
                 "Unigram: unk_id ", options_.unk_id.value_or(0), " is outside the vocab of ", n,
                 " pieces");
  double min_score = vocab[0].second;
  scores_.reserve(vocab.size());
  piece_at_.push_back(-1);  // the root
  for (int32_t id = 0; id < n; ++id) {
    const auto& [piece, score] = vocab[static_cast<size_t>(id)];
    HF_CHECK_INPUT(!piece.empty(), "Unigram: vocab[", id, "] is an empty piece");
    HF_CHECK_INPUT(std::isfinite(score), "Unigram: vocab[", id, "] ('", piece, "') has score ",
                   score, " (scores must be finite)");
    HF_CHECK_INPUT(find_invalid_utf8(piece) == std::string::npos, "Unigram: vocab[", id,
                   "] is not valid UTF-8");
    min_score = std::min(min_score, score);
    scores_.push_back(score);
    token_to_id_[piece] = id;
  }
  // The trie over every piece, control pieces included (each string keeps its last id).
  for (const auto& [piece, id] : token_to_id_) {
    int32_t node = 0;
    for (unsigned char c : piece) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        const auto child = static_cast<int32_t>(piece_at_.size());
        piece_at_.push_back(-1);
        it = edges_.emplace(key, child).first;
      }
      node = it->second;
    }
    piece_at_[static_cast<size_t>(node)] = id;
  }
  unk_score_ = min_score - kUnkPenalty;
  if (options_.byte_fallback) {
    byte_ids_.assign(256, -1);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      if (auto it = token_to_id_.find(std::string_view(name)); it != token_to_id_.end()) {
        byte_ids_[static_cast<size_t>(b)] = it->second;
      }
    }
  }
}

void Unigram::segment(std::string_view s, std::vector<std::pair<size_t, size_t>>& pieces) const {
  struct Best {
    double score = 0;
    int64_t start = -1;  // -1: not reached
    int32_t id = 0;
  };
  const size_t n = s.size();
  thread_local std::vector<Best> best;
  best.assign(n + 1, Best{});
  for (size_t pos = 0; pos < n;) {
    const double base = best[pos].score;
    const size_t mblen = std::min(utf8_length(static_cast<unsigned char>(s[pos])), n - pos);
    bool single = false;
    int32_t node = 0;
    for (size_t e = pos; e < n; ++e) {
      auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[e]));
      if (it == edges_.end()) break;
      node = it->second;
      const int32_t id = piece_at_[static_cast<size_t>(node)];
      if (id < 0) continue;
      const double cand = scores_[static_cast<size_t>(id)] + base;
      Best& b = best[e + 1];
      if (b.start < 0 || cand > b.score) b = {cand, static_cast<int64_t>(pos), id};
      if (e + 1 - pos == mblen) single = true;
    }
    if (!single) {
      const double cand = unk_score_ + base;
      Best& b = best[pos + mblen];
      if (b.start < 0 || cand > b.score) {
        // As HF: an error only when the unknown path would be taken.
        HF_CHECK_INPUT(options_.unk_id.has_value(),
                       "Unigram: no piece covers the character at byte ", pos, " ('",
                       s.substr(pos, mblen), "') and the model has no unk_id");
        b = {cand, static_cast<int64_t>(pos), *options_.unk_id};
      }
    }
    pos += mblen;
  }
  // Back from the end; runs of unknown pieces fuse into one.
  pieces.clear();
  size_t unk_end = 0;
  bool in_unk = false;
  for (size_t e = n; e > 0;) {
    const Best& b = best[e];
    const auto start = static_cast<size_t>(b.start);
    const bool unk = options_.unk_id && b.id == *options_.unk_id;
    if (unk) {
      if (!in_unk) unk_end = e;
      in_unk = true;
    } else {
      if (in_unk) pieces.emplace_back(e, unk_end);
      in_unk = false;
      pieces.emplace_back(start, e);
    }
    e = start;
  }
  if (in_unk) pieces.emplace_back(0, unk_end);
  std::reverse(pieces.begin(), pieces.end());
}

void Unigram::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  thread_local std::vector<std::pair<size_t, size_t>> pieces;
  segment(word, pieces);
  for (const auto& [b, e] : pieces) {
    const std::string_view piece = word.substr(b, e - b);
    if (auto it = token_to_id_.find(piece); it != token_to_id_.end()) {
      out.push_back(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      const bool all = std::all_of(piece.begin(), piece.end(), [&](char c) {
        return byte_ids_[static_cast<unsigned char>(c)] >= 0;
      });
      if (all) {
        for (char c : piece) out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    HF_CHECK_INPUT(options_.unk_id.has_value(), "Unigram: '", piece,
                   "' is not in the vocab and the model has no unk_id");
    out.push_back(*options_.unk_id);
  }
}

}  // namespace hfrun::data
