// Reading tokenizer files: tokenizer.json (bounded in size, parsed by tokenizer_json.cpp) and the
// tokenizer_config.json beside it, which carries transformers' settings of the tokenizer.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/tokenizer/tokenizer_impl.h"

namespace hfrun::data {
namespace {

using detail::check_nesting;
using detail::kMaxFileBytes;
using nlohmann::json;

// The whole of `path`, at most kMaxFileBytes.
std::string read_bounded(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  HF_CHECK_INPUT(in.good(), path, ": cannot open tokenizer file");
  const auto size = static_cast<size_t>(in.tellg());
  HF_CHECK_INPUT(size <= kMaxFileBytes, path, ": ", size, " bytes is larger than the ",
                 kMaxFileBytes, "-byte limit for a tokenizer file");
  std::string text(size, '\0');
  in.seekg(0);
  in.read(text.data(), static_cast<std::streamsize>(size));
  HF_CHECK_INPUT(in.good(), path, ": read failed");
  return text;
}

// tokenizer_config.json beside a tokenizer.json (transformers' settings of the tokenizer).
void apply_tokenizer_config(Tokenizer::Impl& t, const std::string& path) {
  const std::string text = read_bounded(path);
  check_nesting(text, path);
  json c;
  try {
    c = json::parse(text);
  } catch (const json::exception& e) {
    HF_CHECK_INPUT(false, path, ": not valid JSON: ", e.what());
  }
  HF_CHECK_INPUT(c.is_object(), path, ": expected a JSON object");
  auto token_id = [&](const char* key) -> std::optional<int32_t> {
    if (!c.contains(key) || c[key].is_null()) return std::nullopt;
    const json& v = c[key];
    std::string content;
    if (v.is_string()) {
      content = v.get<std::string>();
    } else if (v.is_object() && v.contains("content") && v["content"].is_string()) {
      content = v["content"].get<std::string>();  // an AddedToken dict
    } else {
      HF_CHECK_INPUT(false, path, ": ", key, ": expected a token string or {\"content\": ...}");
    }
    for (const AddedToken& a : t.added) {
      if (a.content == content) return a.id;
    }
    if (auto id = t.model->token_to_id(content)) return *id;
    std::fprintf(stderr, "hfrun: note: %s: %s '%s' is not in the tokenizer; ignored\n",
                 path.c_str(), key, content.c_str());
    return std::nullopt;
  };
  auto flag = [&](const char* key) -> std::optional<bool> {
    if (!c.contains(key) || c[key].is_null()) return std::nullopt;
    HF_CHECK_INPUT(c[key].is_boolean(), path, ": ", key, ": expected true or false");
    return c[key].get<bool>();
  };
  SpecialTokens& s = t.specials;
  s.bos = token_id("bos_token");
  s.eos = token_id("eos_token");
  s.pad = token_id("pad_token");
  s.unk = token_id("unk_token");
  s.mask = token_id("mask_token");
  s.add_bos = flag("add_bos_token");
  s.add_eos = flag("add_eos_token");
  if (s.eos) t.eot = s.eos;
  // transformers' Llama/Gemma fast tokenizers rebuild the post-processor from these flags.
  const std::string cls = c.contains("tokenizer_class") && c["tokenizer_class"].is_string()
                              ? c["tokenizer_class"].get<std::string>()
                              : "";
  static const char* const kRebuilding[] = {"LlamaTokenizer",     "LlamaTokenizerFast",
                                            "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                            "GemmaTokenizer",     "GemmaTokenizerFast"};
  if (std::find(std::begin(kRebuilding), std::end(kRebuilding), cls) == std::end(kRebuilding)) {
    return;
  }
  const bool add_bos = s.add_bos.value_or(true), add_eos = s.add_eos.value_or(false);
  HF_CHECK_INPUT(!add_bos || s.bos, path, ": add_bos_token is true but there is no bos_token");
  HF_CHECK_INPUT(!add_eos || s.eos, path, ": add_eos_token is true but there is no eos_token");
  // single: [bos] $A [eos]; pair: [bos] $A [eos] [bos]:1 $B:1 [eos]:1.
  PostProcessor post;
  for (int32_t seq = 0; seq < 2; ++seq) {
    if (add_bos) post.pair.push_back({-1, {*s.bos}, seq});
    post.pair.push_back({seq, {}, seq});
    if (add_eos) post.pair.push_back({-1, {*s.eos}, seq});
    if (seq == 0) post.single = post.pair;
  }
  t.post = std::move(post);
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
  Tokenizer tok = from_json(read_bounded(path), path);
  const std::filesystem::path config =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(config, ec)) {
    apply_tokenizer_config(*tok.impl_, config.string());
  }
  return tok;
}

}  // namespace hfrun::data
