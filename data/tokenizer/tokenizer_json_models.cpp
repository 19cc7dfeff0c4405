// tokenizer.json's model section: BPE, WordPiece and Unigram vocabularies and options.
#include <algorithm>
#include <string>

#include "data/tokenizer/bpe.h"
#include "data/tokenizer/tokenizer_json_loader.h"
#include "data/tokenizer/unigram.h"
#include "data/tokenizer/wordpiece.h"

namespace hfrun::data::detail {

std::unique_ptr<Model> JsonLoader::model(const json& j, int32_t max_id) const {
  const std::string t = type_of(j, "model");
  if (t == "BPE") return bpe(j, max_id);
  if (t == "WordPiece") return wordpiece(j, max_id);
  if (t == "Unigram") return unigram(j);
  fail("model.type",
       "model type '" + t + "' is not supported (supported: BPE, WordPiece, Unigram)");
}

std::unique_ptr<Model> JsonLoader::unigram(const json& j) const {
  const json& vocab = field(j, "model", "vocab");
  if (!vocab.is_array()) fail("model.vocab", "expected a list of [piece, score]");
  if (vocab.size() > kMaxVocab) fail("model.vocab", "too many entries");
  std::vector<std::pair<std::string, double>> v;
  v.reserve(vocab.size());
  for (size_t i = 0; i < vocab.size(); ++i) {
    const json& e = vocab[i];
    const std::string p = "model.vocab[" + std::to_string(i) + "]";
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) {
      fail(p, "expected [piece, score]");
    }
    v.emplace_back(e[0].get<std::string>(), e[1].get<double>());
  }
  UnigramOptions o;
  if (j.contains("unk_id") && !j["unk_id"].is_null()) {
    const json& u = j["unk_id"];
    if (!u.is_number_integer() || u.get<int64_t>() < 0 ||
        u.get<int64_t>() >= static_cast<int64_t>(v.size())) {
      fail("model.unk_id", "expected an id in [0, " + std::to_string(v.size()) + ")");
    }
    o.unk_id = static_cast<int32_t>(u.get<int64_t>());
  }
  o.byte_fallback = flag(j, "model", "byte_fallback", false);
  try {
    return std::make_unique<Unigram>(std::move(v), o);
  } catch (const Error& e) {
    fail("model", e.message());
  }
}

StringMap<int32_t> JsonLoader::vocab_map(const json& j, int32_t max_id) const {
  const json& vocab = field(j, "model", "vocab");
  if (!vocab.is_object()) fail("model.vocab", "expected an object of token: id");
  if (vocab.size() > kMaxVocab)
    fail("model.vocab", "has " + std::to_string(vocab.size()) + " entries, more than the limit " +
                            std::to_string(kMaxVocab));
  // Ids are below max_id, so the table of ids seen is bounded by the file's size.
  StringMap<int32_t> v;
  v.reserve(vocab.size());
  std::vector<uint8_t> seen(static_cast<size_t>(max_id), 0);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string where = "model.vocab[\"" + it.key() + "\"]";
    const int32_t i = id(it.value(), where);
    if (i >= max_id) {
      fail(where, "id " + std::to_string(i) + " is past the largest id this tokenizer may have, " +
                      std::to_string(max_id - 1));
    }
    if (seen[static_cast<size_t>(i)])
      fail(where, "id " + std::to_string(i) + " is used by two tokens");
    if (it.key().empty()) fail("model.vocab", "an empty token (id " + std::to_string(i) + ")");
    seen[static_cast<size_t>(i)] = 1;
    v.emplace(it.key(), i);
  }
  return v;
}

std::unique_ptr<Model> JsonLoader::wordpiece(const json& j, int32_t max_id) const {
  WordPieceOptions o;
  if (auto unk = opt_str(j, "model", "unk_token")) o.unk_token = *unk;
  if (auto prefix = opt_str(j, "model", "continuing_subword_prefix")) {
    o.continuing_subword_prefix = *prefix;
  }
  if (j.contains("max_input_chars_per_word") && !j["max_input_chars_per_word"].is_null()) {
    const json& m = j["max_input_chars_per_word"];
    if (!m.is_number_integer() || m.get<int64_t>() <= 0) {
      fail("model.max_input_chars_per_word", "expected a positive integer");
    }
    o.max_input_chars_per_word = m.get<int64_t>();
  }
  StringMap<int32_t> v = vocab_map(j, max_id);
  try {
    return std::make_unique<WordPiece>(std::move(v), std::move(o));
  } catch (const Error& e) {
    fail("model", e.message());
  }
}

std::unique_ptr<Model> JsonLoader::bpe(const json& j, int32_t max_id) const {
  if (j.contains("dropout") && !j["dropout"].is_null() &&
      !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0)) {
    fail("model.dropout", "BPE dropout (random merges) is not supported; set it to null");
  }
  StringMap<int32_t> v = vocab_map(j, max_id);
  const json& merges = field(j, "model", "merges");
  if (!merges.is_array()) fail("model.merges", "expected a list");
  std::vector<std::pair<std::string, std::string>> m;
  m.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& e = merges[r];
    const std::string p = "model.merges[" + std::to_string(r) + "]";
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail(p, "expected \"left right\", got \"" + s + "\"");
      }
      m.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      m.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    } else {
      fail(p, "expected \"left right\" or [\"left\", \"right\"]");
    }
  }
  BpeOptions o;
  o.unk_token = opt_str(j, "model", "unk_token");
  o.continuing_subword_prefix = opt_str(j, "model", "continuing_subword_prefix");
  o.end_of_word_suffix = opt_str(j, "model", "end_of_word_suffix");
  if (o.continuing_subword_prefix && o.continuing_subword_prefix->empty())
    o.continuing_subword_prefix.reset();
  if (o.end_of_word_suffix && o.end_of_word_suffix->empty()) o.end_of_word_suffix.reset();
  o.fuse_unk = flag(j, "model", "fuse_unk", false);
  o.byte_fallback = flag(j, "model", "byte_fallback", false);
  o.ignore_merges = flag(j, "model", "ignore_merges", false);
  try {
    return std::make_unique<Bpe>(std::move(v), m, std::move(o), max_id);
  } catch (const Error& e) {
    fail("model", e.message());
  }
}

}  // namespace hfrun::data::detail
