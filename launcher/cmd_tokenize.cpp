// hfrun tokenize: text -> token ids (one JSON array per input line, or per file with --whole;
// --pairs: TEXT<TAB>TEXT_PAIR lines encoded as pairs),
// and with --decode, JSON id arrays -> text.
#include <boost/program_options.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/error.h"
#include "data/tokenizer/tokenizer.h"
#include "launcher/commands.h"

namespace po = boost::program_options;

namespace hfrun::cli {
namespace {

// Parses one line "[1, 2, 3]" (whitespace allowed); errors name the source and line.
std::vector<int32_t> parse_id_array(const std::string& line, const std::string& where) {
  std::vector<int32_t> ids;
  size_t i = 0;
  auto skip = [&] {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
  };
  skip();
  HF_CHECK_INPUT(i < line.size() && line[i] == '[', where, ": expected a JSON array of ids");
  ++i;
  skip();
  if (i < line.size() && line[i] == ']') return ids;
  while (true) {
    skip();
    size_t start = i;
    if (i < line.size() && line[i] == '-') ++i;
    while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
    HF_CHECK_INPUT(i > start && i - start <= 11, where, ": expected an integer id at column ",
                   start + 1);
    const long long v = std::stoll(line.substr(start, i - start));
    HF_CHECK_INPUT(v >= 0 && v <= INT32_MAX, where, ": id ", v, " out of range");
    ids.push_back(static_cast<int32_t>(v));
    skip();
    HF_CHECK_INPUT(i < line.size(), where, ": unterminated array");
    if (line[i] == ']') break;
    HF_CHECK_INPUT(line[i] == ',', where, ": expected ',' or ']' at column ", i + 1);
    ++i;
  }
  ++i;
  skip();
  HF_CHECK_INPUT(i == line.size(), where, ": unexpected text after the array at column ", i + 1);
  return ids;
}

void write_ids(std::string& out, const std::vector<int32_t>& ids) {
  out += '[';
  for (size_t k = 0; k < ids.size(); ++k) {
    if (k) out += ',';
    out += std::to_string(ids[k]);
  }
  out += "]\n";
}

}  // namespace

int cmd_tokenize(const Args& args) {
  std::string tokenizer_path;
  std::vector<std::string> files;
  bool decode = false, whole = false, add_special = false, skip_special = false, pairs = false;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "tokenizer", po::value(&tokenizer_path)->required(), "tokenizer.json (Hugging Face format)")(
      "decode", po::bool_switch(&decode), "read JSON id arrays, print text")(
      "whole", po::bool_switch(&whole), "encode each file as one text, not line by line")(
      "add-special", po::bool_switch(&add_special), "add the tokenizer's special tokens (BOS...)")(
      "skip-special", po::bool_switch(&skip_special), "with --decode: drop special tokens")(
      "pairs", po::bool_switch(&pairs),
      "each line is TEXT<TAB>TEXT_PAIR, encoded as a pair (with --add-special, the tokenizer's "
      "pair template)")("files", po::value(&files), "input files (default: stdin)");
  po::positional_options_description pos;
  pos.add("files", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun tokenize --tokenizer tokenizer.json [--decode] [--whole] "
                 "[--pairs] [--add-special] [FILE ...]\nFor every input line (without its "
                 "newline) prints a JSON array of token ids; --decode turns such arrays back into "
                 "text.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  HF_CHECK_INPUT(!(pairs && (decode || whole)),
                 "tokenize: --pairs encodes lines; it does not go with --decode or --whole");
  const data::Tokenizer tok = data::Tokenizer::from_file(tokenizer_path);
  if (files.empty()) files.push_back("-");

  std::string out;
  auto flush = [&](bool force) {
    if (force || out.size() > (1 << 20)) {
      std::cout.write(out.data(), static_cast<std::streamsize>(out.size()));
      out.clear();
    }
  };
  std::vector<int32_t> ids;
  for (const std::string& f : files) {
    std::ifstream file;
    if (f != "-") {
      file.open(f, std::ios::binary);
      HF_CHECK_INPUT(file.good(), f, ": cannot open input file");
    }
    std::istream& in = f == "-" ? std::cin : file;
    const std::string name = f == "-" ? "<stdin>" : f;
    if (whole && !decode) {
      std::stringstream ss;
      ss << in.rdbuf();
      ids.clear();
      try {
        tok.encode_into(ss.str(), ids, add_special);
      } catch (const Error& e) {
        HF_CHECK_INPUT(false, name, ": ", e.message());
      }
      write_ids(out, ids);
      flush(false);
      continue;
    }
    std::string line;
    for (size_t n = 1; std::getline(in, line); ++n) {
      const std::string where = name + ":" + std::to_string(n);
      if (decode) {
        try {
          out += tok.decode(parse_id_array(line, where), skip_special);
        } catch (const Error& e) {
          HF_CHECK_INPUT(
              false, e.message().rfind(where, 0) == 0 ? e.message() : where + ": " + e.message());
        }
        out += '\n';
      } else if (pairs) {
        const size_t tab = line.find('\t');
        HF_CHECK_INPUT(tab != std::string::npos, where,
                       ": --pairs expects TEXT<TAB>TEXT_PAIR, but the line has no tab");
        data::Encoding e;
        try {
          e = tok.encode_pair(std::string_view(line).substr(0, tab),
                              std::string_view(line).substr(tab + 1), add_special);
        } catch (const Error& err) {
          HF_CHECK_INPUT(false, where, ": ", err.message());
        }
        write_ids(out, e.ids);
      } else {
        ids.clear();
        try {
          tok.encode_into(line, ids, add_special);
        } catch (const Error& e) {
          HF_CHECK_INPUT(false, where, ": ", e.message());
        }
        write_ids(out, ids);
      }
      flush(false);
    }
  }
  flush(true);
  std::cout.flush();
  return 0;
}

}  // namespace hfrun::cli
