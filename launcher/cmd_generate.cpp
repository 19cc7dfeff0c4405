// hfrun generate: text (or token ids) from a Hugging Face GPT-2 directory, greedy or sampled.
#include <boost/program_options.hpp>
#include <filesystem>
#include <iostream>

#include "common/error.h"
#include "data/tokenizer/tokenizer.h"
#include "launcher/commands.h"
#include "models/generate.h"
#include "models/peft.h"
#include "models/registry.h"

namespace po = boost::program_options;

namespace hfrun::cli {

int cmd_generate(const Args& args) {
  std::string model_dir, prompt, adapter;
  nn::GenerateOptions opts;
  bool greedy = false, print_ids = false;
  po::options_description desc("Options");
  desc.add_options()("help,h", "show this help")(
      "model", po::value(&model_dir)->required(),
      "Hugging Face model directory or hub id ORG/NAME (config.json, model.safetensors, "
      "tokenizer.json; gpt2, llama, mistral, qwen2, qwen3)")(
      "adapter", po::value(&adapter),
      "a PEFT LoRA adapter directory to generate with (trained on this base)")(
      "prompt", po::value(&prompt), "text to continue (default: start from the end-of-text token)")(
      "max-new-tokens", po::value(&opts.max_new_tokens)->default_value(32), "tokens to generate")(
      "greedy", po::bool_switch(&greedy), "argmax decoding (the default without sampling options)")(
      "temperature", po::value(&opts.temperature), "sample: divide the logits by T > 0")(
      "top-k", po::value(&opts.top_k), "sample: keep the K most likely tokens (0 = all)")(
      "top-p", po::value(&opts.top_p), "sample: nucleus probability P in (0, 1]")(
      "seed", po::value(&opts.seed)->default_value(0), "seed of the sampling draws")(
      "ids", po::bool_switch(&print_ids), "print the prompt+generated ids as one JSON array");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << "Usage: hfrun generate --model DIR [--adapter DIR] [--prompt TEXT] "
                 "[--max-new-tokens N] "
                 "[--greedy | --temperature T --top-k K --top-p P] [--seed S] [--ids]\n"
                 "Continues the prompt with the model and prints prompt + continuation. Decoding "
                 "is greedy unless a sampling option is given; generation stops at the "
                 "end-of-text token or at the model's n_positions.\n"
              << desc;
    return 0;
  }
  po::notify(vm);
  const bool sampling = vm.count("temperature") || vm.count("top-k") || vm.count("top-p");
  HF_CHECK_INPUT(!(greedy && sampling),
                 "generate: --greedy excludes the sampling options --temperature, --top-k, "
                 "--top-p");
  opts.greedy = !sampling;
  if (sampling) {
    HF_CHECK_INPUT(opts.temperature > 0, "generate: --temperature must be > 0, got ",
                   opts.temperature);
    HF_CHECK_INPUT(opts.top_k >= 0, "generate: --top-k must be >= 0 (0 = off), got ", opts.top_k);
    HF_CHECK_INPUT(opts.top_p > 0 && opts.top_p <= 1, "generate: --top-p must be in (0, 1], got ",
                   opts.top_p);
  }
  HF_CHECK_INPUT(opts.max_new_tokens >= 0, "generate: --max-new-tokens must be >= 0, got ",
                 opts.max_new_tokens);

  namespace fs = std::filesystem;
  model_dir = nn::resolve_pretrained(model_dir);
  const std::string tok_path = (fs::path(model_dir) / "tokenizer.json").string();
  HF_CHECK_INPUT(fs::is_regular_file(tok_path), tok_path,
                 ": missing (generate needs the model's "
                 "tokenizer.json)");
  const data::Tokenizer tok = data::Tokenizer::from_file(tok_path);
  std::unique_ptr<nn::CausalLM> model = nn::load_pretrained(model_dir);
  if (!adapter.empty()) {
    nn::apply_peft_adapter(*model, adapter);
    model->eval();
  }
  opts.eos_id = tok.eot_id();

  // As HF's tokenizer(prompt): the tokenizer's own post-processor decides the special tokens
  // (Llama 3 prepends <|begin_of_text|>, GPT-2 adds nothing).
  std::vector<int32_t> ids = tok.encode(prompt, /*add_special_tokens=*/true);
  if (ids.empty()) {
    HF_CHECK_INPUT(tok.eot_id().has_value(), tok_path,
                   ": no end-of-text token to start from; give a --prompt");
    ids.push_back(*tok.eot_id());
  }
  const nn::GenerateResult r = nn::generate(*model, ids, opts);
  const int64_t ctx = model->max_positions();
  const char* ctx_key = model->model_type() == "gpt2" ? "n_positions" : "max_position_embeddings";
  if (r.stopped_at_context) {
    if (r.num_generated == 0) {
      std::cerr << "hfrun generate: the prompt has " << ids.size()
                << " tokens, the model's context (" << ctx_key << ") is " << ctx
                << ": nothing generated\n";
    } else {
      std::cerr << "hfrun generate: stopped at the model's context (" << ctx_key << " " << ctx
                << ") after " << r.num_generated << " new tokens\n";
    }
  }
  if (print_ids) {
    std::string out = "[";
    for (size_t i = 0; i < r.ids.size(); ++i) {
      if (i) out += ',';
      out += std::to_string(r.ids[i]);
    }
    std::cout << out << "]\n";
  } else {
    for (int32_t id : r.ids) {
      HF_CHECK(tok.id_to_token(id).has_value(), "generate: the model produced token ", id,
               ", which the tokenizer does not have (its ids run to ", tok.vocab_size() - 1,
               ", some unused); use --ids");
    }
    std::cout << tok.decode(r.ids) << "\n";
  }
  return 0;
}

}  // namespace hfrun::cli
