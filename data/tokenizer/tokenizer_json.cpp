// Loading tokenizer.json: the file (nesting, parse), its added tokens and their ids, the
// post-processor's templates, and the whole tokenizer's checks (see tokenizer_json_loader.h for
// the model and pipeline sections).
#include <algorithm>
#include <cstdio>

#include "data/tokenizer/byte_level.h"
#include "data/tokenizer/tokenizer_json_loader.h"
#include "data/tokenizer/utf8.h"

namespace hfrun::data {

namespace detail {

// Rejects JSON nested deeper than kMaxNesting before parsing (the parser recurses).
void check_nesting(std::string_view text, const std::string& file) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"')
      in_string = true;
    else if (c == '[' || c == '{') {
      HF_CHECK_INPUT(++depth <= kMaxNesting, file, ": JSON nested deeper than ", kMaxNesting,
                     " levels (byte ", i, ")");
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
}

}  // namespace detail

namespace detail {

std::unique_ptr<Tokenizer::Impl> JsonLoader::load(const json& root) const {
  if (!root.is_object()) fail("(root)", "expected a JSON object");
  for (const char* key : {"truncation", "padding"}) {
    if (root.contains(key) && !root[key].is_null()) {
      std::fprintf(stderr,
                   "hfrun: note: %s: the %s section is ignored (hfrun sets sequence lengths "
                   "itself)\n",
                   file_.c_str(), key);
    }
  }
  auto t = std::make_unique<Tokenizer::Impl>();
  t->source = file_;
  // Added tokens first: together with the vocab they bound every id.
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& list = root["added_tokens"];
    if (!list.is_array()) fail("added_tokens", "expected a list");
    if (list.size() > kMaxVocab) fail("added_tokens", "too many entries");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string p = "added_tokens[" + std::to_string(i) + "]";
      AddedToken a;
      a.content = str(list[i], p, "content");
      if (a.content.empty()) fail(p + ".content", "empty token");
      if (find_invalid_utf8(a.content) != std::string::npos)
        fail(p + ".content", "not valid UTF-8");
      a.id = id(field(list[i], p, "id"), p + ".id");
      a.special = flag(list[i], p, "special", false);
      a.single_word = flag(list[i], p, "single_word", false);
      a.lstrip = flag(list[i], p, "lstrip", false);
      a.rstrip = flag(list[i], p, "rstrip", false);
      a.normalized = flag(list[i], p, "normalized", !a.special);
      t->added.push_back(std::move(a));
    }
  }
  const json& model = field(root, "(root)", "model");
  const json& vocab = field(model, "model", "vocab");
  if (!vocab.is_object() && !vocab.is_array()) fail("model.vocab", "expected an object or a list");
  // Ids need not be contiguous (GPT-4o's tokenizer.json leaves 199998 and 200000-200017
  // unused; HF's models take any id), but stay within a slack of the number of tokens: every
  // table sized by an id (the id -> token list; vocab_size() = the largest id + 1, which sizes
  // a model's embedding by default) stays proportional to the file, so a few bytes cannot ask
  // for gigabytes.
  const size_t count = vocab.size() + t->added.size();
  const auto max_id =
      static_cast<int32_t>(std::min(count + std::max<size_t>(kIdSlack, count / 8), kMaxVocab));
  t->model = this->model(model, max_id);
  assign_added_ids(*t, static_cast<int32_t>(t->model->vocab().size()));

  bool byte_level = false;
  t->normalizer = in_context(
      "normalizer", [&] { return normalizer(root.value("normalizer", json()), "normalizer"); });
  t->pre_tokenizer = in_context("pre_tokenizer", [&] {
    return pre_tokenizer(root.value("pre_tokenizer", json()), "pre_tokenizer", byte_level);
  });
  post_processor(root.value("post_processor", json()), "post_processor", *t);
  t->decoder =
      in_context("decoder", [&] { return decoder(root.value("decoder", json()), "decoder"); });

  // Ids -> tokens; an added token may reuse a vocab id only for the same string.
  int32_t size = 0;
  for (const auto& [tok, i] : t->model->vocab()) size = std::max(size, i + 1);
  for (const AddedToken& a : t->added) size = std::max(size, a.id + 1);
  t->id_to_token.assign(size, std::string());
  t->is_special.assign(size, 0);
  for (const auto& [tok, i] : t->model->vocab()) t->id_to_token[i] = tok;
  for (AddedToken& a : t->added) {
    a.match = a.content;
    if (a.normalized && t->normalizer) t->normalizer->apply(a.match);
    t->id_to_token[a.id] = a.match;
    t->is_special[a.id] = a.special;
  }
  // The post-processor adds only tokens the tokenizer has (a model's embedding is sized by
  // the vocabulary).
  if (t->post) {
    for (const auto* items : {&t->post->single, &t->post->pair}) {
      for (const TemplateItem& item : *items) {
        for (int32_t id : item.ids) {
          if (id >= size || t->id_to_token[static_cast<size_t>(id)].empty()) {
            fail("post_processor", "special token id " + std::to_string(id) +
                                       " is not in the vocabulary (size " + std::to_string(size) +
                                       ")");
          }
        }
      }
    }
  }
  if (byte_level) {
    std::string missing;
    for (int b = 0; b < 256; ++b) {
      if (!t->model->token_to_id(byte_to_char(static_cast<uint8_t>(b)))) {
        missing += (missing.empty() ? "" : ", ") + std::to_string(b);
      }
    }
    if (!missing.empty()) {
      fail("model.vocab", "byte-level tokenizer lacks the base tokens of bytes " + missing +
                              " (every byte must be encodable)");
    }
  }
  std::vector<const AddedToken*> raw, normalized;
  for (const AddedToken& a : t->added)
    (a.normalized && t->normalizer ? normalized : raw).push_back(&a);
  t->raw_matcher.build(raw);
  t->normalized_matcher.build(normalized);
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|end|>"}) {
    if (t->eot) break;
    for (const AddedToken& a : t->added) {
      if (a.content == name) t->eot = a.id;
    }
    if (!t->eot) {
      if (auto i = t->model->token_to_id(name)) t->eot = *i;
    }
  }
  return t;
}

void JsonLoader::assign_added_ids(Tokenizer::Impl& t, int32_t model_vocab_size) {
  std::stable_sort(t.added.begin(), t.added.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  std::vector<AddedToken> unique;
  int32_t max_added = -1;
  for (AddedToken& a : t.added) {
    auto same = std::find_if(unique.begin(), unique.end(),
                             [&](const AddedToken& u) { return u.content == a.content; });
    if (same != unique.end()) continue;
    if (auto vid = t.model->token_to_id(a.content)) {
      a.id = *vid;
    } else {
      a.id = max_added < 0 ? model_vocab_size : std::max(max_added + 1, model_vocab_size);
    }
    max_added = std::max(max_added, a.id);
    unique.push_back(std::move(a));
  }
  t.added = std::move(unique);
}

std::vector<TemplateItem> JsonLoader::template_items(const json& list, const json& specials,
                                                     const std::string& path, bool pair) const {
  if (!list.is_array()) fail(path, "expected a list");
  std::vector<TemplateItem> out;
  bool seen[2] = {false, false};
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string p = path + "[" + std::to_string(i) + "]";
    const json& item = list[i];
    std::string name;
    int32_t type_id = 0;
    bool is_sequence = false;
    if (item.is_object() && item.contains("Sequence")) {
      is_sequence = true;
      name = str(item["Sequence"], p + ".Sequence", "id");
      type_id = id(field(item["Sequence"], p + ".Sequence", "type_id"), p + ".Sequence.type_id");
    } else if (item.is_object() && item.contains("SpecialToken")) {
      name = str(item["SpecialToken"], p + ".SpecialToken", "id");
      type_id = id(field(item["SpecialToken"], p + ".SpecialToken", "type_id"),
                   p + ".SpecialToken.type_id");
    } else if (item.is_string()) {
      name = item.get<std::string>();
      if (const size_t colon = name.rfind(':'); colon != std::string::npos && colon > 0) {
        const std::string t = name.substr(colon + 1);
        if (t.empty() || t.size() > 9 || t.find_first_not_of("0123456789") != std::string::npos)
          fail(p, "bad type id in \"" + name + "\"");
        type_id = std::stoi(t);
        name.resize(colon);
      }
      if (!name.empty() && name[0] == '$') {
        is_sequence = true;
        name = name.size() == 1 ? "A" : name.substr(1);
        if (name == "a" || name == "b") name = name == "a" ? "A" : "B";
        if (name.size() <= 9 && name.find_first_not_of("0123456789") == std::string::npos) {
          type_id = std::stoi(name);  // "$1": sequence A with type id 1
          name = "A";
        }
      }
    } else {
      fail(p, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    TemplateItem t;
    t.type_id = type_id;
    if (is_sequence) {
      if (name != "A" && name != "B") fail(p, "sequence id '" + name + "' is not A or B");
      t.sequence = name == "A" ? 0 : 1;
      if (t.sequence == 1 && !pair) fail(p, "the single template uses the pair's sequence B");
      seen[t.sequence] = true;
    } else {
      if (!specials.is_object() || !specials.contains(name)) {
        fail(path, "special token '" + name + "' has no entry in special_tokens");
      }
      const std::string sp = path.substr(0, path.rfind('.')) + ".special_tokens." + name;
      const json& ids = field(specials[name], sp, "ids");
      if (!ids.is_array() || ids.size() > 64) fail(sp + ".ids", "expected a list of ids");
      for (size_t k = 0; k < ids.size(); ++k) {
        t.ids.push_back(id(ids[k], sp + ".ids[" + std::to_string(k) + "]"));
      }
    }
    out.push_back(std::move(t));
  }
  if (pair && out.empty()) return out;  // no pair template: pairs are refused when encoded
  if (!seen[0] || (pair && !seen[1])) {
    fail(path, pair ? "the pair template must use both $A and $B" : "the template must use $A");
  }
  return out;
}

void JsonLoader::post_processor(const json& j, const std::string& path, Tokenizer::Impl& t) const {
  if (j.is_null()) return;
  const std::string type = type_of(j, path);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = field(j, path, "processors");
    if (!list.is_array()) fail(path + ".processors", "expected a list");
    for (size_t i = 0; i < list.size(); ++i) {
      post_processor(list[i], path + ".processors[" + std::to_string(i) + "]", t);
    }
    return;
  }
  if (t.post) fail(path, "a second post-processor that adds tokens is not supported");
  auto pair_id = [&](const char* key) {
    const json& p = field(j, path, key);
    if (!p.is_array() || p.size() != 2) fail(path + "." + key, "expected [token, id]");
    return id(p[1], path + "." + key + "[1]");
  };
  PostProcessor post;
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    const int32_t cls = pair_id("cls"), sep = pair_id("sep");
    const bool bert = type == "BertProcessing";
    const int32_t b = bert ? 1 : 0;  // RoBERTa: every type id is 0
    post.single = {{-1, {cls}, 0}, {0, {}, 0}, {-1, {sep}, 0}};
    post.pair = {{-1, {cls}, 0}, {0, {}, 0}, {-1, {sep}, 0}};
    if (!bert) post.pair.push_back({-1, {sep}, 0});
    post.pair.push_back({1, {}, b});
    post.pair.push_back({-1, {sep}, b});
    post.plain = bert ? PostProcessor::Plain::kZeroOne : PostProcessor::Plain::kAllZero;
    t.post = std::move(post);
    return;
  }
  if (type == "TemplateProcessing") {
    const json& specials = field(j, path, "special_tokens");
    post.single = template_items(field(j, path, "single"), specials, path + ".single", false);
    post.pair = template_items(field(j, path, "pair"), specials, path + ".pair", true);
    t.post = std::move(post);
    return;
  }
  fail(path, "post_processor type '" + type +
                 "' is not supported (supported: ByteLevel, "
                 "TemplateProcessing, BertProcessing, RobertaProcessing, Sequence)");
}

}  // namespace detail

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source_name) {
  detail::check_nesting(text, source_name);
  detail::json root;
  try {
    root = detail::json::parse(text.begin(), text.end());
  } catch (const detail::json::exception& e) {  // parse errors, numbers out of range, ...
    HF_CHECK_INPUT(false, source_name, ": not valid JSON: ", e.what());
  }
  return Tokenizer(detail::JsonLoader(source_name).load(root));
}

}  // namespace hfrun::data
