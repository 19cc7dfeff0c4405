// hfrun prepare: .txt/.jsonl -> llm.c token shards, with a progress line and a summary.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "common/error.h"
#include "data/prepare.h"
#include "launcher/commands.h"

namespace po = boost::program_options;

namespace hfrun::cli {

int cmd_prepare(const Args& args) {
  std::string tokenizer_path;
  std::vector<std::string> inputs;
  data::PrepareOptions o;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "tokenizer", po::value(&tokenizer_path)->required(), "tokenizer.json (Hugging Face format)")(
      "output", po::value(&o.output_dir)->required(), "directory for the .bin shards")(
      "threads", po::value(&o.num_threads)->default_value(0), "tokenizer threads (0 = all cores)")(
      "shard-tokens", po::value(&o.shard_tokens)->default_value(o.shard_tokens),
      "tokens per shard")("prefix", po::value(&o.prefix)->default_value(o.prefix),
                          "shard file name prefix")(
      "text-field", po::value(&o.text_field)->default_value(o.text_field),
      "the .jsonl field holding the text")("overwrite", po::bool_switch(&o.overwrite),
                                           "replace existing shards in --output")(
      "inputs", po::value(&inputs), ".txt / .jsonl files or directories");
  po::positional_options_description pos;
  pos.add("inputs", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun prepare --tokenizer tokenizer.json --output DIR INPUT...\n"
                 "Tokenizes .txt files (one document each) and .jsonl files (one document per "
                 "line) into llm.c .bin shards, the end-of-text token between documents.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  HF_CHECK_INPUT(!inputs.empty(), "prepare: no input files (see hfrun prepare --help)");
  HF_CHECK_INPUT(o.num_threads >= 0 && o.num_threads <= 1024,
                 "prepare: --threads must be in [0, 1024]");
  const data::Tokenizer tok = data::Tokenizer::from_file(tokenizer_path);
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [&](const data::PrepareStats& s) {
    const double secs = std::max(s.seconds, 1e-9);
    std::fprintf(stderr, "%sprepare: %lld documents, %lld tokens, %.1f MB, %.2fM tokens/s%s",
                 tty ? "\r" : "", static_cast<long long>(s.documents),
                 static_cast<long long>(s.tokens), s.text_bytes / 1e6, s.tokens / secs / 1e6,
                 tty ? "   " : "\n");
    std::fflush(stderr);
  };
  const data::PrepareStats s = data::prepare_shards(inputs, tok, o, progress);
  if (tty) std::fprintf(stderr, "\n");
  const double secs = std::max(s.seconds, 1e-9);
  std::printf(
      "prepared %lld documents, %lld tokens (%.1f MB of text) into %lld shard(s) of "
      "uint%d tokens in %s in %.2f s: %.0f tokens/s, %.2f MB/s\n",
      static_cast<long long>(s.documents), static_cast<long long>(s.tokens), s.text_bytes / 1e6,
      static_cast<long long>(s.shards), s.shard_version == 1 ? 16 : 32, o.output_dir.c_str(),
      s.seconds, s.tokens / secs, s.text_bytes / secs / 1e6);
  return 0;
}

}  // namespace hfrun::cli
